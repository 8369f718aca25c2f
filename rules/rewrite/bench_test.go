package rewrite

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/crmguard/crmguard/rules/internal/crmgen"
	"github.com/crmguard/crmguard/rules/mask"
	"github.com/tidwall/gjson"
)

// benchDoc is the generated list of 3,000 customers (~1.3 MB).
var benchDoc = crmgen.Customers(3000, 1)

var benchCutoff = crmgen.Now.Add(-8760 * time.Hour)

// benchVisible is owner-or-team-or-public-pool as a native predicate.
func benchVisible(r *Record) (bool, error) {
	if r.Key(0).Str == crmgen.UserID {
		return true, nil
	}
	if slices.Contains(crmgen.UserTeams, r.Key(1).Str) {
		return true, nil
	}
	ts, err := time.Parse(time.RFC3339, r.Key(2).Str)
	if err != nil {
		return false, err
	}
	return ts.Before(benchCutoff), nil
}

func benchPlan() *Plan {
	return &Plan{
		Records: MustParsePath("list"),
		Keys:    []Path{MustParsePath("owner_id"), MustParsePath("team"), MustParsePath("last_contact_at")},
		Visible: benchVisible,
		Fields: []Field{
			{Path: MustParsePath("phone"), Action: Mask, Mask: mask.Phone},
			{Path: MustParsePath("id_card"), Action: Mask, Mask: mask.IDCard},
			{Path: MustParsePath("notes"), Action: Remove},
			{Path: MustParsePath("email"), Action: Hash},
			{Path: MustParsePath("**.street"), Action: Remove},
		},
		HashKey: []byte("benchmark-hash-key"),
		AuditID: MustParsePath("id"),
	}
}

func BenchmarkRewriteCRMList(b *testing.B) {
	p := benchPlan()
	if err := p.Compile(); err != nil {
		b.Fatal(err)
	}
	var out []byte
	b.SetBytes(int64(len(benchDoc)))
	b.ReportAllocs()
	for b.Loop() {
		var st Stats
		var err error
		out, err = p.Rewrite(out[:0], benchDoc, &st)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	var st Stats
	out, _ = p.Rewrite(nil, benchDoc, &st)
	b.ReportMetric(float64(st.RecordsOut), "visible/op")
	if st.RecordsOut == 0 || st.RecordsOut == st.RecordsIn || len(st.IDs) != st.RecordsOut {
		b.Fatalf("visible kept %d of %d records (%d ids): the benchmark does not filter", st.RecordsOut, st.RecordsIn, len(st.IDs))
	}
	want, err := crmgen.StdlibRewrite(benchDoc, p.HashKey)
	if err != nil {
		b.Fatal(err)
	}
	var got, exp any
	if json.Unmarshal(out, &got) != nil || json.Unmarshal(want, &exp) != nil || !reflect.DeepEqual(got, exp) {
		b.Fatal("the rewrite differs from the stdlib baseline's")
	}
}

func BenchmarkBaselineStdlibRoundTrip(b *testing.B) {
	b.SetBytes(int64(len(benchDoc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := crmgen.StdlibRewrite(benchDoc, []byte("benchmark-hash-key")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBaselineGjsonValid(b *testing.B) {
	b.SetBytes(int64(len(benchDoc)))
	b.ReportAllocs()
	for b.Loop() {
		if !gjson.ValidBytes(benchDoc) {
			b.Fatal("invalid")
		}
	}
}

// smallListDoc is a list of 50 flat customers (about 13 KB), the shape of a
// CRM's list page: where the per-field cost of the scan shows most.
var smallListDoc = func() []byte {
	type customer struct {
		ID          int    `json:"id"`
		Name        string `json:"name"`
		OwnerID     string `json:"owner_id"`
		Team        string `json:"team"`
		Phone       string `json:"phone"`
		IDCard      string `json:"id_card"`
		BankAccount string `json:"bank_account"`
		Stage       string `json:"stage"`
		Notes       string `json:"notes"`
	}
	owners := []string{"zhang", "li", "chen"}
	list := make([]customer, 50)
	for i := range list {
		list[i] = customer{ID: i + 1, Name: fmt.Sprintf("Customer %d Trading Co.", i+1), OwnerID: owners[i%3], Team: "east",
			Phone: fmt.Sprintf("138%08d", 10000000+i), IDCard: fmt.Sprintf("1101011990%08d", 10000000+i),
			BankAccount: fmt.Sprintf("62220202%010d", 1000000000+i), Stage: "negotiation",
			Notes: "Met at the trade fair; follow up about the renewal and the new price list."}
		if i%2 == 1 {
			list[i].Team = "west"
		}
	}
	doc, err := json.Marshal(map[string]any{"list": list, "total": len(list)})
	if err != nil {
		panic(err)
	}
	return doc
}()

// BenchmarkRewriteSmallList rewrites a 50-record page the way the proxy
// does per request: owner-or-team visibility, two masks, two removes.
func BenchmarkRewriteSmallList(b *testing.B) {
	p := &Plan{
		Records: MustParsePath("list"),
		Keys:    paths("owner_id", "team"),
		Visible: func(r *Record) (bool, error) {
			if s, ok := r.Str(0); ok && s == "zhang" {
				return true, nil
			}
			s, ok := r.Str(1)
			return ok && s == "east", nil
		},
		Fields:  []Field{mk("phone", mask.Phone), mk("id_card", mask.IDCard), rm("bank_account"), rm("notes")},
		AuditID: MustParsePath("id"),
	}
	if err := p.Compile(); err != nil {
		b.Fatal(err)
	}
	var out []byte
	b.SetBytes(int64(len(smallListDoc)))
	b.ReportAllocs()
	for b.Loop() {
		var st Stats
		var err error
		out, err = p.Rewrite(out[:0], smallListDoc, &st)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	var st Stats
	out, _ = p.Rewrite(nil, smallListDoc, &st)
	if st.RecordsOut == 0 || st.RecordsOut == st.RecordsIn || bytes.Contains(out, []byte("13810000000")) || bytes.Contains(out, []byte("notes")) {
		b.Fatalf("kept %d of %d records: the benchmark does not filter, mask and remove", st.RecordsOut, st.RecordsIn)
	}
}
