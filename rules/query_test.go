package rules

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

const queryRules = `version: 1
mfa: {required: false}
roles: {sales: {}, manager: {inherits: [sales]}, marketing: {}, admin: {}}
routes:
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales, marketing, admin]
    records: list
    visible: 'record.owner_id == user.id || "admin" in user.roles || "marketing" in user.roles'
    fields:
      name: {mask: name, for: [marketing]}
      phone: {mask: phone, except: [admin]}
      "**.bank_account": remove
      owner_id: {remove: true, for: [marketing]}
      notes: {remove: true, when: '!("admin" in user.roles)'}
      secret: {remove: true, when: 'record.private == true'}
    query:
      params:
        offset: {}
        limit: {}
        q: {filters: [name, company]}
        owner_id: {filters: owner_id, deny_unless: 'request.query.owner_id == user.id || "admin" in user.roles'}
        stage: {filters: stage}
        status[]: {filters: status}
        sort: {sorts: "{value}"}
        filter[{field}]: {filters: "{field}"}
        where[*][attribute]: {filters: "{value}"}
        where[*][value]: {}
        debug: {deny: [sales, marketing], message: Debugging is for administrators.}
  - id: customers.get
    match: {methods: [GET], path: "/api/customers/{id}"}
    allow: [sales, marketing, admin]
    record: "@this"
    expose: [id, name, stage, address.city]
    query: {params: {sort: {sorts: "{value}"}}}
  - id: deals.list
    match: {methods: [GET], path: /api/deals}
    allow: [sales, admin]
    records: list
    visible: 'record.team in user.attrs.teams || "admin" in user.roles'
    query: {params: {offset: {}, limit: {}, team: {}, q: {filters: [title]}}}
    forward_query:
      team: {value: user.attrs.teams, for: [sales]}
      contacted_before: 'now - duration("8760h")'
  - id: tickets.list
    match: {methods: [GET], path: /api/tickets}
    allow: [sales, admin]
    records: list
    forward_query:
      owner_id: {value: user.id, except: [admin]}
      filter[team]: {value: '"east"', when: '"sales" in user.roles'}
`

// queryCase is a GET that a route's query guards allow (status 0) or
// refuse with status, giving a reason that says says.
type queryCase struct {
	name   string
	user   *User
	target string
	status int    // 0: allowed
	says   string // in the reason
}

// runQueryCases decides each case on s. A refusal must also give the user
// a message that shows no condition, and no query to send the CRM.
func runQueryCases(t *testing.T, s *Set, cases []queryCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(c.user, request("GET", c.target))
			if c.status == 0 {
				if d.Outcome != Allow {
					t.Fatalf("refused (%d): %s", d.Status, d.Reason)
				}
				return
			}
			if d.Outcome != Deny || d.Status != c.status {
				t.Fatalf("outcome %v status %d (%s), want %d", d.Outcome, d.Status, d.Reason, c.status)
			}
			if !strings.Contains(d.Reason, c.says) {
				t.Errorf("reason %q does not say %q", d.Reason, c.says)
			}
			if d.Message == "" || strings.Contains(d.Message, "user.") {
				t.Errorf("message %q is empty or shows a condition", d.Message)
			}
			if _, ok := d.UpstreamQuery(); ok {
				t.Error("a refused request has a query for the CRM")
			}
		})
	}
}

