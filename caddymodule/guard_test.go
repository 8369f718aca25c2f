package caddymodule

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/rules"
)

// testUser is an identity the tests hand to the guard.
type testUser struct {
	id    string
	roles []string
}

// testProvider is a fixed-identity authn.Provider for tests.
type testProvider struct {
	user        *testUser
	identifyErr error
	bearer      bool
}

func (p *testProvider) Identify(*http.Request) (*authn.Identity, error) {
	if p.identifyErr != nil {
		return nil, p.identifyErr
	}
	if p.user == nil {
		return nil, nil
	}
	return &authn.Identity{Subject: p.user.id, Bearer: p.bearer}, nil
}

func (p *testProvider) Challenge(w http.ResponseWriter, r *http.Request, need authn.Need) error {
	authn.WriteChallenge(w, r, need)
	return nil
}

func (p *testProvider) Handle(http.ResponseWriter, *http.Request) (bool, error) { return false, nil }

func (p *testProvider) ResolveUser(set *rules.Set, _ *authn.Identity) (*rules.User, error) {
	return set.UserFromRoles(p.user.id, p.user.roles, nil, true, time.Now()), nil
}

// memSink keeps audit events.
type memSink struct {
	mu     sync.Mutex
	events []AuditEvent
	err    error
}

func (s *memSink) Write(ev *AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.events = append(s.events, *ev)
	return nil
}

func (s *memSink) last(t *testing.T) AuditEvent {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.events) != 1 {
		t.Fatalf("want exactly 1 audit event, got %d", len(s.events))
	}
	return s.events[0]
}

func loadTestRules(t testing.TB) *rules.Set {
	t.Helper()
	set, err := rules.LoadFile("testdata/rules.yaml")
	if err != nil {
		t.Fatalf("loading testdata/rules.yaml: %v", err)
	}
	return set
}

type guardSetup struct {
	user    *testUser
	maxBody int64
	shadow  bool
}

func newTestGuard(t testing.TB, s guardSetup) (*Guard, *memSink) {
	t.Helper()
	set := loadTestRules(t)
	sink := &memSink{}
	opt := GuardOptions{Rules: func() *rules.Set { return set }, Audit: sink, MaxBody: s.maxBody}
	if s.user != nil {
		opt.Provider = &testProvider{user: s.user}
	}
	if s.shadow {
		m := rules.Shadow
		opt.Mode = &m
	}
	g, err := NewGuard(opt)
	if err != nil {
		t.Fatal(err)
	}
	return g, sink
}

// upstream is a fake CRM answer; it records the request it got.
type upstream struct {
	status  int
	header  http.Header
	body    []byte
	got     *http.Request
	gotBody []byte
}

func (u *upstream) handler() caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		u.got = r
		if r.Body != nil {
			u.gotBody, _ = io.ReadAll(r.Body)
		}
		for k, v := range u.header {
			w.Header()[k] = v
		}
		status := u.status
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			_, _ = w.Write(u.body)
		}
		return nil
	})
}

func jsonUpstream(body string) *upstream {
	return &upstream{header: http.Header{"Content-Type": {"application/json"}}, body: []byte(body)}
}

const customers = `{"list":[{"id":1,"owner_id":"zhang","phone":"13812345678","bank_account":"6222020200112233"},{"id":2,"owner_id":"li","phone":"13900001111","bank_account":"6222"}]}`

var zhang = &testUser{id: "zhang", roles: []string{"sales"}}

func serve(t *testing.T, g *Guard, req *http.Request, up *upstream) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := g.ServeHTTP(rec, req, up.handler()); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return rec
}

