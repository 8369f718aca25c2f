package rules

import (
	"encoding/json"
	"strings"
	"testing"
)

const bodyRules = `version: 1
roles: {sales: {}, service: {}, sales_manager: {inherits: [sales]}}
routes:
  - id: customers.update
    match: {methods: [PUT, PATCH, POST], path: "/api/customers/**"}
    allow: [sales, service, sales_manager]
    body:
      stage: {deny: [service]}
      contract_amount: {deny: [service]}
      owner_id: {deny_unless: '"sales_manager" in user.roles'}
      deal.discount: {deny: [sales]}
      _method: {deny_unless: "false"}
`

func TestRequestBodyGuards(t *testing.T) {
	s := mustLoad(t, bodyRules)
	service := s.UserFromRoles("li", []string{"service"}, nil, true, shanghaiWorkday)
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, true, shanghaiWorkday)
	manager := s.UserFromRoles("wang", []string{"sales_manager"}, nil, true, shanghaiWorkday)
	const js, form = "application/json", "application/x-www-form-urlencoded"
	cases := []struct {
		name   string
		user   *User
		ctype  string
		body   string
		status int    // 0: passes
		field  string // the field named in a 403
	}{
		{"a top-level guarded field is refused", service, js, `{"stage":"won"}`, 403, "stage"},
		{"an unguarded field passes", service, js, `{"notes":"called"}`, 0, ""},
		{"a guarded field nested in an object is refused", service, js, `{"deal":{"stage":"won"}}`, 403, "stage"},
		{"a guarded field in a bulk update array is refused", service, js, `[{"id":1,"notes":"x"},{"id":2,"stage":"won"}]`, 403, "stage"},
		{"a guarded field deep in arrays of objects is refused", service, js, `{"ops":[{"set":[{"contract_amount":1}]}]}`, 403, "contract_amount"},
		{"a key written with \\u escapes is refused", service, js, `{"st\u0061ge":"won"}`, 403, "stage"},
		{"a key in another case is refused", service, js, `{"Stage":"won"}`, 403, "stage"},
		{"a duplicate key is refused even when the first copy is harmless", service, js, `{"notes":"a","notes":"b","stage":"x","stage":"y"}`, 403, "stage"},
		{"a guarded key as a value is not a field", service, js, `{"notes":"stage"}`, 0, ""},
		{"a dotted guard matches the key under its parent", sales, js, `{"deal":{"discount":5}}`, 403, "deal.discount"},
		{"a dotted guard matches under arrays", sales, js, `{"deal":[{"discount":5}]}`, 403, "deal.discount"},
		{"a dotted guard does not match the key under another parent", sales, js, `{"item":{"discount":5}}`, 0, ""},
		{"deny_unless refuses when its condition fails", sales, js, `{"owner_id":"li"}`, 403, "owner_id"},
		{"deny_unless passes when its condition holds", manager, js, `{"owner_id":"li"}`, 0, ""},
		{"a role not in deny passes", sales, js, `{"stage":"won"}`, 0, ""},
		{"a form field is refused", service, form, `notes=x&stage=won`, 403, "stage"},
		{"a bracketed form field is refused", service, form, `deal%5Bstage%5D=won`, 403, "stage"},
		{"a nested bracketed form field is refused", service, form, `items[0][stage]=won`, 403, "stage"},
		{"a dotted form field is refused", service, form, `deal.stage=won`, 403, "stage"},
		{"a percent-encoded form key is refused", service, form, `st%61ge=won`, 403, "stage"},
		{"a dotted guard matches a bracketed form key", sales, form, `deal[discount]=5`, 403, "deal.discount"},
		{"an unguarded form passes", service, form, `notes=called`, 0, ""},
		{"a form key with a leading space (PHP drops it) is refused", service, form, `+stage=won`, 403, "stage"},
		{"a form key PHP reads as contract_amount through a dot is refused", service, form, `contract.amount=1`, 403, "contract_amount"},
		{"a form key PHP reads as contract_amount through a space is refused", service, form, `contract%20amount=1`, 403, "contract_amount"},
		{"a form key PHP reads as contract_amount through an open bracket is refused", service, form, `contract[amount=1`, 403, "contract_amount"},
		{"a JSON body labelled as a form is checked as JSON", service, form, `{"stage":"won"}`, 403, "stage"},
		{"a JSON array labelled as a form is checked as JSON", service, form, ` [{"id":1,"stage":"won"}]`, 403, "stage"},
		{"a guarded field inside a string holding JSON is refused", service, js, `{"data":"{\"stage\":\"won\"}"}`, 403, "stage"},
		{"a guarded field inside a string holding a JSON array is refused", service, js, `{"ops":" [{\"contract_amount\":1}]"}`, 403, "contract_amount"},
		{"a JSON Patch replacing a guarded field is refused", service, "application/json-patch+json", `[{"op":"replace","path":"/stage","value":"won"}]`, 403, "stage"},
		{"a JSON Patch adding a guarded field under arrays is refused", service, "application/json-patch+json", `[{"op":"add","path":"/items/0/contract_amount","value":1}]`, 403, "contract_amount"},
		{"a JSON Patch removing a nested guarded field is refused", service, "application/json-patch+json", `[{"op":"remove","path":"/deal/stage"}]`, 403, "stage"},
		{"a JSON Patch moving a guarded field away is refused", service, "application/json-patch+json", `[{"op":"move","from":"/stage","path":"/old_stage"}]`, 403, "stage"},
		{"a JSON Patch that only tests a guarded field passes", service, "application/json-patch+json", `[{"op":"test","path":"/stage","value":"won"},{"op":"replace","path":"/notes","value":"x"}]`, 0, ""},
		{"a string that merely starts with a brace is not a field", service, js, `{"notes":"{stage} was discussed"}`, 0, ""},
		{"a method override in a form body is refused for everyone", manager, form, `_method=DELETE`, 403, "_method"},
		{"a charset parameter of UTF-8 is read", service, "application/json; charset=utf-8", `{"stage":1}`, 403, "stage"},
		{"a +json type is read as JSON", service, "application/merge-patch+json", `{"stage":1}`, 403, "stage"},
		{"invalid JSON is refused as unreadable", service, js, `{"stage":`, 400, ""},
		{"JSON with trailing data is refused", service, js, `{"notes":1} {"stage":2}`, 400, ""},
		{"a form with ; separators is refused", service, form, `notes=x;stage=won`, 400, ""},
		{"a form with a bad escape is refused", service, form, `notes=%zz`, 400, ""},
		{"an unknown content type is refused", service, "text/plain", `stage=won`, 400, ""},
		{"a missing content type is refused", service, "", `{"stage":1}`, 400, ""},
		{"a guarded field in a multipart form is refused", service, mp, mpBody(mpField("notes", "called"), mpField("stage", "won")), 403, "stage"},
		{"a bracketed guarded field in a multipart form is refused", service, mp, mpBody(mpField("deal[stage]", "won")), 403, "stage"},
		{"a guarded field sent as a multipart file is refused", service, mp, mpBody("Content-Disposition: form-data; name=\"contract_amount\"; filename=\"a.txt\"\r\n\r\n1"), 403, "contract_amount"},
		{"a guarded name inside an uploaded file is data, not a field", service, mp, mpBody("Content-Disposition: form-data; name=\"attachment\"; filename=\"stage.txt\"\r\n\r\nstage=won"), 0, ""},
		{"a multipart form without guarded fields passes", service, mp, mpBody(mpField("notes", "called")), 0, ""},
		{"a multipart body cut short is refused", service, mp, "--x\r\n", 400, ""},
		{"a multipart part naming its field twice is refused", service, mp, mpBody("Content-Disposition: form-data; name=\"notes\"; name=\"stage\"\r\n\r\nwon"), 400, ""},
		{"a multipart part that is not form-data is refused", service, mp, mpBody("Content-Disposition: attachment; name=\"stage\"\r\n\r\nwon"), 400, ""},
		{"another charset is refused", service, "application/json; charset=utf-16", `{"notes":1}`, 400, ""},
		{"a quoted Latin-1 charset on a form is refused", service, `application/x-www-form-urlencoded; charset="latin1"`, `notes=x`, 400, ""},
		{"utf8 without its dash is refused (one policy: utf-8, us-ascii or none)", service, "application/json; charset=utf8", `{"notes":1}`, 400, ""},
		{"a US-ASCII charset is read", service, "application/json; charset=us-ascii", `{"stage":1}`, 403, "stage"},
		{"a quoted UTF-8 charset in capitals is read", service, `APPLICATION/JSON; Charset="UTF-8"`, `{"stage":1}`, 403, "stage"},
		{"a charset given twice is refused", service, "application/json; charset=utf-8; charset=utf-16", `{"notes":1}`, 400, ""},
		{"an RFC 2231 charset is refused", service, "application/json; charset*=utf-8''utf-16", `{"notes":1}`, 400, ""},
		{"a longer subtype than json is not read as JSON", service, "application/jsonx", `{"stage":1}`, 400, ""},
		{"a body with a byte order mark is not valid JSON", service, js, "\xef\xbb\xbf{\"stage\":1}", 400, ""},
		{"an empty body passes", service, js, ``, 0, ""},
		{"nesting beyond the limit is refused", service, js, strings.Repeat("[", 600) + strings.Repeat("]", 600), 400, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(c.user, request("PATCH", "/api/customers/42"))
			if d.Outcome != Allow {
				t.Fatalf("not allowed: %s", d.Reason)
			}
			be := d.CheckBody(c.ctype, []byte(c.body))
			if c.status == 0 {
				if be != nil {
					t.Fatalf("refused: %+v", be)
				}
				return
			}
			if be == nil {
				if !d.GuardsBody() {
					t.Fatalf("no guard applies to %v", c.user.Roles)
				}
				t.Fatalf("passed, want %d", c.status)
			}
			if be.Status != c.status || be.Field != c.field {
				t.Fatalf("got %d field %q (%s), want %d field %q", be.Status, be.Field, be.Reason, c.status, c.field)
			}
			if c.status == 403 && !strings.Contains(be.Reason, c.field) {
				t.Errorf("reason %q does not name the field", be.Reason)
			}
			if d.Audit.Decision != "deny" || d.Audit.Reason != be.Reason {
				t.Errorf("audit %+v", d.Audit)
			}
		})
	}
}

