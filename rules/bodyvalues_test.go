package rules

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestTheBodyValuesAreReadAsTheCRMReadsThemOrRefused(t *testing.T) {
	const js, form = "application/json", "application/x-www-form-urlencoded"
	cases := []struct {
		name  string
		ctype string
		body  string
		want  map[string]any // nil: refused
		why   string         // in the refusal
	}{
		{"a JSON object's values keep their types", js, `{"owner_id":"zhang","amount":12,"rate":1.5,"vip":true,"gone":null}`,
			map[string]any{"owner_id": "zhang", "amount": json.Number("12"), "rate": json.Number("1.5"), "vip": true, "gone": nil}, ""},
		{"nested objects and lists are read", js, `{"customer":{"owner_id":"li"},"ids":[1,"2"]}`,
			map[string]any{"customer": map[string]any{"owner_id": "li"}, "ids": []any{json.Number("1"), "2"}}, ""},
		{"an escaped key is read decoded, as every JSON library reads it", js, `{"owner\u005fid":"li"}`, map[string]any{"owner_id": "li"}, ""},
		{"an escaped value is read decoded", js, `{"owner_id":"\u006ci"}`, map[string]any{"owner_id": "li"}, ""},
		{"a surrogate pair is one character", js, `{"n":"\ud83d\ude00"}`, map[string]any{"n": "\U0001F600"}, ""},
		{"a +json type is JSON", "application/merge-patch+json; charset=utf-8", `{"a":"b"}`, map[string]any{"a": "b"}, ""},
		{"an empty body sets nothing", js, ``, map[string]any{}, ""},
		{"a key given twice is refused", js, `{"owner_id":"zhang","owner_id":"li"}`, nil, `"owner_id" twice`},
		{"a key given twice with the same value is refused too", js, `{"a":1,"a":1}`, nil, "twice"},
		{"keys differing only in case are refused", js, `{"owner_id":"zhang","OWNER_ID":"li"}`, nil, "differ only in case"},
		{"keys equal under Unicode folding (the long s) are refused", js, `{"stage":"a","ſtage":"b"}`, nil, "differ only in case"},
		{"keys equal under Unicode folding (the Kelvin sign) are refused", js, `{"kind":"a","\u212aind":"b"}`, nil, "differ only in case"},
		{"an escaped duplicate of a key is refused", js, `{"owner_id":"zhang","owner\u005fid":"li"}`, nil, "twice"},
		{"a duplicate inside a nested object is refused", js, `{"c":{"x":1,"X":2}}`, nil, `"c.x"`},
		{"a JSON array is refused", js, `[{"owner_id":"li"}]`, nil, "not an object"},
		{"a JSON Patch is refused", "application/json-patch+json", `[{"op":"replace","path":"/owner_id","value":"li"}]`, nil, "not an object"},
		{"a bare string is refused", js, `"li"`, nil, "not an object"},
		{"data after the object is refused", js, `{"a":1}{"owner_id":"li"}`, nil, "after its object"},
		{"invalid JSON is refused", js, `{"a":`, nil, "not valid JSON"},
		{"bytes that are not UTF-8 are refused", js, "{\"owner_id\":\"li\xff\"}", nil, "not UTF-8"},
		{"an unpaired high surrogate is refused", js, `{"owner_id":"li\ud800"}`, nil, "surrogate"},
		{"an unpaired low surrogate is refused", js, `{"owner_id":"\udc00li"}`, nil, "surrogate"},
		{"a high surrogate followed by another high one is refused", js, `{"k":"\ud800\ud800"}`, nil, "surrogate"},
		{"an escaped backslash before u is not an escape", js, `{"k":"\\ud800"}`, map[string]any{"k": `\ud800`}, ""},
		{"nesting beyond the limit is refused", js, `{"a":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}`, nil, "nests deeper"},
		{"another charset is refused", "application/json; charset=latin1", `{"a":1}`, nil, "UTF-8"},
		{"an unknown type is refused", "text/plain", `owner_id=li`, nil, "cannot be read"},
		{"a missing type is refused", "", `{"a":1}`, nil, "no Content-Type"},

		{"form values are strings", form, `owner_id=zhang&amount=12`, map[string]any{"owner_id": "zhang", "amount": "12"}, ""},
		{"percent-encoded form names and values are decoded", form, `owner%5Fid=l%69&note=a+b`, map[string]any{"owner_id": "li", "note": "a b"}, ""},
		{"a form field given twice is refused", form, `owner_id=zhang&owner_id=li`, nil, "2 times"},
		{"form names differing only in case are refused", form, `owner_id=zhang&Owner_Id=li`, nil, "differ only in case"},
		{"a bracketed form name is refused", form, `owner_id[]=li`, nil, "rename or nest"},
		{"a dotted form name (PHP's owner_id) is refused", form, `owner.id=li`, nil, "rename or nest"},
		{"a form name with a space is refused", form, `owner+id=li`, nil, "rename or nest"},
		{"a form name with a control character is refused", form, `owner_id%00=li`, nil, "rename or nest"},
		{"a form value that is not UTF-8 is refused", form, `owner_id=li%FF`, nil, "not UTF-8"},
		{"a form body that is JSON is refused", form, `{"owner_id":"li"}`, nil, "is JSON"},
		{"a form with ; separators is refused", form, `a=1;owner_id=li`, nil, "cannot be read"},

		{"multipart fields are strings", mp, mpBody(mpField("owner_id", "zhang"), mpField("note", "x")), map[string]any{"owner_id": "zhang", "note": "x"}, ""},
		{"a multipart file keeps its name but sets no value", mp, mpBody(mpField("note", "x"), "Content-Disposition: form-data; name=\"doc\"; filename=\"a.txt\"\r\n\r\nowner_id=li"), map[string]any{"note": "x"}, ""},
		{"a multipart field given twice is refused", mp, mpBody(mpField("owner_id", "zhang"), mpField("owner_id", "li")), nil, "twice"},
		{"a multipart field and a file of the same name are refused", mp, mpBody(mpField("owner_id", "zhang"), "Content-Disposition: form-data; name=\"owner_id\"; filename=\"a\"\r\n\r\nli"), nil, "twice"},
		{"multipart names differing only in case are refused", mp, mpBody(mpField("owner_id", "zhang"), mpField("OWNER_ID", "li")), nil, "differ only in case"},
		{"a bracketed multipart name is refused", mp, mpBody(mpField("owner_id[]", "li")), nil, "rename or nest"},
		{"a multipart body cut short is refused", mp, "--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n", nil, "cannot be read"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := readBodyValues(c.ctype, []byte(c.body))
			if c.want == nil {
				if err == nil {
					t.Fatalf("read %v, want a refusal", got)
				}
				if !strings.Contains(err.Error(), c.why) {
					t.Errorf("refused with %q, want it to say %q", err, c.why)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("read %#v, want %#v", got, c.want)
			}
		})
	}
}

