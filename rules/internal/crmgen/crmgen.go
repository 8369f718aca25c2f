// Package crmgen generates CRM customer lists for tests and benchmarks: the
// same seed always gives the same bytes.
package crmgen

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// Now is the clock the generated data is relative to.
var Now = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

// UserID is the id of the user the benchmarks act as; UserTeams are that
// user's teams.
const UserID = "u007"

// UserTeams are the teams of UserID.
var UserTeams = []string{"east", "north"}

// Teams are the teams records are spread over.
var Teams = []string{"east", "west", "north", "south", "export", "key-accounts", "online", "partners"}

var (
	surnames = []string{"张", "王", "李", "赵", "刘", "陈", "杨", "黄", "周", "吴", "欧阳"}
	given    = []string{"伟", "芳", "小明", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋"}
	cities   = []string{"上海", "北京", "深圳", "杭州", "成都", "武汉", "Shanghai", "Hamburg"}
	streets  = []string{"南京西路", "深南大道", "长安街", "西湖大道", "Jungfernstieg", "天府大道"}
	stages   = []string{"lead", "qualified", "proposal", "negotiation", "won", "lost"}
	tags     = []string{"vip", "重点客户", "续约", "expo-2026", "new", "price-sensitive", "华东"}
	notes    = []string{
		"客户希望在下季度前完成合同续签，预算约 50 万，需要提供详细报价单。",
		"Called about the renewal; wants a discount on the support plan and a demo for the new team.",
		"对售后服务响应速度有意见，已升级给客服主管处理。",
		"Met at the trade fair. Interested in the export bundle, follow up in two weeks.",
	}
)

// Customers returns a JSON object {"total": n, "list": [...]} of n customer
// records, each with id, name, phone, id_card, email, owner_id, team, stage,
// contract_amount, last_contact_at, notes, tags and address{city,street}.
// 3,000 records make about 1.3 MB.
func Customers(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, 0, n*450+64)
	b = append(b, `{"total":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `,"list":[`...)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n  "...)
		b = appendCustomer(b, r, i)
	}
	return append(b, "\n]}\n"...)
}

func pick(r *rand.Rand, s []string) string { return s[r.IntN(len(s))] }

func appendCustomer(b []byte, r *rand.Rand, i int) []byte {
	last := Now.Add(-time.Duration(r.IntN(2*365*24)) * time.Hour)
	b = fmt.Appendf(b, `{"id":%d,"name":%q,"phone":"1%d%09d","id_card":"%06d%04d%02d%02d%03d%d",`,
		100000+i, pick(r, surnames)+pick(r, given), 3+r.IntN(7), r.IntN(1e9),
		110000+r.IntN(900000), 1950+r.IntN(55), 1+r.IntN(12), 1+r.IntN(28), r.IntN(1000), r.IntN(10))
	b = fmt.Appendf(b, `"email":"customer%d@example%d.cn","owner_id":"u%03d","team":%q,"stage":%q,`,
		i, r.IntN(50), 1+r.IntN(50), pick(r, Teams), pick(r, stages))
	b = fmt.Appendf(b, `"contract_amount":%d.%02d,"last_contact_at":%q,"notes":%q,"tags":[%q,%q],`,
		r.IntN(2000000), r.IntN(100), last.Format(time.RFC3339), pick(r, notes), pick(r, tags), pick(r, tags))
	return fmt.Appendf(b, `"address":{"city":%q,"street":"%s %d号"}}`, pick(r, cities), pick(r, streets), 1+r.IntN(2000))
}
