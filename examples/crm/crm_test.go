package crm

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

func newTestServer(t *testing.T) (*Server, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	return New(Options{Seed: 1, Now: testNow, Log: log.New(&logs, "", 0)}), &logs
}

func do(t *testing.T, h http.Handler, method, path, body string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("the answer is not the expected JSON: %v\n%s", err, rec.Body.String())
	}
	return v
}

func TestGenerateIsDeterministic(t *testing.T) {
	enc := func(d *Data) string {
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	a, b := enc(Generate(1, testNow)), enc(Generate(1, testNow.Add(3*time.Hour)))
	if a != b {
		t.Error("the same seed on the same day gave different data")
	}
	if c := enc(Generate(2, testNow)); c == a {
		t.Error("a different seed gave the same data")
	}
}

var (
	mobileRe = regexp.MustCompile(`^1[3-9]\d{9}$`)
	idCardRe = regexp.MustCompile(`^\d{17}[\dX]$`)
	hanRe    = regexp.MustCompile(`\p{Han}`)
)

func TestGeneratedDataLooksReal(t *testing.T) {
	d := Generate(1, testNow)
	if len(d.Customers) != 500 {
		t.Fatalf("got %d customers, want 500", len(d.Customers))
	}
	var pool, chinese, intl int
	teams := map[string]int{}
	owners := map[string]int{}
	for _, c := range d.Customers {
		if !mobileRe.MatchString(c.Phone) {
			t.Errorf("customer %d: phone %q is not a Chinese mobile number", c.ID, c.Phone)
		}
		if !idCardRe.MatchString(c.IDCard) || IDCheckChar(c.IDCard[:17]) != c.IDCard[17] {
			t.Errorf("customer %d: ID number %q is not a valid 18-digit ID", c.ID, c.IDCard)
		}
		if LuhnDigit(c.BankAccount[:len(c.BankAccount)-1]) != int(c.BankAccount[len(c.BankAccount)-1]-'0') {
			t.Errorf("customer %d: bank account %q fails the Luhn check", c.ID, c.BankAccount)
		}
		if len(c.Contacts) == 0 {
			t.Errorf("customer %d has no contacts", c.ID)
		}
		for _, ct := range c.Contacts {
			if !mobileRe.MatchString(ct.Mobile) {
				t.Errorf("customer %d: contact mobile %q is not a Chinese mobile number", c.ID, ct.Mobile)
			}
		}
		age := testNow.Sub(c.LastContactAt)
		switch {
		case age > PoolAge+14*24*time.Hour:
			pool++
		case age > PoolAge-64*24*time.Hour:
			t.Errorf("customer %d: last contact %v is too close to the pool boundary for stable tests", c.ID, c.LastContactAt)
		}
		if hanRe.MatchString(c.Name) {
			chinese++
		} else {
			intl++
		}
		teams[c.Team]++
		owners[c.OwnerID]++
	}
	if pool < 30 || pool > 120 {
		t.Errorf("%d customers are in the public pool, want a visible share (30-120)", pool)
	}
	if chinese < 250 || intl < 50 {
		t.Errorf("names: %d Chinese, %d international; want both kinds", chinese, intl)
	}
	if len(teams) != 3 || len(owners) != len(Owners) {
		t.Errorf("customers are spread over teams %v and owners %v; want 3 teams and %d owners", teams, owners, len(Owners))
	}
	if len(d.Deals) == 0 || len(d.Payments) == 0 || len(d.Invoices) == 0 || len(d.Tickets) == 0 || len(d.Notes) == 0 {
		t.Errorf("some kind of record is missing: %d deals, %d payments, %d invoices, %d tickets, %d notes",
			len(d.Deals), len(d.Payments), len(d.Invoices), len(d.Tickets), len(d.Notes))
	}
}

func TestIDCheckCharMatchesTheStandardExample(t *testing.T) {
	// The worked example of GB 11643-1999.
	if got := IDCheckChar("11010519491231002"); got != 'X' {
		t.Errorf("check char of 11010519491231002 = %c, want X", got)
	}
}

func TestListCustomers(t *testing.T) {
	s, _ := newTestServer(t)
	tests := []struct {
		name       string
		path       string
		status     int
		total, len int
		firstID    int
	}{
		{"the first page has the default size and the whole total", "/api/customers", 200, 500, 20, 1},
		{"offset and limit page through the list", "/api/customers?offset=490&limit=50", 200, 500, 10, 491},
		{"an offset past the end gives an empty list", "/api/customers?offset=900", 200, 500, 0, 0},
		{"a filter by team narrows the total", "/api/customers?team=west&limit=1000", 200, -1, -1, 0},
		{"a limit over the maximum is refused", "/api/customers?limit=5000", 400, 0, 0, 0},
		{"a negative offset is refused", "/api/customers?offset=-1", 400, 0, 0, 0},
		{"a non-numeric limit is refused", "/api/customers?limit=lots", 400, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(t, s, "GET", tt.path, "", nil)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if tt.status != 200 {
				if e := decode[map[string]string](t, rec); e["error"] == "" {
					t.Errorf("a refusal without an error text: %s", rec.Body)
				}
				return
			}
			env := decode[Envelope[Customer]](t, rec)
			if tt.total >= 0 && (env.Total != tt.total || len(env.List) != tt.len) {
				t.Errorf("total %d with %d records, want %d with %d", env.Total, len(env.List), tt.total, tt.len)
			}
			if tt.firstID > 0 && env.List[0].ID != tt.firstID {
				t.Errorf("first id %d, want %d", env.List[0].ID, tt.firstID)
			}
			if tt.total < 0 {
				if env.Total == 0 || env.Total != len(env.List) || env.Total == 500 {
					t.Errorf("filtered total %d with %d records", env.Total, len(env.List))
				}
				for _, c := range env.List {
					if c.Team != "west" {
						t.Errorf("customer %d of team %s in a west-only list", c.ID, c.Team)
					}
				}
			}
		})
	}
}

