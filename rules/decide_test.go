package rules

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

const decideRules = `version: 1
default: deny
subject:
  id: claims.preferred_username
  roles: claims.groups
  attrs:
    teams: claims.teams
role_map:
  crm-sales: sales
  crm-managers: [sales_manager]
  crm-admins: admin
roles:
  sales: {}
  sales_manager: {inherits: [sales]}
  compliance: {}
  admin: {inherits: [sales_manager]}
  observer: {}
mfa:
  required: true
  amr: [mfa, otp]
  acr: [urn:mfa]
schedules:
  business_hours: {days: mon-fri, hours: "08:00-20:00", tz: Asia/Shanghai}
routes:
  - id: health
    match: {path: /healthz}
    allow: public
  - id: blocked
    match: {path: /api/internal/**}
    deny: internal endpoints are not served through the proxy
  - id: customers.csv
    match: {methods: [GET], path: /api/customers, query: {format: csv}}
    allow: [admin]
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales, observer]
    when: in_schedule("business_hours") || "sales_manager" in user.roles
  - id: customers.sensitive
    match: {methods: [GET], path: "/api/customers/{id}/sensitive"}
    allow: [compliance, admin]
    mfa: {max_age: 5m}
  - id: customers.export
    match: {methods: [GET], path: /api/export/customers}
    allow: [sales, admin]
    export: {approval: true, without_approval: [admin]}
  - id: own.profile
    match: {methods: [GET], path: "/api/users/{name}"}
    allow: authenticated
    when: request.params.name == user.id
  - id: ajax
    match: {methods: [POST], path: /api/ajax, headers: {X-Requested-With: XMLHttpRequest}}
    allow: authenticated
  - id: nomfa
    match: {path: /api/lite}
    allow: authenticated
    mfa: {required: false}
`

