package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/crmguard/crmguard/rules"
)

const grantRules = `version: 1
roles: {sales: {}, sales_manager: {inherits: [sales]}}
approvals:
  export:
    steps: [{name: manager, approvers: [sales_manager]}]
routes:
  - id: customers.export
    match: {methods: [GET, POST], path: /api/customers/export}
    allow: [sales]
    export: {approval: export}
    body:
      scope: {deny: [sales]}
`

// oneGrant is a GrantSource holding one grant of zhang's for one request.
type oneGrant struct {
	mu       sync.Mutex
	request  string
	uses     int
	findErr  error
	useErr   error
	consumed int
}

func (s *oneGrant) FindGrant(_ context.Context, q rules.GrantQuery) (*rules.Grant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.findErr != nil {
		return nil, s.findErr
	}
	if q.Requester != "zhang" || q.Request != s.request || s.uses == 0 {
		return nil, nil
	}
	return &rules.Grant{ID: "g-1", Policy: "export", Purpose: "visit plan", Approvers: []string{"wang"}, UsesLeft: s.uses}, nil
}

func (s *oneGrant) UseGrant(_ context.Context, q rules.GrantQuery, id string) (*rules.Grant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.useErr != nil {
		return nil, s.useErr
	}
	if s.uses == 0 {
		return nil, fmt.Errorf("grant %s: %w", id, rules.ErrGrantGone)
	}
	s.uses--
	s.consumed++
	return &rules.Grant{ID: "g-1", Policy: "export", Purpose: "visit plan", Approvers: []string{"wang"}, UsesLeft: s.uses}, nil
}

func TestTheGuardUsesAnExportGrantOnlyWhenTheRequestGoesThrough(t *testing.T) {
	set, err := rules.Load("rules.yaml", []byte(grantRules))
	if err != nil {
		t.Fatal(err)
	}
	canon, _ := rules.CanonicalRequest("GET", "/api/customers/export?team=east")
	postCanon, _ := rules.CanonicalRequest("POST", "/api/customers/export")
	csv := func() *upstream {
		return &upstream{header: http.Header{"Content-Type": {"text/csv"}, "Content-Disposition": {"attachment"}}, body: []byte("id\n1\n")}
	}
	cases := []struct {
		name      string
		src       *oneGrant
		method    string
		target    string
		body      string
		requests  int // sent one after another
		statuses  []int
		consumed  int
		decisions []string
	}{
		{name: "a grant of one use lets the first export through and refuses the second",
			src: &oneGrant{request: canon, uses: 1}, target: "/api/customers/export?team=east", requests: 2,
			statuses: []int{200, 403}, consumed: 1, decisions: []string{"allow", "deny"}},
		{name: "a request refused by a body guard uses nothing",
			src: &oneGrant{request: postCanon, uses: 1}, method: "POST", target: "/api/customers/export", body: `{"scope":"all"}`, requests: 1,
			statuses: []int{403}, consumed: 0, decisions: []string{"deny"}},
		{name: "a store that cannot be read refuses with 503",
			src: &oneGrant{request: canon, uses: 1, findErr: errors.New("redis: connection refused")}, target: "/api/customers/export?team=east", requests: 1,
			statuses: []int{503}, consumed: 0, decisions: []string{"deny"}},
		{name: "a store that fails when the grant is used refuses with 503 and the export never reaches the CRM",
			src: &oneGrant{request: canon, uses: 1, useErr: errors.New("redis: i/o timeout")}, target: "/api/customers/export?team=east", requests: 1,
			statuses: []int{503}, consumed: 0, decisions: []string{"error"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sink := &memSink{}
			g, err := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Audit: sink, Grants: c.src,
				Provider: &testProvider{user: zhang}})
			if err != nil {
				t.Fatal(err)
			}
			method := c.method
			if method == "" {
				method = "GET"
			}
			for i := 0; i < c.requests; i++ {
				req := httptest.NewRequest(method, c.target, strings.NewReader(c.body))
				if c.body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				up := csv()
				rec := serve(t, g, req, up)
				if rec.Code != c.statuses[i] {
					t.Fatalf("request %d: status %d (%s), want %d", i+1, rec.Code, rec.Body.String(), c.statuses[i])
				}
				if (up.got != nil) != (c.statuses[i] == 200) {
					t.Errorf("request %d: upstream called %v with status %d", i+1, up.got != nil, rec.Code)
				}
				ev := sink.events[len(sink.events)-1]
				if ev.Decision != c.decisions[i] {
					t.Errorf("request %d: audit decision %q, want %q (%s)", i+1, ev.Decision, c.decisions[i], ev.Reason)
				}
				if (ev.Grant != nil) != (c.statuses[i] == 200) || ev.Grant != nil && (ev.Grant.ID != "g-1" || ev.Grant.Purpose != "visit plan") {
					t.Errorf("request %d: audit grant %+v", i+1, ev.Grant)
				}
			}
			if c.src.consumed != c.consumed {
				t.Errorf("%d uses consumed, want %d", c.src.consumed, c.consumed)
			}
		})
	}
}
