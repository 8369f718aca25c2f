package rules

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"testing"

	"github.com/crmguard/crmguard/rules/internal/crmgen"
	"github.com/tidwall/gjson"
)

// The speed case: one generated list of 3,000 customers (~1.3 MB)
// through the whole engine with this rule file, against two baselines on the
// same document in the same run.
const benchRuleFile = `version: 1
mfa: {required: true, amr: [mfa, otp]}
roles: {sales: {}, finance: {}}
routes:
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales, finance]
    records: list
    visible: >-
      record.owner_id == user.id
      || record.team in user.attrs.teams
      || timestamp(record.last_contact_at) < now - duration("8760h")
    fields:
      phone: {mask: phone}
      id_card: {mask: id_card}
      notes: {remove: true, for: [sales]}
      email: hash
      "**.street": remove
    audit_id: id
`

var (
	benchDocument = crmgen.Customers(3000, 1)
	benchHashKey  = []byte("benchmark-hash-key")
)

// benchUser is a sales rep of two teams (notes are removed for sales).
func benchUser(s *Set) *User {
	teams := make([]any, len(crmgen.UserTeams))
	for i, t := range crmgen.UserTeams {
		teams[i] = t
	}
	return s.UserFromRoles(crmgen.UserID, []string{"sales"}, map[string]any{"teams": teams}, true, crmgen.Now)
}

// BenchmarkRewriteCRMList is the engine per request, all inside the timed
// loop: Decide, InspectResponse, and Rewrite (which builds or reuses the
// plan and rewrites the list in one pass).
func BenchmarkRewriteCRMList(b *testing.B) {
	s, err := Load("bench-rules.yaml", []byte(benchRuleFile), WithHashKey(benchHashKey))
	if err != nil {
		b.Fatal(err)
	}
	u := benchUser(s)
	req := &Request{Method: "GET", URL: &url.URL{Path: "/api/customers"}, Header: http.Header{}, Now: crmgen.Now}
	h := http.Header{"Content-Type": {"application/json"}}
	var out []byte
	var d *Decision
	b.SetBytes(int64(len(benchDocument)))
	b.ReportAllocs()
	for b.Loop() {
		d = s.Decide(u, req)
		if d.Outcome != Allow {
			b.Fatalf("decision %v: %s", d.Outcome, d.Reason)
		}
		if buf, blk := d.InspectResponse(200, h); !buf || blk != nil {
			b.Fatalf("the answer is not buffered for rewriting (block %v)", blk)
		}
		var blk *Block
		out, blk, err = d.Rewrite(out[:0], 200, h, benchDocument)
		if err != nil || blk != nil {
			b.Fatal(err, blk)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(d.Audit.RecordsOut), "visible/op")
	if d.Audit.EvalErrors != 0 || len(d.Audit.RecordIDs) != d.Audit.RecordsOut {
		b.Fatalf("audit: %d eval errors, %d ids for %d records", d.Audit.EvalErrors, len(d.Audit.RecordIDs), d.Audit.RecordsOut)
	}
	want, err := crmgen.StdlibRewrite(benchDocument, benchHashKey)
	if err != nil {
		b.Fatal(err)
	}
	var got, exp any
	if json.Unmarshal(out, &got) != nil || json.Unmarshal(want, &exp) != nil || !reflect.DeepEqual(got, exp) {
		b.Fatal("the engine's answer differs from the stdlib baseline's")
	}
}

// BenchmarkBaselineStdlibRoundTrip is the same filtering and masking with
// encoding/json and map[string]any.
func BenchmarkBaselineStdlibRoundTrip(b *testing.B) {
	b.SetBytes(int64(len(benchDocument)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := crmgen.StdlibRewrite(benchDocument, benchHashKey); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBaselineGjsonValid is one validating scan of the document.
func BenchmarkBaselineGjsonValid(b *testing.B) {
	b.SetBytes(int64(len(benchDocument)))
	b.ReportAllocs()
	for b.Loop() {
		if !gjson.ValidBytes(benchDocument) {
			b.Fatal("invalid document")
		}
	}
}