func TestFoldKeyIsEqualForExactlyTheKeysEqualFoldMatches(t *testing.T) {
	keys := []string{"owner_id", "OWNER_ID", "Owner_Id", "stage", "ſtage", "STAGE", "kind", "\u212aind", "KIND", "owner_ıd", "owner_İd", "straße", "STRASSE", "σ", "Σ", "ς", "", "_"}
	for _, a := range keys {
		for _, b := range keys {
			if got, want := foldKey(a) == foldKey(b), strings.EqualFold(a, b); got != want {
				t.Errorf("foldKey(%q) == foldKey(%q) is %v, strings.EqualFold says %v", a, b, got, want)
			}
		}
	}
}

// writesRules judges writes by the values they set: claiming a pool
// customer, a manager's reassignment within the team, and a deny_unless
// that reads the body.
const writesRules = `version: 1
roles: {sales: {}, sales_manager: {inherits: [sales]}, service: {}}
subject: {id: claims.sub, roles: claims.groups}
routes:
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales, service]
    body:
      owner_id:
        allow_if: >-
          body.owner_id == record.owner_id
          || (body.owner_id == user.id && timestamp(record.last_contact_at) < now - duration("8760h"))
          || ("sales_manager" in user.roles && record.team in user.attrs.teams && body.owner_id in user.attrs.reports)
      stage:
        deny_unless: 'body.stage != "won" || "sales_manager" in user.roles'
      priority:
        allow_if: 'body.priority in ["low", "normal"] || "sales_manager" in user.roles'
    target:
      fetch: "/api/customers/{id}"
      allow_if: >-
        record.owner_id == user.id
        || "service" in user.roles
        || ("sales_manager" in user.roles && record.team in user.attrs.teams)
        || (body.size() == 1 && body.owner_id == user.id && timestamp(record.last_contact_at) < now - duration("8760h"))
  - id: notes.add
    match: {methods: [POST], path: /api/notes}
    allow: [sales]
    body:
      owner_id: {allow_if: body.owner_id == user.id}
`