func TestListsHaveNestedContactsAndSensitiveFields(t *testing.T) {
	s, _ := newTestServer(t)
	rec := do(t, s, "GET", "/api/customers?limit=1", "", nil)
	var raw struct {
		List []map[string]any `json:"list"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	c := raw.List[0]
	for _, k := range []string{"id", "name", "phone", "email", "id_card", "bank_account", "owner_id", "team", "stage", "contract_amount", "last_contact_at", "notes", "contacts"} {
		if _, ok := c[k]; !ok {
			t.Errorf("a listed customer lacks %q", k)
		}
	}
	contacts, _ := c["contacts"].([]any)
	if len(contacts) == 0 {
		t.Fatal("contacts are not a non-empty array")
	}
	for _, k := range []string{"name", "mobile", "email"} {
		if _, ok := contacts[0].(map[string]any)[k]; !ok {
			t.Errorf("a contact lacks %q", k)
		}
	}
}

func TestSingleRecords(t *testing.T) {
	s, _ := newTestServer(t)
	d := s.Data()
	tests := []struct {
		name, path string
		status     int
		want       string
	}{
		{"a customer is found by id", "/api/customers/42", 200, `"id":42,`},
		{"an unknown customer is 404", "/api/customers/9999", 404, "not found"},
		{"a customer id that is not a number is 400", "/api/customers/abc", 400, "must be a number"},
		{"the sensitive answer has the ID number and bank account", "/api/customers/42/sensitive", 200, `"id_card":"` + d.Customers[41].IDCard + `"`},
		{"a deal is found by id", "/api/deals/3", 200, `"id":3,`},
		{"a payment is found by id", "/api/payments/1", 200, `"payer_account"`},
		{"an invoice is found by id", "/api/invoices/1", 200, `"tax_id"`},
		{"a ticket is found by id with its history", "/api/tickets/1", 200, `"history":[{`},
		{"an unknown ticket is 404", "/api/tickets/99999", 404, "not found"},
		{"an unknown API path is a JSON 404", "/api/nothing", 404, `"error"`},
		{"the health check answers ok", "/healthz", 200, `"ok"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(t, s, "GET", tt.path, "", nil)
			if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("status %d body %.300s; want %d containing %q", rec.Code, rec.Body, tt.status, tt.want)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
		})
	}
}