func TestDecisions(t *testing.T) {
	s := mustLoad(t, decideRules)
	at := shanghaiWorkday
	night := time.Date(2026, 11, 24, 23, 0, 0, 0, time.FixedZone("CST", 8*3600))
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, true, at.Add(-time.Hour))
	manager := s.UserFromRoles("wang", []string{"sales_manager"}, nil, true, at.Add(-time.Hour))
	admin := s.UserFromRoles("root", []string{"admin"}, nil, true, at.Add(-time.Minute))
	staleAdmin := s.UserFromRoles("root", []string{"admin"}, nil, true, at.Add(-time.Hour))
	unknownAge := s.UserFromRoles("root", []string{"admin"}, nil, true, time.Time{})
	noMFA := s.UserFromRoles("zhang", []string{"sales"}, nil, false, at.Add(-time.Hour))
	cases := []struct {
		name    string
		user    *User
		method  string
		target  string
		now     time.Time
		header  http.Header
		outcome Outcome
		status  int
		route   string
		reason  string
		check   func(t *testing.T, d *Decision)
	}{
		{name: "anyone may call a public route", method: "GET", target: "/healthz", outcome: Allow, route: "health",
			check: func(t *testing.T, d *Decision) {
				if !d.Public {
					t.Error("Public is false")
				}
			}},
		{name: "an anonymous request to a non-public route must sign in", method: "GET", target: "/api/customers", outcome: SignIn, status: 401, route: "customers.list", reason: "needs a signed-in user",
			check: func(t *testing.T, d *Decision) {
				if !d.StepUp.MFA || d.StepUp.MaxAge != 0 {
					t.Errorf("StepUp = %+v, want MFA asked for at sign-in", d.StepUp)
				}
			}},
		{name: "an anonymous request to a step-up route asks for a fresh MFA sign-in", method: "GET", target: "/api/customers/7/sensitive", outcome: SignIn, status: 401, route: "customers.sensitive",
			check: func(t *testing.T, d *Decision) {
				if !d.StepUp.MFA || d.StepUp.MaxAge != 5*time.Minute {
					t.Errorf("StepUp = %+v", d.StepUp)
				}
			}},
		{name: "a request that matches no route is denied by default", user: sales, method: "GET", target: "/api/unknown", outcome: Deny, status: 403, reason: "no route matches GET /api/unknown and the rule file denies by default"},
		{name: "a deny route denies with its reason", user: admin, method: "GET", target: "/api/internal/x", outcome: Deny, status: 403, route: "blocked", reason: "internal endpoints are not served"},
		{name: "a role in allow is allowed in business hours", user: sales, method: "GET", target: "/api/customers", outcome: Allow, route: "customers.list"},
		{name: "the schedule is read in its own time zone", user: sales, method: "GET", target: "/api/customers", now: night, outcome: Deny, status: 403, route: "customers.list", reason: "the condition `in_schedule(\"business_hours\") || \"sales_manager\" in user.roles` does not hold"},
		{name: "a role named in when passes out of hours", user: manager, method: "GET", target: "/api/customers", now: night, outcome: Allow, route: "customers.list"},
		{name: "an inherited role is allowed", user: admin, method: "GET", target: "/api/customers", outcome: Allow, route: "customers.list"},
		{name: "a role not in allow is denied with a reason naming the roles", user: sales, method: "GET", target: "/api/customers/7/sensitive", outcome: Deny, status: 403, route: "customers.sensitive", reason: "role sales may not call customers.sensitive; allowed: compliance, admin"},
		{name: "a query matcher selects its route", user: sales, method: "GET", target: "/api/customers?format=csv", outcome: Deny, status: 403, route: "customers.csv"},
		{name: "a query matcher ignores the case of key and value", user: sales, method: "GET", target: "/api/customers?FORMAT=CSV", outcome: Deny, status: 403, route: "customers.csv"},
		{name: "the same parameter in two cases with different values is refused", user: sales, method: "GET", target: "/api/customers?format=json&Format=csv", outcome: Deny, status: 400, reason: "several times with different values"},
		{name: "a percent-encoded parameter name is decoded", user: sales, method: "GET", target: "/api/customers?f%6Frmat=csv", outcome: Deny, status: 403, route: "customers.csv"},
		{name: "a PHP array parameter format[]=csv meets the format matcher", user: sales, method: "GET", target: "/api/customers?format%5B%5D=csv", outcome: Deny, status: 403, route: "customers.csv"},
		{name: "a parameter with a leading space meets the format matcher", user: sales, method: "GET", target: "/api/customers?+format=csv", outcome: Deny, status: 403, route: "customers.csv"},
		{name: "format=json with format[]=csv is refused", user: sales, method: "GET", target: "/api/customers?format=json&format[]=csv", outcome: Deny, status: 400, reason: "several times with different values"},
		{name: "a query matcher ignores other values", user: sales, method: "GET", target: "/api/customers?format=json", outcome: Allow, route: "customers.list"},
		{name: "a matched query parameter given twice with different values is refused", user: sales, method: "GET", target: "/api/customers?format=json&format=csv", outcome: Deny, status: 400, reason: "several times with different values"},
		{name: "a query parameter with ; separators is refused", user: sales, method: "GET", target: "/api/customers?a=1;format=csv", outcome: Deny, status: 400, reason: "query string cannot be judged"},
		{name: "a header matcher selects its route", user: sales, method: "POST", target: "/api/ajax", header: http.Header{"X-Requested-With": {"XMLHttpRequest"}}, outcome: Allow, route: "ajax"},
		{name: "a header value is compared without case", user: sales, method: "POST", target: "/api/ajax", header: http.Header{"X-Requested-With": {"xmlhttprequest"}}, outcome: Allow, route: "ajax"},
		{name: "a missing header does not match", user: sales, method: "POST", target: "/api/ajax", outcome: Deny, status: 403, reason: "no route matches"},
		{name: "a matched header given twice with different values is refused", user: sales, method: "POST", target: "/api/ajax", header: http.Header{"X-Requested-With": {"XMLHttpRequest", "fetch"}}, outcome: Deny, status: 400, reason: "the header \"x-requested-with\" is given several times with different values, so route ajax cannot be judged"},
		{name: "MFA missing asks for step-up", user: noMFA, method: "GET", target: "/api/customers", outcome: StepUp, status: 401, route: "customers.list", reason: "did not use multi-factor",
			check: func(t *testing.T, d *Decision) {
				if !d.StepUp.MFA || len(d.StepUp.ACR) != 1 || d.StepUp.ACR[0] != "urn:mfa" {
					t.Errorf("StepUp = %+v", d.StepUp)
				}
			}},
		{name: "a route may waive MFA", user: noMFA, method: "GET", target: "/api/lite", outcome: Allow, route: "nomfa"},
		{name: "a recent MFA sign-in passes max_age", user: admin, method: "GET", target: "/api/customers/7/sensitive", outcome: Allow, route: "customers.sensitive",
			check: func(t *testing.T, d *Decision) {
				if d.Params["id"] != "7" {
					t.Errorf("params = %v", d.Params)
				}
			}},
		{name: "an old sign-in asks for step-up with max_age", user: staleAdmin, method: "GET", target: "/api/customers/7/sensitive", outcome: StepUp, status: 401, reason: "needs a sign-in within 5m0s; this one is 1h0m0s old",
			check: func(t *testing.T, d *Decision) {
				if d.StepUp.MaxAge != 5*time.Minute || d.StepUp.MFA {
					t.Errorf("StepUp = %+v", d.StepUp)
				}
			}},
		{name: "an unknown sign-in time fails max_age", user: unknownAge, method: "GET", target: "/api/customers/7/sensitive", outcome: StepUp, status: 401, reason: "sign-in time is unknown"},
		{name: "an export without approval is denied", user: sales, method: "GET", target: "/api/export/customers", outcome: Deny, status: 403, route: "customers.export", reason: "export requires approval",
			check: func(t *testing.T, d *Decision) {
				if !d.Audit.Export.Route || !d.Audit.Export.Blocked || d.Audit.Export.Approved {
					t.Errorf("export flags %+v", d.Audit.Export)
				}
			}},
		{name: "a role in without_approval exports", user: admin, method: "GET", target: "/api/export/customers", outcome: Allow, route: "customers.export",
			check: func(t *testing.T, d *Decision) {
				if !d.Audit.Export.Route || !d.Audit.Export.Approved {
					t.Errorf("export flags %+v", d.Audit.Export)
				}
			}},
		{name: "a path parameter can be compared with the user", user: sales, method: "GET", target: "/api/users/zhang", outcome: Allow, route: "own.profile"},
		{name: "another user's path parameter fails the condition", user: sales, method: "GET", target: "/api/users/wang", outcome: Deny, status: 403, route: "own.profile"},
		{name: "a method override header is refused", user: sales, method: "POST", target: "/api/ajax", header: http.Header{"X-Requested-With": {"XMLHttpRequest"}, "X-Http-Method-Override": {"DELETE"}}, outcome: Deny, status: 400, reason: "X-Http-Method-Override"},
		{name: "a method override in odd case is refused", user: sales, method: "POST", target: "/api/ajax", header: http.Header{"X-Requested-With": {"XMLHttpRequest"}, "x-method-override": {"PUT"}}, outcome: Deny, status: 400},
		{name: "a _method parameter is refused", user: sales, method: "POST", target: "/api/ajax?_method=DELETE", header: http.Header{"X-Requested-With": {"XMLHttpRequest"}}, outcome: Deny, status: 400, reason: "_method"},
		{name: "a method override header written with underscores is refused", user: sales, method: "POST", target: "/api/ajax", header: http.Header{"X-Requested-With": {"XMLHttpRequest"}, "X_http_method_override": {"DELETE"}}, outcome: Deny, status: 400, reason: "X-Http-Method-Override"},
		{name: "a method override header in any letter case is refused", user: sales, method: "POST", target: "/api/ajax", header: http.Header{"X-Requested-With": {"XMLHttpRequest"}, "x-HTTP-method-OVERRIDE": {"DELETE"}}, outcome: Deny, status: 400, reason: "X-Http-Method-Override"},
		{name: "an override naming the real method passes", user: sales, method: "POST", target: "/api/ajax", header: http.Header{"X-Requested-With": {"XMLHttpRequest"}, "X-Http-Method-Override": {"post"}}, outcome: Allow, route: "ajax"},
		{name: "a method is matched without case", user: sales, method: "get", target: "/api/customers", outcome: Allow, route: "customers.list"},
		{name: "a method with odd characters is refused", user: sales, method: "GE T", target: "/api/customers", outcome: Deny, status: 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := request(c.method, c.target)
			if !c.now.IsZero() {
				r.Now = c.now
			}
			if c.header != nil {
				r.Header = c.header
			}
			d := s.Decide(c.user, r)
			if d.Outcome != c.outcome || d.Status != c.status {
				t.Fatalf("outcome %d status %d (%s), want %d %d", d.Outcome, d.Status, d.Reason, c.outcome, c.status)
			}
			if c.route != "" && d.RouteID != c.route {
				t.Errorf("route %q, want %q", d.RouteID, c.route)
			}
			if !strings.Contains(d.Reason, c.reason) {
				t.Errorf("reason %q does not contain %q", d.Reason, c.reason)
			}
			if d.Audit.Decision != outcomeName(c.outcome) || d.Audit.Route != d.RouteID || d.Audit.Reason != d.Reason {
				t.Errorf("audit %+v does not match the decision", d.Audit)
			}
			if c.check != nil {
				c.check(t, d)
			}
		})
	}
}