func TestQueryGuards(t *testing.T) {
	s := mustLoad(t, queryRules)
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, false, time.Time{})
	marketing := s.UserFromRoles("ma", []string{"marketing"}, nil, false, time.Time{})
	admin := s.UserFromRoles("root", []string{"admin"}, nil, false, time.Time{})
	runQueryCases(t, s, []queryCase{
		{"paging parameters pass", sales, "/api/customers?offset=20&limit=10", 0, ""},
		{"a query without parameters passes", sales, "/api/customers", 0, ""},
		{"a rep may search by name, which a rep sees", sales, "/api/customers?q=%E5%BC%A0", 0, ""},
		{"a plus in a search is a space and passes", sales, "/api/customers?q=%E5%BC%A0+%E4%BC%9F", 0, ""},
		{"marketing may not search by name, which marketing sees masked", marketing, "/api/customers?q=%E5%BC%A0", 403, `"q" filters on name, which role marketing may not see unmasked: routes[0].fields.name (mask)`},
		{"marketing may not search with the name in upper case", marketing, "/api/customers?Q=x", 403, "filters on name"},
		{"marketing may not search with the name percent-encoded", marketing, "/api/customers?%71=x", 403, "filters on name"},
		{"a search written as a list is not the search parameter", marketing, "/api/customers?q[]=x", 403, `"q[]" is not one the route accepts`},
		{"a rep may filter by their own id", sales, "/api/customers?owner_id=zhang", 0, ""},
		{"a rep may not filter by another owner", sales, "/api/customers?owner_id=wu", 403, "the condition `request.query.owner_id == user.id || \"admin\" in user.roles` does not hold"},
		{"an admin may filter by any owner", admin, "/api/customers?owner_id=wu", 0, ""},
		{"another spelling of a guarded parameter fails its condition", sales, "/api/customers?OWNER_ID=zhang", 403, "could not be evaluated"},
		{"a parameter repeated with different values is ambiguous", sales, "/api/customers?owner_id=zhang&owner_id=wu", 400, "several times with different values"},
		{"a parameter repeated in another case is ambiguous", sales, "/api/customers?owner_id=zhang&Owner_Id=wu", 400, "several times with different values"},
		{"PHP's reading of a dot makes the same parameter", sales, "/api/customers?owner_id=zhang&owner.id=wu", 400, "several times with different values"},
		{"a name and its list form together are ambiguous", sales, "/api/customers?owner_id=zhang&owner_id[]=wu", 400, "one holds the other"},
		{"the same value twice is no ambiguity", sales, "/api/customers?stage=won&stage=won", 0, ""},
		{"a list parameter may repeat", sales, "/api/customers?status[]=won&status[]=lost", 0, ""},
		{"a parameter the route does not list is refused", sales, "/api/customers?format=csv", 403, `"format" is not one the route accepts (query.params: offset, limit, q, owner_id, stage, status[], sort, filter[{field}], where[*][attribute], where[*][value], debug)`},
		{"a semicolon separating parameters cannot be judged", marketing, "/api/customers?offset=0;q=x", 400, "semicolon separator"},
		{"an encoded semicolon is part of a value, not a separator", sales, "/api/customers?q=a%3Bsort%3Dphone", 0, ""},
		{"an encoded ampersand is part of a value, not a separator", marketing, "/api/customers?stage=won%26q%3Dx", 0, ""},
		{"a name encoded twice cannot be judged", sales, "/api/customers?owner%2525id=x", 400, "encoded twice"},
		{"a name with text after its brackets cannot be judged", sales, "/api/customers?filter[stage]x=1", 400, "goes on after its last ]"},
		{"a denied parameter is refused with the role", sales, "/api/customers?debug=1", 403, `role sales may not send the query parameter "debug"`},
		{"a denied parameter is refused to an inheriting role", s.UserFromRoles("m", []string{"manager"}, nil, false, time.Time{}), "/api/customers?debug=1", 403, "may not send"},
		{"a denied parameter passes for other roles", admin, "/api/customers?debug=1", 0, ""},
		{"sorting by a visible field passes", sales, "/api/customers?sort=-stage,name", 0, ""},
		{"sorting by a masked field is refused", sales, "/api/customers?sort=-phone", 403, `"sort" sorts by phone, which role sales may not see unmasked: routes[0].fields.phone (mask)`},
		{"sorting by a masked field with a direction word is refused", marketing, "/api/customers?sort=name%20desc", 403, "sorts by name"},
		{"sorting by a masked field after a colon direction is refused", marketing, "/api/customers?sort=stage,name:asc", 403, "sorts by name"},
		{"sorting by a field masked except for admins passes for an admin", admin, "/api/customers?sort=phone", 0, ""},
		{"sorting by a field removed at any depth is refused", sales, "/api/customers?sort=bank_account", 403, `routes[0].fields["**.bank_account"] (remove)`},
		{"sorting by a field whose rule holds for this user is refused", sales, "/api/customers?sort=notes", 403, "fields.notes (remove)"},
		{"sorting by a field whose rule does not hold for this user passes", admin, "/api/customers?sort=notes", 0, ""},
		{"sorting by a field a record condition may remove is refused", admin, "/api/customers?sort=secret", 403, "fields.secret (remove)"},
		{"sorting by a field inside a removed one is refused", sales, "/api/customers?sort=contacts.bank_account", 403, "bank_account"},
		{"a bracket naming a visible field passes", sales, "/api/customers?filter[stage]=won", 0, ""},
		{"a bracket naming a masked field is refused", sales, "/api/customers?filter[phone]=138", 403, `"filter[phone]" filters on phone`},
		{"a bracket naming a masked field in upper case is refused", sales, "/api/customers?FILTER[PHONE]=138", 403, "filters on phone"},
		{"a where clause on a visible attribute passes", sales, "/api/customers?where[0][attribute]=stage&where[0][value]=won", 0, ""},
		{"a where clause on a masked attribute is refused", sales, "/api/customers?where[0][attribute]=phone&where[0][value]=138", 403, "filters on phone"},
		{"a field outside expose may not be sorted by", sales, "/api/customers/7?sort=phone", 403, "not in the route's expose list"},
		{"a field inside an exposed object may be sorted by", sales, "/api/customers/7?sort=address.city", 0, ""},
		{"the parent of an exposed field may not be sorted by", sales, "/api/customers/7?sort=address", 403, "not in the route's expose list"},
	})
	t.Run("a parameter's own message is the refused user's message", func(t *testing.T) {
		d := s.Decide(sales, request("GET", "/api/customers?debug=1"))
		if d.Message != "Debugging is for administrators." {
			t.Errorf("message %q", d.Message)
		}
	})
}