func TestListsFilterByCustomer(t *testing.T) {
	s, _ := newTestServer(t)
	d := s.Data()
	cust := d.Notes[0].CustomerID
	for _, path := range []string{"/api/notes", "/api/deals", "/api/tickets", "/api/payments", "/api/invoices"} {
		t.Run(path+" keeps only the records of the customer asked for", func(t *testing.T) {
			rec := do(t, s, "GET", path+"?limit=1000&customer_id="+itoa(cust), "", nil)
			env := decode[Envelope[map[string]any]](t, rec)
			for _, r := range env.List {
				if int(r["customer_id"].(float64)) != cust {
					t.Errorf("record %v of customer %v in a list for customer %d", r["id"], r["customer_id"], cust)
				}
			}
			if env.Total != len(env.List) {
				t.Errorf("total %d but %d records", env.Total, len(env.List))
			}
		})
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestExportIsACSVDownload(t *testing.T) {
	s, logs := newTestServer(t)
	rec := do(t, s, "GET", "/api/customers/export", "", map[string]string{"X-CRM-User": "wang"})
	if rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Errorf("Content-Type %q, want text/csv", ct)
	}
	if cd := rec.Header().Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment") {
		t.Errorf("Content-Disposition %q, want an attachment", cd)
	}
	rows, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(rec.Body.String(), "\ufeff"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 501 || !slices.Equal(rows[0], exportColumns) {
		t.Errorf("%d rows with header %v; want 501 with %v", len(rows), rows[0], exportColumns)
	}
	if !strings.Contains(logs.String(), "wang exported 500 customers") {
		t.Errorf("the export is not logged with its actor:\n%s", logs)
	}
}

func TestPatchCustomer(t *testing.T) {
	tests := []struct {
		name, body string
		status     int
		check      func(t *testing.T, c Customer)
	}{
		{"a stage and an amount are changed", `{"stage":"won","contract_amount":123456.5}`, 200, func(t *testing.T, c Customer) {
			if c.Stage != "won" || c.ContractAmount != 123456.5 || c.UpdatedBy != "zhang" {
				t.Errorf("got stage %s amount %v by %q", c.Stage, c.ContractAmount, c.UpdatedBy)
			}
		}},
		{"a new owner moves the customer to the owner's team", `{"owner_id":"huang"}`, 200, func(t *testing.T, c Customer) {
			if c.OwnerID != "huang" || c.Team != "south" {
				t.Errorf("owner %s team %s, want huang south", c.OwnerID, c.Team)
			}
		}},
		{"an unknown owner is refused", `{"owner_id":"nobody"}`, 400, nil},
		{"an unknown stage is refused", `{"stage":"maybe"}`, 400, nil},
		{"a negative amount is refused", `{"contract_amount":-1}`, 400, nil},
		{"a field that cannot be changed is refused", `{"id_card":"1"}`, 400, nil},
		{"an empty object is refused", `{}`, 400, nil},
		{"a body that is not JSON is refused", `stage=won`, 400, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, logs := newTestServer(t)
			before := s.Data().Customers[6]
			rec := do(t, s, "PATCH", "/api/customers/7", tt.body, map[string]string{"X-CRM-User": "zhang"})
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			after := s.Data().Customers[6]
			if tt.check == nil {
				if after.Stage != before.Stage || after.OwnerID != before.OwnerID || after.ContractAmount != before.ContractAmount {
					t.Error("a refused update changed the record")
				}
				return
			}
			tt.check(t, decode[Customer](t, rec))
			tt.check(t, *after)
			if !strings.Contains(logs.String(), "zhang updated customer 7") {
				t.Errorf("the change is not logged with its actor:\n%s", logs)
			}
		})
	}
}

func TestBulkUpdateIsAllOrNothing(t *testing.T) {
	s, logs := newTestServer(t)
	rec := do(t, s, "POST", "/api/customers/bulk-update", `{"ids":[1,99999],"owner_id":"wu"}`, map[string]string{"X-CRM-User": "wang"})
	if rec.Code != 404 || !strings.Contains(rec.Body.String(), "99999") {
		t.Fatalf("a bulk update naming a missing customer: status %d %s", rec.Code, rec.Body)
	}
	if s.Data().Customers[0].OwnerID == "wu" && Generate(1, testNow).Customers[0].OwnerID != "wu" {
		t.Fatal("a refused bulk update changed a record")
	}
	rec = do(t, s, "POST", "/api/customers/bulk-update", `{"ids":[1,2],"owner_id":"wu","stage":"won"}`, map[string]string{"X-CRM-User": "wang"})
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	res := decode[BulkResult](t, rec)
	if res.Updated != 2 || !slices.Equal(res.IDs, []int{1, 2}) {
		t.Errorf("result %+v", res)
	}
	d := s.Data()
	if d.Customers[0].OwnerID != "wu" || d.Customers[1].Stage != "won" || d.Customers[1].UpdatedBy != "wang" {
		t.Errorf("records after the bulk update: %+v %+v", d.Customers[0], d.Customers[1])
	}
	if !strings.Contains(logs.String(), "wang bulk-updated customers [1 2]") {
		t.Errorf("the bulk update is not logged:\n%s", logs)
	}
	for _, body := range []string{`{"ids":[1]}`, `{"owner_id":"wu"}`, `{"ids":[],"stage":"won"}`, `[{"id":1,"stage":"won"}]`, `{"ids":[1],"stage":"nonsense"}`} {
		if rec := do(t, s, "POST", "/api/customers/bulk-update", body, nil); rec.Code < 400 {
			t.Errorf("bulk update %s: status %d, want a refusal", body, rec.Code)
		}
	}
}

