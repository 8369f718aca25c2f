package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crmguard/crmguard/caddymodule/notify"
	"github.com/crmguard/crmguard/caddymodule/store/redistest"
	"github.com/crmguard/crmguard/examples/demo"
	"github.com/crmguard/crmguard/examples/devidp"
)

// Usage limits through Caddy, with the demo's CRM, identity provider and
// example rules: zhang (sales, team east) may receive at most 300
// customers in 10 minutes (bulk_view, block). His list is scoped to team
// east in the CRM (about 210 customers, 100 a page) and the public pool
// view holds about 70 more: going through both once is normal work, going
// on (a second pass) is refused once it would pass 300.

// limitPage is one page of customers as a client got it.
type limitPage struct {
	status     int
	retryAfter string
	body       string
	names      []string // the customers' names in a 200 answer
}

// limitPath is the n-th request of a rep going through the customers
// again and again: the team list 100 at a time, then the pool view.
func limitPath(n int) string {
	switch n % 4 {
	case 3:
		return "/api/customers?view=pool&offset=0&limit=100"
	default:
		return fmt.Sprintf("/api/customers?offset=%d&limit=100", (n%4)*100)
	}
}

// customersPage GETs path as an API client.
func customersPage(t *testing.T, c *http.Client, site, path string) limitPage {
	t.Helper()
	resp, body := apiGet(t, c, site+path)
	p := limitPage{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: body}
	if resp.StatusCode == http.StatusOK {
		var env struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		}
		if err := json.Unmarshal([]byte(body), &env); err != nil {
			t.Fatalf("the customer list is not JSON: %v: %.300s", err, body)
		}
		for _, c := range env.List {
			p.names = append(p.names, c.Name)
		}
	}
	return p
}

// pageUntilRefused goes through the customers (limitPath), over the sites
// in turn, until a request is refused. It returns how many customers were
// received before, by site, and the refused request's path.
func pageUntilRefused(t *testing.T, c map[string]*http.Client, sites []string) (received map[string]int, path string, refused limitPage) {
	t.Helper()
	received = map[string]int{}
	for n := 0; n < 12; n++ {
		site := sites[n%len(sites)]
		path = limitPath(n)
		p := customersPage(t, c[site], site, path)
		if p.status != http.StatusOK {
			return received, path, p
		}
		received[site] += len(p.names)
	}
	t.Fatalf("12 pages of customers (%v received) without a refusal", received)
	return
}

// total adds the counts of all sites.
func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// auditWhere returns the events of the audit file at path for which want
// holds, waiting for at least one.
func auditWhere(t *testing.T, path string, want func(ev map[string]any) bool) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var out []map[string]any
		for _, ev := range targetAuditEvents(t, path, 0) {
			if want(ev) {
				out = append(out, ev)
			}
		}
		if len(out) > 0 {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit event in %s is the one looked for", path)
		}
		time.Sleep(20 * time.Millisecond) // the event is written just after the answer; poll to a deadline
	}
}

// limitHit is the hit of limit id in an audit event (nil: none).
func limitHit(ev map[string]any, id string) map[string]any {
	hits, _ := ev["limits"].([]any)
	for _, h := range hits {
		if m, _ := h.(map[string]any); m["limit"] == id {
			return m
		}
	}
	return nil
}

