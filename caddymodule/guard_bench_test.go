package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/rules"
)

// benchList is a 50-record customer list (about 20 KB), half of it
// zhang's.
func benchList() []byte {
	type customer struct {
		ID          int    `json:"id"`
		Name        string `json:"name"`
		OwnerID     string `json:"owner_id"`
		Phone       string `json:"phone"`
		BankAccount string `json:"bank_account"`
		Notes       string `json:"notes"`
	}
	list := make([]customer, 50)
	for i := range list {
		owner := "zhang"
		if i%2 == 1 {
			owner = "li"
		}
		list[i] = customer{ID: i + 1, Name: fmt.Sprintf("Customer %d Trading Co.", i+1), OwnerID: owner,
			Phone: fmt.Sprintf("138%08d", i), BankAccount: fmt.Sprintf("62220202%010d", i),
			Notes: "Met at the trade fair; follow up about the renewal and the new price list, twice."}
	}
	b, _ := json.Marshal(map[string]any{"list": list})
	return b
}

// BenchmarkGuardServeHTTP is the whole handler logic in-process (decide,
// buffer, rewrite, audit to a file, metrics) against a fake upstream.
func BenchmarkGuardServeHTTP(b *testing.B) {
	benchGuard(b, loadTestRules(b), nil)
}

// BenchmarkGuardServeHTTPWithLimit is BenchmarkGuardServeHTTP with one
// usage limit on the route, counted on the embedded store: the limit's
// own cost without network noise (BenchmarkProxyGuardedWithLimit in
// integration/ measures it through Caddy).
func BenchmarkGuardServeHTTPWithLimit(b *testing.B) {
	src, err := os.ReadFile("testdata/rules.yaml")
	if err != nil {
		b.Fatal(err)
	}
	set, err := rules.Load("rules.yaml", append(src, `
limits:
  - {id: bulk_view, routes: [customers.list], count: records, max: 1000000000000, per: 1h, action: block}
`...))
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.OpenBolt(filepath.Join(b.TempDir(), "state.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchGuard(b, set, st)
	lim := set.Limit("bulk_view")
	if u, err := st.Count(b.Context(), lim.CounterKey("zhang", "customers.list"), lim.Per); err != nil || u.Total == 0 {
		b.Fatalf("nothing was counted: %+v, %v", u, err)
	}
}

// benchGuard serves the customer list through a guard under set, with
// the state store st (nil: none).
func benchGuard(b *testing.B, set *rules.Set, st store.Store) {
	body := benchList()
	path := filepath.Join(b.TempDir(), "audit.jsonl")
	sink, err := openAuditFile(path)
	if err != nil {
		b.Fatal(err)
	}
	defer releaseAuditFile(path)
	g, _ := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Provider: &testProvider{user: zhang}, Audit: sink, Metrics: prometheus.NewRegistry(), Store: st})
	up := jsonUpstream(string(body)).handler()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		if err := g.ServeHTTP(rec, httptest.NewRequest("GET", "/api/customers", nil), up); err != nil || rec.Code != 200 {
			b.Fatal(err, rec.Code)
		}
	}
}

// BenchmarkRulesOnly is the rules engine's share of the same work:
// Decide and Rewrite.
func BenchmarkRulesOnly(b *testing.B) {
	set := loadTestRules(b)
	body := benchList()
	user := set.UserFromRoles("zhang", []string{"sales"}, nil, true, timeZero)
	req := httptest.NewRequest("GET", "/api/customers", nil)
	h := http.Header{"Content-Type": {"application/json"}}
	var dst []byte
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		d := set.Decide(user, &rules.Request{Method: "GET", URL: req.URL, Header: req.Header})
		if buffer, _ := d.InspectResponse(200, h); !buffer {
			b.Fatal("not buffered")
		}
		out, _, err := d.Rewrite(dst[:0], 200, h, body)
		if err != nil {
			b.Fatal(err)
		}
		dst = out
	}
}
