package caddymodule

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/notify"
	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/caddymodule/store/redistest"
	"github.com/crmguard/crmguard/rules"
)

// limitRules are the routes the limit tests put limits on; the limits
// follow.
const limitRules = `version: 1
roles:
  sales: {}
  sales_manager: {inherits: [sales]}
  compliance: {}
mfa: {required: false}
routes:
  - id: customers.list
    match: {methods: [GET, HEAD], path: /api/customers}
    allow: [sales]
    records: list
    visible: record.owner != "hidden"
    fields:
      phone: {mask: phone}
    audit_id: id
  - id: customers.export
    match: {methods: [GET], path: /api/customers/export}
    allow: [sales]
    export: {approval: false}
  - id: customers.get
    match: {methods: [GET], path: "/api/customers/{id}"}
    allow: [sales]
    record: "@this"
  - id: admin.settings
    match: {path: /api/settings}
    allow: [compliance]
limits:
`

// limitProvider is a signed-in user whose MFA and sign-in time a test
// changes; Challenge answers like an API client's challenge.
type limitProvider struct {
	mu       sync.Mutex
	id       string
	roles    []string
	mfa      bool
	authTime time.Time
}

func (p *limitProvider) Identify(*http.Request) (*authn.Identity, error) {
	return &authn.Identity{Subject: p.id}, nil
}

func (p *limitProvider) Challenge(w http.ResponseWriter, r *http.Request, need authn.Need) error {
	authn.WriteChallenge(w, r, need)
	return nil
}

func (p *limitProvider) Handle(http.ResponseWriter, *http.Request) (bool, error) { return false, nil }

func (p *limitProvider) ResolveUser(set *rules.Set, id *authn.Identity) (*rules.User, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return set.UserFromRoles(id.Subject, p.roles, nil, p.mfa, p.authTime), nil
}

// signIn makes the user sign in again at the harness clock's time.
func (p *limitProvider) signIn(mfa bool, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mfa, p.authTime = mfa, at
}

// limitHarness is a guard with limits on a real embedded store, a
// webhook receiver and a metrics registry, all on one clock.
type limitHarness struct {
	t      *testing.T
	g      *Guard
	sink   *memSink
	clock  *wfClock // the guard's and the store's (workflow_harness_test.go)
	st     store.Store
	reg    *prometheus.Registry
	user   *limitProvider
	events chan notify.Event

	mu        sync.Mutex
	upstreams int // requests that reached the CRM
}

type limitSetup struct {
	shadow  bool
	noStore bool
	store   store.Store // instead of a new embedded one
	roles   []string
	maxBody int64 // the guard's max_body (0: the default)
}

func newLimitHarness(t *testing.T, limits string, s limitSetup) *limitHarness {
	t.Helper()
	set, err := rules.Load("rules.yaml", []byte(limitRules+limits))
	if err != nil {
		t.Fatalf("the rules do not load: %v", err)
	}
	h := &limitHarness{t: t, sink: &memSink{}, clock: &wfClock{now: time.Date(2026, 11, 18, 10, 0, 0, 0, time.UTC)},
		reg: prometheus.NewRegistry(), events: make(chan notify.Event, 100)}
	roles := s.roles
	if roles == nil {
		roles = []string{"sales"}
	}
	h.user = &limitProvider{id: "zhang", roles: roles, mfa: true, authTime: h.clock.Now().Add(-time.Hour)}
	switch {
	case s.store != nil:
		h.st = s.store
	case !s.noStore:
		b, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"), store.Options{Now: h.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		h.st = b
	}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev notify.Event
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			t.Errorf("the webhook body is not an event: %v", err)
		}
		h.events <- ev
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)
	n, err := notify.New(notify.Config{Webhooks: []notify.Webhook{{URL: recv.URL}}}, notify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	opt := GuardOptions{Rules: func() *rules.Set { return set }, Provider: h.user, Audit: h.sink, Metrics: h.reg,
		Now: h.clock.Now, Store: h.st, Notifier: n, MaxBody: s.maxBody}
	if s.shadow {
		m := rules.Shadow
		opt.Mode = &m
	}
	if h.g, err = NewGuard(opt); err != nil {
		t.Fatal(err)
	}
	return h
}