func TestConditionsReadTheValuesTheBodySets(t *testing.T) {
	s := mustLoad(t, writesRules)
	now := shanghaiWorkday
	rep := &User{ID: "zhang", Roles: []string{"sales"}, Attrs: map[string]any{"teams": []any{"east"}}, MFA: true}
	mgr := &User{ID: "wang", Roles: []string{"sales", "sales_manager"}, Attrs: map[string]any{"teams": []any{"east"}, "reports": []any{"zhang", "wu"}}, MFA: true}
	const js, form = "application/json", "application/x-www-form-urlencoded"
	pool := `{"id":7,"owner_id":"chen","team":"west","last_contact_at":"2024-01-01T00:00:00Z"}`
	teams := `{"id":8,"owner_id":"wu","team":"east","last_contact_at":"2026-11-01T00:00:00Z"}`
	own := `{"id":9,"owner_id":"zhang","team":"east","last_contact_at":"2026-11-01T00:00:00Z"}`
	cases := []struct {
		name   string
		user   *User
		ctype  string
		body   string
		record string // the stored record ("": the route has no target)
		path   string
		status int // 0: allowed
		field  string
	}{
		{"a rep claims a pool customer for themselves", rep, js, `{"owner_id":"zhang"}`, pool, "/api/customers/7", 0, ""},
		{"a claim sent as a form is judged alike", rep, form, `owner_id=zhang`, pool, "/api/customers/7", 0, ""},
		{"a claim sent as multipart is judged alike", rep, mp, mpBody(mpField("owner_id", "zhang")), pool, "/api/customers/7", 0, ""},
		{"a claim whose key is in another case is judged on its value", rep, js, `{"OWNER_ID":"zhang"}`, pool, "/api/customers/7", 0, ""},
		{"a rep may not claim a pool customer for someone else", rep, js, `{"owner_id":"li"}`, pool, "/api/customers/7", 403, ""},
		{"a rep may not claim a customer of the team, which is not in the pool", rep, js, `{"owner_id":"zhang"}`, teams, "/api/customers/8", 403, ""},
		{"a claim that changes more than the owner is refused", rep, js, `{"owner_id":"zhang","stage":"lost"}`, pool, "/api/customers/7", 403, ""},
		{"an escaped key that writes another owner is refused", rep, js, `{"owner\u005fid":"li"}`, pool, "/api/customers/7", 403, ""},
		{"a duplicate key hiding another owner is refused before any condition", rep, js, `{"owner_id":"zhang","owner_id":"li"}`, pool, "/api/customers/7", 400, ""},
		{"a key in another case hiding another owner is refused before any condition", rep, js, `{"owner_id":"zhang","Owner_ID":"li"}`, pool, "/api/customers/7", 400, ""},
		{"an owner set deeper in the body is refused: its condition reads the top", rep, js, `{"owner_id":"zhang","customer":{"owner_id":"li"}}`, pool, "/api/customers/7", 403, "owner_id"},
		{"an owner set inside a string holding JSON is refused", rep, js, `{"owner_id":"zhang","data":"{\"owner_id\":\"li\"}"}`, pool, "/api/customers/7", 403, "owner_id"},
		{"an owner sent as a multipart file is refused", rep, mp, mpBody("Content-Disposition: form-data; name=\"owner_id\"; filename=\"a\"\r\n\r\nzhang"), own, "/api/customers/9", 403, "owner_id"},
		{"keeping the owner as it is passes", rep, js, `{"owner_id":"zhang","notes":"x"}`, own, "/api/customers/9", 0, ""},
		{"a rep may not hand an own customer to another rep", rep, js, `{"owner_id":"wu"}`, own, "/api/customers/9", 403, "owner_id"},
		{"a manager moves a team customer to a direct report", mgr, js, `{"owner_id":"zhang"}`, teams, "/api/customers/8", 0, ""},
		{"a manager may not move a team customer to someone outside the team", mgr, js, `{"owner_id":"chen"}`, teams, "/api/customers/8", 403, "owner_id"},
		{"a deny_unless reading the body refuses the value it names", rep, js, `{"stage":"won"}`, own, "/api/customers/9", 403, "stage"},
		{"a deny_unless reading the body lets other values through", rep, js, `{"stage":"lost"}`, own, "/api/customers/9", 0, ""},
		{"an allow_if without record is decided on the body alone", rep, js, `{"priority":"urgent"}`, own, "/api/customers/9", 403, "priority"},
		{"an allow_if without record passes a value it allows", rep, form, `priority=low`, own, "/api/customers/9", 0, ""},
		{"a guarded field in the query is refused: its value would not be judged", rep, js, `{"notes":"x"}`, own, "/api/customers/9?owner_id=zhang", 403, "owner_id"},
		{"an owner_id of another user is refused on a route without a target", rep, js, `{"owner_id":"li"}`, "", "/api/notes", 403, "owner_id"},
		{"an own owner_id passes on a route without a target", rep, js, `{"owner_id":"zhang"}`, "", "/api/notes", 0, ""},
		{"a form body naming the field as PHP renames it is refused", rep, form, `owner.id=li`, "", "/api/notes", 400, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method := http.MethodPatch
			if c.record == "" {
				method = http.MethodPost
			}
			u, _ := url.ParseRequestURI(c.path)
			d := s.Decide(c.user, &Request{Method: method, URL: u, Now: now})
			if d.Outcome != Allow {
				if c.status == 403 && d.Status == 403 && strings.Contains(d.Reason, c.field) {
					return // refused on the query before the body was read
				}
				t.Fatalf("not allowed: %d %s", d.Status, d.Reason)
			}
			if !d.ReadsBody(c.ctype) {
				t.Fatal("the route's conditions read the body, but ReadsBody is false")
			}
			status, field, reason := 0, "", ""
			if be := d.CheckBody(c.ctype, []byte(c.body)); be != nil {
				status, field, reason = be.Status, be.Field, be.Reason
			} else if c.record != "" {
				b := d.JudgeTarget(TargetAnswer{Status: 200, Header: http.Header{"Content-Type": {js}}, Body: []byte(c.record)})
				if b != nil {
					status, reason = b.Status, b.Reason
					if i := strings.Index(b.Reason, "sets "); i >= 0 {
						field = strings.Fields(b.Reason[i+5:])[0]
					}
				}
			}
			if status != c.status {
				t.Fatalf("status %d (%s), want %d", status, reason, c.status)
			}
			if c.field != "" && field != c.field {
				t.Errorf("refusal names %q (%s), want %q", field, reason, c.field)
			}
		})
	}
}

