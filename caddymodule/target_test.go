package caddymodule

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap/zapcore"

	"github.com/crmguard/crmguard/rules"
)

const targetRules = `version: 1
roles: {sales: {}, service: {}}
routes:
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales, service]
    body:
      stage: {deny: [service]}
    target:
      fetch: "/api/customers/{id}"
      allow_if: record.owner_id == user.id || "service" in user.roles
`

// targetCRM is a fake CRM that answers the record fetch with fetch and
// the write with 200; it logs every request it received.
type targetCRM struct {
	fetch func(w http.ResponseWriter) error
	mu    sync.Mutex
	got   []*http.Request
	body  [][]byte
}

func (c *targetCRM) handler() caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.got = append(c.got, r)
		c.body = append(c.body, b)
		c.mu.Unlock()
		if IsTargetFetch(r) {
			return c.fetch(w)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":1,"updated":true}`))
		return nil
	})
}

// calls lists the CRM's requests as "METHOD path" (fetches marked).
func (c *targetCRM) calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, r := range c.got {
		s := r.Method + " " + r.URL.RequestURI()
		if IsTargetFetch(r) {
			s = "fetch " + s
		}
		out = append(out, s)
	}
	return out
}

func answerJSON(status int, body string) func(w http.ResponseWriter) error {
	return func(w http.ResponseWriter) error {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
		return nil
	}
}

func newTargetGuard(t *testing.T, user *testUser, maxBody int64, shadow bool) (*Guard, *memSink) {
	t.Helper()
	set, err := rules.Load("target.yaml", []byte(targetRules))
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	opt := GuardOptions{Rules: func() *rules.Set { return set }, Audit: sink, MaxBody: maxBody, Provider: &testProvider{user: user}}
	if shadow {
		m := rules.Shadow
		opt.Mode = &m
	}
	g, err := NewGuard(opt)
	if err != nil {
		t.Fatal(err)
	}
	return g, sink
}