func TestGuardsBodyIsFalseWhenNoGuardApplies(t *testing.T) {
	s := mustLoad(t, bodyRules)
	cases := []struct {
		name  string
		roles []string
		want  bool
	}{
		{"a denied role must have its body read", []string{"service"}, true},
		{"a role failing deny_unless must have its body read", []string{"sales"}, true},
		{"an inheriting role carries its parent's restrictions", []string{"sales_manager"}, true},
	}
	// sales_manager inherits sales, so deal.discount (deny: [sales])
	// applies to it too: inheritance gives a role everything its parent
	// has, restrictions included.
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(s.UserFromRoles("u", c.roles, nil, true, shanghaiWorkday), request("PUT", "/api/customers/1"))
			if got := d.GuardsBody(); got != c.want {
				t.Fatalf("GuardsBody() = %v, want %v", got, c.want)
			}
		})
	}
	t.Run("a route without guards never reads the body", func(t *testing.T) {
		s := mustLoad(t, "version: 1\nroles: {a: {}}\nroutes:\n  - id: x\n    match: {path: /x}\n    allow: [a]\n")
		d := s.Decide(s.UserFromRoles("u", []string{"a"}, nil, true, shanghaiWorkday), request("POST", "/x"))
		if d.GuardsBody() || d.CheckBody("text/plain", []byte("anything")) != nil {
			t.Fatal("a route without guards checked the body")
		}
	})
	t.Run("a user only deny_unless concerns skips the body when it holds", func(t *testing.T) {
		s := mustLoad(t, "version: 1\nroles: {a: {}, b: {}}\nroutes:\n  - id: x\n    match: {path: /x}\n    allow: [a, b]\n    body: {owner_id: {deny_unless: '\"b\" in user.roles'}}\n")
		d := s.Decide(s.UserFromRoles("u", []string{"b"}, nil, true, shanghaiWorkday), request("POST", "/x"))
		if d.GuardsBody() {
			t.Fatal("GuardsBody() is true although deny_unless holds")
		}
	})
}

