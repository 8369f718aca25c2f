package caddymodule

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/klauspost/compress/zstd"
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
	BearerChallenge(w, r, need, "")
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

func TestRequestBodies(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		encoding   string
		maxBody    int64
		wantStatus int
	}{
		{name: "a body without guarded fields reaches the CRM unchanged", body: `{"name":"ACME"}`, wantStatus: 200},
		{name: "a guarded field is refused", body: `{"name":"ACME","stage":"won"}`, wantStatus: 403},
		{name: "a body over max_body is refused with 413", body: `{"name":"` + strings.Repeat("a", 200) + `"}`, maxBody: 100, wantStatus: 413},
		{name: "a compressed body that cannot be checked is refused", body: `{"stage":"won"}`, encoding: "gzip", wantStatus: 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, _ := newTestGuard(t, guardSetup{user: zhang, maxBody: tt.maxBody})
			req := httptest.NewRequest("PATCH", "/api/customers/7", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			if tt.encoding != "" {
				req.Header.Set("Content-Encoding", tt.encoding)
			}
			up := jsonUpstream(`{"ok":true}`)
			rec := serve(t, g, req, up)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status: want %d, got %d: %s", tt.wantStatus, rec.Code, rec.Body)
			}
			if tt.wantStatus == 200 {
				if string(up.gotBody) != tt.body {
					t.Errorf("the CRM got body %q, want %q", up.gotBody, tt.body)
				}
				if up.got.ContentLength != int64(len(tt.body)) {
					t.Errorf("the CRM got Content-Length %d, want %d", up.got.ContentLength, len(tt.body))
				}
			} else if up.got != nil {
				t.Errorf("a refused body reached the CRM")
			}
		})
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

