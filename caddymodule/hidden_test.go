package caddymodule

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/crmguard/crmguard/rules"
)

// hiddenRules hides other owners' customers from sales on a record route,
// and scopes the list's query to the rep's own customers.
const hiddenRules = `version: 1
mfa: {required: false}
roles: {sales: {}, service: {}}
routes:
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales, service]
    records: list
    visible: &visible 'record.owner_id == user.id || "service" in user.roles'
    query: {params: {offset: {}, limit: {}, owner_id: {}, q: {filters: [name]}}}
    forward_query:
      owner_id: {value: user.id, for: [sales]}
  - id: customers.get
    match: {methods: [GET], path: "/api/customers/{id}"}
    allow: [sales, service]
    record: "@this"
    visible: *visible
    fields:
      phone: {mask: phone}
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales, service]
    target:
      fetch: "/api/customers/{id}"
      visible: *visible
      allow_if: record.owner_id == user.id
`

func newRulesGuard(t testing.TB, src string, user *testUser, shadow bool) (*Guard, *memSink) {
	t.Helper()
	set, err := rules.Load("rules.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	opt := GuardOptions{Rules: func() *rules.Set { return set }, Audit: sink, Provider: &testProvider{user: user}}
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

// crmRecords is a fake CRM with customers 1 (zhang's) and 2 (wu's): it
// answers a record, or 404 as the example CRM does.
func crmRecords() http.Handler {
	recs := map[string]string{
		"/api/customers/1": `{"id":1,"owner_id":"zhang","name":"张伟","phone":"13812345678"}`,
		"/api/customers/2": `{"id":2,"owner_id":"wu","name":"吴芳","phone":"13900001111","notes":"` + strings.Repeat("长期客户，", 100) + `"}`,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("X-Request-Time", "3ms")
		body, ok := recs[r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"customer not found"}`))
			return
		}
		if r.Method == http.MethodPatch {
			body = `{"updated":true}`
		}
		_, _ = w.Write([]byte(body))
	})
}

func serveCRM(t testing.TB, g *Guard, req *http.Request, crm http.Handler) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { crm.ServeHTTP(w, r); return nil })
	if err := g.ServeHTTP(rec, req, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return rec
}

// dump is an answer as the client reads it: status, every header, body.
func dump(rec *httptest.ResponseRecorder) string {
	var b bytes.Buffer
	_ = rec.Result().Header.Write(&b)
	return rec.Result().Status + "\n" + b.String() + "\n" + rec.Body.String()
}

func TestHiddenAndMissingRecordsGiveByteIdenticalAnswers(t *testing.T) {
	g, sink := newRulesGuard(t, hiddenRules, zhang, false)
	crm := crmRecords()
	for _, accept := range []string{"application/json", "text/html,application/xhtml+xml"} {
		for _, method := range []string{http.MethodGet, http.MethodPatch} {
			t.Run(method+" with Accept "+accept, func(t *testing.T) {
				req := func(path string) *http.Request {
					r := httptest.NewRequest(method, path, nil)
					if method == http.MethodPatch {
						r = patch(path, `{"notes":"x"}`)
					}
					r.Header.Set("Accept", accept)
					return r
				}
				hidden := serveCRM(t, g, req("/api/customers/2"), crm)
				missing := serveCRM(t, g, req("/api/customers/404"), crm)
				if hidden.Code != http.StatusNotFound {
					t.Fatalf("the hidden record got %d:\n%s", hidden.Code, dump(hidden))
				}
				if a, b := dump(hidden), dump(missing); a != b {
					t.Errorf("the answers differ:\nhidden:\n%s\nmissing:\n%s", a, b)
				}
				if strings.Contains(hidden.Body.String(), "吴芳") || strings.Contains(hidden.Body.String(), "wu") {
					t.Errorf("the answer shows the hidden record: %s", hidden.Body)
				}
			})
		}
	}
	t.Run("the audit events tell the two apart", func(t *testing.T) {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		if len(sink.events) < 2 {
			t.Fatalf("%d events", len(sink.events))
		}
		h, m := sink.events[0], sink.events[1]
		if !strings.Contains(h.Reason, "not visible to role sales") || !strings.Contains(m.Reason, "the CRM answered 404") {
			t.Errorf("hidden reason %q, missing reason %q", h.Reason, m.Reason)
		}
	})
	t.Run("a write to a visible record the user may not change is 403", func(t *testing.T) {
		gs, _ := newRulesGuard(t, hiddenRules, &testUser{id: "li", roles: []string{"service"}}, false)
		rec := serveCRM(t, gs, patch("/api/customers/2", `{"notes":"x"}`), crm)
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "you may not change this record") {
			t.Errorf("%d %s", rec.Code, rec.Body)
		}
	})
}

func TestForwardQueryReachesTheCRM(t *testing.T) {
	for _, c := range []struct {
		name   string
		user   *testUser
		shadow bool
		target string
		want   url.Values
	}{
		{"a rep's list is scoped to the rep whatever owner the client asks for", zhang, false, "/api/customers?OWNER_ID=wu&offset=20",
			url.Values{"offset": {"20"}, "owner_id": {"zhang"}}},
		{"a role the entry is not for keeps its query", &testUser{id: "li", roles: []string{"service"}}, false, "/api/customers?owner_id=wu",
			url.Values{"owner_id": {"wu"}}},
		{"shadow mode does not change the query", zhang, true, "/api/customers?owner_id=wu",
			url.Values{"owner_id": {"wu"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, _ := newRulesGuard(t, hiddenRules, c.user, c.shadow)
			up := jsonUpstream(`{"list":[]}`)
			r := httptest.NewRequest(http.MethodGet, c.target, nil)
			rec := serve(t, g, r, up)
			if rec.Code != 200 || up.got == nil {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			got, _ := url.ParseQuery(up.got.URL.RawQuery)
			if got.Encode() != c.want.Encode() || up.got.RequestURI != "/api/customers?"+up.got.URL.RawQuery {
				t.Errorf("the CRM got %q (request URI %q), want %q", up.got.URL.RawQuery, up.got.RequestURI, c.want.Encode())
			}
		})
	}
}

// TestAGETWithABodyOnAQueryGuardedRouteNeverReachesTheCRM sends the
// search in a GET's body, where Laravel (JSON) and Express (any type)
// read it as input: the guard refuses it before the CRM, whatever the
// body's framing.
func TestAGETWithABodyOnAQueryGuardedRouteNeverReachesTheCRM(t *testing.T) {
	g, _ := newRulesGuard(t, hiddenRules, zhang, false)
	for _, c := range []struct {
		name    string
		body    io.Reader
		ctype   string
		chunked bool
	}{
		{"a JSON search", strings.NewReader(`{"owner_id":"wu","q":"吴"}`), "application/json", false},
		{"a form", strings.NewReader("owner_id=wu"), "application/x-www-form-urlencoded", false},
		{"a chunked body without a type", strings.NewReader("owner_id=wu"), "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := jsonUpstream(`{"list":[]}`)
			r := httptest.NewRequest(http.MethodGet, "/api/customers?offset=0", c.body)
			if c.ctype != "" {
				r.Header.Set("Content-Type", c.ctype)
			}
			if c.chunked {
				r.ContentLength = -1
				r.TransferEncoding = []string{"chunked"}
			}
			rec := serve(t, g, r, up)
			if rec.Code != http.StatusBadRequest || up.got != nil {
				t.Errorf("status %d, upstream called %v: %s", rec.Code, up.got != nil, rec.Body)
			}
		})
	}
	t.Run("a GET without a body goes on", func(t *testing.T) {
		up := jsonUpstream(`{"list":[]}`)
		rec := serve(t, g, httptest.NewRequest(http.MethodGet, "/api/customers?offset=0", nil), up)
		if rec.Code != http.StatusOK || up.got == nil {
			t.Errorf("status %d: %s", rec.Code, rec.Body)
		}
	})
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkHiddenVersusMissing reports the guard's time for each path.
func BenchmarkHiddenVersusMissing(b *testing.B) {
	g, _ := newRulesGuard(b, hiddenRules, zhang, false)
	crm := crmRecords()
	for _, c := range []struct{ name, path string }{{"hidden", "/api/customers/2"}, {"missing", "/api/customers/404"}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				r := httptest.NewRequest(http.MethodGet, c.path, nil)
				r.Header.Set("Accept", "application/json")
				serveCRM(b, g, r, crm)
			}
		})
	}
}
