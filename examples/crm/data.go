package crm

import (
	"fmt"
	"math/rand"
	"strings"
	"time"
)

// Customer is one customer record as the CRM's JSON API returns it. The CRM
// is "legacy": its lists return whole records, sensitive fields included.
type Customer struct {
	// ID is the customer number.
	ID int `json:"id"`
	// Name is the customer's name (Chinese or international).
	Name string `json:"name"`
	// Company is the company the customer buys for.
	Company string `json:"company"`
	// Phone is a Chinese mobile number (11 digits).
	Phone string `json:"phone"`
	// Email is the customer's e-mail address.
	Email string `json:"email"`
	// IDCard is an 18-digit resident ID number with a valid check digit.
	IDCard string `json:"id_card"`
	// BankAccount is a bank card number with a valid Luhn digit.
	BankAccount string `json:"bank_account"`
	// BankName is the bank that holds BankAccount.
	BankName string `json:"bank_name"`
	// OwnerID is the sales rep who owns the customer.
	OwnerID string `json:"owner_id"`
	// Team is the owner's sales team (east, west or south).
	Team string `json:"team"`
	// Stage is the customer's sales stage.
	Stage string `json:"stage"`
	// ContractAmount is the customer's contract value in CNY.
	ContractAmount float64 `json:"contract_amount"`
	// Address is where the customer sits.
	Address Address `json:"address"`
	// LastContactAt is the last time anyone talked to the customer; more
	// than a year ago puts the customer in the public pool.
	LastContactAt time.Time `json:"last_contact_at"`
	// CreatedAt is when the record was created.
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is when the record was last changed.
	UpdatedAt time.Time `json:"updated_at"`
	// UpdatedBy is the X-CRM-User of the last change ("" for seed data).
	UpdatedBy string `json:"updated_by"`
	// Notes is a free-text remark by the owner.
	Notes string `json:"notes"`
	// Tags are labels.
	Tags []string `json:"tags"`
	// Contacts are the people to talk to at the customer.
	Contacts []Contact `json:"contacts"`
}

// Address is a postal address.
type Address struct {
	// City is the city name.
	City string `json:"city"`
	// Street is the street address.
	Street string `json:"street"`
}

// Contact is a person at a customer.
type Contact struct {
	// Name is the contact's name.
	Name string `json:"name"`
	// Title is the contact's job title.
	Title string `json:"title"`
	// Mobile is the contact's mobile number.
	Mobile string `json:"mobile"`
	// Email is the contact's e-mail address.
	Email string `json:"email"`
}

// Deal is a sales opportunity with a customer.
type Deal struct {
	// ID is the deal number.
	ID int `json:"id"`
	// CustomerID is the customer the deal is with.
	CustomerID int `json:"customer_id"`
	// CustomerName is the customer's name (denormalised, as legacy CRMs do).
	CustomerName string `json:"customer_name"`
	// Title names the deal.
	Title string `json:"title"`
	// OwnerID is the sales rep who owns the deal.
	OwnerID string `json:"owner_id"`
	// Team is the owner's team.
	Team string `json:"team"`
	// Stage is the deal's stage.
	Stage string `json:"stage"`
	// ContractAmount is the deal value in CNY.
	ContractAmount float64 `json:"contract_amount"`
	// Currency is the ISO currency code.
	Currency string `json:"currency"`
	// ExpectedClose is the expected closing date (YYYY-MM-DD).
	ExpectedClose string `json:"expected_close"`
	// NextStep is what happens next.
	NextStep string `json:"next_step"`
	// Notes is a free-text remark.
	Notes string `json:"notes"`
	// UpdatedAt is when the deal was last changed.
	UpdatedAt time.Time `json:"updated_at"`
	// UpdatedBy is the X-CRM-User of the last change.
	UpdatedBy string `json:"updated_by"`
}

