package rules

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// limHead is the top of the rule files below; `limits:` starts on line 26.
const limHead = `version: 1
roles:
  sales: {}
  sales_manager: {inherits: [sales]}
  service: {}
  compliance: {}
schedules:
  business_hours: {days: mon-fri, hours: "08:00-20:00", tz: UTC}
routes:
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales, service, compliance]
    records: list
  - id: customers.get
    match: {methods: [GET], path: "/api/customers/{id}"}
    allow: [sales, service]
    record: "@this"
  - id: customers.export
    match: {methods: [GET], path: /api/customers/export}
    allow: [sales_manager]
    export: {approval: false}
  - id: health
    match: {path: /healthz}
    allow: public
limits:
`

func TestLimitsLoad(t *testing.T) {
	s := mustLoad(t, limHead+`  - id: bulk_view
    description: a rep pages through the customer list
    routes: ["customers.*"]
    count: records
    max: 500
    per: 10m
    key: user
    for: [sales]
    except: [sales_manager]
    action: block
    notify: [compliance]
    message: You have viewed many customers in a short time.
  - id: off_hours
    count: requests
    max: 0
    per: 1h
    when: '!in_schedule("business_hours")'
    action: alert
  - id: per_route
    routes: [customers.get]
    count: requests
    max: 100
    per: 1m
    key: user+route
    action: step_up
`)
	lims := s.Limits()
	if len(lims) != 3 {
		t.Fatalf("%d limits, want 3", len(lims))
	}
	b := s.Limit("bulk_view")
	want := Limit{ID: "bulk_view", Description: "a rep pages through the customer list", Message: "You have viewed many customers in a short time.",
		Routes: []string{"customers.*"}, Count: CountRecords, Max: 500, Per: 10 * time.Minute, Key: LimitKeyUser,
		For: []string{"sales"}, Except: []string{"sales_manager"}, Action: ActionBlock, Notify: []string{"compliance"}}
	if b.ID != want.ID || b.Description != want.Description || b.Message != want.Message || !slices.Equal(b.Routes, want.Routes) ||
		b.Count != want.Count || b.Max != want.Max || b.Per != want.Per || b.Key != want.Key || !slices.Equal(b.For, want.For) ||
		!slices.Equal(b.Except, want.Except) || b.Action != want.Action || !slices.Equal(b.Notify, want.Notify) || !b.Enforces() {
		t.Errorf("bulk_view loaded as %+v", b)
	}
	o := s.Limit("off_hours")
	if o.Routes != nil || o.Max != 0 || o.When != `!in_schedule("business_hours")` || o.Key != LimitKeyUser || o.Enforces() {
		t.Errorf("off_hours loaded as %+v", o)
	}
	if s.Limit("nope") != nil {
		t.Error("an unknown id gave a limit")
	}
	for _, w := range s.Warnings() {
		if strings.Contains(w.Msg, "limit") {
			t.Errorf("unexpected warning: %s", w)
		}
	}
}