func TestDefaultAllowStillNeedsASignIn(t *testing.T) {
	s := mustLoad(t, "version: 1\ndefault: allow\nroles: {a: {}}\nroutes:\n  - id: x\n    match: {path: /x}\n    allow: [a]\n")
	cases := []struct {
		name    string
		user    *User
		outcome Outcome
	}{
		{"a signed-in user without roles passes an unmatched path", s.UserFromRoles("u", nil, nil, false, time.Time{}), Allow},
		{"an anonymous request must sign in", nil, SignIn},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(c.user, request("GET", "/elsewhere"))
			if d.Outcome != c.outcome || d.RouteID != "" {
				t.Fatalf("outcome %d route %q: %s", d.Outcome, d.RouteID, d.Reason)
			}
		})
	}
}

func TestShadowModeDecidesButSaysDoNotEnforce(t *testing.T) {
	s := mustLoad(t, strings.Replace(decideRules, "default: deny", "default: deny\nmode: shadow", 1))
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, true, shanghaiWorkday)
	d := s.Decide(sales, request("GET", "/api/customers/1/sensitive"))
	if d.Outcome != Deny || d.Status != 403 || !d.Shadow || !d.Audit.Shadow || d.Audit.Decision != "deny" {
		t.Fatalf("decision %+v", d)
	}
	if s.Mode() != Shadow {
		t.Fatal("mode is not shadow")
	}
}