// Payment is money received for a won deal.
type Payment struct {
	// ID is the payment number.
	ID int `json:"id"`
	// DealID is the deal paid for.
	DealID int `json:"deal_id"`
	// CustomerID is the paying customer.
	CustomerID int `json:"customer_id"`
	// CustomerName is the paying customer's name.
	CustomerName string `json:"customer_name"`
	// OwnerID is the owner of the deal.
	OwnerID string `json:"owner_id"`
	// Team is the owner's team.
	Team string `json:"team"`
	// InvoiceNo is the invoice the payment settles.
	InvoiceNo string `json:"invoice_no"`
	// Amount is the amount paid in CNY.
	Amount float64 `json:"amount"`
	// Method is how it was paid.
	Method string `json:"method"`
	// PayerAccount is the account the money came from.
	PayerAccount string `json:"payer_account"`
	// PaidAt is when the money arrived.
	PaidAt time.Time `json:"paid_at"`
	// Status is received or pending.
	Status string `json:"status"`
	// SalesNotes is the sales rep's conversation remark copied onto the
	// payment by the legacy system.
	SalesNotes string `json:"sales_notes"`
}

// Invoice is an invoice issued to a customer.
type Invoice struct {
	// ID is the invoice number in the CRM.
	ID int `json:"id"`
	// InvoiceNo is the official invoice number.
	InvoiceNo string `json:"invoice_no"`
	// DealID is the deal invoiced.
	DealID int `json:"deal_id"`
	// CustomerID is the invoiced customer.
	CustomerID int `json:"customer_id"`
	// CustomerName is the invoiced customer's name.
	CustomerName string `json:"customer_name"`
	// TaxID is the buyer's unified social credit code.
	TaxID string `json:"tax_id"`
	// Amount is the amount before tax in CNY.
	Amount float64 `json:"amount"`
	// Tax is the VAT in CNY.
	Tax float64 `json:"tax"`
	// IssuedAt is the issue date.
	IssuedAt time.Time `json:"issued_at"`
	// Status is issued, paid or void.
	Status string `json:"status"`
}

// Ticket is a customer service ticket with its history.
type Ticket struct {
	// ID is the ticket number.
	ID int `json:"id"`
	// CustomerID is the customer who asked.
	CustomerID int `json:"customer_id"`
	// CustomerName is the customer's name.
	CustomerName string `json:"customer_name"`
	// OwnerID is the customer's owner (sales rep).
	OwnerID string `json:"owner_id"`
	// Team is the owner's team.
	Team string `json:"team"`
	// Subject is the ticket's title.
	Subject string `json:"subject"`
	// Status is open, pending or closed.
	Status string `json:"status"`
	// Priority is low, normal or high.
	Priority string `json:"priority"`
	// Assignee is the service agent.
	Assignee string `json:"assignee"`
	// CreatedAt is when the ticket was opened.
	CreatedAt time.Time `json:"created_at"`
	// History is what happened on the ticket, oldest first.
	History []TicketEvent `json:"history"`
}

// TicketEvent is one entry in a ticket's history.
type TicketEvent struct {
	// At is when it happened.
	At time.Time `json:"at"`
	// By is who did it.
	By string `json:"by"`
	// Text says what happened.
	Text string `json:"text"`
}

// Note is a conversation note: what was said with a customer.
type Note struct {
	// ID is the note number.
	ID int `json:"id"`
	// CustomerID is the customer talked to.
	CustomerID int `json:"customer_id"`
	// CustomerName is the customer's name.
	CustomerName string `json:"customer_name"`
	// OwnerID is the customer's owner.
	OwnerID string `json:"owner_id"`
	// Team is the owner's team.
	Team string `json:"team"`
	// Author is who wrote the note.
	Author string `json:"author"`
	// Channel is phone, wechat, visit or email.
	Channel string `json:"channel"`
	// At is when the conversation happened.
	At time.Time `json:"at"`
	// Text is the note.
	Text string `json:"text"`
}

// Owner is a sales rep who can own customers.
type Owner struct {
	// ID is the user name (as the identity provider knows it).
	ID string
	// Team is the sales team.
	Team string
}