func TestForwardQueryScopesTheCRMsQuery(t *testing.T) {
	s := mustLoad(t, queryRules)
	east := s.UserFromRoles("zhang", []string{"sales"}, map[string]any{"teams": []any{"east", "west"}}, false, time.Time{})
	noTeam := s.UserFromRoles("li", []string{"sales"}, map[string]any{"teams": []any{}}, false, time.Time{})
	admin := s.UserFromRoles("root", []string{"admin"}, nil, false, time.Time{})
	cutoff := shanghaiWorkday.Add(-8760 * time.Hour).UTC().Format(time.RFC3339Nano)
	cases := []struct {
		name   string
		user   *User
		target string
		want   url.Values // nil: the query goes on unchanged
	}{
		{"a rep's team replaces the team the client asked for", east, "/api/deals?team=north&offset=20",
			url.Values{"offset": {"20"}, "team": {"east", "west"}, "contacted_before": {cutoff}}},
		{"a rep's query gets the team even without one", east, "/api/deals",
			url.Values{"team": {"east", "west"}, "contacted_before": {cutoff}}},
		{"an admin's team is left alone, the cut-off still set", admin, "/api/deals?team=north",
			url.Values{"team": {"north"}, "contacted_before": {cutoff}}},
		{"every spelling of a forced parameter is removed", east, "/api/tickets?Owner_ID=x&owner.id=y&%6Fwner_id=z&%20owner_id=w&page=2",
			url.Values{"page": {"2"}, "owner_id": {"zhang"}, "filter[team]": {"east"}}},
		{"a forced parameter's list and key forms are removed", east, "/api/tickets?owner_id[]=x&owner_id[a]=y&filter=all&filter[team][]=west",
			url.Values{"owner_id": {"zhang"}, "filter[team]": {"east"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(c.user, request("GET", c.target))
			if d.Outcome != Allow {
				t.Fatalf("refused (%d): %s", d.Status, d.Reason)
			}
			q, ok := d.UpstreamQuery()
			if !ok {
				t.Fatalf("no query for the CRM")
			}
			got, err := url.ParseQuery(q)
			if err != nil {
				t.Fatalf("the query for the CRM %q cannot be read: %v", q, err)
			}
			if got.Encode() != c.want.Encode() {
				t.Errorf("the CRM gets %q\nwant %q", got.Encode(), c.want.Encode())
			}
		})
	}
	t.Run("the client's other parameters reach the CRM as they were written", func(t *testing.T) {
		d := s.Decide(east, request("GET", "/api/tickets?q=%E5%BC%A0+x&owner_id=wu"))
		q, ok := d.UpstreamQuery()
		if !ok || !strings.HasPrefix(q, "q=%E5%BC%A0+x&") {
			t.Errorf("the CRM gets %q (ok %v)", q, ok)
		}
	})
	t.Run("an empty forwarded list refuses the request rather than sending no filter", func(t *testing.T) {
		d := s.Decide(noTeam, request("GET", "/api/deals"))
		if d.Outcome != Deny || d.Status != 403 || !strings.Contains(d.Reason, "forward_query.team") || !strings.Contains(d.Reason, "empty list") {
			t.Errorf("outcome %v %d: %s", d.Outcome, d.Status, d.Reason)
		}
	})
	t.Run("a forwarded value that cannot be evaluated refuses the request", func(t *testing.T) {
		d := s.Decide(s.UserFromRoles("li", []string{"sales"}, nil, false, time.Time{}), request("GET", "/api/deals"))
		if d.Outcome != Deny || d.Status != 403 || !strings.Contains(d.Reason, "cannot be scoped") {
			t.Errorf("outcome %v %d: %s", d.Outcome, d.Status, d.Reason)
		}
	})
	t.Run("shadow mode never changes the CRM's query", func(t *testing.T) {
		sh := mustLoad(t, strings.Replace(queryRules, "version: 1\n", "version: 1\nmode: shadow\n", 1))
		d := sh.Decide(east, request("GET", "/api/deals?team=north"))
		if _, ok := d.UpstreamQuery(); ok || d.Outcome != Allow {
			t.Errorf("outcome %v, a changed query in shadow mode: %v", d.Outcome, ok)
		}
	})
	t.Run("forwarded entries that do not apply leave the query alone", func(t *testing.T) {
		d := s.Decide(admin, request("GET", "/api/tickets?filter[team]=west"))
		if q, ok := d.UpstreamQuery(); ok || d.Outcome != Allow {
			t.Errorf("outcome %v: the CRM gets %q", d.Outcome, q)
		}
	})
	t.Run("a route without forward_query leaves the query alone", func(t *testing.T) {
		d := s.Decide(east, request("GET", "/api/customers?offset=1"))
		if q, ok := d.UpstreamQuery(); ok {
			t.Errorf("the CRM gets %q", q)
		}
	})
}

func TestBadQueryRulesAreRefusedAtLoad(t *testing.T) {
	route := func(extra string) string {
		return `version: 1
roles: {sales: {}}
routes:
  - id: r
    match: {path: /api/x}
    allow: [sales]
    records: list
` + extra
	}
	cases := []struct {
		name, src, says string
	}{
		{"query needs params", route("    query: {message: x}\n"), "query.params: missing"},
		{"an unknown key of a parameter", route("    query: {params: {q: {filter: [name]}}}\n"), "unknown key"},
		{"a parameter both filters and sorts", route("    query: {params: {q: {filters: [a], sorts: [b]}}}\n"), "either filters or sorts"},
		{"a capture without saying what it does", route("    query: {params: {\"f[{field}]\": {}}}\n"), "say what the parameter does with it"},
		{"{field} without a capture in the name", route("    query: {params: {f: {filters: \"{field}\"}}}\n"), "has no [{field}]"},
		{"two captures", route("    query: {params: {\"f[{field}][{field}]\": {filters: \"{field}\"}}}\n"), "{field} may appear once"},
		{"a list bracket in the middle", route("    query: {params: {\"f[][x]\": {}}}\n"), "may only end the name"},
		{"a pattern in the base name", route("    query: {params: {\"f*\": {}}}\n"), "the base name is literal"},
		{"a bad field path", route("    query: {params: {q: {filters: [\"a..b\"]}}}\n"), "empty key"},
		{"{value} inside a list", route("    query: {params: {q: {filters: [a, \"{value}\"]}}}\n"), "stands alone"},
		{"a filter on a route without records", `version: 1
roles: {sales: {}}
routes:
  - id: r
    match: {path: /api/x}
    allow: [sales]
    query: {params: {q: {filters: [a]}}}
`, "needs records or record"},
		{"a deny_unless that is not a bool", route("    query: {params: {q: {deny_unless: user.id}}}\n"), "not a bool"},
		{"a forwarded value of a map type", route("    forward_query: {owner_id: user.attrs}\n"), "gives map(string, dyn)"},
		{"a forwarded parameter with a wildcard", route("    forward_query: {\"f[*]\": user.id}\n"), "literal name"},
		{"two forwarded names for one parameter", route("    forward_query: {owner_id: user.id, \"owner_id[x]\": user.id}\n"), "name the same parameter"},
		{"a forwarded entry without a value", route("    forward_query: {owner_id: {for: [sales]}}\n"), "forward_query.owner_id.value: missing"},
		{"a forwarded entry with for and except", route("    forward_query: {owner_id: {value: user.id, for: [sales], except: [sales]}}\n"), "for or except, not both"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantLoadError(t, c.src, nil, c.says)
		})
	}
}

