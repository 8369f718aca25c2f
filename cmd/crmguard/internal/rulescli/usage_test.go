package rulescli

import (
	"fmt"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/rules"
)

const usageRules = `version: 1
roles: {sales: {}}
mfa: {required: false}
routes:
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales]
    records: list
  - id: customers.get
    match: {methods: [GET], path: "/api/customers/{id}"}
    allow: [sales]
    record: "@this"
limits:
  - {id: bulk_view, routes: ["customers.*"], count: records, max: 500, per: 10m, action: block}
  - {id: per_route, routes: ["customers.*"], count: requests, max: 3, per: 1m, key: user+route, action: block}
`

// customersAnswer is an upstream answer of n customers.
func customersAnswer(n int) *Upstream {
	list := make([]any, n)
	for i := range list {
		list[i] = map[string]any{"id": i, "name": fmt.Sprintf("cust-%d", i)}
	}
	return &Upstream{Body: map[string]any{"list": list}}
}

func TestCasesStartFromTheirUsage(t *testing.T) {
	set, err := rules.Load("usage.yaml", []byte(usageRules))
	if err != nil {
		t.Fatal(err)
	}
	zhang := &User{ID: "zhang", Roles: []string{"sales"}, MFA: true}
	list := Request{Path: "/api/customers"}
	cases := []struct {
		name string
		c    Case
	}{
		{"an answer that would take the count past max is refused", Case{User: zhang, Usage: map[string]int64{"bulk_view": 480}, Request: list, Upstream: customersAnswer(30),
			Expect: Expect{Status: 429, BodyExcludes: []string{"cust-"}, Headers: map[string]*string{"Retry-After": ptr("600")},
				Audit: map[string]any{"decision": "limited", "limits": []any{map[string]any{"limit": "bulk_view", "counts": "records", "action": "block",
					"count": 480, "adding": 30, "max": 500, "window": "10m0s", "refused": true, "retry_after": 600}}}}}},
		{"an answer that fits passes", Case{User: zhang, Usage: map[string]int64{"bulk_view": 480}, Request: list, Upstream: customersAnswer(20),
			Expect: Expect{Status: 200, BodyIncludes: []string{"cust-19"}}}},
		{"the next case starts from an empty store", Case{User: zhang, Request: list, Upstream: customersAnswer(30), Expect: Expect{Status: 200}}},
		{"a user+route limit is seeded for the case's route", Case{User: zhang, Usage: map[string]int64{"per_route": 3}, Request: Request{Path: "/api/customers/7"},
			Upstream: &Upstream{Body: map[string]any{"id": 7}}, Expect: Expect{Status: 429, UpstreamCalled: ptrBool(false)}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.c.Name = c.name
			c.c.Now = "2026-11-20T10:00:00+08:00"
			if fails := RunCase(set, c.c, Options{}); len(fails) > 0 {
				t.Errorf("failures: %s", strings.Join(fails, "; "))
			}
		})
	}
}

func TestUsageThatCannotBeSeededIsNamed(t *testing.T) {
	set, err := rules.Load("usage.yaml", []byte(usageRules))
	if err != nil {
		t.Fatal(err)
	}
	noLimits, err := rules.Load("plain.yaml", []byte(strings.Split(usageRules, "limits:")[0]))
	if err != nil {
		t.Fatal(err)
	}
	zhang := &User{ID: "zhang", Roles: []string{"sales"}, MFA: true}
	cases := []struct {
		name string
		set  *rules.Set
		c    Case
		want string
	}{
		{"an unknown limit is named with the known ones", set, Case{User: zhang, Usage: map[string]int64{"bulk": 1}}, `usage: unknown limit "bulk" (limits: bulk_view, per_route)`},
		{"a negative count is refused", set, Case{User: zhang, Usage: map[string]int64{"bulk_view": -1}}, "usage: bulk_view: a count cannot be negative"},
		{"usage without a user is refused", set, Case{Usage: map[string]int64{"bulk_view": 1}}, "usage: the case has no user"},
		{"usage under a rule file without limits is refused", noLimits, Case{User: zhang, Usage: map[string]int64{"bulk_view": 1}}, "usage: the rule file has no limits"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.c.Name = c.name
			c.c.Request = Request{Path: "/api/customers"}
			fails := RunCase(c.set, c.c, Options{})
			if !strings.Contains(strings.Join(fails, "; "), c.want) {
				t.Fatalf("failures %q, want one with %q", fails, c.want)
			}
		})
	}
}

func ptrBool(b bool) *bool { return &b }

func ptr(s string) *string { return &s }
