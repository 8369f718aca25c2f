package rules

import (
	"strings"
	"testing"
)

const lintHead = `version: 1
roles: {sales: {}, manager: {inherits: [sales]}, service: {}, admin: {}}
routes:
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales, service, admin]
    records: list
    visible: 'record.owner_id == user.id || timestamp(record.last_contact_at) < now - duration("8760h")'
    query: {params: {offset: {}}}
  - id: deals.list
    match: {methods: [GET], path: /api/deals}
    allow: [sales]
    records: list
    visible: record.deal_owner == user.id
    query: {params: {}}
`

func TestLintWarnsWhenAFieldThatDecidesVisibilityIsWritable(t *testing.T) {
	cases := []struct {
		name   string
		routes string
		want   []string // each in one warning; nil: none about writable fields
	}{
		{"service may PATCH the last contact date the pool reads", `  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [service]
    body: {owner_id: {deny: [service]}}
`, []string{"route customers.update lets service write last_contact_at without a body guard, and customers.list's visible reads it"}},
		{"a guard denying the role silences it", `  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [service]
    body: {owner_id: {deny: [service]}, last_contact_at: {deny: [service]}}
`, nil},
		{"a deny_unless guard is a decision about every role", `  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales, service, admin]
    body: {owner_id: {deny_unless: '"admin" in user.roles'}, last_contact_at: {deny_unless: '"admin" in user.roles'}}
`, nil},
		{"an allow_if guard is a decision about every role", `  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales, service]
    body: {owner_id: {allow_if: body.owner_id == user.id}, last_contact_at: {allow_if: 'timestamp(body.last_contact_at) < now'}}
`, nil},
		{"a guard for one role leaves the others named, inheriting roles included", `  - id: customers.update
    match: {methods: [PATCH, PUT], path: "/api/customers/{id}"}
    allow: [sales, service]
    body: {owner_id: {deny: [sales, service]}, last_contact_at: {deny: [service]}}
`, []string{"lets manager, sales write last_contact_at"}},
		{"a guard on a holding object covers the field", `  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [service]
    body: {owner_id: {deny: [service]}, last_contact_at: {deny: [service]}}
  - id: customers.bulk
    match: {methods: [POST], path: /api/customers/bulk}
    allow: [service]
    body: {owner_id: {deny: [service]}}
`, []string{"route customers.bulk lets service write last_contact_at"}},
		{"a catch-all write route is named", `  - id: writes
    match: {methods: [POST, PATCH], path: /api/**}
    allow: [admin]
`, []string{"route writes lets admin write owner_id", "route writes lets admin write last_contact_at", "route writes lets admin write deal_owner"}},
		{"an authenticated route names any signed-in user", `  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: authenticated
    body: {owner_id: {deny_unless: "false"}}
`, []string{"lets admin, manager, sales, service, any signed-in user write last_contact_at"}},
		{"a write to another collection is not about these records", `  - id: tickets.update
    match: {methods: [PATCH], path: "/api/tickets/{id}"}
    allow: [service]
`, nil},
		{"a route that only reads writes nothing", `  - id: customers.get
    match: {methods: [GET, HEAD], path: "/api/customers/{id}"}
    allow: [service]
    record: "@this"
    query: {params: {}}
`, nil},
		{"a route that only deletes sets no field", `  - id: customers.delete
    match: {methods: [DELETE], path: "/api/customers/{id}"}
    allow: [service]
`, nil},
		{"a denying route writes nothing", `  - id: writes
    match: {path: /api/**}
    deny: closed
`, nil},
		{"a target's allow_if counts too", `  - id: deals.update
    match: {methods: [PATCH], path: "/api/deals/{id}"}
    allow: [sales]
    body: {deal_owner: {deny: [sales]}}
    target: {fetch: "/api/deals/{id}", allow_if: record.team == "east", visible: record.deal_owner == user.id}
`, []string{"route deals.update lets manager, sales write team without a body guard, and deals.update's target.allow_if reads it"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := mustLoad(t, lintHead+c.routes)
			var got []string
			for _, w := range s.Warnings() {
				if strings.Contains(w.Msg, "without a body guard") {
					got = append(got, w.String())
				}
			}
			if len(got) != len(c.want) {
				t.Fatalf("warnings %q\nwant %d: %q", got, len(c.want), c.want)
			}
			for i, w := range c.want {
				if !strings.Contains(got[i], w) || !strings.Contains(got[i], "rules.yaml:") {
					t.Errorf("warning %q\nwant it to say %q at a position", got[i], w)
				}
			}
		})
	}
}

