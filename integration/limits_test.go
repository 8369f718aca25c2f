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
// example rules: zhang (sales, team east) may receive at most 200
// customers in 10 minutes (bulk_view, block). A page of 100 raw customers
// holds about 50 zhang may see, so the fourth page takes him past 200.

// limitPage is one page of the customer list as a client got it.
type limitPage struct {
	status     int
	retryAfter string
	body       string
	names      []string // the customers' names in a 200 answer
}

// customersPage GETs /api/customers?offset=&limit=100 as an API client.
func customersPage(t *testing.T, c *http.Client, site string, offset int) limitPage {
	t.Helper()
	resp, body := apiGet(t, c, fmt.Sprintf("%s/api/customers?offset=%d&limit=100", site, offset))
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

// pageUntilRefused pages through the customers 100 at a time, over the
// sites in turn, until a page is refused. It returns how many customers
// were received before and the offset of the refused page.
func pageUntilRefused(t *testing.T, c *http.Client, sites []string) (received, refusedAt int, refused limitPage) {
	t.Helper()
	for offset := 0; offset < 500; offset += 100 {
		p := customersPage(t, c, sites[(offset/100)%len(sites)], offset)
		if p.status != http.StatusOK {
			return received, offset, p
		}
		received += len(p.names)
	}
	t.Fatalf("all 500 customers were paged through (%d received) without a refusal", received)
	return
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

	received, at, refused := pageUntilRefused(t, zhang, []string{d.URL})
	// wang (sales_manager, team east) sees what zhang would have: the
	// team's customers and the pool. He is not under the rep limit.
	would := customersPage(t, wang, d.URL, at)
	t.Run("the page that would pass 200 customers is refused with 429 and Retry-After", func(t *testing.T) {
		if refused.status != http.StatusTooManyRequests {
			t.Fatalf("page at offset %d: status %d: %.300s", at, refused.status, refused.body)
		}
		if received > 200 || received+len(would.names) <= 200 {
			t.Errorf("refused after %d customers with a page of %d: the limit is 200", received, len(would.names))
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
		if ev["user"] != "zhang" || ev["decision"] != "limited" || hit["limit"] != "bulk_view" || hit["count"] != float64(received) ||
			hit["adding"] != float64(len(would.names)) || hit["window"] != "10m0s" || hit["refused"] != true {
			t.Errorf("event %v", ev)
		}
	})
	t.Run("the count survives a restart of the guard with the embedded store", func(t *testing.T) {
		d.Stop()
		d2 := startDemoConfig(t, demo.Config{Rules: rules, SessionStore: "file:" + state})
		again := browserLike(t)
		signInHTTP(t, again, d2, "zhang", "/", time.Now())
		if p := customersPage(t, again, d2.URL, at); p.status != http.StatusTooManyRequests {
			t.Errorf("after the restart the refused page answers %d: the window was lost", p.status)
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
	// Pages alternate between the instances: neither alone sees 200.
	clients := map[string]*http.Client{a.URL: za, b.URL: zb}
	received, at := 0, 0
	var refused limitPage
	for offset := 0; offset < 500; offset += 100 {
		site := []string{a.URL, b.URL}[(offset/100)%2]
		p := customersPage(t, clients[site], site, offset)
		if p.status != http.StatusOK {
			refused, at = p, offset
			break
		}
		received += len(p.names)
	}
	if refused.status != http.StatusTooManyRequests || received > 200 {
		t.Fatalf("after %d customers through both instances the page at %d answered %d: %.200s", received, at, refused.status, refused.body)
	}
	if at < 300 {
		t.Fatalf("refused at offset %d after %d customers: each instance alone saw fewer than 200, so the count must be the sum", at, received)
	}
	t.Run("the other instance refuses the same page too", func(t *testing.T) {
		other := []string{a.URL, b.URL}[(at/100+1)%2]
		if p := customersPage(t, clients[other], other, at); p.status != http.StatusTooManyRequests {
			t.Errorf("the other instance answered %d", p.status)
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

	_, at, refused := pageUntilRefused(t, zhang, []string{d.URL})
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
		path := fmt.Sprintf("/api/customers?offset=%d&limit=100", at)
		// Each TOTP code works once: the next step's code (the provider
		// accepts one step either side of now).
		resp, body := signInAt(t, zhang, d.URL, d.Issuer, mustDemoUser(t, d, "zhang"), path, time.Now().Add(30*time.Second))
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"list"`) {
			t.Fatalf("after the fresh sign-in %s answered %d: %.300s", path, resp.StatusCode, body)
		}
		if p := customersPage(t, zhang, d.URL, 0); p.status != http.StatusOK {
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