// stdlibHasKey walks a decoded JSON value for a key equal to name
// (ignoring case): the oracle for FuzzBodyGuardNeverMissesAField.
func stdlibHasKey(v any, name string) bool {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if strings.EqualFold(k, name) || stdlibHasKey(x, name) {
				return true
			}
		}
	case []any:
		for _, x := range v {
			if stdlibHasKey(x, name) {
				return true
			}
		}
	}
	return false
}

// FuzzBodyGuardNeverMissesAField: whenever encoding/json finds a guarded
// key anywhere in a body, CheckBody refuses the body.
func FuzzBodyGuardNeverMissesAField(f *testing.F) {
	for _, s := range []string{`{"stage":1}`, `[{"id":1},{"st\u0061ge":2}]`, `{"a":{"b":[{"STAGE":null}]}}`, `{"notes":"stage"}`, `{"stage":1,"stage":2}`} {
		f.Add(s)
	}
	s := mustLoad(f, bodyRules)
	service := s.UserFromRoles("li", []string{"service"}, nil, true, shanghaiWorkday)
	f.Fuzz(func(t *testing.T, body string) {
		var v any
		if err := json.Unmarshal([]byte(body), &v); err != nil || !stdlibHasKey(v, "stage") {
			return
		}
		d := s.Decide(service, request("PATCH", "/api/customers/1"))
		if be := d.CheckBody("application/json", []byte(body)); be == nil {
			t.Fatalf("body %s passed although it sets stage", body)
		}
	})
}