func patch(path, body string) *http.Request {
	r := httptest.NewRequest(http.MethodPatch, path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json")
	return r
}

func TestAWriteReachesTheCRMOnlyWhenTheStoredRecordAllowsIt(t *testing.T) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write([]byte(s))
		_ = zw.Close()
		return b.Bytes()
	}
	rep := &testUser{id: "zhang", roles: []string{"sales"}}
	service := &testUser{id: "li", roles: []string{"service"}}
	cases := []struct {
		name       string
		user       *testUser
		path, body string
		fetch      func(w http.ResponseWriter) error
		maxBody    int64
		wantStatus int
		wantCalls  string
		wantReason string
		wantTarget rules.TargetAudit
		wantEvent  string
		hide       string // must not reach the client
	}{
		{name: "a rep's PATCH to an own customer goes through after the fetch",
			user: rep, path: "/api/customers/1", body: `{"notes":"x"}`, fetch: answerJSON(200, `{"id":1,"owner_id":"zhang"}`),
			wantStatus: 200, wantCalls: "fetch GET /api/customers/1, PATCH /api/customers/1",
			wantTarget: rules.TargetAudit{Fetched: "/api/customers/1", Status: 200, Allowed: true}, wantEvent: "allow"},
		{name: "a rep's PATCH to a team mate's customer is refused and never reaches the CRM",
			user: rep, path: "/api/customers/2", body: `{"notes":"x"}`, fetch: answerJSON(200, `{"id":2,"owner_id":"wu"}`),
			wantStatus: 403, wantCalls: "fetch GET /api/customers/2", wantReason: "you may not change this record",
			wantTarget: rules.TargetAudit{Fetched: "/api/customers/2", Status: 200}, wantEvent: "deny"},
		{name: "service may change any owner's customer",
			user: service, path: "/api/customers/2", body: `{"notes":"x"}`, fetch: answerJSON(200, `{"id":2,"owner_id":"wu"}`),
			wantStatus: 200, wantCalls: "fetch GET /api/customers/2, PATCH /api/customers/2",
			wantTarget: rules.TargetAudit{Fetched: "/api/customers/2", Status: 200, Allowed: true}, wantEvent: "allow"},
		{name: "a body guard refuses before any fetch",
			user: service, path: "/api/customers/2", body: `{"stage":"won"}`, fetch: answerJSON(200, `{"owner_id":"wu"}`),
			wantStatus: 403, wantCalls: "", wantReason: "stage", wantEvent: "deny"},
		{name: "a customer the CRM does not have is 404 and the write is not sent",
			user: rep, path: "/api/customers/9", body: `{"notes":"x"}`, fetch: answerJSON(404, `{"error":"customer 9 not found"}`),
			wantStatus: 404, wantCalls: "fetch GET /api/customers/9", wantReason: "does not exist",
			wantTarget: rules.TargetAudit{Fetched: "/api/customers/9", Status: 404}, wantEvent: "deny"},
		{name: "a fetch answer that is not JSON is 502 and the write is not sent",
			user: rep, path: "/api/customers/1", body: `{"notes":"x"}`, fetch: func(w http.ResponseWriter) error {
				w.Header().Set("Content-Type", "text/html")
				_, _ = w.Write([]byte("<html>owner_id zhang</html>"))
				return nil
			},
			wantStatus: 502, wantCalls: "fetch GET /api/customers/1", wantReason: "not valid JSON",
			wantTarget: rules.TargetAudit{Fetched: "/api/customers/1", Status: 200}, wantEvent: "error"},
		{name: "a CRM error on the fetch is 502",
			user: rep, path: "/api/customers/1", body: `{"notes":"x"}`, fetch: answerJSON(500, `{"owner_id":"zhang"}`),
			wantStatus: 502, wantCalls: "fetch GET /api/customers/1", wantReason: "the CRM answered 500",
			wantTarget: rules.TargetAudit{Fetched: "/api/customers/1", Status: 500}, wantEvent: "error"},
		{name: "an unreachable CRM is 502",
			user: rep, path: "/api/customers/1", body: `{"notes":"x"}`, fetch: func(http.ResponseWriter) error {
				return caddyhttp.Error(http.StatusBadGateway, io.ErrUnexpectedEOF)
			},
			wantStatus: 502, wantCalls: "fetch GET /api/customers/1", wantReason: "could not be reached",
			wantTarget: rules.TargetAudit{Fetched: "/api/customers/1"}, wantEvent: "error", hide: "unexpected EOF"},
		{name: "a fetch aborted mid-answer is 502",
			user: rep, path: "/api/customers/1", body: `{"notes":"x"}`, fetch: func(w http.ResponseWriter) error {
				_, _ = w.Write([]byte(`{"owner_id":`))
				panic(http.ErrAbortHandler)
			},
			wantStatus: 502, wantCalls: "fetch GET /api/customers/1", wantReason: "could not be fetched: the CRM could not be reached",
			wantTarget: rules.TargetAudit{Fetched: "/api/customers/1", Status: 200}, wantEvent: "error"},
		{name: "a gzip fetch answer is decoded like any answer",
			user: rep, path: "/api/customers/1", body: `{"notes":"x"}`, fetch: func(w http.ResponseWriter) error {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Encoding", "gzip")
				_, _ = w.Write(gz(`{"id":1,"owner_id":"zhang"}`))
				return nil
			},
			wantStatus: 200, wantCalls: "fetch GET /api/customers/1, PATCH /api/customers/1",
			wantTarget: rules.TargetAudit{Fetched: "/api/customers/1", Status: 200, Allowed: true}, wantEvent: "allow"},
		{name: "a fetch answer in an unknown coding is 502",
			user: rep, path: "/api/customers/1", body: `{"notes":"x"}`, fetch: func(w http.ResponseWriter) error {
				w.Header().Set("Content-Encoding", "x-compress-9")
				_, _ = w.Write([]byte(`{"owner_id":"zhang"}`))
				return nil
			},
			wantStatus: 502, wantCalls: "fetch GET /api/customers/1", wantReason: "cannot decode",
			wantTarget: rules.TargetAudit{Fetched: "/api/customers/1", Status: 200}, wantEvent: "error"},
		{name: "a fetch answer over max_body is 502",
			user: rep, path: "/api/customers/1", body: `{"notes":"x"}`, maxBody: 64,
			fetch:      answerJSON(200, `{"owner_id":"zhang","padding":"`+strings.Repeat("x", 100)+`"}`),
			wantStatus: 502, wantCalls: "fetch GET /api/customers/1", wantReason: "larger than 64 bytes",
			wantTarget: rules.TargetAudit{Fetched: "/api/customers/1", Status: 200}, wantEvent: "error"},
		{name: "a partial fetch answer is 502",
			user: rep, path: "/api/customers/1", body: `{"notes":"x"}`, fetch: func(w http.ResponseWriter) error {
				w.Header().Set("Content-Range", "bytes 0-19/40")
				w.WriteHeader(http.StatusPartialContent)
				_, _ = w.Write([]byte(`{"owner_id":"zhang"}`))
				return nil
			},
			wantStatus: 502, wantCalls: "fetch GET /api/customers/1", wantReason: "partial",
			wantTarget: rules.TargetAudit{Fetched: "/api/customers/1", Status: 206}, wantEvent: "error"},
		{name: "an id with an encoded space is fetched with the same escaping",
			user: rep, path: "/api/customers/a%20b", body: `{"notes":"x"}`, fetch: answerJSON(200, `{"owner_id":"zhang"}`),
			wantStatus: 200, wantCalls: "fetch GET /api/customers/a%20b, PATCH /api/customers/a%20b",
			wantTarget: rules.TargetAudit{Fetched: "/api/customers/a%20b", Status: 200, Allowed: true}, wantEvent: "allow"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, sink := newTargetGuard(t, c.user, c.maxBody, false)
			crm := &targetCRM{fetch: c.fetch}
			rec := httptest.NewRecorder()
			if err := g.ServeHTTP(rec, patch(c.path, c.body), crm.handler()); err != nil {
				t.Fatalf("ServeHTTP: %v", err)
			}
			if rec.Code != c.wantStatus {
				t.Errorf("status %d, want %d: %s", rec.Code, c.wantStatus, rec.Body)
			}
			if got := strings.Join(crm.calls(), ", "); got != c.wantCalls {
				t.Errorf("the CRM received [%s], want [%s]", got, c.wantCalls)
			}
			if c.wantReason != "" {
				var ans struct{ Rule, Reason string }
				if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil || ans.Rule != "customers.update" || !strings.Contains(ans.Reason, c.wantReason) {
					t.Errorf("refusal %s (%v): want rule customers.update and a reason containing %q", rec.Body, err, c.wantReason)
				}
			}
			if c.hide != "" && strings.Contains(rec.Body.String(), c.hide) {
				t.Errorf("the refusal shows the internal error %q: %s", c.hide, rec.Body)
			}
			ev := sink.last(t)
			if ev.Decision != c.wantEvent || ev.Status != c.wantStatus {
				t.Errorf("audit decision %q status %d, want %q %d", ev.Decision, ev.Status, c.wantEvent, c.wantStatus)
			}
			switch {
			case c.wantTarget.Fetched == "" && ev.Target != nil:
				t.Errorf("audit target %+v, want none", ev.Target)
			case c.wantTarget.Fetched != "":
				if ev.Target == nil {
					t.Fatal("the audit event has no target")
				}
				got := *ev.Target
				got.Reason = ""
				if !reflect.DeepEqual(got, c.wantTarget) {
					t.Errorf("audit target %+v, want %+v", got, c.wantTarget)
				}
			}
		})
	}
}