// crm answers a page of customers: ?n= records named cust-<offset+i>,
// with a phone; ?hidden= more that `visible` hides.
func (h *limitHarness) crm() caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		h.mu.Lock()
		h.upstreams++
		h.mu.Unlock()
		q := r.URL.Query()
		n, _ := strconv.Atoi(q.Get("n"))
		off, _ := strconv.Atoi(q.Get("offset"))
		hidden, _ := strconv.Atoi(q.Get("hidden"))
		pad, _ := strconv.Atoi(q.Get("pad"))
		var recs []map[string]any
		for i := 0; i < n; i++ {
			rec := map[string]any{"id": off + i, "name": fmt.Sprintf("cust-%d", off+i), "phone": "13812345678", "owner": "zhang"}
			if pad > 0 {
				rec["notes"] = strings.Repeat("n", pad)
			}
			recs = append(recs, rec)
		}
		for i := 0; i < hidden; i++ {
			recs = append(recs, map[string]any{"id": 9000 + i, "name": fmt.Sprintf("secret-%d", i), "owner": "hidden"})
		}
		var body []byte
		if strings.HasPrefix(r.URL.Path, "/api/customers/") && r.URL.Path != "/api/customers/export" {
			body, _ = json.Marshal(map[string]any{"id": 1, "name": "cust-1"})
		} else {
			body, _ = json.Marshal(map[string]any{"list": recs, "total": len(recs)})
		}
		w.Header().Set("Content-Type", "application/json")
		if q.Get("gzip") == "1" {
			// A CRM that compresses whatever it was asked for.
			var zb bytes.Buffer
			zw := gzip.NewWriter(&zb)
			_, _ = zw.Write(body)
			_ = zw.Close()
			body = zb.Bytes()
			w.Header().Set("Content-Encoding", "gzip")
		}
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
		return nil
	})
}

// do sends a request and returns the answer and its audit event.
func (h *limitHarness) do(method, target string, header ...string) (*httptest.ResponseRecorder, AuditEvent) {
	h.t.Helper()
	req := httptest.NewRequest(method, "http://crm.test"+target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	h.sink.mu.Lock()
	before := len(h.sink.events)
	h.sink.mu.Unlock()
	rec := httptest.NewRecorder()
	if err := h.g.ServeHTTP(rec, req, h.crm()); err != nil {
		h.t.Fatalf("%s %s: %v", method, target, err)
	}
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	if len(h.sink.events) != before+1 {
		h.t.Fatalf("%s %s wrote %d audit events, want 1", method, target, len(h.sink.events)-before)
	}
	return rec, h.sink.events[before]
}

// count is the window's total under the limit for the harness user.
func (h *limitHarness) count(set *rules.Set, id, route string) int64 {
	h.t.Helper()
	lim := set.Limit(id)
	u, err := h.st.Count(h.t.Context(), lim.CounterKey("zhang", route), lim.Per)
	if err != nil {
		h.t.Fatal(err)
	}
	return u.Total
}

// hits is crmguard_limit_hits_total for a limit and action.
func (h *limitHarness) hits(limit, action string) float64 {
	h.t.Helper()
	m, err := newGuardMetrics(h.reg) // the registered collectors
	if err != nil {
		h.t.Fatal(err)
	}
	return testutil.ToFloat64(m.limitHits.WithLabelValues(limit, action))
}

// event waits for the next notification.
func (h *limitHarness) event() notify.Event {
	h.t.Helper()
	select {
	case ev := <-h.events:
		return ev
	case <-time.After(10 * time.Second):
		h.t.Fatal("no notification arrived")
	}
	return notify.Event{}
}

// noEvent checks that no notification is queued: the webhook posts in
// order, so a marker notified after the request arrives first when the
// request sent none.
func (h *limitHarness) noEvent() {
	h.t.Helper()
	h.g.opt.Notifier.Notify(notify.Event{Type: "marker"})
	if ev := h.event(); ev.Type != "marker" {
		h.t.Errorf("unexpected notification %s: %s", ev.Type, ev.Text)
	}
}

func (h *limitHarness) upstreamCalls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.upstreams
}

const bulkView = `  - {id: bulk_view, routes: ["customers.*"], count: records, max: 500, per: 10m, action: block, notify: [compliance]}
`

