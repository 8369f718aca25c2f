package rules

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

const targetIDsFile = `version: 1
roles: {sales: {}}
routes:
  - id: customers.update
    match: {methods: [PATCH, PUT], path: "/api/customers/{cid}"}
    allow: [sales]
    target:
      fetch: "/api/customers/{cid}"
      id_fields: {cid: [id, customer_id]}
      allow_if: record.owner_id == user.id
  - id: notes.add
    match: {methods: [POST], path: "/api/customers/{cid}/notes/{nid}"}
    allow: [sales]
    target:
      fetch: "/api/notes/{nid}"
      allow_if: record.owner_id == user.id
`

func TestIDFieldsThatNameNoFetchParameterAreRefused(t *testing.T) {
	src := strings.Replace(targetIDsFile, "id_fields: {cid: [id, customer_id]}", "id_fields: {id: [id]}", 1)
	_, err := Load("rules.yaml", []byte(src))
	var le *LoadError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), `routes[0].target.id_fields.id: {id} is not a parameter of the fetch path`) {
		t.Fatalf("error %v; want id_fields.id refused", err)
	}
}

func TestABodyOrQueryNamingAnotherRecordThanThePathIsRefused(t *testing.T) {
	s := mustLoad(t, targetIDsFile)
	cases := []struct {
		name, method, path, ct, body string
		wantStatus                   int // 0: allowed
	}{
		{"a body naming the path's record under a configured key is allowed", "PATCH", "/api/customers/7", "application/json", `{"customer_id":"7","notes":"x"}`, 0},
		{"a body naming another record under a configured key is refused", "PATCH", "/api/customers/7", "application/json", `{"customer_id":8}`, 400},
		{"a body naming another record under the other configured key is refused", "PATCH", "/api/customers/7", "application/json", `{"id":"8"}`, 400},
		{"a key named like the parameter is not checked once id_fields lists others", "PATCH", "/api/customers/7", "application/json", `{"cid":"8"}`, 0},
		{"a nested id (a related record) is not the record's id", "PATCH", "/api/customers/7", "application/json", `{"contact":{"id":"8"}}`, 0},
		{"a key in another case (ASP.NET binds ID to id) is refused", "PATCH", "/api/customers/7", "application/json", `{"Customer_ID":"8"}`, 400},
		{"a null id is refused", "PATCH", "/api/customers/7", "application/json", `{"id":null}`, 400},
		{"a JSON Patch removing the id is refused", "PATCH", "/api/customers/7", "application/json-patch+json", `[{"op":"remove","path":"/id"}]`, 400},
		{"a JSON Patch testing the path's id is allowed", "PATCH", "/api/customers/7", "application/json-patch+json", `[{"op":"test","path":"/id","value":"7"}]`, 0},
		{"invalid JSON is refused", "PATCH", "/api/customers/7", "application/json", `{"id":`, 400},
		{"a form naming another record with a PHP-mangled key is refused", "PUT", "/api/customers/7", "application/x-www-form-urlencoded", `customer.id=1&customer_id=8`, 400},
		{"a query naming another record is refused", "PATCH", "/api/customers/7?customer_id=8", "application/json", `{}`, 400},
		{"a form in UTF-16 (whose id the CRM reads, not the proxy) is refused", "PUT", "/api/customers/7", "application/x-www-form-urlencoded; charset=utf-16", "i\x00d\x00=\x008\x00", 400},
		{"a form whose Content-Type parameters cannot be read is still read as a form, and refused", "PUT", "/api/customers/7", "application/x-www-form-urlencoded; charset", `customer_id=8`, 400},
		{"a JSON body in a quoted Latin-1 charset is refused", "PATCH", "/api/customers/7", `application/json; charset="latin1"`, `{"notes":"x"}`, 400},
		{"a JSON body in US-ASCII naming the path's record is allowed", "PATCH", "/api/customers/7", "application/json; charset=us-ascii", `{"id":"7"}`, 0},
		{"a body of another type that is not JSON is not read", "PATCH", "/api/customers/7", "text/plain", `id=8`, 0},
		{"a JSON body labelled text/plain (a CRM may decode it anyway) is read as JSON", "PATCH", "/api/customers/7", "text/plain", ` {"id":"8"}`, 400},
		{"a JSON body without a Content-Type is read as JSON", "PATCH", "/api/customers/7", "", `[{"customer_id":8}]`, 400},
		{"on a route whose fetch uses one of two parameters, only that one is checked", "POST", "/api/customers/7/notes/3", "application/json", `{"cid":"99","nid":"3"}`, 0},
		{"on that route the fetched parameter must agree", "POST", "/api/customers/7/notes/3", "application/json", `{"nid":"4"}`, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(zhang, targetReq(c.method, c.path))
			got := d.Status
			if d.Outcome == Allow {
				if be := d.CheckTargetBody(c.ct, []byte(c.body)); be != nil {
					got = be.Status
					if !strings.Contains(be.Reason, "route ") {
						t.Errorf("reason %q does not name the route", be.Reason)
					}
				}
			}
			if got != c.wantStatus {
				t.Errorf("status %d (%s); want %d", got, d.Reason, c.wantStatus)
			}
		})
	}
}

func TestCheckTargetBodyIsANoOpWithoutATarget(t *testing.T) {
	s := mustLoad(t, "version: 1\nroles: {sales: {}}\nroutes:\n  - id: c\n    match: {methods: [PATCH], path: \"/api/customers/{id}\"}\n    allow: [sales]\n")
	d := s.Decide(zhang, targetReq(http.MethodPatch, "/api/customers/7"))
	if be := d.CheckTargetBody("application/json", []byte(`{"id":"8"}`)); be != nil {
		t.Errorf("refused %v on a route without a target", be)
	}
}

func TestIfMatchAsksForTheJudgedVersionAndRefusesAnswersWithoutAStrongETag(t *testing.T) {
	src := strings.Replace(targetIDsFile, "      id_fields: {cid: [id, customer_id]}\n", "      id_fields: {cid: [id, customer_id]}\n      if_match: true\n", 1)
	s := mustLoad(t, src)
	if _, err := Load("rules.yaml", []byte(strings.Replace(src, "if_match: true", "if_match: sometimes", 1))); err == nil || !strings.Contains(err.Error(), "target.if_match") {
		t.Errorf("if_match: sometimes loaded (%v)", err)
	}
	cases := []struct {
		name, etag string
		wantBlock  int // 0: allowed
	}{
		{"a strong ETag lets the write go on", `"v7"`, 0},
		{"a weak ETag is refused (If-Match compares strongly)", `W/"v7"`, http.StatusBadGateway},
		{"no ETag is refused", "", http.StatusBadGateway},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(zhang, targetReq(http.MethodPatch, "/api/customers/7"))
			f := d.Target()
			if f == nil || !f.IfMatch {
				t.Fatalf("target %+v; want IfMatch", f)
			}
			h := http.Header{}
			if c.etag != "" {
				h.Set("ETag", c.etag)
			}
			b := d.JudgeTarget(TargetAnswer{Status: 200, Header: h, Body: []byte(`{"owner_id":"zhang"}`)})
			got := 0
			if b != nil {
				got = b.Status
			}
			if got != c.wantBlock {
				t.Errorf("block %v; want status %d", b, c.wantBlock)
			}
		})
	}
}