// Owners are the sales reps and managers customers are spread over. zhang
// and wang are demo users; the others exist so that teams have members a
// demo user must not see.
var Owners = []Owner{
	{"zhang", "east"}, {"wang", "east"}, {"wu", "east"},
	{"chen", "west"}, {"liu", "west"},
	{"huang", "south"}, {"zhou", "south"},
}

// Stages are the sales stages, in order.
var Stages = []string{"lead", "qualified", "proposal", "negotiation", "won", "lost"}

// PoolAge is how long without contact puts a customer in the public pool.
const PoolAge = 365 * 24 * time.Hour

// Data is the CRM's whole content.
type Data struct {
	// Customers are numbered from 1, in order (a deleted one leaves a gap).
	Customers []*Customer
	// Deals are numbered from 1, in order.
	Deals []*Deal
	// Payments are numbered from 1, in order.
	Payments []*Payment
	// Invoices are numbered from 1, in order.
	Invoices []*Invoice
	// Tickets are numbered from 1, in order.
	Tickets []*Ticket
	// Notes are numbered from 1, in order.
	Notes []*Note
}

type namePart struct{ han, pinyin string }

var (
	surnames = []namePart{
		{"张", "zhang"}, {"王", "wang"}, {"李", "li"}, {"赵", "zhao"}, {"刘", "liu"},
		{"陈", "chen"}, {"杨", "yang"}, {"黄", "huang"}, {"周", "zhou"}, {"吴", "wu"},
		{"徐", "xu"}, {"孙", "sun"}, {"马", "ma"}, {"朱", "zhu"}, {"胡", "hu"},
		{"郭", "guo"}, {"何", "he"}, {"林", "lin"}, {"罗", "luo"}, {"高", "gao"},
		{"欧阳", "ouyang"}, {"司马", "sima"},
	}
	givenParts = []namePart{
		{"伟", "wei"}, {"芳", "fang"}, {"娜", "na"}, {"敏", "min"}, {"静", "jing"},
		{"丽", "li"}, {"强", "qiang"}, {"磊", "lei"}, {"军", "jun"}, {"洋", "yang"},
		{"勇", "yong"}, {"艳", "yan"}, {"杰", "jie"}, {"涛", "tao"}, {"明", "ming"},
		{"超", "chao"}, {"秀英", "xiuying"}, {"晓", "xiao"}, {"建国", "jianguo"}, {"婷", "ting"},
	}
	intlFirst = []string{"Emma", "Liam", "Olivia", "Noah", "Sophie", "Lukas", "Anna", "Mateo",
		"Yuki", "Hiroshi", "Min-jun", "Priya", "Arjun", "Chloé", "José", "Ingrid", "Omar", "Fatima"}
	intlLast = []string{"Schmidt", "Müller", "Dubois", "García", "Rossi", "Tanaka", "Kim", "Patel",
		"Johansson", "Smith", "Brown", "Novák", "Kowalski", "O'Brien", "Haddad", "Nguyen"}
	companyStems = []string{"东方", "华南", "长江", "新锐", "恒通", "远景", "金桥", "明德", "天成", "卓越", "瑞丰", "海川"}
	companyKinds = []string{"贸易有限公司", "科技有限公司", "电子有限公司", "物流有限公司", "医疗器械有限公司", "食品有限公司"}
	intlCompany  = []string{"Nordwind AB", "Alpine Tools GmbH", "Sakura Trading K.K.", "Maple Foods Ltd.",
		"Iberia Logística S.L.", "Danube Devices Kft.", "Pacific Rim Pte. Ltd."}
	teamCities = map[string][]string{
		"east":  {"上海", "杭州", "南京", "苏州"},
		"west":  {"成都", "重庆", "西安"},
		"south": {"深圳", "广州", "厦门"},
	}
	cityRegions = map[string][]string{
		"上海": {"310101", "310104", "310115"}, "杭州": {"330102", "330106"}, "南京": {"320102", "320106"},
		"苏州": {"320505", "320508"}, "成都": {"510104", "510107"}, "重庆": {"500103", "500106"},
		"西安": {"610102", "610113"}, "深圳": {"440303", "440305"}, "广州": {"440103", "440106"},
		"厦门": {"350203", "350206"},
	}
	streets    = []string{"人民路", "解放路", "中山路", "建设路", "南京东路", "深南大道", "天府大道", "长安街", "滨江路"}
	mobilePref = []string{"130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152",
		"155", "158", "159", "166", "176", "177", "180", "181", "182", "186", "187", "188", "189", "199"}
	banks = []struct{ name, bin string }{
		{"中国工商银行", "622202"}, {"中国建设银行", "621700"}, {"中国农业银行", "622848"},
		{"招商银行", "621483"}, {"中国银行", "621661"},
	}
	titles    = []string{"采购经理", "总经理", "财务主管", "IT 负责人", "Purchasing Manager", "CFO", "Operations Lead"}
	tagSet    = []string{"VIP", "渠道", "老客户", "大客户", "续约", "export", "govt"}
	noteTexts = []string{
		"电话沟通报价，客户希望下周再谈折扣。",
		"客户对交付周期有顾虑，需要技术支持确认。",
		"拜访客户总部，见了采购经理，进展顺利。",
		"微信发送了产品资料，客户会转给老板。",
		"Customer asked for a revised quote with a 3-year term.",
		"Discussed renewal; budget approval expected next quarter.",
		"客户投诉上次发货延迟，已安抚并承诺改进。",
		"Competitor offered 15% less; customer is hesitating.",
	}
	ticketSubjects = []string{"发票抬头错误", "设备无法开机", "Delivery delayed", "Login to portal fails",
		"要求退换货", "账单金额有疑问", "Request for training", "配件缺失"}
	ticketTexts = []string{"客户来电反映问题。", "已联系技术支持。", "Replacement part shipped.",
		"客户确认问题已解决。", "Waiting for customer reply.", "升级给二线处理。"}
	agents   = []string{"li", "service-01", "service-02"}
	channels = []string{"phone", "wechat", "visit", "email"}
	methods  = []string{"bank_transfer", "alipay", "wechat_pay", "cheque"}
)