func TestTheCustomerListIsFilteredByIDs(t *testing.T) {
	s, _ := newTestServer(t)
	rec := do(t, s, "GET", "/api/customers?ids=3,1,99999&limit=1000", "", nil)
	env := decode[Envelope[Customer]](t, rec)
	var got []int
	for _, c := range env.List {
		got = append(got, c.ID)
	}
	if !slices.Equal(got, []int{1, 3}) || env.Total != 2 {
		t.Errorf("ids %v total %d, want [1 3] and 2", got, env.Total)
	}
}

func TestADeletedCustomerIsGoneAndTheCRMRemembersTheWrite(t *testing.T) {
	s, logs := newTestServer(t)
	if rec := do(t, s, "DELETE", "/api/customers/2", "", map[string]string{"X-CRM-User": "wu"}); rec.Code != 204 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if rec := do(t, s, "GET", "/api/customers/2", "", nil); rec.Code != 404 {
		t.Errorf("the deleted customer: status %d, want 404", rec.Code)
	}
	if rec := do(t, s, "DELETE", "/api/customers/2", "", nil); rec.Code != 404 {
		t.Errorf("deleting it again: status %d, want 404", rec.Code)
	}
	if !strings.Contains(logs.String(), "wu deleted customer 2") {
		t.Errorf("the delete is not logged:\n%s", logs)
	}
	if got := s.Writes(); !slices.Equal(got, []string{"DELETE /api/customers/2 user=wu", "DELETE /api/customers/2 user="}) {
		t.Errorf("Writes() = %q", got)
	}
}

func TestPatchDeal(t *testing.T) {
	s, _ := newTestServer(t)
	rec := do(t, s, "PATCH", "/api/deals/5", `{"stage":"negotiation","next_step":"call back"}`, map[string]string{"X-CRM-User": "li"})
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	d := decode[Deal](t, rec)
	if d.Stage != "negotiation" || d.NextStep != "call back" || d.UpdatedBy != "li" {
		t.Errorf("deal after PATCH: %+v", d)
	}
	for _, body := range []string{`{"customer_id":3}`, `{"expected_close":"tomorrow"}`, `{}`, `[1]`} {
		if rec := do(t, s, "PATCH", "/api/deals/5", body, nil); rec.Code != 400 {
			t.Errorf("PATCH %s: status %d, want 400", body, rec.Code)
		}
	}
	if rec := do(t, s, "PATCH", "/api/deals/5", `{"stage":"won"}`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); rec.Code != 415 {
		t.Errorf("a form body: status %d, want 415", rec.Code)
	}
}

func TestWhoamiAndPagesShowTheUserTheProxySent(t *testing.T) {
	s, logs := newTestServer(t)
	hdr := map[string]string{"X-CRM-User": "zhang", "X-CRM-Roles": "sales"}
	rec := do(t, s, "GET", "/api/whoami", "", hdr)
	if rec.Body.String() != `{"roles":["sales"],"user":"zhang"}` {
		t.Errorf("whoami: %s", rec.Body)
	}
	for _, p := range []string{"/", "/customers/3/sensitive"} {
		rec := do(t, s, "GET", p, "", hdr)
		body := rec.Body.String()
		if rec.Code != 200 || !strings.Contains(body, "Signed in as <b>zhang</b> (sales)") || !strings.Contains(body, `method="post" action="/.crmguard/logout"`) {
			t.Errorf("page %s: status %d\n%.500s", p, rec.Code, body)
		}
	}
	rec = do(t, s, "GET", "/", "", map[string]string{"X-CRM-User": `<script>alert(1)</script>`})
	if strings.Contains(rec.Body.String(), "<script>alert(1)") {
		t.Error("the user name is not escaped in the page")
	}
	for _, f := range []string{"/static/app.js", "/static/app.css"} {
		if rec := do(t, s, "GET", f, "", nil); rec.Code != 200 || rec.Body.Len() < 100 {
			t.Errorf("%s: status %d, %d bytes", f, rec.Code, rec.Body.Len())
		}
	}
	if rec := do(t, s, "GET", "/static/index.html", "", nil); rec.Code != 404 {
		t.Errorf("a template is served raw: status %d", rec.Code)
	}
	if !strings.Contains(logs.String(), `GET /api/whoami user="zhang" roles="sales" -> 200`) {
		t.Errorf("requests are not logged with the acting user:\n%s", logs)
	}
}