func TestABadLimitIsRefusedWithFileLineColumnAndKey(t *testing.T) {
	cases := []struct {
		name, limits string
		want         []string
	}{
		{"an unknown key is an error",
			"  - {id: a, count: records, max: 1, per: 1m, action: block, routes: [x], rate: 3}\n",
			[]string{"rules.yaml:26:74: limits[0].rate: unknown key"}},
		{"a missing action is an error",
			"  - {id: a, count: records, max: 1, per: 1m}\n",
			[]string{"rules.yaml:26:5: limits[0].action: missing"}},
		{"an unknown count is an error",
			"  - {id: a, count: rows, max: 1, per: 1m, action: block}\n",
			[]string{"rules.yaml:26:20: limits[0].count: want records, requests, exports or denials, got \"rows\""}},
		{"an unknown action is an error",
			"  - {id: a, count: records, max: 1, per: 1m, action: ban}\n",
			[]string{"limits[0].action: want alert, step_up or block, got \"ban\""}},
		{"an unknown key kind is an error",
			"  - {id: a, count: records, max: 1, per: 1m, action: block, key: ip}\n",
			[]string{"limits[0].key: want user or user+route, got \"ip\""}},
		{"a negative max is an error",
			"  - {id: a, count: records, max: -1, per: 1m, action: block}\n",
			[]string{"limits[0].max: want a whole number of at least 0"}},
		{"max 0 on a block limit is an error",
			"  - {id: a, count: records, max: 0, per: 1m, action: block}\n",
			[]string{"limits[0].max: max 0 with action block would refuse every request"}},
		{"a window under a second is an error",
			"  - {id: a, count: records, max: 1, per: 10ms, action: block}\n",
			[]string{"limits[0].per: a window of 10ms is too short"}},
		{"a window that is not a duration is an error",
			"  - {id: a, count: records, max: 1, per: ten minutes, action: block}\n",
			[]string{"limits[0].per: want a duration"}},
		{"a bad glob is an error",
			"  - {id: a, count: records, max: 1, per: 1m, action: block, routes: [\"customers.[\"]}\n",
			[]string{"limits[0].routes[0]: \"customers.[\" is not a route id glob"}},
		{"an empty routes list is an error",
			"  - {id: a, count: records, max: 1, per: 1m, action: block, routes: []}\n",
			[]string{"limits[0].routes: an empty list"}},
		{"an empty for list is an error",
			"  - {id: a, count: records, max: 1, per: 1m, action: block, for: []}\n",
			[]string{"limits[0].for: an empty list"}},
		{"a duplicate id is an error",
			"  - {id: a, count: records, max: 1, per: 1m, action: block}\n  - {id: a, count: requests, max: 1, per: 1m, action: alert}\n",
			[]string{"rules.yaml:27:5: limits[1].id: duplicate limit id \"a\""}},
		{"an id with a space is an error",
			"  - {id: a b, count: records, max: 1, per: 1m, action: block}\n",
			[]string{"limits[0].id: \"a b\" cannot be a limit id"}},
		{"a when that reads the record is an error",
			"  - {id: a, count: records, max: 1, per: 1m, action: block, when: 'record.x == 1'}\n",
			[]string{"limits[0].when: record is not available here"}},
		{"a when that is not a bool is an error",
			"  - {id: a, count: records, max: 1, per: 1m, action: block, when: 'user.id'}\n",
			[]string{"limits[0].when: the condition gives string, not a bool"}},
		{"limits that are not a list are an error",
			"  a: {count: records}\n",
			[]string{"limits: want a list of limits, got a mapping"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantLoadError(t, limHead+c.limits, nil, c.want...)
		})
	}
}

func TestLintWarnsAboutLimitsThatCountNothing(t *testing.T) {
	cases := []struct {
		name, limits string
		want         string // "" = no limit warning expected
	}{
		{"a glob that matches no route id is reported",
			"  - {id: a, count: requests, max: 1, per: 1m, action: block, routes: [customers.list, deals.*]}\n",
			"rules.yaml:26:87: limits[0].routes[1]: limit a: the glob \"deals.*\" matches no route id"},
		{"a records limit on routes that rewrite nothing is reported",
			"  - {id: a, count: records, max: 1, per: 1m, action: block, routes: [health, customers.export]}\n",
			"limit a counts records, but none of its routes (customers.export, health) has records or record"},
		{"an exports limit on routes not marked export is reported",
			"  - {id: a, count: exports, max: 1, per: 1m, action: block, routes: [customers.list]}\n",
			"limit a counts exports, but none of its routes (customers.list) is marked export"},
		{"a records limit on a rewriting route is fine",
			"  - {id: a, count: records, max: 1, per: 1m, action: block, routes: [customers.*]}\n",
			""},
		{"an undeclared role in for is reported",
			"  - {id: a, count: requests, max: 1, per: 1m, action: block, for: [salse]}\n",
			"role \"salse\" is used but not declared"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := mustLoad(t, limHead+c.limits)
			var got []string
			for _, w := range s.Warnings() {
				if strings.Contains(w.Msg, "limit") || strings.Contains(w.Msg, "salse") {
					got = append(got, w.String())
				}
			}
			text := strings.Join(got, "\n")
			if c.want == "" {
				if text != "" {
					t.Errorf("unexpected warnings:\n%s", text)
				}
				return
			}
			if !strings.Contains(text, c.want) {
				t.Errorf("warnings\n%s\ndo not contain %q", text, c.want)
			}
		})
	}
}

// limitIDs decides a GET of target for user and lists the ids of the
// limits that apply.
func limitIDs(t *testing.T, s *Set, u *User, target string, now time.Time) ([]string, *Decision) {
	t.Helper()
	uu, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	d := s.Decide(u, &Request{Method: "GET", URL: uu, Header: http.Header{}, Now: now})
	var ids []string
	for _, lim := range d.Limits() {
		ids = append(ids, lim.ID)
	}
	return ids, d
}

