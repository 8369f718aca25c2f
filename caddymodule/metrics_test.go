package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/crmguard/crmguard/rules"
)

func TestMetricsCountDecisionsFieldsExportsAndRewrites(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := newGuardMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := newGuardMetrics(reg)
	if err != nil {
		t.Fatalf("a second handler in the same configuration must share the metrics: %v", err)
	}
	if again.decisions != m.decisions {
		t.Fatalf("the second registration did not return the registered collectors")
	}
	// The guard registers on reg too, so it counts on the collectors m
	// holds.
	set := loadTestRules(t)
	g, err := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Provider: &testProvider{user: zhang}, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	run := func(path string, up *upstream) {
		rec := httptest.NewRecorder()
		if err := g.ServeHTTP(rec, httptest.NewRequest("GET", path, nil), up.handler()); err != nil {
			t.Fatal(err)
		}
	}
	run("/api/customers", jsonUpstream(customers))
	run("/api/customers", jsonUpstream(customers))
	run("/api/nowhere", jsonUpstream(`{}`))
	run("/files/x.csv", &upstream{header: http.Header{"Content-Type": {"text/csv"}}, body: []byte("a,b\n")})

	if got := testutil.ToFloat64(m.decisions.WithLabelValues("customers.list", "allow")); got != 2 {
		t.Errorf("allow decisions on customers.list: want 2, got %v", got)
	}
	if got := testutil.ToFloat64(m.decisions.WithLabelValues("(none)", "deny")); got != 1 {
		t.Errorf("deny decisions without a route: want 1, got %v", got)
	}
	if got := testutil.ToFloat64(m.decisions.WithLabelValues("files", "blocked")); got != 1 {
		t.Errorf("blocked answers on files: want 1, got %v", got)
	}
	// Each customers answer keeps one record: its phone masked; the
	// bank account removed.
	if got := testutil.ToFloat64(m.fields.WithLabelValues("customers.list", "mask")); got != 2 {
		t.Errorf("masked fields: want 2, got %v", got)
	}
	if got := testutil.ToFloat64(m.exportsBlocked.WithLabelValues("files")); got != 1 {
		t.Errorf("exports blocked: want 1, got %v", got)
	}
	if n := testutil.CollectAndCount(m.rewriteSeconds); n != 1 {
		t.Errorf("rewrite duration series: want 1, got %d", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", err, problems)
	}
}

func TestMetricsSeriesCacheStopsGrowingButCountingGoesOn(t *testing.T) {
	m, err := newGuardMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	const extra = 10
	for i := 0; i < maxCachedChildren+extra; i++ {
		m.observe(&AuditEvent{Route: fmt.Sprintf("r%d", i), Decision: "allow"}, false, 0)
	}
	m.observe(&AuditEvent{Route: "r0", Decision: "allow"}, false, 0)
	m.observe(&AuditEvent{Route: fmt.Sprintf("r%d", maxCachedChildren+1), Decision: "allow"}, false, 0)
	if n := len(*m.children.Load()); n != maxCachedChildren {
		t.Errorf("the cache holds %d series, want %d", n, maxCachedChildren)
	}
	if got := testutil.ToFloat64(m.decisions.WithLabelValues("r0", "allow")); got != 2 {
		t.Errorf("a cached series counted %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.decisions.WithLabelValues(fmt.Sprintf("r%d", maxCachedChildren+1), "allow")); got != 2 {
		t.Errorf("a series past the cache bound counted %v, want 2", got)
	}
}

func TestNewGuardFailsWhenItsMetricsCannotBeRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	// Another collector already owns the name, with other labels.
	reg.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crmguard_decisions_total", Help: "not ours"}, []string{"path"}))
	set := loadTestRules(t)
	g, err := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Metrics: reg})
	if err == nil {
		t.Fatalf("NewGuard registered its metrics over a conflicting collector: %v", g)
	}
	if !strings.HasPrefix(err.Error(), "caddymodule: registering metrics: ") || errors.Unwrap(err) == nil {
		t.Errorf("the error does not say what failed and wrap why: %q", err)
	}
	if !strings.Contains(err.Error(), "crmguard_decisions_total") {
		t.Errorf("the error does not name the metric: %q", err)
	}
}