// BenchmarkDecideQuery puts a decision with a query guard and a forwarded
// team (customers.list of queryRules' twin below) beside the same request
// on the same route without them, in one run: the ratio is the guard's
// cost per request.
func BenchmarkDecideQuery(b *testing.B) {
	const route = `version: 1
mfa: {required: false}
roles: {sales: {}}
routes:
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales]
    records: list
    visible: record.team in user.attrs.teams
    fields: {phone: {mask: phone}, "**.bank_account": remove}
`
	guard := `    query:
      params:
        offset: {}
        limit: {}
        q: {filters: [name, company]}
        sort: {sorts: "{value}"}
    forward_query:
      team: {value: user.attrs.teams, for: [sales]}
`
	target := "/api/customers?offset=40&limit=20&q=%E5%BC%A0&sort=-stage,name"
	for _, c := range []struct{ name, src string }{{"baseline_no_guard", route}, {"query_guard_and_forward", route + guard}} {
		b.Run(c.name, func(b *testing.B) {
			s := mustLoad(b, c.src)
			u := s.UserFromRoles("zhang", []string{"sales"}, map[string]any{"teams": []any{"east"}}, false, time.Time{})
			r := request("GET", target)
			b.ReportAllocs()
			for b.Loop() {
				if d := s.Decide(u, r); d.Outcome != Allow {
					b.Fatal(d.Reason)
				}
			}
		})
	}
}

// TestAQueryWithMoreParametersThanTheGuardJudgesIsRefused holds a judged
// query to maxJudgedParams distinct names: the ambiguity check compares
// every pair, so more would let one request cost the guard seconds.
func TestAQueryWithMoreParametersThanTheGuardJudgesIsRefused(t *testing.T) {
	s := mustLoad(t, queryRules)
	admin := &User{ID: "root", Roles: []string{"admin"}}
	query := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte('&')
			}
			fmt.Fprintf(&b, "where[%d][value]=x", i)
		}
		return "/api/customers?" + b.String()
	}
	runQueryCases(t, s, []queryCase{
		{name: "as many names as the guard judges pass", user: admin, target: query(maxJudgedParams)},
		{name: "one name more is refused with 400", user: admin, target: query(maxJudgedParams + 1), status: 400,
			says: "has 1001 parameters, more than the 1000 the guard judges"},
	})
}
