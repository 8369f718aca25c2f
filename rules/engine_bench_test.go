package rules

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/crmguard/crmguard/rules/internal/crmgen"
)

func benchEngine(b *testing.B, s *Set) {
	teams := make([]any, len(crmgen.UserTeams))
	for i, t := range crmgen.UserTeams {
		teams[i] = t
	}
	u := s.UserFromRoles(crmgen.UserID, []string{"sales"}, map[string]any{"teams": teams}, true, crmgen.Now)
	r := request("GET", "/api/customers")
	r.Now = crmgen.Now
	h := http.Header{"Content-Type": {"application/json"}}
	var out []byte
	b.SetBytes(int64(len(benchDocument)))
	b.ReportAllocs()
	var d *Decision
	for b.Loop() {
		d = s.Decide(u, r)
		if buf, blk := d.InspectResponse(200, h); !buf || blk != nil {
			b.Fatal("not buffered")
		}
		var err error
		var blk *Block
		out, blk, err = d.Rewrite(out[:0], 200, h, benchDocument)
		if err != nil || blk != nil {
			b.Fatal(err, blk)
		}
	}
	b.StopTimer()
	if d.Audit.RecordsOut == 0 || d.Audit.RecordsOut == d.Audit.RecordsIn || d.Audit.EvalErrors != 0 {
		b.Fatalf("the benchmark does not filter as meant: %d of %d records, %d eval errors", d.Audit.RecordsOut, d.Audit.RecordsIn, d.Audit.EvalErrors)
	}
	b.ReportMetric(float64(d.Audit.RecordsOut), "visible/op")
}

// BenchmarkEngineRewriteCRMListCEL is BenchmarkRewriteCRMList (bench_test.go)
// with every record condition evaluated by CEL (the general fallback), to
// show what the native predicates save; run both together.
func BenchmarkEngineRewriteCRMListCEL(b *testing.B) {
	benchEngine(b, celOnly(b, benchRuleFile))
}

// celOnly loads a rule file with every record condition running in CEL.
func celOnly(t testing.TB, src string) *Set {
	t.Helper()
	s := mustLoad(t, src)
	for _, r := range s.routes {
		if r.visible != nil {
			r.visible = r.visible.CELOnly()
		}
		for _, f := range append(r.fields[:len(r.fields):len(r.fields)], r.answer...) {
			if f.when != nil {
				f.when = f.when.CELOnly()
			}
			if f.unless != nil {
				f.unless = f.unless.CELOnly()
			}
		}
	}
	return s
}

// BenchmarkDecide is one decision on the example rule file.
func BenchmarkDecide(b *testing.B) {
	s := loadExample(b)
	u := s.UserFromRoles("zhang", []string{"sales"}, map[string]any{"teams": []any{"east"}}, true, shanghaiWorkday)
	r := request("GET", "/api/customers/42")
	b.ReportAllocs()
	for b.Loop() {
		if d := s.Decide(u, r); d.Outcome != Allow {
			b.Fatal(fmt.Sprint(d.Reason))
		}
	}
}

// BenchmarkEngineSingleRecord is a small answer (one record) through the
// whole engine: the fixed cost per request of building the rewrite plan.
func BenchmarkEngineSingleRecord(b *testing.B) {
	s := loadExample(b)
	u := s.UserFromRoles("zhang", []string{"sales"}, map[string]any{"teams": []any{"east"}}, true, shanghaiWorkday)
	r := request("GET", "/api/customers/42")
	doc := []byte(`{"id":42,"name":"上海远航","phone":"13812345678","stage":"won","owner_id":"zhang","team":"east","id_card":"110101199003071234","notes":"x"}`)
	h := http.Header{"Content-Type": {"application/json"}}
	var out []byte
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		d := s.Decide(u, r)
		var err error
		var blk *Block
		out, blk, err = d.Rewrite(out[:0], 200, h, doc)
		if err != nil || blk != nil {
			b.Fatal(err, blk)
		}
	}
}