func TestCustomerListFiltersSearchesAndSorts(t *testing.T) {
	s, _ := newTestServer(t)
	all := s.Data().Customers
	cutoff := testNow.Add(-PoolAge)
	want := func(keep func(c *Customer) bool) []int {
		var ids []int
		for _, c := range all {
			if keep(c) {
				ids = append(ids, c.ID)
			}
		}
		return ids
	}
	name := all[7].Name
	tests := []struct {
		name  string
		query string
		want  []int // in order
	}{
		{"several teams comma-separated", "team=east,south", want(func(c *Customer) bool { return c.Team == "east" || c.Team == "south" })},
		{"several teams repeated", "team=east&team=south", want(func(c *Customer) bool { return c.Team == "east" || c.Team == "south" })},
		{"a last contact cut-off keeps the older customers", "last_contact_before=" + cutoff.Format(time.RFC3339Nano), want(func(c *Customer) bool { return c.LastContactAt.Before(cutoff) })},
		{"a cut-off with a team keeps both conditions", "team=west&last_contact_before=" + cutoff.Format(time.RFC3339), want(func(c *Customer) bool {
			return c.Team == "west" && c.LastContactAt.Before(cutoff.Truncate(time.Second))
		})},
		{"a search finds a name", "q=" + name, want(func(c *Customer) bool {
			return strings.Contains(strings.ToLower(c.Name+" "+c.Company), strings.ToLower(name))
		})},
		{"a filter by owner", "owner_id=wu", want(func(c *Customer) bool { return c.OwnerID == "wu" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(t, s, "GET", "/api/customers?limit=1000&"+tt.query, "", nil)
			env := decode[Envelope[Customer]](t, rec)
			var got []int
			for _, c := range env.List {
				got = append(got, c.ID)
			}
			if len(tt.want) == 0 || len(tt.want) == len(all) {
				t.Fatalf("the seeded data gives %d of %d: the filter would show nothing", len(tt.want), len(all))
			}
			if !slices.Equal(got, tt.want) || env.Total != len(tt.want) {
				t.Errorf("got %d records (total %d), want %d: %v", len(got), env.Total, len(tt.want), got)
			}
		})
	}
	t.Run("a sort orders by the fields named, descending with a minus, then by id", func(t *testing.T) {
		env := decode[Envelope[Customer]](t, do(t, s, "GET", "/api/customers?limit=1000&sort=-contract_amount,name", "", nil))
		ok := slices.IsSortedFunc(env.List, func(a, b Customer) int {
			if a.ContractAmount != b.ContractAmount {
				if a.ContractAmount > b.ContractAmount {
					return -1
				}
				return 1
			}
			if n := strings.Compare(a.Name, b.Name); n != 0 {
				return n
			}
			return a.ID - b.ID
		})
		if !ok || len(env.List) != len(all) {
			t.Errorf("%d customers, sorted %v", len(env.List), ok)
		}
	})
	for _, bad := range []string{"sort=bank_account", "last_contact_before=yesterday"} {
		t.Run("a bad "+bad+" is refused", func(t *testing.T) {
			if rec := do(t, s, "GET", "/api/customers?"+bad, "", nil); rec.Code != 400 {
				t.Errorf("status %d: %s", rec.Code, rec.Body)
			}
		})
	}
}

func TestListsFilterByTeam(t *testing.T) {
	s, _ := newTestServer(t)
	for _, path := range []string{"/api/deals", "/api/tickets", "/api/notes", "/api/payments"} {
		t.Run(path+" keeps only the teams asked for", func(t *testing.T) {
			all := decode[Envelope[map[string]any]](t, do(t, s, "GET", path+"?limit=1000", "", nil))
			env := decode[Envelope[map[string]any]](t, do(t, s, "GET", path+"?limit=1000&team=east,west", "", nil))
			n := 0
			for _, r := range all.List {
				if r["team"] == "east" || r["team"] == "west" {
					n++
				}
			}
			for _, r := range env.List {
				if r["team"] != "east" && r["team"] != "west" {
					t.Errorf("record %v of team %v", r["id"], r["team"])
				}
			}
			if len(env.List) != n || n == 0 || n == len(all.List) {
				t.Errorf("%d records of east and west, want %d of %d", len(env.List), n, len(all.List))
			}
		})
	}
}