func TestSchedules(t *testing.T) {
	cases := []struct {
		name, days, hours, tz string
		at                    time.Time
		in                    bool
	}{
		{"a weekday inside the hours", "mon-fri", "08:00-20:00", "Asia/Shanghai", time.Date(2026, 11, 24, 2, 0, 0, 0, time.UTC), true},                  // Tue 10:00 CST
		{"the hours are read in the schedule's zone", "mon-fri", "08:00-20:00", "Asia/Shanghai", time.Date(2026, 11, 24, 13, 0, 0, 0, time.UTC), false}, // Tue 21:00 CST
		{"the end of a range is excluded", "mon-fri", "08:00-20:00", "UTC", time.Date(2026, 11, 24, 20, 0, 0, 0, time.UTC), false},
		{"a Saturday is outside mon-fri", "mon-fri", "", "UTC", time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), false},
		{"a range of days may wrap the week", "fri-mon", "", "UTC", time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC), true}, // Sunday
		{"a list of days", "mon,wed", "", "UTC", time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), true},
		{"a night shift after midnight belongs to the day it started", "fri", "22:00-06:00", "UTC", time.Date(2026, 11, 28, 3, 0, 0, 0, time.UTC), true}, // Sat 03:00
		{"a night shift before it starts is outside", "fri", "22:00-06:00", "UTC", time.Date(2026, 11, 27, 21, 0, 0, 0, time.UTC), false},
		{"a night shift that started on an excluded day is outside", "fri", "22:00-06:00", "UTC", time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC), false}, // Fri 03:00 belongs to Thu
		{"daily with no hours is always", "daily", "", "UTC", time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			days, err := parseDays(c.days)
			if err != nil {
				t.Fatal(err)
			}
			spans, err := parseHours(c.hours)
			if err != nil {
				t.Fatal(err)
			}
			loc, err := time.LoadLocation(c.tz)
			if err != nil {
				t.Fatal(err)
			}
			sc := &schedule{days: days, spans: spans, loc: loc}
			if got := sc.Contains(c.at); got != c.in {
				t.Fatalf("contains(%s) = %v, want %v", c.at, got, c.in)
			}
		})
	}
}

func TestRequestValuesReachConditions(t *testing.T) {
	s := mustLoad(t, `version: 1
roles: {a: {}}
routes:
  - id: r
    match: {path: "/api/{kind}/**"}
    allow: [a]
    when: >-
      request.method == "GET" && request.path.startsWith("/api/") && request.params.kind == "deals"
      && request.query.view == "compact" && request.header["x-client"] == "web, mobile"
`)
	u := s.UserFromRoles("u", []string{"a"}, nil, true, shanghaiWorkday)
	cases := []struct {
		name, method, target string
		header               http.Header
		outcome              Outcome
	}{
		{"every request value is as the condition expects", "GET", "/api/deals/1?view=compact", http.Header{"X-Client": {"web", "mobile"}}, Allow},
		{"another method fails", "POST", "/api/deals/1?view=compact", http.Header{"X-Client": {"web", "mobile"}}, Deny},
		{"another path parameter fails", "GET", "/api/notes/1?view=compact", http.Header{"X-Client": {"web", "mobile"}}, Deny},
		{"a query parameter given twice with different values is absent", "GET", "/api/deals/1?view=compact&view=full", http.Header{"X-Client": {"web", "mobile"}}, Deny},
		{"a query parameter repeated with the same value is kept", "GET", "/api/deals/1?view=compact&view=compact", http.Header{"X-Client": {"web", "mobile"}}, Allow},
		{"a missing header fails closed", "GET", "/api/deals/1?view=compact", nil, Deny},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := request(c.method, c.target)
			r.Header = c.header
			d := s.Decide(u, r)
			if d.Outcome != c.outcome {
				t.Fatalf("outcome %d: %s", d.Outcome, d.Reason)
			}
		})
	}
}