func TestRefusals(t *testing.T) {
	tests := []struct {
		name       string
		user       *testUser
		method     string
		path       string
		accept     string
		wantStatus int
		wantType   string
		wantRule   string
		wantAuth   bool
	}{
		{name: "an unmatched route is refused with JSON for an API client", user: zhang, method: "GET", path: "/api/unknown", accept: "application/json", wantStatus: 403, wantType: "application/json"},
		{name: "an unmatched route is refused with a page for a browser", user: zhang, method: "GET", path: "/api/unknown", accept: "text/html,application/xhtml+xml,*/*;q=0.8", wantStatus: 403, wantType: "text/html"},
		{name: "a role that is not allowed gets 403 naming the route", user: &testUser{id: "x", roles: nil}, method: "GET", path: "/api/customers", wantStatus: 403, wantType: "application/json", wantRule: "customers.list"},
		{name: "an anonymous request without a provider gets 401 with a challenge", method: "GET", path: "/api/customers", wantStatus: 401, wantType: "application/json", wantAuth: true},
		{name: "an anonymous browser without a provider gets the refusal page with the challenge", method: "GET", path: "/api/customers", accept: "text/html", wantStatus: 401, wantType: "text/html", wantAuth: true},
		{name: "a public route succeeds without a provider", method: "GET", path: "/healthz", wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, sink := newTestGuard(t, guardSetup{user: tt.user})
			req := httptest.NewRequest(tt.method, tt.path, nil)
			if tt.accept != "" {
				req.Header.Set("Accept", tt.accept)
			}
			up := jsonUpstream(`{"ok":true}`)
			rec := serve(t, g, req, up)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status: want %d, got %d: %s", tt.wantStatus, rec.Code, rec.Body)
			}
			if tt.wantType != "" && !strings.HasPrefix(rec.Header().Get("Content-Type"), tt.wantType) {
				t.Errorf("Content-Type: want %s, got %s", tt.wantType, rec.Header().Get("Content-Type"))
			}
			if tt.wantStatus != 200 && up.got != nil {
				t.Errorf("a refused request reached the upstream")
			}
			if tt.wantType == "application/json" {
				var body struct{ Error, Rule, Reason string }
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
					t.Fatalf("refusal is not JSON: %v: %s", err, rec.Body)
				}
				if body.Error == "" || body.Reason == "" {
					t.Errorf("refusal lacks error or reason: %s", rec.Body)
				}
				if tt.wantRule != "" && body.Rule != tt.wantRule {
					t.Errorf("rule: want %q, got %q", tt.wantRule, body.Rule)
				}
			}
			if tt.wantType == "text/html" && !strings.Contains(rec.Body.String(), "<h1>") {
				t.Errorf("the browser page has no heading: %s", rec.Body)
			}
			if got := rec.Header().Get("WWW-Authenticate"); tt.wantAuth != (got != "") {
				t.Errorf("WWW-Authenticate: want present=%v, got %q", tt.wantAuth, got)
			}
			ev := sink.last(t)
			if ev.Status != tt.wantStatus {
				t.Errorf("audit status: want %d, got %d", tt.wantStatus, ev.Status)
			}
		})
	}
}

func TestProviderErrorAnswers503(t *testing.T) {
	set := loadTestRules(t)
	sink := &memSink{}
	g, _ := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Audit: sink,
		Provider: &testProvider{identifyErr: errors.New("idp down")}})
	rec := serve(t, g, httptest.NewRequest("GET", "/api/customers", nil), jsonUpstream(`{}`))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("want 503 when the provider cannot be asked, got %d", rec.Code)
	}
	if ev := sink.last(t); ev.Decision != "error" {
		t.Errorf("audit decision: want error, got %q", ev.Decision)
	}
}

func TestUpstreamRequestHeaders(t *testing.T) {
	g, _ := newTestGuard(t, guardSetup{user: zhang})
	req := httptest.NewRequest("GET", "/api/customers", nil)
	forged := map[string]string{
		"X-Forwarded-User":         "admin",
		"X_Forwarded_User":         "admin",
		"X-Auth-Request-Email":     "admin@example.com",
		"X-Crm-User":               "admin",
		"X-CRM-Roles":              "admin",
		"Remote-User":              "admin",
		"X-Remote-User":            "admin",
		"X-Forwarded-Email":        "admin@example.com",
		"X-Forwarded-Groups":       "admins",
		"X-Forwarded-Access-Token": "t",
	}
	for k, v := range forged {
		req.Header[k] = []string{v}
	}
	req.Header.Set("Cookie", "crmguard_session=secret; crm_sid=keep; __Host-crmguard_flow=x")
	req.Header.Set("Range", "bytes=0-10")
	req.Header.Set("If-Range", `"e"`)
	req.Header.Set("Accept-Encoding", "br, gzip")
	up := jsonUpstream(customers)
	serve(t, g, req, up)
	h := up.got.Header
	for k := range forged {
		if vs, ok := h[k]; ok && !(http.CanonicalHeaderKey(k) == "X-Crm-User" || http.CanonicalHeaderKey(k) == "X-Crm-Roles") {
			t.Errorf("forged header %s reached the CRM: %v", k, vs)
		}
	}
	if got := h.Get("X-CRM-User"); got != "zhang" {
		t.Errorf("X-CRM-User: want the verified zhang, got %q", got)
	}
	if got := h.Get("X-CRM-Roles"); got != "sales" {
		t.Errorf("X-CRM-Roles: want sales, got %q", got)
	}
	if got := h.Get("Cookie"); got != "crm_sid=keep" {
		t.Errorf("Cookie: want only the CRM's own cookie, got %q", got)
	}
	if h.Get("Range") != "" || h.Get("If-Range") != "" {
		t.Errorf("Range headers reached the CRM: %q %q", h.Get("Range"), h.Get("If-Range"))
	}
	if got := h.Get("Accept-Encoding"); got != "identity" {
		t.Errorf("Accept-Encoding: want identity, got %q", got)
	}
}

func TestConfiguredStripHeaders(t *testing.T) {
	set := loadTestRules(t)
	g, _ := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Provider: &testProvider{user: zhang},
		StripHeaders: []string{"X-Legacy-Login", "X-Sso-*"}})
	req := httptest.NewRequest("GET", "/api/customers", nil)
	req.Header.Set("X-Legacy-Login", "admin")
	req.Header.Set("X-SSO-Uid", "admin")
	req.Header.Set("X-Other", "kept")
	up := jsonUpstream(customers)
	serve(t, g, req, up)
	if up.got.Header.Get("X-Legacy-Login") != "" || up.got.Header.Get("X-Sso-Uid") != "" {
		t.Errorf("configured headers reached the CRM: %v", up.got.Header)
	}
	if up.got.Header.Get("X-Other") != "kept" {
		t.Errorf("an unrelated header was removed")
	}
}