func TestTheRecordFetchCarriesTheUsersIdentityAndNothingElse(t *testing.T) {
	g, _ := newTargetGuard(t, &testUser{id: "zhang", roles: []string{"sales"}}, 0, false)
	crm := &targetCRM{fetch: answerJSON(200, `{"owner_id":"zhang"}`)}
	req := patch("/api/customers/1", `{"notes":"x"}`)
	req.Header.Set("Cookie", "crmguard_session=secret; crm_lang=zh")
	req.Header.Set(HeaderUser, "admin")
	req.Header.Set("X-HTTP-Method-Override", "PATCH")
	req.Header.Set("If-Match", `"v1"`)
	req.Header.Set("Range", "bytes=0-10")
	req.Header.Set("X-Original-URL", "/api/admin")
	req.Header.Set("User-Agent", "test-browser")
	rec := httptest.NewRecorder()
	if err := g.ServeHTTP(rec, req, crm.handler()); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 200 || len(crm.got) != 2 {
		t.Fatalf("status %d, CRM calls %v", rec.Code, crm.calls())
	}
	fetch, write := crm.got[0], crm.got[1]
	t.Run("the fetch is marked and the write is not", func(t *testing.T) {
		if !IsTargetFetch(fetch) || IsTargetFetch(write) {
			t.Errorf("IsTargetFetch: fetch %v, write %v", IsTargetFetch(fetch), IsTargetFetch(write))
		}
	})
	t.Run("the fetch is a GET without a body", func(t *testing.T) {
		if fetch.Method != http.MethodGet || len(crm.body[0]) != 0 || fetch.ContentLength != 0 {
			t.Errorf("fetch %s with %d body bytes (length %d)", fetch.Method, len(crm.body[0]), fetch.ContentLength)
		}
	})
	t.Run("the fetch names the verified user, not the forged one", func(t *testing.T) {
		if got := fetch.Header.Values(HeaderUser); len(got) != 1 || got[0] != "zhang" || fetch.Header.Get(HeaderRoles) != "sales" {
			t.Errorf("%s: %v, %s: %q", HeaderUser, got, HeaderRoles, fetch.Header.Get(HeaderRoles))
		}
	})
	t.Run("the fetch asks for JSON", func(t *testing.T) {
		if fetch.Header.Get("Accept") != "application/json" || fetch.Header.Get("Accept-Encoding") != "identity" {
			t.Errorf("Accept %q, Accept-Encoding %q", fetch.Header.Get("Accept"), fetch.Header.Get("Accept-Encoding"))
		}
	})
	t.Run("the proxy's cookie stays behind and the CRM's goes along, as on the write", func(t *testing.T) {
		c := fetch.Header.Get("Cookie")
		if strings.Contains(c, "crmguard") || !strings.Contains(c, "crm_lang=zh") || c != write.Header.Get("Cookie") {
			t.Errorf("fetch Cookie %q, write Cookie %q", c, write.Header.Get("Cookie"))
		}
	})
	t.Run("overrides, conditionals, ranges, rewrites and body headers do not reach the fetch", func(t *testing.T) {
		for _, h := range []string{"X-HTTP-Method-Override", "If-Match", "Range", "X-Original-URL", "Content-Type", "Content-Length"} {
			if v := fetch.Header.Values(h); len(v) > 0 {
				t.Errorf("the fetch carried %s: %v", h, v)
			}
		}
		if fetch.Header.Get("User-Agent") != "test-browser" {
			t.Errorf("User-Agent %q", fetch.Header.Get("User-Agent"))
		}
	})
}