func TestPagingPastABlockLimitIsRefusedWholeAndNotCharged(t *testing.T) {
	h := newLimitHarness(t, bulkView, limitSetup{})
	set := h.g.opt.Rules()
	for i, want := range []int64{200, 400} {
		rec, ev := h.do("GET", fmt.Sprintf("/api/customers?n=200&offset=%d&hidden=5", i*200))
		if rec.Code != 200 || ev.RecordsOut != 200 || len(ev.RecordIDs) != 200 || len(ev.Limits) != 0 {
			t.Fatalf("page %d: status %d, %d records out (%d ids), hits %v", i+1, rec.Code, ev.RecordsOut, len(ev.RecordIDs), ev.Limits)
		}
		if got := h.count(set, "bulk_view", ""); got != want {
			t.Fatalf("after page %d the window holds %d, want %d (only records sent count)", i+1, got, want)
		}
		h.clock.advance(time.Minute)
	}
	rec, ev := h.do("GET", "/api/customers?n=200&offset=400")
	t.Run("the third page is refused with 429 and Retry-After", func(t *testing.T) {
		if rec.Code != http.StatusTooManyRequests {
			t.Fatalf("status %d, want 429: %s", rec.Code, rec.Body)
		}
		// The first page (200) expires 10m after it was sent, 8m from now.
		if got := rec.Header().Get("Retry-After"); got != "480" {
			t.Errorf("Retry-After %q, want 480", got)
		}
	})
	t.Run("nothing of the records is sent", func(t *testing.T) {
		body := rec.Body.String()
		if strings.Contains(body, "cust-") || strings.Contains(body, "138") {
			t.Errorf("the refusal leaks records: %s", body)
		}
		var got map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("an API client gets JSON: %v: %s", err, body)
		}
		if got["error"] != "too_many_requests" || got["rule"] != "bulk_view" || !strings.Contains(got["reason"], "usage limit") {
			t.Errorf("refusal %v", got)
		}
		if rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("refusal headers %v", rec.Header())
		}
	})
	t.Run("the audit event names the limit, the count and the window", func(t *testing.T) {
		want := LimitHit{Limit: "bulk_view", Counts: "records", Action: "block", Count: 400, Adding: 200, Max: 500, Window: "10m0s", Refused: true, RetryAfter: 480}
		if len(ev.Limits) != 1 || ev.Limits[0] != want {
			t.Errorf("hits %+v, want %+v", ev.Limits, want)
		}
		if ev.Decision != "limited" || ev.Status != 429 || ev.User != "zhang" || !strings.Contains(ev.Reason, "usage limit bulk_view: 400 records in the last 10m0s, this request 200 more, max 500") {
			t.Errorf("event decision %q status %d user %q reason %q", ev.Decision, ev.Status, ev.User, ev.Reason)
		}
	})
	t.Run("the audit event says the client received no records", func(t *testing.T) {
		if ev.RecordsIn != 200 || ev.RecordsOut != 0 || len(ev.RecordIDs) != 0 {
			t.Errorf("records_in %d, records_out %d, record_ids %v: want 200, 0 and none", ev.RecordsIn, ev.RecordsOut, ev.RecordIDs)
		}
	})
	t.Run("the refused records are not charged", func(t *testing.T) {
		if got := h.count(set, "bulk_view", ""); got != 400 {
			t.Errorf("the window holds %d, want 400", got)
		}
	})
	t.Run("the hit is counted on the metric without a user label", func(t *testing.T) {
		if got := h.hits("bulk_view", "block"); got != 1 {
			t.Errorf("crmguard_limit_hits_total{bulk_view,block} = %v, want 1", got)
		}
		families, err := h.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, f := range families {
			if f.GetName() != "crmguard_limit_hits_total" {
				continue
			}
			for _, m := range f.GetMetric() {
				found = true
				var names []string
				for _, l := range m.GetLabel() {
					names = append(names, l.GetName())
				}
				if strings.Join(names, ",") != "action,limit" {
					t.Errorf("crmguard_limit_hits_total has labels %v, want action and limit only", names)
				}
			}
		}
		if !found {
			t.Error("crmguard_limit_hits_total is not registered")
		}
	})
	t.Run("the hit is notified to the limit's roles", func(t *testing.T) {
		n := h.event()
		if n.Type != notify.LimitHit || n.ID != "bulk_view" || n.Data["user"] != "zhang" || n.Data["count"] != "400" || n.Data["window"] != "10m0s" ||
			n.Data["refused"] != "true" || len(n.To.Roles) != 1 || n.To.Roles[0] != "compliance" || !strings.Contains(n.Text, "zhang hit usage limit bulk_view") {
			t.Errorf("notification %+v", n)
		}
		if strings.Contains(n.Text, "cust-") {
			t.Errorf("the notification names customers: %s", n.Text)
		}
	})
	t.Run("a smaller page that fits still passes", func(t *testing.T) {
		rec, ev := h.do("GET", "/api/customers?n=100&offset=400")
		if rec.Code != 200 || ev.RecordsOut != 100 || h.count(set, "bulk_view", "") != 500 {
			t.Errorf("status %d, %d records, window %d", rec.Code, ev.RecordsOut, h.count(set, "bulk_view", ""))
		}
	})
	t.Run("an answer with no records passes a full window", func(t *testing.T) {
		rec, _ := h.do("GET", "/api/customers?n=0&hidden=3")
		if rec.Code != 200 {
			t.Errorf("status %d: %s", rec.Code, rec.Body)
		}
	})
	t.Run("a single record on another route of the limit is refused too", func(t *testing.T) {
		rec, ev := h.do("GET", "/api/customers/1")
		if rec.Code != 429 || strings.Contains(rec.Body.String(), "cust-1") || len(ev.Limits) != 1 {
			t.Errorf("status %d, body %s, hits %v", rec.Code, rec.Body, ev.Limits)
		}
	})
	t.Run("a second before the first page expires the window is still full", func(t *testing.T) {
		h.clock.advance(8*time.Minute - time.Second)
		rec, _ := h.do("GET", "/api/customers?n=200&offset=400")
		if rec.Code != 429 || rec.Header().Get("Retry-After") != "1" {
			t.Errorf("status %d, Retry-After %q; want 429 and 1", rec.Code, rec.Header().Get("Retry-After"))
		}
	})
	t.Run("the window allows again once the first page has expired", func(t *testing.T) {
		h.clock.advance(time.Second)
		rec, _ := h.do("GET", "/api/customers?n=200&offset=400")
		if rec.Code != 200 || h.count(set, "bulk_view", "") != 500 {
			t.Errorf("status %d, window %d, want 200 and 500", rec.Code, h.count(set, "bulk_view", ""))
		}
	})
}