// Generate builds the CRM's data from seed. The same seed and the same now
// give the same data. Dates are spread around now; customers last
// contacted more than a year before now (the public pool) are at least 15
// days past the year, and the others at least 65 days inside it, so
// whether a customer is in the pool does not depend on the time of day or
// the time zone a test runs in.
func Generate(seed int64, now time.Time) *Data {
	r := rand.New(rand.NewSource(seed))
	day := now.UTC().Truncate(24 * time.Hour)
	d := &Data{}
	const customers = 500
	for i := 1; i <= customers; i++ {
		o := Owners[r.Intn(len(Owners))]
		city := pick(r, teamCities[o.Team])
		name, email := personName(r)
		company := pick(r, companyStems) + pick(r, companyKinds)
		if r.Intn(5) == 0 {
			company = pick(r, intlCompany)
		}
		var lastContact time.Time
		if r.Intn(100) < 14 { // public pool
			lastContact = day.Add(-time.Duration(380+r.Intn(500))*24*time.Hour + randTime(r))
		} else {
			lastContact = day.Add(-time.Duration(r.Intn(300))*24*time.Hour + randTime(r))
		}
		created := lastContact.Add(-time.Duration(30+r.Intn(900)) * 24 * time.Hour)
		bank := banks[r.Intn(len(banks))]
		c := &Customer{
			ID:             i,
			Name:           name,
			Company:        company,
			Phone:          mobile(r),
			Email:          email,
			IDCard:         idCard(r, pick(r, cityRegions[city])),
			BankAccount:    luhnNumber(r, bank.bin, 19),
			BankName:       bank.name,
			OwnerID:        o.ID,
			Team:           o.Team,
			Stage:          pick(r, Stages),
			ContractAmount: float64(5+r.Intn(2000)) * 500,
			Address:        Address{City: city, Street: fmt.Sprintf("%s%d号", pick(r, streets), 1+r.Intn(2000))},
			LastContactAt:  lastContact,
			CreatedAt:      created,
			UpdatedAt:      lastContact,
			Notes:          pick(r, noteTexts),
			Tags:           pickSome(r, tagSet, r.Intn(3)),
		}
		for n := 1 + r.Intn(3); n > 0; n-- {
			cn, ce := personName(r)
			c.Contacts = append(c.Contacts, Contact{Name: cn, Title: pick(r, titles), Mobile: mobile(r), Email: ce})
		}
		d.Customers = append(d.Customers, c)
	}
	for _, c := range d.Customers {
		for n := r.Intn(3); n > 0; n-- {
			dl := &Deal{
				ID: len(d.Deals) + 1, CustomerID: c.ID, CustomerName: c.Name,
				Title:   fmt.Sprintf("%s %s", c.Company, pick(r, []string{"年度采购", "设备升级", "Renewal", "Pilot project", "扩容"})),
				OwnerID: c.OwnerID, Team: c.Team, Stage: pick(r, Stages),
				ContractAmount: float64(10+r.Intn(1000)) * 1000, Currency: "CNY",
				ExpectedClose: day.Add(time.Duration(r.Intn(180)-30) * 24 * time.Hour).Format("2006-01-02"),
				NextStep:      pick(r, []string{"发送报价", "安排演示", "Legal review", "等待客户预算", "Sign contract"}),
				Notes:         pick(r, noteTexts),
				UpdatedAt:     c.LastContactAt,
			}
			d.Deals = append(d.Deals, dl)
			if dl.Stage != "won" {
				continue
			}
			for k := 1 + r.Intn(2); k > 0; k-- {
				inv := &Invoice{
					ID: len(d.Invoices) + 1, InvoiceNo: fmt.Sprintf("INV%s%05d", day.Format("2006"), len(d.Invoices)+1),
					DealID: dl.ID, CustomerID: c.ID, CustomerName: c.Name,
					TaxID:    creditCode(r),
					Amount:   dl.ContractAmount / 2,
					IssuedAt: c.LastContactAt.Add(time.Duration(r.Intn(20)) * 24 * time.Hour),
					Status:   pick(r, []string{"issued", "paid", "paid", "void"}),
				}
				inv.Tax = float64(int(inv.Amount*0.13*100)) / 100
				d.Invoices = append(d.Invoices, inv)
				d.Payments = append(d.Payments, &Payment{
					ID: len(d.Payments) + 1, DealID: dl.ID, CustomerID: c.ID, CustomerName: c.Name,
					OwnerID: c.OwnerID, Team: c.Team, InvoiceNo: inv.InvoiceNo,
					Amount: inv.Amount + inv.Tax, Method: pick(r, methods),
					PayerAccount: c.BankAccount,
					PaidAt:       inv.IssuedAt.Add(time.Duration(1+r.Intn(30)) * 24 * time.Hour),
					Status:       pick(r, []string{"received", "received", "pending"}),
					SalesNotes:   pick(r, noteTexts),
				})
			}
		}
		for n := r.Intn(4); n > 0; n-- {
			d.Notes = append(d.Notes, &Note{
				ID: len(d.Notes) + 1, CustomerID: c.ID, CustomerName: c.Name, OwnerID: c.OwnerID, Team: c.Team,
				Author: c.OwnerID, Channel: pick(r, channels),
				At:   c.LastContactAt.Add(-time.Duration(r.Intn(60)) * 24 * time.Hour),
				Text: pick(r, noteTexts),
			})
		}
		if r.Intn(3) == 0 {
			t := &Ticket{
				ID: len(d.Tickets) + 1, CustomerID: c.ID, CustomerName: c.Name, OwnerID: c.OwnerID, Team: c.Team,
				Subject: pick(r, ticketSubjects), Status: pick(r, []string{"open", "pending", "closed"}),
				Priority: pick(r, []string{"low", "normal", "high"}), Assignee: pick(r, agents),
				CreatedAt: c.LastContactAt.Add(-time.Duration(r.Intn(90)) * 24 * time.Hour),
			}
			at := t.CreatedAt
			for n := 1 + r.Intn(3); n > 0; n-- {
				at = at.Add(time.Duration(1+r.Intn(48)) * time.Hour)
				t.History = append(t.History, TicketEvent{At: at, By: t.Assignee, Text: pick(r, ticketTexts)})
			}
			d.Tickets = append(d.Tickets, t)
		}
	}
	return d
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.Intn(len(xs))] }