func TestAValueRefusalSaysWhichValueAndWhy(t *testing.T) {
	s := mustLoad(t, writesRules)
	rep := &User{ID: "zhang", Roles: []string{"sales"}, MFA: true}
	d := s.Decide(rep, &Request{Method: http.MethodPost, URL: &url.URL{Path: "/api/notes"}, Now: shanghaiWorkday})
	be := d.CheckBody("application/json", []byte(`{"owner_id":"li"}`))
	if be == nil {
		t.Fatal("passed")
	}
	for _, want := range []string{"notes.add", `owner_id to "li"`, "body.owner_id == user.id", "role sales"} {
		if !strings.Contains(be.Reason, want) {
			t.Errorf("reason %q does not say %q", be.Reason, want)
		}
	}
	if be.Message != "You may not set the field owner_id to this value here." || strings.Contains(be.Message, "body.") {
		t.Errorf("message %q", be.Message)
	}
	if d.Audit.Decision != "deny" || d.Audit.Reason != be.Reason {
		t.Errorf("audit %+v", d.Audit)
	}
}

func TestARecordConditionIsNotJudgedWithoutTheBody(t *testing.T) {
	s := mustLoad(t, writesRules)
	rep := &User{ID: "zhang", Roles: []string{"sales"}, MFA: true}
	d := s.Decide(rep, &Request{Method: http.MethodPatch, URL: &url.URL{Path: "/api/customers/7"}, Now: shanghaiWorkday})
	// The caller skipped CheckBody: the stored record alone must not let
	// the write through.
	b := d.JudgeTarget(TargetAnswer{Status: 200, Body: []byte(`{"owner_id":"zhang","team":"east"}`)})
	if b == nil || b.Status != http.StatusForbidden || !strings.Contains(b.Reason, "CheckBody") {
		t.Fatalf("block %+v, want 403 naming CheckBody", b)
	}
}

func TestBodyConditionsAreCheckedWhenTheFileLoads(t *testing.T) {
	cases := []struct {
		name, guard, want string
	}{
		{"a route's when may not read the body", "", ""},
		{"an allow_if reading record needs a target", `{allow_if: 'body.owner_id == record.owner_id'}`, "has no target"},
		{"an approval needs an allow_if", `{deny: [sales], approval: handover}`, "has no allow_if"},
		{"an approval names a declared policy", `{allow_if: 'body.owner_id == user.id', approval: nope}`, "unknown approval policy"},
		{"a typo in body is still a map key, but a wrong type is an error", `{allow_if: 'body.owner_id + 1'}`, "not a bool"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := "version: 1\nroles: {sales: {}}\napprovals:\n  handover: {steps: [{name: m, approvers: [sales]}]}\nroutes:\n  - id: r\n    match: {methods: [POST], path: /x}\n    allow: [sales]\n"
			if c.guard == "" {
				src += "    when: body.owner_id == user.id\n"
				c.want = "body is not available here"
			} else {
				src += "    body:\n      owner_id: " + c.guard + "\n"
			}
			wantLoadError(t, src, nil, c.want)
		})
	}
}