func TestALargeAnswerPastABlockLimitIsRefusedWhole(t *testing.T) {
	// Issue 11: an answer that would take the count past max is refused
	// whole, with nothing of its records sent, whatever its size up to
	// max_body. An answer of a few MiB must not be sent in part and cut
	// where the window fills: the client would get the records up to
	// max, and a cut instead of a 429 saying when to try again.
	h := newLimitHarness(t, bulkView, limitSetup{})
	set := h.g.opt.Rules()
	if rec, _ := h.do("GET", "/api/customers?n=200"); rec.Code != 200 {
		t.Fatalf("the first page: status %d", rec.Code)
	}
	var rec *httptest.ResponseRecorder
	var ev AuditEvent
	func() {
		defer func() {
			if p := recover(); p != nil {
				// A handler that aborts has sent part of the answer.
				t.Fatalf("the answer was cut (%v) instead of refused whole: part of it was sent", p)
			}
		}()
		rec, ev = h.do("GET", "/api/customers?n=400&offset=200&pad=6000") // about 2.5 MiB
	}()
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "600" {
		t.Fatalf("status %d, Retry-After %q, decision %s; want 429 and 600", rec.Code, rec.Header().Get("Retry-After"), ev.Decision)
	}
	if strings.Contains(rec.Body.String(), "cust-") || ev.RecordsOut != 0 {
		t.Errorf("records of the refused answer reached the client (%d audited): %.200s", ev.RecordsOut, rec.Body)
	}
	if got := h.count(set, "bulk_view", ""); got != 200 {
		t.Errorf("the window holds %d, want 200: the refused answer was charged", got)
	}
}

func TestABlockRefusalIsAPageForBrowsers(t *testing.T) {
	h := newLimitHarness(t, bulkView, limitSetup{})
	h.do("GET", "/api/customers?n=450")
	rec, _ := h.do("GET", "/api/customers?n=60", "Accept", "text/html,application/xhtml+xml")
	body := rec.Body.String()
	if rec.Code != 429 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") || rec.Header().Get("Retry-After") != "600" {
		t.Fatalf("status %d, headers %v", rec.Code, rec.Header())
	}
	if !strings.Contains(body, "Try again in about 10 minutes") || !strings.Contains(body, "<code>bulk_view</code>") || strings.Contains(body, "cust-") {
		t.Errorf("page %s", body)
	}
}

func TestAnAnswerLargerThanTheLimitNeverFits(t *testing.T) {
	h := newLimitHarness(t, bulkView, limitSetup{})
	rec, ev := h.do("GET", "/api/customers?n=501")
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "" || !strings.Contains(ev.Reason, "never fits") || strings.Contains(rec.Body.String(), "cust-") {
		t.Errorf("status %d, Retry-After %q, reason %q", rec.Code, rec.Header().Get("Retry-After"), ev.Reason)
	}
	if ev.Limits[0].RetryAfter != 0 || h.count(h.g.opt.Rules(), "bulk_view", "") != 0 {
		t.Errorf("hit %+v, window %d", ev.Limits[0], h.count(h.g.opt.Rules(), "bulk_view", ""))
	}
}

func TestRecordsLimitsCountWhatTheClientReceives(t *testing.T) {
	cases := []struct {
		name, method, target string
		header               []string
		want                 int64
	}{
		{"hidden records are not counted", "GET", "/api/customers?n=3&hidden=40", nil, 3},
		{"a HEAD request sends no records", "HEAD", "/api/customers?n=30", nil, 0},
		{"a single record counts one", "GET", "/api/customers/1", nil, 1},
		{"a compressed answer is counted like a plain one", "GET", "/api/customers?n=7&gzip=1", []string{"Accept-Encoding", "gzip"}, 7},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newLimitHarness(t, bulkView, limitSetup{})
			rec, _ := h.do(c.method, c.target, c.header...)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if got := h.count(h.g.opt.Rules(), "bulk_view", ""); got != c.want {
				t.Errorf("the window holds %d, want %d", got, c.want)
			}
		})
	}
}