func pickSome(r *rand.Rand, xs []string, n int) []string {
	out := []string{}
	for _, i := range r.Perm(len(xs))[:n] {
		out = append(out, xs[i])
	}
	return out
}

func randTime(r *rand.Rand) time.Duration {
	return time.Duration(8*60+r.Intn(10*60)) * time.Minute // 08:00-18:00 UTC
}

// personName returns a Chinese or international name and a matching
// e-mail address.
func personName(r *rand.Rand) (name, email string) {
	domain := pick(r, []string{"example.cn", "example.com", "mail.example.cn"})
	if r.Intn(4) == 0 {
		f, l := pick(r, intlFirst), pick(r, intlLast)
		return f + " " + l, strings.ToLower(asciiOnly(f)+"."+asciiOnly(l)) + "@" + domain
	}
	s := pick(r, surnames)
	g := pick(r, givenParts)
	han, py := s.han+g.han, s.pinyin+g.pinyin
	if r.Intn(2) == 0 {
		g2 := pick(r, givenParts)
		han, py = han+g2.han, py+g2.pinyin
	}
	return han, fmt.Sprintf("%s%d@%s", py, r.Intn(100), domain)
}

func asciiOnly(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			b.WriteRune(c)
		case c == 'é':
			b.WriteByte('e')
		case c == 'ü':
			b.WriteByte('u')
		case c == 'á':
			b.WriteByte('a')
		}
	}
	return b.String()
}