func TestPagingPastTheRepLimitIsRefusedWholeAndSurvivesARestart(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	rules := filepath.Join(repoRoot(t), "examples", "rules.yaml")
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	d := startDemoConfig(t, demo.Config{Rules: rules, SessionStore: "file:" + state, Audit: audit})
	zhang, wang := browserLike(t), browserLike(t)
	signInHTTP(t, zhang, d, "zhang", "/", time.Now())
	signInHTTP(t, wang, d, "wang", "/", time.Now())

	got, path, refused := pageUntilRefused(t, map[string]*http.Client{d.URL: zhang}, []string{d.URL})
	received := total(got)
	// wang (sales_manager, team east) gets what zhang would have: the
	// same scoped list and pool. He is not under the rep limit.
	would := customersPage(t, wang, d.URL, path)
	t.Logf("refused %s after %d customers; the page held %d", path, received, len(would.names))
	t.Run("the page that would pass 300 customers is refused with 429 and Retry-After", func(t *testing.T) {
		if refused.status != http.StatusTooManyRequests {
			t.Fatalf("%s: status %d: %.300s", path, refused.status, refused.body)
		}
		if received > 300 || received+len(would.names) <= 300 {
			t.Errorf("refused after %d customers with a page of %d: the limit is 300", received, len(would.names))
		}
		if s, err := strconv.Atoi(refused.retryAfter); err != nil || s < 1 || s > 600 {
			t.Errorf("Retry-After %q, want 1 to 600 seconds", refused.retryAfter)
		}
		if !strings.Contains(refused.body, "You have viewed many customers in a short time") || !strings.Contains(refused.body, `"rule":"bulk_view"`) {
			t.Errorf("the refusal does not name the limit: %s", refused.body)
		}
	})
	t.Run("nothing of the refused page reaches the client", func(t *testing.T) {
		if would.status != http.StatusOK || len(would.names) == 0 {
			t.Fatalf("wang's page: %d", would.status)
		}
		for _, n := range would.names {
			if strings.Contains(refused.body, n) {
				t.Errorf("the refusal leaks %q", n)
			}
		}
	})
	t.Run("the audit event names the user, the limit, the count and the window", func(t *testing.T) {
		ev := auditWhere(t, audit, func(ev map[string]any) bool { return limitHit(ev, "bulk_view") != nil })[0]
		hit := limitHit(ev, "bulk_view")
		if ev["user"] != "zhang" || ev["decision"] != "limited" || hit["count"] != float64(received) ||
			hit["adding"] != float64(len(would.names)) || hit["window"] != "10m0s" || hit["refused"] != true {
			t.Errorf("event %v", ev)
		}
		if ev["records_out"] != float64(0) || ev["record_ids"] != nil {
			t.Errorf("the refused answer is audited as received: records_out %v, record_ids %v", ev["records_out"], ev["record_ids"])
		}
	})
	t.Run("the count survives a restart of the guard with the embedded store", func(t *testing.T) {
		d.Stop()
		d2 := startDemoConfig(t, demo.Config{Rules: rules, SessionStore: "file:" + state})
		again := browserLike(t)
		signInHTTP(t, again, d2, "zhang", "/", time.Now())
		if p := customersPage(t, again, d2.URL, path); p.status != http.StatusTooManyRequests {
			t.Errorf("after the restart %s answers %d: the window was lost", path, p.status)
		}
	})
}

func TestTwoInstancesOnOneRedisShareTheRepLimit(t *testing.T) {
	redis := redistest.Start(t)
	tmp := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(tmp, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(tmp, "config"))
	t.Setenv("HOME", tmp)
	rules := filepath.Join(repoRoot(t), "examples", "rules.yaml")
	a, b := startDemoOn(t, rules, redis), startDemoProcess(t, rules, redis)
	// One user, one cookie jar per instance (each has its own provider).
	za, zb := browserLike(t), browserLike(t)
	signInHTTP(t, za, a, "zhang", "/", time.Now())
	signInHTTP(t, zb, b, "zhang", "/", time.Now())
	clients := map[string]*http.Client{a.URL: za, b.URL: zb}
	// The requests alternate between the instances.
	got, path, refused := pageUntilRefused(t, clients, []string{a.URL, b.URL})
	t.Logf("refused %s after %v customers", path, got)
	if refused.status != http.StatusTooManyRequests || total(got) > 300 {
		t.Fatalf("after %v customers through the two instances %s answered %d: %.200s", got, path, refused.status, refused.body)
	}
	if got[a.URL] >= 300 || got[b.URL] >= 300 {
		t.Fatalf("one instance alone received %v: the test must show the sum counts", got)
	}
	t.Run("both instances refuse the same request", func(t *testing.T) {
		for site, c := range clients {
			if p := customersPage(t, c, site, path); p.status != http.StatusTooManyRequests {
				t.Errorf("%s answered %d", site, p.status)
			}
		}
	})
}

// stepUpRules is examples/rules.yaml with the rep limit asking for a fresh
// MFA sign-in instead of blocking.
func stepUpRules(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const block = "    action: block                  # 429 until the window allows\n"
	if !strings.Contains(string(b), block) {
		t.Fatal("examples/rules.yaml: bulk_view's action line changed; update stepUpRules")
	}
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), block, "    action: step_up\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// idpClock is the identity provider's clock: real time plus an offset a
// test moves forward.
type idpClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *idpClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *idpClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