func TestLintWarnsAboutRoutesThatAcceptAnyQuery(t *testing.T) {
	cases := []struct {
		name, route, want string // want: "" none
	}{
		{"a list with visible and no query", `  - id: r
    match: {methods: [GET], path: /api/x}
    allow: [sales]
    records: list
    visible: record.owner_id == user.id
`, "route r hides records (visible) but accepts any query parameter"},
		{"a record with masked fields and no query", `  - id: r
    match: {path: "/api/x/{id}"}
    allow: [sales]
    record: "@this"
    fields: {phone: {mask: phone}}
`, "route r treats fields but accepts any query parameter"},
		{"a list with a query guard", `  - id: r
    match: {methods: [GET], path: /api/x}
    allow: [sales]
    records: list
    visible: record.owner_id == user.id
    query: {params: {offset: {}}}
`, ""},
		{"a write route's answer rewriting", `  - id: r
    match: {methods: [PATCH], path: /api/x}
    allow: [sales]
    record: "@this"
    fields: {phone: {mask: phone}}
`, ""},
		{"a route that hides and treats nothing", `  - id: r
    match: {methods: [GET], path: /api/x}
    allow: [sales]
    records: list
`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := mustLoad(t, "version: 1\nroles: {sales: {}}\nroutes:\n"+c.route)
			var got []string
			for _, w := range s.Warnings() {
				if strings.Contains(w.Msg, "query parameter") {
					got = append(got, w.String())
				}
			}
			switch {
			case c.want == "" && len(got) > 0:
				t.Errorf("warnings %q", got)
			case c.want != "" && (len(got) != 1 || !strings.Contains(got[0], c.want) || !strings.Contains(got[0], "rules.yaml:4:5: routes[0]")):
				t.Errorf("warnings %q, want one saying %q at the route", got, c.want)
			}
		})
	}
}

func TestLintWarnsAboutATargetThatTellsHiddenRecordsExist(t *testing.T) {
	src := lintHead + `  - id: customers.get
    match: {methods: [GET], path: "/api/customers/{id}"}
    allow: [sales]
    record: "@this"
    visible: record.owner_id == user.id
    query: {params: {}}
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales]
    body: {owner_id: {deny: [sales]}, last_contact_at: {deny: [sales]}}
    target: {fetch: "/api/customers/{id}", allow_if: record.owner_id == user.id%s}
`
	count := func(s *Set) (n int, msg string) {
		for _, w := range s.Warnings() {
			if strings.Contains(w.Msg, "add target.visible") {
				n, msg = n+1, w.String()
			}
		}
		return n, msg
	}
	if n, msg := count(mustLoad(t, strings.Replace(src, "%s", "", 1))); n != 1 || !strings.Contains(msg, "routes[3].target: route customers.get hides records the user may not see, but a write to such a record here answers 403") {
		t.Errorf("%d warnings: %s", n, msg)
	}
	if n, msg := count(mustLoad(t, strings.Replace(src, "%s", ", visible: record.owner_id == user.id", 1))); n != 0 {
		t.Errorf("a target with visible is warned about: %s", msg)
	}
}

func TestLintWarnsAboutAParameterNamedLikeATreatedFieldThatDeclaresNoFilter(t *testing.T) {
	route := func(params string) string {
		return `version: 1
roles: {sales: {}}
routes:
  - id: r
    match: {methods: [GET], path: /api/x}
    allow: [sales]
    records: list
    fields: {phone: {mask: phone}, "**.id_card": remove}
    query: {params: ` + params + `}
`
	}
	cases := []struct {
		name, params, want string // want: "" none
	}{
		{"a phone parameter beside a phone mask", "{offset: {}, phone: {}}", `route r accepts the query parameter "phone" without saying what it filters or sorts on, and routes[0].fields.phone treats the field phone`},
		{"a bracket key named like a field removed at any depth", `{"filter[id_card]": {}}`, `fields["**.id_card"] treats the field id_card`},
		{"a parameter that declares its filter", "{phone: {filters: phone}}", ""},
		{"a parameter named like no treated field", "{offset: {}, stage: {}}", ""},
		{"a parameter whose senders the rule file names", "{phone: {deny: [sales]}}", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := mustLoad(t, route(c.params))
			var got []string
			for _, w := range s.Warnings() {
				if strings.Contains(w.Msg, "without saying what it filters") {
					got = append(got, w.String())
				}
			}
			switch {
			case c.want == "" && len(got) > 0:
				t.Errorf("warnings %q", got)
			case c.want != "" && (len(got) != 1 || !strings.Contains(got[0], c.want) || !strings.Contains(got[0], "rules.yaml:9:")):
				t.Errorf("warnings %q, want one saying %q at the parameter", got, c.want)
			}
		})
	}
}