func TestBodyGuardsOnAPublicRouteJudgeAnonymousRequests(t *testing.T) {
	s := mustLoad(t, "version: 1\nroles: {staff: {}}\nroutes:\n  - id: signup\n    match: {path: /signup}\n    allow: public\n    body: {role: {deny_unless: '\"staff\" in user.roles'}}\n")
	d := s.Decide(nil, request("POST", "/signup"))
	if d.Outcome != Allow || !d.GuardsBody() {
		t.Fatalf("outcome %d, guards %v", d.Outcome, d.GuardsBody())
	}
	be := d.CheckBody("application/json", []byte(`{"name":"x","role":"admin"}`))
	if be == nil || be.Status != 403 || !strings.Contains(be.Reason, "an anonymous user") {
		t.Fatalf("body error %+v", be)
	}
}

func TestMethodOverrideInABody(t *testing.T) {
	s := mustLoad(t, `version: 1
roles: {sales: {}}
routes:
  - id: notes.add
    match: {methods: [POST], path: "/api/customers/{id}/notes"}
    allow: [sales]
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales]
`)
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, true, shanghaiWorkday)
	const js, form = "application/json", "application/x-www-form-urlencoded"
	cases := []struct {
		name   string
		method string
		path   string
		ctype  string
		body   string
		reads  bool
		status int
	}{
		{"_method in a POST form body is refused", "POST", "/api/customers/1/notes", form, `text=hi&_method=DELETE`, true, 400},
		{"_method with a leading space in a POST form body is refused", "POST", "/api/customers/1/notes", form, `+_method=DELETE`, true, 400},
		{"_method in a POST JSON body is refused", "POST", "/api/customers/1/notes", js, `{"text":"hi","_method":"DELETE"}`, true, 400},
		{"_method in a POST +json body is refused", "POST", "/api/customers/1/notes", "application/vnd.api+json", `{"_METHOD":"put"}`, true, 400},
		{"_method naming POST itself passes", "POST", "/api/customers/1/notes", form, `_method=post&text=hi`, true, 0},
		{"a POST body without _method passes", "POST", "/api/customers/1/notes", js, `{"text":"hi"}`, true, 0},
		{"_method nested below the top level is data, not an override", "POST", "/api/customers/1/notes", js, `{"meta":{"_method":"DELETE"}}`, true, 0},
		{"a PATCH body is not read for overrides (frameworks obey _method on POST only)", "PATCH", "/api/customers/1", js, `{"_method":"DELETE"}`, false, 0},
		{"_method in a POST multipart body is refused", "POST", "/api/customers/1/notes", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nhi\r\n--x\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--x--\r\n", true, 400},
		{"_method in a multipart part written in quoted-printable is refused", "POST", "/api/customers/1/notes", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"_method\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=44ELETE\r\n--x--\r\n", true, 400},
		{"_method named through RFC 2231 in a multipart part is refused", "POST", "/api/customers/1/notes", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name*=UTF-8''_method\r\n\r\nPUT\r\n--x--\r\n", true, 400},
		{"a multipart part naming its field twice is refused", "POST", "/api/customers/1/notes", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"text\"; name=\"_method\"\r\n\r\nDELETE\r\n--x--\r\n", true, 400},
		{"a multipart part with two dispositions is refused", "POST", "/api/customers/1/notes", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"text\"\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--x--\r\n", true, 400},
		{"a multipart body cut short after a boundary is refused", "POST", "/api/customers/1/notes", "multipart/form-data; boundary=x", "--x\r\n", true, 400},
		{"a multipart body without a boundary parameter is refused", "POST", "/api/customers/1/notes", "multipart/form-data", "--x\r\n--x--\r\n", true, 400},
		{"a multipart body with a file and no _method passes", "POST", "/api/customers/1/notes", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nhi\r\n--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\n_method=DELETE\r\n--x--\r\n", true, 0},
		{"a POST form whose Content-Type parameters cannot be read is still read, and refused", "POST", "/api/customers/1/notes", form + "; charset", `_method=DELETE`, true, 400},
		{"a POST form in UTF-16 is refused: the CRM might find a _method the proxy cannot", "POST", "/api/customers/1/notes", form + "; charset=utf-16", `text=hi`, true, 400},
		{"a POST JSON body in UTF-8 without _method passes", "POST", "/api/customers/1/notes", js + "; charset=UTF-8", `{"text":"hi"}`, true, 0},
		{"_method naming POST itself in a multipart body passes", "POST", "/api/customers/1/notes", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\npost\r\n--x--\r\n", true, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(sales, request(c.method, c.path))
			if d.Outcome != Allow {
				t.Fatalf("not allowed: %s", d.Reason)
			}
			if got := d.ReadsBody(c.ctype); got != c.reads {
				t.Fatalf("ReadsBody = %v, want %v", got, c.reads)
			}
			be := d.CheckBody(c.ctype, []byte(c.body))
			switch {
			case c.status == 0 && be != nil:
				t.Fatalf("refused: %+v", be)
			case c.status != 0 && (be == nil || be.Status != c.status || be.Field != "_method"):
				t.Fatalf("got %+v, want %d on _method", be, c.status)
			case c.status != 0 && d.Audit.Decision != "deny":
				t.Fatalf("audit %+v", d.Audit)
			}
		})
	}
}

// TestDeeplyNestedBodiesAreRefusedWithoutExhaustingTheStack sends bodies
// of millions of brackets: a recursive JSON validator would overflow the
// goroutine stack, a fatal error that stops the whole server.
func TestDeeplyNestedBodiesAreRefusedWithoutExhaustingTheStack(t *testing.T) {
	s := mustLoad(t, bodyRules)
	service := s.UserFromRoles("li", []string{"service"}, nil, true, shanghaiWorkday)
	deep := strings.Repeat("[", 16<<20)
	deepString, _ := json.Marshal(map[string]string{"data": deep})
	cases := []struct {
		name, method, ctype, body string
	}{
		{"a JSON body of 16 MiB of brackets", "PATCH", "application/json", deep},
		{"a form-labelled body of 16 MiB of brackets", "PATCH", "application/x-www-form-urlencoded", deep},
		{"a string holding 16 MiB of brackets", "PATCH", "application/json", string(deepString)},
		{"a POST body of 16 MiB of braces read for _method", "POST", "application/json", strings.Repeat(`{"a":`, 4<<20)},
	}
	for _, c := range cases {
		t.Run(c.name+" is refused with 400", func(t *testing.T) {
			d := s.Decide(service, request(c.method, "/api/customers/42"))
			be := d.CheckBody(c.ctype, []byte(c.body))
			if be == nil || be.Status != 400 || !strings.Contains(be.Reason, "deeper than") {
				t.Fatalf("got %+v", be)
			}
		})
	}
}

func TestGuardedFieldsSetThroughTheQueryAreRefused(t *testing.T) {
	s := mustLoad(t, bodyRules)
	service := s.UserFromRoles("li", []string{"service"}, nil, true, shanghaiWorkday)
	manager := s.UserFromRoles("wang", []string{"sales_manager"}, nil, true, shanghaiWorkday)
	cases := []struct {
		name   string
		user   *User
		target string
		allow  bool
	}{
		{"stage in the query is refused", service, "/api/customers/42?stage=won", false},
		{"a bracketed guarded field in the query is refused", service, "/api/customers/42?deal%5Bstage%5D=won", false},
		{"a PHP-renamed guarded field in the query is refused", service, "/api/customers/42?contract.amount=1", false},
		{"an unguarded query parameter passes", service, "/api/customers/42?notify=1", true},
		{"a guarded field in the query passes for a user the guard does not apply to", manager, "/api/customers/42?owner_id=li", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(c.user, request("PATCH", c.target))
			if (d.Outcome == Allow) != c.allow {
				t.Fatalf("outcome %v (%s), want allow=%v", d.Outcome, d.Reason, c.allow)
			}
			if !c.allow && (d.Status != 403 || !strings.Contains(d.Reason, "query string")) {
				t.Fatalf("status %d reason %q", d.Status, d.Reason)
			}
		})
	}
}

// mp is a multipart/form-data content type whose parts mpBody separates.
const mp = "multipart/form-data; boundary=x"

// mpField is a multipart part: its headers, a blank line and its value.
func mpField(name, value string) string {
	return "Content-Disposition: form-data; name=\"" + name + "\"\r\n\r\n" + value
}

// mpBody joins parts into a multipart body with the boundary of mp.
func mpBody(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString("--x\r\n" + p + "\r\n")
	}
	return b.String() + "--x--\r\n"
}