func TestADecisionListsTheLimitsThatApplyToItsUserAndRoute(t *testing.T) {
	s := mustLoad(t, limHead+`  - {id: reps, routes: ["customers.*"], count: records, max: 300, per: 10m, for: [sales], except: [sales_manager], action: block}
  - {id: lists, routes: [customers.list], count: requests, max: 50, per: 1m, action: alert}
  - {id: off_hours, count: requests, max: 0, per: 1h, when: '!in_schedule("business_hours")', action: alert}
  - {id: broken, routes: [customers.get], count: requests, max: 9, per: 1m, when: 'user.attrs.level > 3', action: block}
`)
	weekday := time.Date(2026, 11, 18, 10, 0, 0, 0, time.UTC) // a Wednesday, 10:00
	night := time.Date(2026, 11, 18, 23, 0, 0, 0, time.UTC)
	rep := s.UserFromRoles("zhang", []string{"sales"}, map[string]any{"level": 1}, true, weekday)
	manager := s.UserFromRoles("wang", []string{"sales_manager"}, map[string]any{"level": 1}, true, weekday)
	service := s.UserFromRoles("li", []string{"service"}, nil, true, weekday)
	cases := []struct {
		name   string
		user   *User
		target string
		now    time.Time
		want   []string
	}{
		{"a rep's customer list counts under the rep limit and the list limit", rep, "/api/customers", weekday, []string{"reps", "lists"}},
		{"a manager is excepted from the rep limit", manager, "/api/customers", weekday, []string{"lists"}},
		{"service is not among the rep limit's roles", service, "/api/customers", weekday, []string{"lists"}},
		{"off hours every request also counts under the limit without routes", rep, "/api/customers", night, []string{"reps", "lists", "off_hours"}},
		{"a request no route matches counts under the limit without routes", rep, "/nowhere", night, []string{"off_hours"}},
		{"a public route counts too when the user is signed in", rep, "/healthz", night, []string{"off_hours"}},
		{"a when that cannot be evaluated applies the limit", service, "/api/customers/7", weekday, []string{"broken"}},
		{"an anonymous request counts under no limit", nil, "/api/customers", night, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, d := limitIDs(t, s, c.user, c.target, c.now)
			if !slices.Equal(got, c.want) {
				t.Errorf("limits %v, want %v", got, c.want)
			}
			if again := d.Limits(); len(again) != len(got) {
				t.Errorf("a second call gave %d limits, the first %d", len(again), len(got))
			}
		})
	}
	t.Run("a when that cannot be evaluated is counted as an evaluation error", func(t *testing.T) {
		_, d := limitIDs(t, s, service, "/api/customers/7", weekday)
		if d.Audit.EvalErrors != 1 {
			t.Errorf("eval_errors %d, want 1", d.Audit.EvalErrors)
		}
	})
}

func TestCounterKeysKeepUsersAndRoutesApart(t *testing.T) {
	user := &Limit{ID: "bulk_view", Count: CountRecords, Key: LimitKeyUser}
	route := &Limit{ID: "bulk_view", Count: CountRecords, Key: LimitKeyUserRoute}
	requests := &Limit{ID: "bulk_view", Count: CountRequests, Key: LimitKeyUser}
	cases := []struct {
		name string
		got  string
		want string
	}{
		{"a user key names the limit, what it counts and the user", user.CounterKey("zhang", "customers.list"), "limit:bulk_view:records:u:zhang"},
		{"a user+route key names the route too", route.CounterKey("zhang", "customers.list"), "limit:bulk_view:records:u:zhang:r:customers.list"},
		{"a colon in a user id cannot forge a route part", route.CounterKey("zhang:r:x", "y"), "limit:bulk_view:records:u:zhang%3Ar%3Ax:r:y"},
		{"a percent sign is escaped, so escapes cannot collide", user.CounterKey("a%3Ab", ""), "limit:bulk_view:records:u:a%253Ab"},
		{"NUL and line breaks are escaped (the store refuses them)", user.CounterKey("a\x00b\nc\rd", ""), "limit:bulk_view:records:u:a%00b%0Ac%0Dd"},
		{"what is counted is part of the key", requests.CounterKey("zhang", ""), "limit:bulk_view:requests:u:zhang"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("key %q, want %q", c.got, c.want)
			}
		})
	}
}