func TestRequestLimitsAreDecidedBeforeTheRequestGoesUpstream(t *testing.T) {
	h := newLimitHarness(t, `  - {id: lookups, routes: [customers.get], count: requests, max: 2, per: 1m, key: user+route, action: block}
  - {id: exports, routes: ["customers.*"], count: exports, max: 1, per: 1h, action: block}
`, limitSetup{})
	for i := 0; i < 2; i++ {
		if rec, _ := h.do("GET", "/api/customers/1"); rec.Code != 200 {
			t.Fatalf("lookup %d: status %d", i+1, rec.Code)
		}
	}
	calls := h.upstreamCalls()
	rec, ev := h.do("GET", "/api/customers/2")
	if rec.Code != 429 || h.upstreamCalls() != calls || ev.Limits[0].Limit != "lookups" || rec.Header().Get("Retry-After") != "60" {
		t.Errorf("third lookup: status %d, upstream called %v, hits %v, Retry-After %q", rec.Code, h.upstreamCalls() != calls, ev.Limits, rec.Header().Get("Retry-After"))
	}
	t.Run("an export counts under the exports limit, a list does not", func(t *testing.T) {
		if rec, _ := h.do("GET", "/api/customers?n=5"); rec.Code != 200 {
			t.Fatalf("list: %d", rec.Code)
		}
		if rec, _ := h.do("GET", "/api/customers/export?n=5"); rec.Code != 200 {
			t.Fatalf("first export: %d", rec.Code)
		}
		calls := h.upstreamCalls()
		rec, ev := h.do("GET", "/api/customers/export?n=5")
		if rec.Code != 429 || h.upstreamCalls() != calls || ev.Limits[0].Limit != "exports" {
			t.Errorf("second export: status %d, hits %v", rec.Code, ev.Limits)
		}
	})
}

func TestAUserAndRouteKeyCountsEachRouteApart(t *testing.T) {
	h := newLimitHarness(t, `  - {id: per_route, routes: ["customers.*"], count: records, max: 10, per: 10m, key: user+route, action: block}
  - {id: per_user, routes: ["customers.*"], count: records, max: 100, per: 10m, action: block}
`, limitSetup{})
	set := h.g.opt.Rules()
	if rec, _ := h.do("GET", "/api/customers?n=10"); rec.Code != 200 {
		t.Fatalf("a full page: status %d", rec.Code)
	}
	cases := []struct {
		name, target string
		want         int
	}{
		{"the full route refuses another record", "/api/customers?n=1", 429},
		{"another route of the same limit has its own window", "/api/customers/1", 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if rec, _ := h.do("GET", c.target); rec.Code != c.want {
				t.Errorf("status %d, want %d", rec.Code, c.want)
			}
		})
	}
	t.Run("a user key counts both routes together", func(t *testing.T) {
		list, get, user := h.count(set, "per_route", "customers.list"), h.count(set, "per_route", "customers.get"), h.count(set, "per_user", "")
		if list != 10 || get != 1 || user != 11 {
			t.Errorf("windows: list %d, get %d, per user %d; want 10, 1 and 11", list, get, user)
		}
	})
}

func TestAnAnswerOneLimitRefusesIsChargedToNoLimit(t *testing.T) {
	cases := []struct {
		name, limits, refusing string
	}{
		{"the later limit in the file refuses", `  - {id: hourly, count: records, max: 100, per: 1h, action: block}
  - {id: minute, routes: [customers.list], count: records, max: 30, per: 1m, action: block}
  - {id: watch, count: records, max: 1000, per: 1h, action: alert}
`, "minute"},
		{"the earlier limit in the file refuses", `  - {id: minute, routes: [customers.list], count: records, max: 30, per: 1m, action: block}
  - {id: hourly, count: records, max: 100, per: 1h, action: step_up}
  - {id: watch, count: records, max: 1000, per: 1h, action: alert}
`, "minute"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newLimitHarness(t, c.limits, limitSetup{})
			set := h.g.opt.Rules()
			if rec, _ := h.do("GET", "/api/customers?n=20"); rec.Code != 200 {
				t.Fatalf("the first page: status %d", rec.Code)
			}
			rec, ev := h.do("GET", "/api/customers?n=20")
			if rec.Code != 429 || len(ev.Limits) != 1 || ev.Limits[0].Limit != c.refusing {
				t.Fatalf("the second page: status %d, hits %+v; want 429 by %s", rec.Code, ev.Limits, c.refusing)
			}
			for _, id := range []string{"hourly", "minute", "watch"} {
				if got := h.count(set, id, ""); got != 20 {
					t.Errorf("%s holds %d, want 20: the refused page was charged", id, got)
				}
			}
		})
	}
}