func TestAStepUpLimitRecoversAfterAFreshMFASignIn(t *testing.T) {
	clock := &idpClock{}
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	d := startDemoConfig(t, demo.Config{Rules: stepUpRules(t), IdPNow: clock.Now, Audit: audit})
	zhang := browserLike(t)
	signInHTTP(t, zhang, d, "zhang", "/", time.Now())

	_, path, refused := pageUntilRefused(t, map[string]*http.Client{d.URL: zhang}, []string{d.URL})
	t.Run("the page past the limit asks an API client for a fresh MFA sign-in", func(t *testing.T) {
		if refused.status != http.StatusUnauthorized || strings.Contains(refused.body, `"list"`) {
			t.Fatalf("status %d: %.300s", refused.status, refused.body)
		}
	})
	t.Run("a small page is refused too until then", func(t *testing.T) {
		resp, body := apiGet(t, zhang, d.URL+"/api/customers?offset=0&limit=1")
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "max_age=") {
			t.Fatalf("status %d, challenge %q: %.200s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
	})
	t.Run("a browser is sent to sign in again, and the fresh sign-in opens a fresh window", func(t *testing.T) {
		// The sign-in stamps auth_time in whole seconds: a sign-in is
		// fresh when its second is after the hit's.
		clock.advance(2 * time.Second)
		// Each TOTP code works once: the next step's code (the provider
		// accepts one step either side of now).
		resp, body := signInAt(t, zhang, d.URL, d.Issuer, mustDemoUser(t, d, "zhang"), path, time.Now().Add(30*time.Second))
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"list"`) {
			t.Fatalf("after the fresh sign-in %s answered %d: %.300s", path, resp.StatusCode, body)
		}
		if p := customersPage(t, zhang, d.URL, limitPath(0)); p.status != http.StatusOK {
			t.Errorf("the next page answered %d", p.status)
		}
		ev := auditWhere(t, audit, func(ev map[string]any) bool { return ev["limits_reset"] != nil })[0]
		if r := ev["limits_reset"].([]any); ev["user"] != "zhang" || len(r) != 1 || r[0] != "bulk_view" {
			t.Errorf("event %v", ev)
		}
	})
}

func mustDemoUser(t *testing.T, d *demo.Stack, name string) devidp.User {
	t.Helper()
	u, ok := d.User(name)
	if !ok {
		t.Fatalf("no demo user %q", name)
	}
	return u
}

func TestAnAlertLimitDeliversAWebhook(t *testing.T) {
	dir := t.TempDir()
	crm := newProxyCRM(t)
	events := make(chan notify.Event, 10)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var ev notify.Event
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Errorf("the webhook body is not an event: %v: %s", err, b)
		}
		if r.Header.Get("Authorization") != "Bearer hook-token" {
			t.Errorf("the webhook came without its header: %v", r.Header)
		}
		events <- ev
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", proxyRulesFile(t)+`
limits:
  - id: many_lists
    routes: [customers.list]
    count: requests
    max: 2
    per: 1h
    action: alert
    notify: [sales_manager]
`)
	audit := filepath.Join(dir, "audit.jsonl")
	srv := proxyStart(t, dir, proxySite(rulesPath, audit, crm.hostPort(), fmt.Sprintf(`store %s
		notify {
			webhook %s {
				header Authorization "Bearer hook-token"
			}
		}`, filepath.Join(dir, "state.db"), recv.URL)))
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 1; i <= 3; i++ {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/customers", "zhang", nil)
		proxyBody(t, resp)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d (an alert never refuses)", i, resp.StatusCode)
		}
	}
	select {
	case ev := <-events:
		if ev.Type != notify.LimitHit || ev.ID != "many_lists" || ev.Data["user"] != "zhang" || ev.Data["count"] != "3" || ev.Data["max"] != "2" ||
			ev.Data["action"] != "alert" || len(ev.To.Roles) != 1 || ev.To.Roles[0] != "sales_manager" {
			t.Errorf("webhook event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook arrived")
	}
	hits := auditWhere(t, audit, func(ev map[string]any) bool { return limitHit(ev, "many_lists") != nil })
	if len(hits) != 1 || hits[0]["decision"] != "allow" {
		t.Errorf("%d audit events with limits, want the third request's only: %v", len(hits), hits)
	}
}
