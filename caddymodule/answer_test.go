package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/rules"
)

// answerRules remove a list's total and its count headers for sales reps.
const answerRules = `version: 1
roles: {sales: {}}
routes:
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales]
    records: list
    visible: record.owner_id == user.id
    answer:
      total: remove
    answer_headers: [X-Total-Count, Content-Range]
`

// newAnswerGuard serves answerRules; shadow puts the rule file in shadow
// mode, handlerShadow the handler (`mode shadow` in the Caddyfile).
func newAnswerGuard(t *testing.T, shadow bool, handlerShadow ...bool) (*Guard, *memSink) {
	t.Helper()
	src := answerRules
	if shadow {
		src = strings.Replace(src, "version: 1\n", "version: 1\nmode: shadow\n", 1)
	}
	set, err := rules.Load("answer.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	opt := GuardOptions{Rules: func() *rules.Set { return set }, Audit: sink, Provider: &testProvider{user: zhang}}
	if len(handlerShadow) > 0 && handlerShadow[0] {
		m := rules.Shadow
		opt.Mode = &m
	}
	g, err := NewGuard(opt)
	if err != nil {
		t.Fatal(err)
	}
	return g, sink
}

func TestAnswerFieldsAndHeadersDoNotReachTheClient(t *testing.T) {
	body := `{"total":2,"list":[{"id":1,"owner_id":"zhang"},{"id":2,"owner_id":"li"}]}`
	up := func() *upstream {
		u := jsonUpstream(body)
		u.header.Set("X-Total-Count", "2")
		u.header.Set("Content-Range", "items 0-1/2")
		return u
	}
	t.Run("the total and the count headers are removed from a rewritten list", func(t *testing.T) {
		g, sink := newAnswerGuard(t, false)
		rec := serve(t, g, httptest.NewRequest("GET", "/api/customers", nil), up())
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if got := rec.Body.String(); got != `{"list":[{"id":1,"owner_id":"zhang"}]}` {
			t.Fatalf("body %s", got)
		}
		if rec.Header().Get("X-Total-Count") != "" || rec.Header().Get("Content-Range") != "" {
			t.Fatalf("count headers reached the client: %v", rec.Header())
		}
		ev := sink.last(t)
		if ev.Fields["remove:answer.total"] != 1 || ev.Fields["remove:answer_header.X-Total-Count"] != 1 || ev.Fields["remove:answer_header.Content-Range"] != 1 {
			t.Fatalf("audit fields %v", ev.Fields)
		}
	})
	t.Run("the count headers are removed from a withheld error answer too", func(t *testing.T) {
		g, _ := newAnswerGuard(t, false)
		u := up()
		u.status = http.StatusInternalServerError
		rec := serve(t, g, httptest.NewRequest("GET", "/api/customers", nil), u)
		if rec.Code != http.StatusInternalServerError || rec.Header().Get("X-Total-Count") != "" {
			t.Fatalf("status %d headers %v", rec.Code, rec.Header())
		}
	})
	t.Run("under the handler's mode shadow the answer headers are kept and the removals audited", func(t *testing.T) {
		g, sink := newAnswerGuard(t, false, true)
		u := up()
		u.header.Del("Content-Range")
		rec := serve(t, g, httptest.NewRequest("GET", "/api/customers", nil), u)
		if rec.Body.String() != body || rec.Header().Get("X-Total-Count") != "2" {
			t.Fatalf("body %s headers %v", rec.Body, rec.Header())
		}
		if ev := sink.last(t); !ev.Shadow || ev.Fields["remove:answer_header.X-Total-Count"] != 1 {
			t.Fatalf("audit event %+v", ev)
		}
	})
	t.Run("in shadow mode the answer passes unchanged and the removals are audited", func(t *testing.T) {
		g, sink := newAnswerGuard(t, true)
		u := up()
		// kept in shadow mode, a Content-Range would make the handler
		// treat the answer as partial and skip the audit rewrite
		u.header.Del("Content-Range")
		rec := serve(t, g, httptest.NewRequest("GET", "/api/customers", nil), u)
		if rec.Body.String() != body || rec.Header().Get("X-Total-Count") != "2" {
			t.Fatalf("body %s headers %v", rec.Body, rec.Header())
		}
		if ev := sink.last(t); ev.Fields["remove:answer.total"] != 1 || ev.Fields["remove:answer_header.X-Total-Count"] != 1 {
			t.Fatalf("audit fields %v", ev.Fields)
		}
	})
}