func TestADenialsLimitStopsAUserWhoKeepsBeingRefused(t *testing.T) {
	h := newLimitHarness(t, `  - {id: probing, count: denials, max: 3, per: 5m, action: block}
`, limitSetup{})
	for i := 0; i < 3; i++ {
		if rec, _ := h.do("GET", "/api/settings"); rec.Code != 403 {
			t.Fatalf("denial %d: status %d", i+1, rec.Code)
		}
	}
	if rec, _ := h.do("GET", "/nowhere"); rec.Code != 429 {
		t.Errorf("a request no route matches: status %d, want 429 (the limit covers every request)", rec.Code)
	}
	calls := h.upstreamCalls()
	rec, ev := h.do("GET", "/api/customers?n=1")
	if rec.Code != 429 || h.upstreamCalls() != calls || len(ev.Limits) != 1 || ev.Limits[0].Count != 3 {
		t.Errorf("an allowed request after 3 denials: status %d, upstream called %v, hits %+v", rec.Code, h.upstreamCalls() != calls, ev.Limits)
	}
	t.Run("its own refusals are not denials", func(t *testing.T) {
		if got := h.count(h.g.opt.Rules(), "probing", ""); got != 3 {
			t.Errorf("the window holds %d denials, want 3", got)
		}
	})
	t.Run("the window allows again once the denials expire", func(t *testing.T) {
		h.clock.advance(5 * time.Minute)
		if rec, _ := h.do("GET", "/api/customers?n=1"); rec.Code != 200 {
			t.Errorf("status %d", rec.Code)
		}
	})
}

func TestAnAlertPassesAndRaisesOneAlertWhenTheWindowGoesPastMax(t *testing.T) {
	h := newLimitHarness(t, `  - {id: off_hours, count: records, max: 10, per: 1h, action: alert, notify: [compliance]}
`, limitSetup{})
	rec, ev := h.do("GET", "/api/customers?n=8")
	if rec.Code != 200 || len(ev.Limits) != 0 {
		t.Fatalf("under max: status %d, hits %v", rec.Code, ev.Limits)
	}
	h.noEvent()
	rec, ev = h.do("GET", "/api/customers?n=5")
	if rec.Code != 200 || ev.RecordsOut != 5 || !strings.Contains(rec.Body.String(), "cust-4") {
		t.Fatalf("past max: status %d, %d records", rec.Code, ev.RecordsOut)
	}
	want := LimitHit{Limit: "off_hours", Counts: "records", Action: "alert", Count: 13, Adding: 5, Max: 10, Window: "1h0m0s"}
	if len(ev.Limits) != 1 || ev.Limits[0] != want || ev.Decision != "allow" {
		t.Errorf("hits %+v, want %+v (decision %s)", ev.Limits, want, ev.Decision)
	}
	if n := h.event(); n.Type != notify.LimitHit || n.Data["action"] != "alert" || n.Data["refused"] != "false" || n.Data["count"] != "13" {
		t.Errorf("notification %+v", n)
	}
	rec, ev = h.do("GET", "/api/customers?n=5")
	if rec.Code != 200 || len(ev.Limits) != 0 {
		t.Errorf("still past max: status %d, hits %v (alerted again)", rec.Code, ev.Limits)
	}
	h.noEvent()
	if got := h.hits("off_hours", "alert"); got != 1 {
		t.Errorf("crmguard_limit_hits_total{off_hours,alert} = %v, want 1", got)
	}
}

