package rules

import (
	"net/url"
	"strings"
	"testing"
)

const bypassRules = `version: 1
roles: {admin: {}, sales: {}}
routes:
  - id: export
    match: {path: /api/customers/export}
    allow: [admin]
  - id: sensitive
    match: {path: "/api/customers/{id}/sensitive"}
    allow: [admin]
  - id: api
    match: {path: /api/**}
    allow: [sales]
`

// TestTrickyPathsNeverReachARouteTheyWouldBypass is written from the
// attacker's side: a sales user tries to reach the admin-only routes
// through the broad /api/** route by dressing the path up.
func TestTrickyPathsNeverReachARouteTheyWouldBypass(t *testing.T) {
	s := mustLoad(t, bypassRules)
	sales := s.UserFromRoles("eve", []string{"sales"}, nil, true, shanghaiWorkday)
	cases := []struct{ name, target string }{
		{"a trailing slash", "/api/customers/export/"},
		{"a doubled slash", "/api//customers/export"},
		{"a dot segment", "/api/./customers/export"},
		{"a dot-dot segment", "/api/x/../customers/export"},
		{"encoded dot-dot", "/api/x/%2e%2e/customers/export"},
		{"an encoded letter", "/api/customers/%65xport"},
		{"upper case (IIS ignores case)", "/API/Customers/EXPORT"},
		{"mixed case on a parameter route", "/api/customers/7/Sensitive"},
		{"a matrix parameter", "/api/customers;x=1/export"},
		{"a session parameter", "/api/customers/export;jsessionid=1"},
		{"an encoded slash", "/api/customers%2Fexport"},
		{"an encoded backslash", "/api/customers%5Cexport"},
		{"a NUL byte", "/api/customers/export%00"},
		{"a NUL byte and an extension", "/api/customers/export%00.json"},
		{"double encoding", "/api/customers/%2565xport"},
		{"a trailing dot", "/api/customers/export."},
		{"a trailing space", "/api/customers/export%20"},
		{"an overlong dot-dot", "/api/x/%c0%ae%c0%ae/customers/export"},
		{"an encoded question mark", "/api/customers/export%3F"},
		{"a climb above the root", "/../api/customers/export"},
		{"a lower-case method", "/api/customers/export"},
		{"a format suffix (Rails, Spring suffix matching)", "/api/customers/export.json"},
		{"a format suffix in upper case", "/api/customers/EXPORT.CSV"},
		{"a format suffix on a parameter route", "/api/customers/7/sensitive.xml"},
		{"a fullwidth letter", "/api/customers/%EF%BD%85xport"},
	}
	for _, c := range cases {
		t.Run("a sales user cannot reach an admin route through "+c.name, func(t *testing.T) {
			u, err := url.ParseRequestURI(c.target)
			if err != nil {
				t.Fatalf("test input does not parse: %v", err)
			}
			method := "GET"
			if strings.Contains(c.name, "lower-case") {
				method = "get"
			}
			d := s.Decide(sales, &Request{Method: method, URL: u, Now: shanghaiWorkday})
			if d.Outcome == Allow {
				t.Fatalf("%s was allowed on route %q (path %q)", c.target, d.RouteID, d.Path)
			}
			if d.Status != 400 && d.Status != 403 {
				t.Fatalf("status %d, want 400 or 403", d.Status)
			}
			if d.Status == 403 && d.RouteID == "api" {
				t.Fatalf("denied by the wrong route")
			}
		})
	}
	t.Run("an admin still reaches the export route through a harmless variant", func(t *testing.T) {
		admin := s.UserFromRoles("root", []string{"admin"}, nil, true, shanghaiWorkday)
		d := s.Decide(admin, request("GET", "/api//Customers/./export/"))
		if d.Outcome != Allow || d.RouteID != "export" || d.Path != "/api/Customers/export" {
			t.Fatalf("outcome %v route %q path %q", d.Outcome, d.RouteID, d.Path)
		}
	})
}
