package rules

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

const changesFile = `version: 1
roles: {sales: {}}
routes:
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales]
    target:
      fetch: "/api/customers/{id}"
      allow_if: record.owner_id == user.id
    audit_changes: [owner_id, {field: stage, plain: true}, address.city, contract_amount]
  - id: notes.create
    match: {methods: [POST], path: /api/notes}
    allow: [sales]
    audit_changes: []
`

func hmacHex(key, text string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(text))
	return `"` + hex.EncodeToString(m.Sum(nil)) + `"`
}

func TestAWriteRecordsItsFieldsAndTheChangesTheRouteNames(t *testing.T) {
	set := mustLoad(t, changesFile) // hash key "k"
	stored := []byte(`{"id":7,"owner_id":"zhang","stage":"lead","address":{"city":"Shanghai"},"contract_amount":1000}`)
	tests := []struct {
		name       string
		method     string
		path       string
		ctype      string
		body       string
		fields     []string
		changes    map[string][2]string // field -> old, new (JSON; old "" = absent)
		noFetchYet bool
	}{
		{name: "a JSON write records its top-level keys, hashed and plain values, old from the stored record",
			method: "PATCH", path: "/api/customers/7", ctype: "application/json",
			body:   `{"owner_id":"wang","stage":"won","notes":"x","address":{"city":"Beijing"}}`,
			fields: []string{"address", "notes", "owner_id", "stage"},
			changes: map[string][2]string{
				"owner_id":     {hmacHex("k", "zhang"), hmacHex("k", "wang")},
				"stage":        {`"lead"`, `"won"`},
				"address.city": {hmacHex("k", "Shanghai"), hmacHex("k", "Beijing")},
			}},
		{name: "a number is hashed on its literal text, as the hash action does",
			method: "PATCH", path: "/api/customers/7", ctype: "application/json", body: `{"contract_amount":2500}`,
			fields:  []string{"contract_amount"},
			changes: map[string][2]string{"contract_amount": {hmacHex("k", "1000"), hmacHex("k", "2500")}}},
		{name: "a form write records its field names",
			method: "PATCH", path: "/api/customers/7", ctype: "application/x-www-form-urlencoded", body: "stage=won&next_step=call",
			fields: []string{"next_step", "stage"}, changes: map[string][2]string{"stage": {`"lead"`, `"won"`}}},
		{name: "a route without a target records new values only; an empty list records the fields",
			method: "POST", path: "/api/notes", ctype: "application/json", body: `{"text":"hello","customer_id":7}`,
			fields: []string{"customer_id", "text"}, noFetchYet: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := set.Decide(zhang, targetReq(tt.method, tt.path))
			if d.Outcome != Allow || !d.GuardsBody() {
				t.Fatalf("outcome %v, guards body %v", d.Outcome, d.GuardsBody())
			}
			if be := d.CheckBody(tt.ctype, []byte(tt.body)); be != nil {
				t.Fatal(be)
			}
			if !tt.noFetchYet {
				if b := d.JudgeTarget(TargetAnswer{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: stored}); b != nil {
					t.Fatal(b.Reason)
				}
			}
			if !slices.Equal(d.Audit.BodyFields, tt.fields) {
				t.Errorf("body_fields %v, want %v", d.Audit.BodyFields, tt.fields)
			}
			if len(d.Audit.Changes) != len(tt.changes) {
				t.Errorf("changes %v, want %d", d.Audit.Changes, len(tt.changes))
			}
			for f, want := range tt.changes {
				got := d.Audit.Changes[f]
				if string(got.Old) != want[0] || string(got.New) != want[1] {
					t.Errorf("%s: %s -> %s, want %s -> %s", f, got.Old, got.New, want[0], want[1])
				}
			}
		})
	}
	t.Run("a refused write records no old values", func(t *testing.T) {
		d := set.Decide(zhang, targetReq("PATCH", "/api/customers/8"))
		if be := d.CheckBody("application/json", []byte(`{"owner_id":"zhang"}`)); be != nil {
			t.Fatalf("the body was refused (%s); the write must reach the target check", be.Reason)
		}
		b := d.JudgeTarget(TargetAnswer{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"id":8,"owner_id":"wu"}`)})
		if b == nil || b.Status != 403 {
			t.Fatalf("want 403, got %v", b)
		}
		if c := d.Audit.Changes["owner_id"]; c.Old != nil {
			t.Errorf("an old value was recorded for a refused write: %s", c.Old)
		}
	})
}

func TestAuditChangesAreCheckedAtLoad(t *testing.T) {
	route := func(changes string) string {
		return "version: 1\nroles: {sales: {}}\nroutes:\n  - id: r\n    match: {methods: [PATCH], path: /x}\n    allow: [sales]\n    audit_changes: " + changes + "\n"
	}
	tests := []struct{ name, src, want string }{
		{"hashed values need a hash key", route("[owner_id]"), "routes[0].audit_changes[0]: the values of owner_id are recorded hashed, which needs a secret key"},
		{"a field listed twice is refused", route("[{field: a, plain: true}, {field: a, plain: true}]"), "a is listed twice"},
		{"a wildcard is refused", route("[{field: 'a.*', plain: true}]"), "routes[0].audit_changes[0]"},
		{"a mapping without its field is refused", route("[{plain: true}]"), "missing: the field"},
		{"something else than a list is refused", route("owner_id"), "want a list of fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantLoadError(t, tt.src, nil, tt.want)
		})
	}
}

func TestTheVersionIsTheFilesContentNotItsLayout(t *testing.T) {
	base := mustLoad(t, changesFile).Version()
	tests := []struct {
		name string
		src  string
		same bool
	}{
		{"comments, blank lines and indentation keep it", "# a comment\n" + strings.ReplaceAll(strings.ReplaceAll(changesFile, "\n  - id: ", "\n\n  # the route\n  - id: "), "allow: [sales]", "allow:   [ sales ]   # who"), true},
		{"flow and block style keep it", strings.Replace(changesFile, "roles: {sales: {}}", "roles:\n  sales: {}", 1), true},
		{"key order and quoting keep it", strings.Replace(changesFile, "version: 1\nroles: {sales: {}}", "roles: {\"sales\": {}}\nversion: 1", 1), true},
		{"a changed value changes it", strings.Replace(changesFile, "allow: [sales]", "allow: [sales, sales]", 1), false},
		{"a changed field list changes it", strings.Replace(changesFile, "address.city, ", "", 1), false},
	}
	if len(base) != 16 {
		t.Fatalf("version %q", base)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := mustLoad(t, tt.src).Version()
			if (v == base) != tt.same {
				t.Errorf("version %s, base %s, same=%v wanted", v, base, tt.same)
			}
		})
	}
}

func TestDiffAccessSaysWhatChangesPerRole(t *testing.T) {
	old := mustLoad(t, `version: 1
roles: {sales: {}, service: {}, finance: {}}
routes:
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales, service]
    records: list
    visible: record.owner_id == user.id || "service" in user.roles
    fields: {phone: {mask: phone}}
  - id: payments.list
    match: {methods: [GET], path: /api/payments}
    allow: [finance]
`)
	new := mustLoad(t, `version: 1
roles: {sales: {}, service: {}, marketing: {}}
routes:
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales, service, marketing]
    records: list
    visible: record.owner_id == user.id || record.team in user.attrs.teams || "service" in user.roles
    fields: {phone: {mask: phone, except: [service]}}
  - id: payments.list
    match: {methods: [GET], path: /api/payments}
    allow: [finance, sales]
`)
	got := map[string]string{}
	for _, c := range DiffAccess(old, new) {
		got[c.Role] = c.String()
	}
	want := map[string]string{
		"finance":   "finance: role removed; may no longer call payments.list",
		"marketing": "marketing: role added; may now call customers.list",
		"sales":     "sales: may now call payments.list; customers.list: records changed",
		"service":   "service: customers.list: fields changed",
	}
	if len(got) != len(want) {
		t.Errorf("got %v", got)
	}
	for role, w := range want {
		if got[role] != w {
			t.Errorf("%s:\n got %s\nwant %s", role, got[role], w)
		}
	}
}

func TestDiffAccessNamesQueryForwardAndLimitChanges(t *testing.T) {
	const base = `version: 1
roles: {sales: {}, service: {}}
routes:
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales, service]
    records: list