func TestStepUpRefusesUntilAFreshMFASignIn(t *testing.T) {
	h := newLimitHarness(t, `  - {id: deep_read, routes: [customers.list], count: records, max: 50, per: 10m, action: step_up}
`, limitSetup{})
	set := h.g.opt.Rules()
	if rec, _ := h.do("GET", "/api/customers?n=40"); rec.Code != 200 {
		t.Fatal(rec.Code)
	}
	h.clock.advance(time.Minute)
	rec, ev := h.do("GET", "/api/customers?n=20")
	t.Run("the answer past max is refused with a challenge for a fresh MFA sign-in", func(t *testing.T) {
		if rec.Code != 401 || strings.Contains(rec.Body.String(), "cust-") {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if ch := rec.Header().Get("WWW-Authenticate"); !strings.Contains(ch, "max_age=1") {
			t.Errorf("challenge %q does not ask for a fresh sign-in", ch)
		}
		if ev.Decision != "step_up" || len(ev.Limits) != 1 || ev.Limits[0].Action != "step_up" || !ev.Limits[0].Refused || !strings.Contains(ev.Reason, "usage limit deep_read") {
			t.Errorf("event %s %q %+v", ev.Decision, ev.Reason, ev.Limits)
		}
	})
	t.Run("later requests are refused too, even small ones", func(t *testing.T) {
		h.clock.advance(time.Minute)
		calls := h.upstreamCalls()
		rec, ev := h.do("GET", "/api/customers?n=1")
		if rec.Code != 401 || h.upstreamCalls() != calls || len(ev.Limits) != 1 {
			t.Errorf("status %d, upstream called %v, hits %v", rec.Code, h.upstreamCalls() != calls, ev.Limits)
		}
		if ch := rec.Header().Get("WWW-Authenticate"); !strings.Contains(ch, "max_age=60") {
			t.Errorf("challenge %q: the sign-in must be newer than the hit a minute ago", ch)
		}
	})
	t.Run("a new sign-in without MFA does not lift it", func(t *testing.T) {
		h.user.signIn(false, h.clock.Now())
		if rec, _ := h.do("GET", "/api/customers?n=1"); rec.Code != 401 {
			t.Errorf("status %d", rec.Code)
		}
	})
	t.Run("a sign-in from before the hit does not lift it", func(t *testing.T) {
		h.user.signIn(true, h.clock.Now().Add(-90*time.Second))
		if rec, _ := h.do("GET", "/api/customers?n=1"); rec.Code != 401 {
			t.Errorf("status %d", rec.Code)
		}
	})
	t.Run("a fresh MFA sign-in opens a fresh window", func(t *testing.T) {
		h.clock.advance(time.Second)
		h.user.signIn(true, h.clock.Now())
		rec, ev := h.do("GET", "/api/customers?n=30")
		if rec.Code != 200 || len(ev.LimitsReset) != 1 || ev.LimitsReset[0] != "deep_read" {
			t.Fatalf("status %d, reset %v", rec.Code, ev.LimitsReset)
		}
		if got := h.count(set, "deep_read", ""); got != 30 {
			t.Errorf("the window holds %d, want 30 (the 40 before the sign-in are gone)", got)
		}
		if rec, ev := h.do("GET", "/api/customers?n=10"); rec.Code != 200 || len(ev.LimitsReset) != 0 {
			t.Errorf("next request: status %d, reset %v", rec.Code, ev.LimitsReset)
		}
	})
	t.Run("each of the four refusals is a hit on the metric and a notification", func(t *testing.T) {
		if got := h.hits("deep_read", "step_up"); got != 4 {
			t.Errorf("crmguard_limit_hits_total{deep_read,step_up} = %v, want 4", got)
		}
		for i := 0; i < 4; i++ {
			if n := h.event(); n.Type != notify.LimitHit || n.ID != "deep_read" || n.Data["action"] != "step_up" || n.Data["user"] != "zhang" || n.Data["refused"] != "true" ||
				!strings.Contains(n.Text, "refused until a fresh MFA sign-in") {
				t.Errorf("notification %d: %+v", i+1, n)
			}
		}
		h.noEvent()
	})
}

func TestAStoreThatCannotBeAskedRefusesWith503(t *testing.T) {
	broken, err := store.OpenRedis("redis://127.0.0.1:1/0", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { broken.Close() })
	cases := []struct {
		name   string
		setup  limitSetup
		limits string
		target string
	}{
		{"a records limit with the store down", limitSetup{store: broken}, bulkView, "/api/customers?n=3"},
		{"a requests limit with the store down", limitSetup{store: broken}, "  - {id: r, count: requests, max: 9, per: 1m, action: alert}\n", "/api/customers?n=3"},
		{"a step_up limit with the store down", limitSetup{store: broken}, "  - {id: s, count: records, max: 9, per: 1m, action: step_up}\n", "/api/customers?n=3"},
		{"a guard without a store", limitSetup{noStore: true}, bulkView, "/api/customers?n=3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newLimitHarness(t, c.limits, c.setup)
			rec, ev := h.do("GET", c.target)
			if rec.Code != 503 || strings.Contains(rec.Body.String(), "cust-") {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if ev.Decision != "error" || !strings.Contains(ev.Reason, "cannot be counted") {
				t.Errorf("event %s %q", ev.Decision, ev.Reason)
			}
		})
	}
}

func TestInShadowModeLimitsAreCountedAndAuditedButRefuseNothing(t *testing.T) {
	h := newLimitHarness(t, bulkView, limitSetup{shadow: true})
	h.do("GET", "/api/customers?n=450")
	rec, ev := h.do("GET", "/api/customers?n=100")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "cust-99") {
		t.Fatalf("status %d", rec.Code)
	}
	if len(ev.Limits) != 1 || ev.Limits[0].Refused || ev.Limits[0].Count != 550 {
		t.Errorf("hits %+v", ev.Limits)
	}
	if n := h.event(); n.Data["shadow"] != "true" || !strings.Contains(n.Text, "would have been refused") {
		t.Errorf("notification %+v", n)
	}
}

func TestUsersDoNotShareCounts(t *testing.T) {
	// One store, two guards (two users): zhang's window is full, and a
	// user whose id looks like zhang's key with a route part is counted
	// apart.
	h := newLimitHarness(t, bulkView, limitSetup{})
	h.do("GET", "/api/customers?n=500")
	other := newLimitHarness(t, bulkView, limitSetup{store: h.st})
	other.user.id = "zhang:r:customers.list"
	rec, _ := other.do("GET", "/api/customers?n=500")
	if rec.Code != 200 {
		t.Errorf("another user is refused with %d: counts are shared", rec.Code)
	}
	if rec, _ := h.do("GET", "/api/customers?n=1"); rec.Code != 429 {
		t.Errorf("zhang's full window passed a record: %d", rec.Code)
	}
}