func TestABearerTokenForTheProxyDoesNotReachTheFetch(t *testing.T) {
	set, err := rules.Load("target.yaml", []byte(targetRules))
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Provider: &testProvider{user: &testUser{id: "zhang", roles: []string{"sales"}}, bearer: true}})
	if err != nil {
		t.Fatal(err)
	}
	crm := &targetCRM{fetch: answerJSON(200, `{"owner_id":"zhang"}`)}
	req := patch("/api/customers/1", `{"notes":"x"}`)
	req.Header.Set("Authorization", "Bearer proxy-token")
	rec := httptest.NewRecorder()
	if err := g.ServeHTTP(rec, req, crm.handler()); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 200 || len(crm.got) != 2 {
		t.Fatalf("status %d, CRM calls %v", rec.Code, crm.calls())
	}
	for _, r := range crm.got {
		if v := r.Header.Get("Authorization"); v != "" {
			t.Errorf("%s %s carried Authorization %q", r.Method, r.URL, v)
		}
	}
}

func TestShadowModeFetchesAndAuditsButForwardsTheWrite(t *testing.T) {
	g, sink := newTargetGuard(t, &testUser{id: "zhang", roles: []string{"sales"}}, 0, true)
	crm := &targetCRM{fetch: answerJSON(200, `{"owner_id":"wu"}`)}
	rec := httptest.NewRecorder()
	if err := g.ServeHTTP(rec, patch("/api/customers/2", `{"notes":"x"}`), crm.handler()); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 200 {
		t.Errorf("status %d, want 200 (shadow mode never blocks): %s", rec.Code, rec.Body)
	}
	if got := strings.Join(crm.calls(), ", "); got != "fetch GET /api/customers/2, PATCH /api/customers/2" {
		t.Errorf("the CRM received [%s]", got)
	}
	ev := sink.last(t)
	if ev.Target == nil || ev.Target.Allowed || !ev.Shadow || !strings.Contains(ev.Reason, "you may not change this record") {
		t.Errorf("audit: target %+v, shadow %v, reason %q; want the refusal that was not enforced", ev.Target, ev.Shadow, ev.Reason)
	}
}