func TestRangeAndEncodingPassOnRoutesThatDoNotRewrite(t *testing.T) {
	g, _ := newTestGuard(t, guardSetup{user: zhang})
	req := httptest.NewRequest("GET", "/files/manual.pdf", nil)
	req.Header.Set("Range", "bytes=0-10")
	req.Header.Set("Accept-Encoding", "gzip")
	up := &upstream{status: 206, header: http.Header{"Content-Type": {"application/pdf"}, "Content-Range": {"bytes 0-10/100"}}, body: []byte("%PDF-1.7 ab")}
	rec := serve(t, g, req, up)
	if up.got.Header.Get("Range") != "bytes=0-10" || up.got.Header.Get("Accept-Encoding") != "gzip" {
		t.Errorf("headers at the CRM: %v", up.got.Header)
	}
	if rec.Code != 206 || rec.Body.String() != "%PDF-1.7 ab" {
		t.Errorf("a partial answer on a route that does not rewrite must pass: %d %q", rec.Code, rec.Body)
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

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func zl(b []byte) []byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func br(b []byte) []byte {
	var buf bytes.Buffer
	w := brotli.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func zs(b []byte) []byte {
	enc, _ := zstd.NewWriter(nil)
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

func TestAnswerRewriting(t *testing.T) {
	plain := []byte(customers)
	tests := []struct {
		name       string
		method     string
		status     int
		header     http.Header
		body       []byte
		maxBody    int64
		wantStatus int
		wantBody   string // exact, when set
		mustNot    []string
	}{
		{name: "a JSON list is filtered and masked", body: plain, wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`, mustNot: []string{"13812345678", "6222", `"li"`}},
		{name: "a gzip answer is decoded and rewritten", header: http.Header{"Content-Encoding": {"gzip"}}, body: gz(plain), wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`},
		{name: "a deflate answer is decoded and rewritten", header: http.Header{"Content-Encoding": {"deflate"}}, body: zl(plain), wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`},
		{name: "a zstd answer is decoded and rewritten", header: http.Header{"Content-Encoding": {"zstd"}}, body: zs(plain), wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`},
		{name: "a br answer is decoded and rewritten", header: http.Header{"Content-Encoding": {"br"}}, body: br(plain), wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`},
		{name: "an answer compressed twice is decoded in order", header: http.Header{"Content-Encoding": {"gzip, br"}}, body: br(gz(plain)), wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`},
		{name: "an answer compressed twice and labelled on two header lines is decoded in order", header: http.Header{"Content-Encoding": {"gzip", "br"}}, body: br(gz(plain)), wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`},
		{name: "an answer in an encoding the proxy cannot decode is refused", header: http.Header{"Content-Encoding": {"compress"}}, body: plain, wantStatus: 502, mustNot: []string{"1381234"}},
		{name: "a corrupt br answer is refused", header: http.Header{"Content-Encoding": {"br"}}, body: plain, wantStatus: 502, mustNot: []string{"1381234"}},
		{name: "a br bomb over max_body is refused", header: http.Header{"Content-Encoding": {"br"}}, body: br(bytes.Repeat([]byte(" "), 4096)), maxBody: 1024, wantStatus: 502},
		{name: "a corrupt gzip answer is refused", header: http.Header{"Content-Encoding": {"gzip"}}, body: plain, wantStatus: 502, mustNot: []string{"1381234"}},
		{name: "an answer that is not JSON is refused", body: []byte(`<html>13812345678</html>`), wantStatus: 502, mustNot: []string{"1381234"}},
		{name: "an answer over max_body is refused and none of it leaks", body: plain, maxBody: 64, wantStatus: 502, mustNot: []string{"1381234", `"list":[`}},
		{name: "a gzip bomb over max_body is refused", header: http.Header{"Content-Encoding": {"gzip"}}, body: gz(bytes.Repeat([]byte(" "), 4096)), maxBody: 1024, wantStatus: 502},
		{name: "a partial answer is refused", status: 206, header: http.Header{"Content-Range": {"bytes 0-10/200"}}, body: plain[:11], wantStatus: 502, mustNot: []string{`{"list"`}},
		{name: "an upstream error answer keeps its status and its unchecked body is withheld", status: 500, body: plain, wantStatus: 500, mustNot: []string{"1381234", `"list":[`}},
		{name: "a HEAD answer has headers and no body", method: "HEAD", body: plain, wantStatus: 200, wantBody: "-"},
		{name: "a 304 answer has no body", status: 304, body: nil, wantStatus: 304, wantBody: "-"},
		{name: "an empty 200 answer passes without a body", body: nil, wantStatus: 200, wantBody: "-"},
		{name: "an empty gzip answer passes without a body", header: http.Header{"Content-Encoding": {"gzip"}}, body: gz(nil), wantStatus: 200, wantBody: "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, sink := newTestGuard(t, guardSetup{user: zhang, maxBody: tt.maxBody})
			method := tt.method
			if method == "" {
				method = "GET"
			}
			up := &upstream{status: tt.status, header: http.Header{"Content-Type": {"application/json"},
				"Etag": {`"v1"`}, "Last-Modified": {"Mon, 02 Jan 2006 15:04:05 GMT"}, "Accept-Ranges": {"bytes"},
				"Content-Length": {strconv.Itoa(len(tt.body))}}, body: tt.body}
			for k, v := range tt.header {
				up.header[k] = v
			}
			rec := serve(t, g, httptest.NewRequest(method, "/api/customers", nil), up)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status: want %d, got %d: %s", tt.wantStatus, rec.Code, rec.Body)
			}
			got := rec.Body.String()
			switch tt.wantBody {
			case "":
			case "-":
				if got != "" {
					t.Errorf("want no body, got %q", got)
				}
			default:
				if got != tt.wantBody {
					t.Errorf("body:\nwant %s\ngot  %s", tt.wantBody, got)
				}
			}
			for _, s := range tt.mustNot {
				if strings.Contains(got, s) {
					t.Errorf("the answer leaks %q: %s", s, got)
				}
			}
			if tt.wantStatus == 200 && tt.wantBody != "-" {
				if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(len(got)) {
					t.Errorf("Content-Length: want %d, got %s", len(got), cl)
				}
				if rec.Header().Get("Content-Encoding") != "" {
					t.Errorf("Content-Encoding left on a decoded answer: %s", rec.Header().Get("Content-Encoding"))
				}
			}
			if tt.wantStatus == 200 {
				for _, k := range []string{"ETag", "Last-Modified", "Accept-Ranges"} {
					if rec.Header().Get(k) != "" {
						t.Errorf("%s kept after a rewrite", k)
					}
				}
			}
			if tt.wantStatus == 502 {
				ev := sink.last(t)
				if ev.Status != 502 || ev.Decision != "blocked" || ev.Reason == "" {
					t.Errorf("audit of a refused answer: %+v", ev)
				}
			}
		})
	}
}

func TestRewriteAuditEvent(t *testing.T) {
	g, sink := newTestGuard(t, guardSetup{user: zhang})
	req := httptest.NewRequest("GET", "/api/customers", nil)
	serve(t, g, req, jsonUpstream(customers))
	ev := sink.last(t)
	if ev.User != "zhang" || ev.Route != "customers.list" || ev.Decision != "allow" || ev.Status != 200 {
		t.Errorf("event: %+v", ev)
	}
	if ev.RecordsIn != 2 || ev.RecordsOut != 1 {
		t.Errorf("records: want 2 in, 1 out, got %d, %d", ev.RecordsIn, ev.RecordsOut)
	}
	if len(ev.RecordIDs) != 1 || ev.RecordIDs[0] != "1" {
		t.Errorf("record ids: want [1], got %v", ev.RecordIDs)
	}
	if len(ev.Fields) == 0 {
		t.Errorf("fields treated are not in the event")
	}
	if !ev.Rewritten || ev.Method != "GET" || ev.Path != "/api/customers" || ev.Time.IsZero() {
		t.Errorf("event: %+v", ev)
	}
}

func TestDownloadOnNonExportRouteIsBlocked(t *testing.T) {
	g, sink := newTestGuard(t, guardSetup{user: zhang})
	up := &upstream{header: http.Header{"Content-Type": {"text/csv"}, "Content-Disposition": {`attachment; filename="c.csv"`}},
		body: []byte("id,phone\n1,13812345678\n")}
	rec := serve(t, g, httptest.NewRequest("GET", "/files/customers.csv", nil), up)
	if rec.Code != 403 {
		t.Fatalf("want 403 for a CSV download, got %d: %s", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), "13812345678") || rec.Header().Get("Content-Disposition") != "" {
		t.Errorf("the download leaked: %v %s", rec.Header(), rec.Body)
	}
	if ev := sink.last(t); !ev.Export.Blocked || !ev.Export.Download {
		t.Errorf("audit export flags: %+v", ev.Export)
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

func TestShadowModeStreamsAnOversizeAnswer(t *testing.T) {
	g, _ := newTestGuard(t, guardSetup{user: zhang, shadow: true, maxBody: 40})
	rec := serve(t, g, httptest.NewRequest("GET", "/api/customers", nil), jsonUpstream(customers))
	if rec.Body.String() != customers {
		t.Fatalf("shadow mode must pass the whole answer, got %q", rec.Body)
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

func TestCachingOfUserSpecificAnswers(t *testing.T) {
	tests := []struct {
		name string
		path string
		cc   string
		want string
	}{
		{name: "a rewritten answer may not be stored by any cache", path: "/api/customers", cc: "public, max-age=600", want: "private, no-store"},
		{name: "a streamed answer on a role route is made private", path: "/api/events", cc: "public, max-age=60, s-maxage=600", want: "private, max-age=60"},
		{name: "a streamed answer without cache headers is made private (a shared cache may store it heuristically)", path: "/api/events", cc: "", want: "private"},
		{name: "a streamed answer with max-age alone is made private", path: "/api/events", cc: "max-age=60", want: "private, max-age=60"},
		{name: "a field-qualified private is not private enough", path: "/api/events", cc: `private="Set-Cookie", max-age=60`, want: "private, max-age=60"},
		{name: "a no-store answer is left alone", path: "/api/events", cc: "no-store", want: "no-store"},
		{name: "a private answer is left alone", path: "/api/events", cc: "max-age=60, private", want: "max-age=60, private"},
		{name: "a public route's answer keeps its caching", path: "/healthz", cc: "public, max-age=60", want: "public, max-age=60"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, _ := newTestGuard(t, guardSetup{user: zhang})
			up := jsonUpstream(customers)
			if tt.cc != "" {
				up.header.Set("Cache-Control", tt.cc)
			}
			rec := serve(t, g, httptest.NewRequest("GET", tt.path, nil), up)
			if got := rec.Header().Get("Cache-Control"); got != tt.want {
				t.Errorf("Cache-Control: want %q, got %q", tt.want, got)
			}
		})
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

func TestShadowModeRequestBodies(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		maxBody int64
		wantDec string
	}{
		{name: "a guarded field passes and is audited as a denial", body: `{"stage":"won"}`, wantDec: "deny"},
		{name: "a body over max_body passes whole", body: `{"name":"` + strings.Repeat("x", 300) + `"}`, maxBody: 100, wantDec: "allow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, sink := newTestGuard(t, guardSetup{user: zhang, shadow: true, maxBody: tt.maxBody})
			req := httptest.NewRequest("PATCH", "/api/customers/7", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			up := jsonUpstream(`{"ok":true}`)
			rec := serve(t, g, req, up)
			if rec.Code != 200 {
				t.Fatalf("shadow mode refused: %d %s", rec.Code, rec.Body)
			}
			if string(up.gotBody) != tt.body {
				t.Errorf("the CRM got %d bytes, want the whole %d-byte body", len(up.gotBody), len(tt.body))
			}
			ev := sink.last(t)
			if !ev.Shadow || ev.Decision != tt.wantDec || ev.Reason == "" {
				t.Errorf("audit: %+v", ev)
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