func digits(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('0' + r.Intn(10))
	}
	return string(b)
}

func mobile(r *rand.Rand) string { return pick(r, mobilePref) + digits(r, 8) }

// idCard builds an 18-digit resident ID number (GB 11643-1999): region,
// birth date, sequence, check character.
func idCard(r *rand.Rand, region string) string {
	birth := time.Date(1960+r.Intn(42), time.Month(1+r.Intn(12)), 1+r.Intn(28), 0, 0, 0, 0, time.UTC)
	body := region + birth.Format("20060102") + digits(r, 3)
	return body + string(IDCheckChar(body))
}

// IDCheckChar computes the check character of the first 17 digits of a
// resident ID number.
func IDCheckChar(body17 string) byte {
	weights := [17]int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i := 0; i < 17; i++ {
		sum += int(body17[i]-'0') * weights[i]
	}
	return "10X98765432"[sum%11]
}

// luhnNumber builds a card number of length n starting with prefix whose
// last digit is the Luhn check digit.
func luhnNumber(r *rand.Rand, prefix string, n int) string {
	body := prefix + digits(r, n-len(prefix)-1)
	return body + string(rune('0'+LuhnDigit(body)))
}

// LuhnDigit computes the Luhn check digit for body.
func LuhnDigit(body string) int {
	sum := 0
	double := true
	for i := len(body) - 1; i >= 0; i-- {
		d := int(body[i] - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return (10 - sum%10) % 10
}

func creditCode(r *rand.Rand) string {
	const alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
	b := []byte("91")
	for len(b) < 18 {
		b = append(b, alphabet[r.Intn(len(alphabet))])
	}
	return string(b)
}