func TestTheAuditLogLineHoldsTheTarget(t *testing.T) {
	ev := &AuditEvent{Method: "PATCH", Path: "/api/customers/2", Decision: "deny", Status: 403,
		Target: &rules.TargetAudit{Fetched: "/api/customers/2", Status: 200, Reason: "route customers.update: you may not change this record"}}
	enc := zapcore.NewMapObjectEncoder()
	if err := ev.MarshalLogObject(enc); err != nil {
		t.Fatal(err)
	}
	got, ok := enc.Fields["target"].(map[string]any)
	if !ok || got["fetched"] != "/api/customers/2" || got["status"] != 200 || got["allowed"] != false || got["reason"] == nil {
		t.Errorf("logged target %#v", enc.Fields["target"])
	}
}

func TestTheAuditEventJSONHoldsTheTargetAsEncodingJSONWould(t *testing.T) {
	type plainEvent AuditEvent
	for _, tg := range []*rules.TargetAudit{
		{Fetched: "/api/customers/2", Status: 200, Reason: `route customers.update: you may not change this record: the condition "record.owner_id == user.id" does not hold <&>`},
		{Fetched: "/api/customers/1", Status: 200, Allowed: true},
		{Fetched: "/api/customers/1"},
		{Fetched: "/api/customers/1", Status: 200, Reason: "route r: you may not change record 5", IDs: []string{"1", `"5"`}, Fetches: 2, Refused: `"5"`},
	} {
		t.Run("a target allowed="+strconv.FormatBool(tg.Allowed)+" status="+strconv.Itoa(tg.Status)+" is encoded like encoding/json", func(t *testing.T) {
			ev := AuditEvent{Method: "PATCH", Path: "/api/customers/2", Decision: "deny", Status: 403, Target: tg}
			got, err := json.Marshal(&ev)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := json.Marshal(plainEvent(ev))
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("not JSON: %v: %s", err, got)
			}
			_ = json.Unmarshal(want, &w)
			if !reflect.DeepEqual(g, w) {
				t.Errorf("\ngot  %s\nwant %s", got, want)
			}
		})
	}
}