// FuzzAGuardedValueIsReadAsEncodingJSONReadsIt checks, from the attacker's
// side, that a body whose guarded value encoding/json (the example CRM's
// library) reads differently from the guard never passes: whenever
// CheckBody lets a body through a guard that allows only owner_id "me",
// every owner_id a Go CRM could read from it (a struct field, bound
// case-insensitively; a map key; a nested customer's) is "me". Form bodies
// are checked against net/url the same way, names as PHP reads them too.
func FuzzAGuardedValueIsReadAsEncodingJSONReadsIt(f *testing.F) {
	s := mustLoad(f, `version: 1
roles: {sales: {}}
routes:
  - id: notes.add
    match: {methods: [POST], path: /api/notes}
    allow: [sales]
    body:
      owner_id: {allow_if: 'body.owner_id == "me"'}
`)
	rep := &User{ID: "me", Roles: []string{"sales"}, MFA: true}
	for _, seed := range []string{
		`{"owner_id":"me"}`, `{"owner_id":"li"}`, `{"owner_id":"me","owner_id":"li"}`, `{"owner_id":"me","OWNER_ID":"li"}`,
		`{"OWNER_ID":"me"}`, `{"owner\u005fid":"li"}`, `{"owner_id":"m\u0065"}`, `{"ſowner_id":"li"}`, `{"owner_\u0130d":"li"}`,
		`{"owner_id":"me","customer":{"owner_id":"li"}}`, `{"owner_id":"me\ud800"}`, `{"owner_id":["me"]}`, `{"owner_id":null}`,
		"{\"owner_id\":\"me\xff\"}", `{"owner_id":"me"} {"owner_id":"li"}`, `[{"owner_id":"li"}]`,
	} {
		f.Add(false, seed)
	}
	for _, seed := range []string{`owner_id=me`, `owner_id=li`, `owner_id=me&owner_id=li`, `owner_id=me&OWNER_ID=li`, `owner.id=li`, `owner_id[]=li`, `owner_id=me&owner%5Fid=li`, `+owner_id=li`} {
		f.Add(true, seed)
	}
	f.Fuzz(func(t *testing.T, form bool, body string) {
		ctype := "application/json"
		if form {
			ctype = "application/x-www-form-urlencoded"
		}
		d := s.Decide(rep, &Request{Method: http.MethodPost, URL: &url.URL{Path: "/api/notes"}, Now: shanghaiWorkday})
		if d.CheckBody(ctype, []byte(body)) != nil {
			return // refused: nothing reaches the CRM
		}
		if form {
			vals, err := url.ParseQuery(body)
			if err != nil {
				return
			}
			for k, vs := range vals {
				if strings.EqualFold(k, "owner_id") || strings.EqualFold(formBase(k), "owner_id") {
					for _, v := range vs {
						if v != "me" {
							t.Fatalf("the guard let %q through; a CRM reads %s=%q", body, k, v)
						}
					}
				}
			}
			return
		}
		var st struct {
			OwnerID  json.RawMessage `json:"owner_id"`
			Customer *struct {
				OwnerID json.RawMessage `json:"owner_id"`
			} `json:"customer"`
		}
		if json.Unmarshal([]byte(body), &st) == nil {
			check := func(where string, raw json.RawMessage) {
				if raw == nil {
					return
				}
				var v any
				if err := json.Unmarshal(raw, &v); err != nil || v != "me" {
					t.Fatalf("the guard let %q through; encoding/json reads %s as %s", body, where, raw)
				}
			}
			check("owner_id", st.OwnerID)
			if st.Customer != nil {
				check("customer.owner_id", st.Customer.OwnerID)
			}
		}
		var m map[string]any
		if json.Unmarshal([]byte(body), &m) == nil {
			if v, ok := m["owner_id"]; ok && v != "me" {
				t.Fatalf("the guard let %q through; encoding/json reads owner_id as %v into a map", body, v)
			}
		}
	})
}
