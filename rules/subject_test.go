package rules

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestUsersAreBuiltFromClaims(t *testing.T) {
	s := mustLoad(t, decideRules)
	noMap := mustLoad(t, "version: 1\nroles: {sales: {}, boss: {inherits: [sales]}}\nroutes:\n  - id: x\n    match: {path: /x}\n    allow: [sales, boss]\n")
	cases := []struct {
		name   string
		set    *Set
		claims map[string]any
		id     string
		roles  []string
		attrs  map[string]any
		err    string
	}{
		{name: "groups go through role_map and inheritance", set: s,
			claims: map[string]any{"preferred_username": "wang", "groups": []any{"crm-managers"}, "teams": []any{"east", "north"}},
			id:     "wang", roles: []string{"sales", "sales_manager"}, attrs: map[string]any{"teams": []any{"east", "north"}}},
		{name: "groups role_map does not list are ignored", set: s,
			claims: map[string]any{"preferred_username": "li", "groups": []any{"crm-sales", "domain-admins", "admin"}},
			id:     "li", roles: []string{"sales"}, attrs: map[string]any{}},
		{name: "several groups merge without duplicates, sorted", set: s,
			claims: map[string]any{"preferred_username": "root", "groups": []any{"crm-admins", "crm-sales"}},
			id:     "root", roles: []string{"admin", "sales", "sales_manager"}, attrs: map[string]any{}},
		{name: "a missing groups claim gives no roles", set: s,
			claims: map[string]any{"preferred_username": "nobody"},
			id:     "nobody", roles: []string{}, attrs: map[string]any{}},
		{name: "a single group as a string counts as a list of one", set: s,
			claims: map[string]any{"preferred_username": "li", "groups": "crm-sales"},
			id:     "li", roles: []string{"sales"}, attrs: map[string]any{}},
		{name: "without role_map groups that name declared roles are roles", set: noMap,
			claims: map[string]any{"sub": "u1", "groups": []any{"boss", "root"}},
			id:     "u1", roles: []string{"boss", "sales"}, attrs: map[string]any{}},
		{name: "a missing id is an error", set: s,
			claims: map[string]any{"groups": []any{"crm-sales"}}, err: "rules: subject.id"},
		{name: "an empty id is an error", set: s,
			claims: map[string]any{"preferred_username": ""}, err: "not a non-empty string"},
		{name: "a groups claim with a non-string is an error", set: s,
			claims: map[string]any{"preferred_username": "x", "groups": []any{"crm-sales", 7}}, err: "item 1 is not a string"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			auth := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			u, err := c.set.UserFromClaims(c.claims, true, auth)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.ID != c.id || !reflect.DeepEqual(u.Roles, c.roles) || !reflect.DeepEqual(u.Attrs, c.attrs) || !u.MFA || !u.AuthTime.Equal(auth) {
				t.Fatalf("user %+v, want id %q roles %v attrs %v", u, c.id, c.roles, c.attrs)
			}
		})
	}
}

func TestUserValuesReachConditions(t *testing.T) {
	s := mustLoad(t, `version: 1
roles: {a: {}}
routes:
  - id: fresh
    match: {path: /fresh}
    allow: [a]
    when: user.mfa && user.auth_age < duration("10m") && "east" in user.attrs.teams && user.id == "u"
`)
	now := shanghaiWorkday
	cases := []struct {
		name    string
		user    *User
		outcome Outcome
	}{
		{"a fresh MFA user of the team passes", s.UserFromRoles("u", []string{"a"}, map[string]any{"teams": []any{"east"}}, true, now.Add(-time.Minute)), Allow},
		{"an old sign-in fails auth_age", s.UserFromRoles("u", []string{"a"}, map[string]any{"teams": []any{"east"}}, true, now.Add(-time.Hour)), Deny},
		{"an unknown sign-in time fails auth_age", s.UserFromRoles("u", []string{"a"}, map[string]any{"teams": []any{"east"}}, true, time.Time{}), Deny},
		{"a missing attribute fails closed", s.UserFromRoles("u", []string{"a"}, nil, true, now.Add(-time.Minute)), Deny},
		{"another team fails", s.UserFromRoles("u", []string{"a"}, map[string]any{"teams": []string{"west"}}, true, now.Add(-time.Minute)), Deny},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(c.user, request("GET", "/fresh"))
			if d.Outcome != c.outcome {
				t.Fatalf("outcome %d: %s", d.Outcome, d.Reason)
			}
		})
	}
}