`
	tests := []struct {
		name     string
		old, new string
		want     map[string]string
	}{
		{name: "a query allowlist added changes the query of every role",
			old: base, new: base + "    query: {params: {q: {}}}\n",
			want: map[string]string{"sales": "sales: customers.list: query changed", "service": "service: customers.list: query changed"}},
		{name: "a parameter denied to one role changes that role's query only",
			old: base + "    query: {params: {q: {}}}\n", new: base + "    query: {params: {q: {deny: [sales]}}}\n",
			want: map[string]string{"sales": "sales: customers.list: query changed"}},
		{name: "a forward_query for one role changes what goes to the CRM for it",
			old: base, new: base + "    forward_query: {team: {value: user.attrs.teams, for: [sales]}}\n",
			want: map[string]string{"sales": "sales: customers.list: forward_query changed"}},
		{name: "a usage limit for one role changes its limits",
			old: base, new: base + "limits:\n  - {id: bulk, routes: [customers.list], count: records, max: 100, per: 10m, for: [sales], action: block}\n",
			want: map[string]string{"sales": "sales: customers.list: limits changed"}},
		{name: "a limit's max raised is a change too",
			old:  base + "limits:\n  - {id: bulk, routes: [customers.list], count: records, max: 100, per: 10m, action: block}\n",
			new:  base + "limits:\n  - {id: bulk, routes: [customers.list], count: records, max: 500, per: 10m, action: block}\n",
			want: map[string]string{"sales": "sales: customers.list: limits changed", "service": "service: customers.list: limits changed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]string{}
			for _, c := range DiffAccess(mustLoad(t, tt.old), mustLoad(t, tt.new)) {
				got[c.Role] = c.String()
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
		})
	}
}
