package rulescli

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crmguard/crmguard/rules"
)

func exampleSet(t *testing.T) *rules.Set {
	t.Helper()
	set, err := rules.LoadFile(filepath.Join("..", "..", "..", "..", "examples", "rules.yaml"), rules.WithHashKey([]byte(DefaultTestHashKey)))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestCaseGrantsAreBoundAndUsedOnce(t *testing.T) {
	now := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	one := 1
	src, err := newCaseGrants([]CaseGrant{{ID: "g", Route: "customers.export", Path: "/api/customers/export?b=2&a=1", Policy: "export", UsesLeft: &one}},
		&User{ID: "zhang"}, now)
	if err != nil {
		t.Fatal(err)
	}
	canon, _ := rules.CanonicalRequest("GET", "/api/customers/export?a=1&b=2")
	q := rules.GrantQuery{Requester: "zhang", Route: "customers.export", Policy: "export", Request: canon, Now: now}
	misses := map[string]rules.GrantQuery{
		"another user":    {Requester: "li", Route: q.Route, Policy: q.Policy, Request: q.Request, Now: now},
		"another route":   {Requester: "zhang", Route: "deals.export", Policy: q.Policy, Request: q.Request, Now: now},
		"another policy":  {Requester: "zhang", Route: q.Route, Policy: "other", Request: q.Request, Now: now},
		"another request": {Requester: "zhang", Route: q.Route, Policy: q.Policy, Request: "GET /api/customers/export", Now: now},
		"after expiry":    {Requester: "zhang", Route: q.Route, Policy: q.Policy, Request: q.Request, Now: now.Add(2 * time.Hour)},
	}
	for name, mq := range misses {
		t.Run("a grant is not found for "+name, func(t *testing.T) {
			if g, err := src.FindGrant(context.Background(), mq); g != nil || err != nil {
				t.Fatalf("found %+v, %v", g, err)
			}
		})
	}
	t.Run("the grant is found for the same request written otherwise, used once, then gone", func(t *testing.T) {
		if g, err := src.FindGrant(context.Background(), q); g == nil || err != nil || g.ID != "g" {
			t.Fatalf("FindGrant = %+v, %v", g, err)
		}
		if g, err := src.UseGrant(context.Background(), q, "g"); err != nil || g.UsesLeft != 0 {
			t.Fatalf("UseGrant = %+v, %v", g, err)
		}
		if g, _ := src.FindGrant(context.Background(), q); g != nil {
			t.Fatalf("found a used-up grant %+v", g)
		}
		if _, err := src.UseGrant(context.Background(), q, "g"); !errors.Is(err, rules.ErrGrantGone) {
			t.Fatalf("second UseGrant error %v, want ErrGrantGone", err)
		}
	})
}

func TestCasesWithGrantsAndElevationsSayWhatIsWrong(t *testing.T) {
	set := exampleSet(t)
	li := &User{ID: "li", Roles: []string{"service"}, MFA: true}
	zhang := &User{ID: "zhang", Roles: []string{"sales"}, MFA: true}
	cases := []struct {
		name string
		c    Case
		want string
	}{
		{"a grant without a route is refused", Case{User: zhang, Grants: []CaseGrant{{Path: "/api/customers/export", Policy: "export"}}},
			"grants[0]: a grant needs route, path and policy"},
		{"a grant for a path the rules cannot judge is refused", Case{User: zhang, Grants: []CaseGrant{{Route: "customers.export", Path: "/a%2Fb", Policy: "export"}}},
			"grants[0]: rules: canonical request"},
		{"a grant in a case without a user must name its user", Case{Grants: []CaseGrant{{Route: "customers.export", Path: "/x", Policy: "export"}}},
			"grants[0]: the case has no user"},
		{"an elevation without a user is refused", Case{Elevation: &CaseElevation{Name: "complaint"}}, "elevation: the case has no user"},
		{"an unknown elevation is named", Case{User: li, Elevation: &CaseElevation{Name: "complain"}, Expect: Expect{Status: 200}},
			`elevation \"complain\" is not in the rule file`},
		{"an elevation the user may not start is named", Case{User: zhang, Elevation: &CaseElevation{Name: "complaint"}, Expect: Expect{Status: 200}},
			"may not start elevation complaint"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.c.Name = c.name
			c.c.Now = "2026-11-20T10:00:00+08:00"
			c.c.Request = Request{Method: "GET", Path: "/api/customers/3"}
			fails := RunCase(set, c.c, Options{})
			if !strings.Contains(strings.Join(fails, "; "), c.want) {
				t.Fatalf("failures %q, want one with %q", fails, c.want)
			}
		})
	}
}