func TestShadowModeNeverBlocks(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		up       *upstream
		wantBody string
		wantDec  string
	}{
		{name: "a denied request passes and is audited as deny", path: "/api/unknown", up: jsonUpstream(`{"x":1}`), wantBody: `{"x":1}`, wantDec: "deny"},
		{name: "an answer passes unrewritten", path: "/api/customers", up: jsonUpstream(customers), wantBody: customers, wantDec: "allow"},
		{name: "a non-JSON answer passes", path: "/api/customers", up: &upstream{header: http.Header{"Content-Type": {"application/json"}}, body: []byte("nope")}, wantBody: "nope", wantDec: "allow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, sink := newTestGuard(t, guardSetup{user: zhang, shadow: true})
			rec := serve(t, g, httptest.NewRequest("GET", tt.path, nil), tt.up)
			if rec.Code != 200 || rec.Body.String() != tt.wantBody {
				t.Fatalf("want 200 %s, got %d %s", tt.wantBody, rec.Code, rec.Body)
			}
			ev := sink.last(t)
			if !ev.Shadow || ev.Decision != tt.wantDec {
				t.Errorf("audit: want shadow %s, got %+v", tt.wantDec, ev)
			}
		})
	}
}

func TestAuditWriteFailureIsLoggedLoudly(t *testing.T) {
	set := loadTestRules(t)
	core, logs := observer.New(zap.ErrorLevel)
	g, _ := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Audit: &memSink{err: errors.New("disk full")},
		Logger: zap.New(core)})
	serve(t, g, httptest.NewRequest("GET", "/healthz", nil), jsonUpstream(`{}`))
	entries := logs.FilterMessageSnippet("AUDIT EVENT LOST").All()
	if len(entries) != 1 {
		t.Fatalf("want one error log for the lost event, got %d", len(entries))
	}
	if entries[0].ContextMap()["error"] != "disk full" {
		t.Errorf("the log does not say why: %v", entries[0].ContextMap())
	}
}

func TestAuditFileGetsOneLinePerRequest(t *testing.T) {
	path := t.TempDir() + "/audit/audit.jsonl"
	sink, err := openAuditFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseAuditFile(path)
	set := loadTestRules(t)
	g, _ := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Audit: sink, Provider: &testProvider{user: zhang}})
	const n = 50
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			_ = g.ServeHTTP(rec, httptest.NewRequest("GET", "/api/customers", nil), jsonUpstream(customers).handler())
		}()
	}
	wg.Wait()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != n {
		t.Fatalf("want %d lines, got %d", n, len(lines))
	}
	for _, l := range lines {
		var ev AuditEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("a line is not one JSON event: %v: %q", err, l)
		}
		if ev.Route != "customers.list" || ev.RecordsOut != 1 {
			t.Fatalf("unexpected event %+v", ev)
		}
	}
}

func TestAuthorizationHeader(t *testing.T) {
	tests := []struct {
		name   string
		bearer bool
		want   string
	}{
		{name: "a bearer token the proxy verified does not reach the CRM", bearer: true, want: ""},
		{name: "the CRM's own Authorization passes when the identity came from a session", bearer: false, want: "Basic Y3JtOmNybQ=="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := loadTestRules(t)
			g, _ := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Provider: &testProvider{user: zhang, bearer: tt.bearer}})
			req := httptest.NewRequest("GET", "/api/customers", nil)
			if tt.bearer {
				req.Header.Set("Authorization", "Bearer eyJ.token.sig")
			} else {
				req.Header.Set("Authorization", "Basic Y3JtOmNybQ==")
			}
			up := jsonUpstream(customers)
			serve(t, g, req, up)
			if got := up.got.Header.Get("Authorization"); got != tt.want {
				t.Errorf("Authorization at the CRM: want %q, got %q", tt.want, got)
			}
		})
	}
}

func TestARuleFileInShadowModeIsNotEnforced(t *testing.T) {
	src, err := os.ReadFile("testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.Load("shadow.yaml", []byte(strings.Replace(string(src), "mode: enforce", "mode: shadow", 1)))
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	g, _ := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Provider: &testProvider{user: zhang}, Audit: sink})
	rec := serve(t, g, httptest.NewRequest("GET", "/api/customers", nil), jsonUpstream(customers))
	if rec.Code != 200 || rec.Body.String() != customers {
		t.Fatalf("a shadow rule file rewrote or blocked: %d %s", rec.Code, rec.Body)
	}
	ev := sink.last(t)
	if !ev.Shadow || ev.RecordsOut != 1 || ev.Rewritten {
		t.Errorf("audit must say what would have happened: %+v", ev)
	}
}