// sendAtOnce sends n GETs of target at the same time, spread over the
// harnesses in turn, and counts the answers by status.
func sendAtOnce(hs []*limitHarness, n int, target string) map[int]int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := hs[i%len(hs)]
			rec := httptest.NewRecorder()
			_ = h.g.ServeHTTP(rec, httptest.NewRequest("GET", "http://crm.test"+target, nil), h.crm())
			mu.Lock()
			codes[rec.Code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return codes
}

func TestConcurrentRequestsAreCountedExactly(t *testing.T) {
	h := newLimitHarness(t, `  - {id: lookups, count: requests, max: 25, per: 1m, action: block}
`, limitSetup{})
	codes := sendAtOnce([]*limitHarness{h}, 60, "/api/customers/1")
	if codes[200] != 25 || codes[429] != 35 {
		t.Errorf("answers %v, want 25 × 200 and 35 × 429", codes)
	}
	if h.upstreamCalls() != 25 {
		t.Errorf("%d requests reached the CRM, want 25", h.upstreamCalls())
	}
}

func TestConcurrentPagesNeverSendMoreRecordsThanTheLimit(t *testing.T) {
	// 50 requests at once for pages of 15 to 21 records (about 900 in
	// all) under a window of 500: the records the clients receive are
	// exactly the window's count, never more than max, and no refused
	// page would have fit in the room left at the end (the window only
	// fills, so it did not fit when it was refused either).
	h := newLimitHarness(t, bulkView, limitSetup{})
	const requests = 50
	type answer struct {
		size, status, received int
	}
	answers := make([]answer, requests)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			size := 15 + i%7
			rec := httptest.NewRecorder()
			if err := h.g.ServeHTTP(rec, httptest.NewRequest("GET", fmt.Sprintf("http://crm.test/api/customers?n=%d&offset=%d", size, i*100), nil), h.crm()); err != nil {
				t.Errorf("request %d: %v", i, err)
			}
			a := answer{size: size, status: rec.Code}
			if rec.Code == http.StatusOK {
				var page struct {
					List []map[string]any `json:"list"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
					t.Errorf("request %d: the page is not JSON: %v", i, err)
				}
				a.received = len(page.List)
			} else if strings.Contains(rec.Body.String(), "cust-") {
				t.Errorf("request %d: the refusal (%d) leaks records", i, rec.Code)
			}
			answers[i] = a
		}()
	}
	wg.Wait()
	window := h.count(h.g.opt.Rules(), "bulk_view", "")
	received, passed, refused := 0, 0, 0
	for i, a := range answers {
		switch a.status {
		case http.StatusOK:
			passed++
			received += a.received
			if a.received != a.size {
				t.Errorf("request %d received %d of its %d records", i, a.received, a.size)
			}
		case http.StatusTooManyRequests:
			refused++
			if window+int64(a.size) <= 500 {
				t.Errorf("request %d (%d records) was refused, but the window ends at %d: it would have fit", i, a.size, window)
			}
		default:
			t.Errorf("request %d: status %d", i, a.status)
		}
	}
	t.Logf("%d pages passed (%d records), %d refused; the window holds %d", passed, received, refused, window)
	if received > 500 {
		t.Errorf("the clients received %d records, max 500", received)
	}
	if int64(received) != window {
		t.Errorf("the clients received %d records, the window holds %d: counting is not exact", received, window)
	}
	if refused == 0 {
		t.Error("no page was refused: the test must take the window past max")
	}
	if got := h.hits("bulk_view", "block"); got != float64(refused) {
		t.Errorf("crmguard_limit_hits_total{bulk_view,block} = %v, want %d (one per refusal)", got, refused)
	}
}

func TestTwoGuardsOnOneRedisShareTheCount(t *testing.T) {
	url := redistest.Start(t)
	clock := &wfClock{now: time.Date(2026, 11, 18, 10, 0, 0, 0, time.UTC)}
	var guards []*limitHarness
	for i := 0; i < 2; i++ {
		// Each guard has its own client, as two instances would.
		st, err := store.OpenRedis(url, store.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		guards = append(guards, newLimitHarness(t, bulkView, limitSetup{store: st}))
	}
	codes := sendAtOnce(guards, 40, "/api/customers?n=20")
	if codes[200] != 25 || codes[429] != 15 {
		t.Errorf("answers %v, want 25 × 200 (500 records) and 15 × 429", codes)
	}
	if got := guards[1].count(guards[1].g.opt.Rules(), "bulk_view", ""); got != 500 {
		t.Errorf("the shared window holds %d, want 500", got)
	}
}
