package rules

import (
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/rules/internal/urlpath"
)

const targetFile = `version: 1
roles: {sales: {}, sales_manager: {inherits: [sales]}, service: {}}
routes:
  - id: customers.update
    match: {methods: [PATCH, PUT, DELETE], path: "/api/customers/{id}"}
    allow: [sales, service]
    target:
      fetch: "/api/customers/{id}"
      allow_if: >-
        record.owner_id == user.id
        || ("sales_manager" in user.roles && record.team in user.attrs.teams)
        || "service" in user.roles
  - id: deals.note
    match: {methods: [POST], path: "/api/customers/{cid}/deals/{did}/notes"}
    allow: [sales]
    target:
      fetch: "/v2/deals/{did}?fields=owner,team&expand=none"
      record: data.attributes
      allow_if: record.owner == user.id
`

func targetSet(t *testing.T, mode string) *Set {
	t.Helper()
	src := targetFile
	if mode != "" {
		src = strings.Replace(src, "version: 1\n", "version: 1\nmode: "+mode+"\n", 1)
	}
	return mustLoad(t, src)
}

func targetReq(method, path string) *Request {
	u, err := url.ParseRequestURI(path)
	if err != nil {
		panic(err)
	}
	return &Request{Method: method, URL: u}
}

var (
	zhang = &User{ID: "zhang", Roles: []string{"sales"}, Attrs: map[string]any{"teams": []any{"east"}}, MFA: true}
	wang  = &User{ID: "wang", Roles: []string{"sales", "sales_manager"}, Attrs: map[string]any{"teams": []any{"east"}}, MFA: true}
	li    = &User{ID: "li", Roles: []string{"service"}, MFA: true}
)

func TestABadTargetIsRefusedWithFileLineColumnAndKey(t *testing.T) {
	route := func(target string) string {
		return "version: 1\nroles: {sales: {}}\nroutes:\n  - id: c.update\n    match: {methods: [PATCH], path: \"/api/customers/{id}\"}\n    allow: [sales]\n    target:\n" + target
	}
	cases := []struct {
		name, src, want string
	}{
		{"a fetch naming a parameter the path does not capture is refused (a bulk update is not covered)",
			route("      fetch: \"/api/customers/{cid}\"\n      allow_if: record.owner_id == user.id\n"),
			`rules.yaml:8:14: routes[0].target.fetch: "/api/customers/{cid}": {cid} is not captured by the route's match.path (captured: id)`},
		{"a fetch on a route without parameters says none are captured",
			strings.Replace(route("      fetch: \"/api/customers/{id}\"\n      allow_if: record.owner_id == user.id\n"), `"/api/customers/{id}"}`, `/api/customers/bulk}`, 1),
			`{id} is not captured by the route's match.path (captured: none)`},
		{"a fetch with a wildcard is refused",
			route("      fetch: \"/api/*/{id}\"\n      allow_if: record.owner_id == user.id\n"),
			`rules.yaml:8:14: routes[0].target.fetch: "/api/*/{id}": segment "*": a fetch path holds literal segments and whole {name} segments only`},
		{"a fetch with a dot segment is refused",
			route("      fetch: \"/api/../admin/{id}\"\n      allow_if: record.owner_id == user.id\n"),
			`routes[0].target.fetch: "/api/../admin/{id}": segment "..": write fetch paths decoded and clean`},
		{"a fetch with a parameter in its query is refused",
			route("      fetch: \"/api/customers?id={id}\"\n      allow_if: record.owner_id == user.id\n"),
			`{params} may only stand for path segments, not in the query`},
		{"a relative fetch is refused",
			route("      fetch: \"api/customers/{id}\"\n      allow_if: record.owner_id == user.id\n"),
			`the fetch path starts with /`},
		{"a missing fetch is refused",
			route("      allow_if: record.owner_id == user.id\n"),
			`rules.yaml:8:7: routes[0].target.fetch: missing`},
		{"a missing allow_if is refused",
			route("      fetch: \"/api/customers/{id}\"\n"),
			`rules.yaml:8:7: routes[0].target.allow_if: missing`},
		{"a record path with a wildcard is refused",
			route("      fetch: \"/api/customers/{id}\"\n      record: data.*\n      allow_if: record.owner_id == user.id\n"),
			`rules.yaml:9:15: routes[0].target.record: "data.*": a target's record is one place`},
		{"a record path with a query is refused",
			route("      fetch: \"/api/customers/{id}\"\n      record: 'list.#(id==1)'\n      allow_if: record.owner_id == user.id\n"),
			`routes[0].target.record: "list.#(id==1)"`},
		{"an allow_if that is not a bool is a type error",
			route("      fetch: \"/api/customers/{id}\"\n      allow_if: user.id + \"x\"\n"),
			`rules.yaml:9:17: routes[0].target.allow_if: the condition gives string, not a bool`},
		{"an allow_if comparing user.id with a number is a type error with its column",
			route("      fetch: \"/api/customers/{id}\"\n      allow_if: user.id == 1\n"),
			`rules.yaml:9:25: routes[0].target.allow_if: found no matching overload for '_==_' applied to '(string, int)'`},
		{"an allow_if with a misspelt variable is refused",
			route("      fetch: \"/api/customers/{id}\"\n      allow_if: recrod.owner_id == user.id\n"),
			`routes[0].target.allow_if: undeclared reference to 'recrod'`},
		{"an unknown key in target is refused",
			route("      fetch: \"/api/customers/{id}\"\n      allow_if: record.owner_id == user.id\n      alow_if: true\n"),
			`rules.yaml:10:7: routes[0].target.alow_if: unknown key`},
		{"a target on a public route is refused",
			strings.Replace(route("      fetch: \"/api/customers/{id}\"\n      allow_if: record.owner_id == user.id\n"), "allow: [sales]", "allow: public", 1),
			`routes[0].target: a public route has no signed-in user`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantLoadError(t, c.src, nil, c.want)
		})
	}
}

func TestATargetOnARouteThatReadsIsWarnedAbout(t *testing.T) {
	s := mustLoad(t, "version: 1\nroles: {sales: {}}\nroutes:\n  - id: c\n    match: {path: \"/api/customers/{id}\"}\n    allow: [sales]\n    target: {fetch: \"/api/customers/{id}\", allow_if: record.owner_id == user.id}\n")
	ws := targetWarnings(s)
	if len(ws) != 1 || !strings.Contains(ws[0].String(), "rules.yaml:7:13: routes[0].target: the route also matches reads") {
		t.Errorf("warnings = %v; want one about reads fetching the record", ws)
	}
	if w := targetWarnings(mustLoad(t, targetFile)); len(w) != 0 {
		t.Errorf("a target on write routes only gave warnings %v", w)
	}
}

// targetWarnings leaves out the warnings about writable fields that decide
// visibility (lint_hidden_test.go tests those).
func targetWarnings(s *Set) []Warning {
	var out []Warning
	for _, w := range s.Warnings() {
		if !strings.Contains(w.Msg, "without a body guard") {
			out = append(out, w)
		}
	}
	return out
}

func TestAnAllowIfThatIgnoresTheRecordIsWarnedAbout(t *testing.T) {
	s := mustLoad(t, "version: 1\nroles: {sales: {}}\nroutes:\n  - id: c\n    match: {methods: [PATCH], path: \"/api/customers/{id}\"}\n    allow: [sales]\n    target: {fetch: \"/api/customers/{id}\", allow_if: '\"sales\" in user.roles'}\n")
	ws := s.Warnings()
	if len(ws) != 1 || !strings.Contains(ws[0].String(), "routes[0].target.allow_if: the condition does not read record") {
		t.Errorf("warnings = %v; want one saying the record decides nothing", ws)
	}
}

func TestADecisionSaysWhichRecordToFetch(t *testing.T) {
	s := targetSet(t, "")
	cases := []struct {
		name        string
		user        *User
		method      string
		path        string
		wantOutcome Outcome
		wantStatus  int
		wantFetch   string // "" means no fetch
	}{
		{"an allowed PATCH fetches the record its path names", zhang, "PATCH", "/api/customers/42", Allow, 0, "/api/customers/42"},
		{"a DELETE fetches the record too", zhang, "DELETE", "/api/customers/42", Allow, 0, "/api/customers/42"},
		{"an encoded id is fetched re-escaped as one segment", zhang, "PATCH", "/api/customers/%C3%A9%20x", Allow, 0, "/api/customers/%C3%A9%20x"},
		{"a dot segment in the request is refused: the CRM could change 7 while 42 was judged", zhang, "PATCH", "/api/customers/7/../42", Deny, http.StatusBadRequest, ""},
		{"a template with other parameters, literal segments and a query is expanded", zhang, "POST", "/api/customers/3/deals/9/notes", Allow, 0, "/v2/deals/9?expand=none&fields=owner%2Cteam"},
		{"a refused request fetches nothing", li, "POST", "/api/customers/3/deals/9/notes", Deny, http.StatusForbidden, ""},
		{"an anonymous request fetches nothing", nil, "PATCH", "/api/customers/42", SignIn, http.StatusUnauthorized, ""},
		{"an encoded slash in the id is refused before any fetch", zhang, "PATCH", "/api/customers/1%2F..%2F..%2Fadmin", Deny, http.StatusBadRequest, ""},
		{"an encoded question mark in the id is refused before any fetch", zhang, "PATCH", "/api/customers/1%3Fx=1", Deny, http.StatusBadRequest, ""},
		{"an encoded hash in the id is refused before any fetch", zhang, "PATCH", "/api/customers/1%23x", Deny, http.StatusBadRequest, ""},
		{"a double-encoded id is refused before any fetch", zhang, "PATCH", "/api/customers/1%252F2", Deny, http.StatusBadRequest, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(c.user, targetReq(c.method, c.path))
			if d.Outcome != c.wantOutcome || d.Status != c.wantStatus {
				t.Fatalf("outcome %v status %d (%s); want %v %d", d.Outcome, d.Status, d.Reason, c.wantOutcome, c.wantStatus)
			}
			got := ""
			if f := d.Target(); f != nil {
				got = f.Path
			}
			if got != c.wantFetch {
				t.Errorf("fetch %q, want %q", got, c.wantFetch)
			}
		})
	}
}

func TestHostileParametersCannotMoveTheFetch(t *testing.T) {
	s := targetSet(t, "")
	spec := s.routes[0].target
	for _, v := range []string{"a/b", "..", ".", "../admin", "1?owner=me", "1#x", "%2e%2e", "1%2Fadmin", "50%", "a\\b", "a;b", "x\x00", "trailing.", "ａdmin"} {
		t.Run("the parameter "+strings.ReplaceAll(v, "\x00", `\x00`)+" is escaped or refused, never a different path", func(t *testing.T) {
			p, err := spec.expand(map[string]string{"id": v})
			if err != nil {
				return // refused: nothing is fetched
			}
			u, perr := url.Parse(p)
			if perr != nil {
				t.Fatalf("expanded to %q, which does not parse: %v", p, perr)
			}
			if u.RawQuery != "" || u.Fragment != "" {
				t.Fatalf("expanded to %q: the value reached the query or fragment", p)
			}
			_, segs, nerr := urlpath.Normalize(u.EscapedPath())
			if nerr != nil || len(segs) != 3 || segs[0] != "api" || segs[1] != "customers" || segs[2] != v {
				t.Errorf("expanded to %q, which normalises to %v (%v); want [api customers %q]", p, segs, nerr, v)
			}
		})
	}
	t.Run("a plain value is escaped as one segment", func(t *testing.T) {
		p, err := spec.expand(map[string]string{"id": "a b+c"})
		if err != nil || p != "/api/customers/a%20b+c" {
			t.Errorf("expanded to %q (%v), want /api/customers/a%%20b+c", p, err)
		}
	})
	t.Run("a missing or empty value is refused", func(t *testing.T) {
		if p, err := spec.expand(map[string]string{}); err == nil {
			t.Errorf("expanded to %q without a value", p)
		}
		if p, err := spec.expand(map[string]string{"id": ""}); err == nil {
			t.Errorf("expanded to %q with an empty value", p)
		}
	})
}

func TestAWriteIsJudgedAgainstTheStoredRecord(t *testing.T) {
	json := http.Header{"Content-Type": {"application/json"}}
	cases := []struct {
		name       string
		mode       string
		user       *User
		path       string
		answer     TargetAnswer
		wantStatus int    // 0: the write goes on
		wantReason string // in the block's reason
		wantAudit  TargetAudit
		wantEval   int
	}{
		{"a rep may change an own customer", "", zhang, "/api/customers/1",
			TargetAnswer{Status: 200, Header: json, Body: []byte(`{"id":1,"owner_id":"zhang","team":"east"}`)},
			0, "", TargetAudit{Fetched: "/api/customers/1", Status: 200, Allowed: true}, 0},
		{"a rep may not change a team mate's customer", "", zhang, "/api/customers/2",
			TargetAnswer{Status: 200, Header: json, Body: []byte(`{"id":2,"owner_id":"wu","team":"east"}`)},
			403, "route customers.update: you may not change this record", TargetAudit{Fetched: "/api/customers/2", Status: 200}, 0},
		{"a manager may change a customer of the team", "", wang, "/api/customers/2",
			TargetAnswer{Status: 200, Header: json, Body: []byte(`{"id":2,"owner_id":"wu","team":"east"}`)},
			0, "", TargetAudit{Fetched: "/api/customers/2", Status: 200, Allowed: true}, 0},
		{"a manager may not change another team's customer", "", wang, "/api/customers/3",
			TargetAnswer{Status: 200, Header: json, Body: []byte(`{"id":3,"owner_id":"chen","team":"west"}`)},
			403, "does not hold", TargetAudit{Fetched: "/api/customers/3", Status: 200}, 0},
		{"service may change any owner's customer", "", li, "/api/customers/3",
			TargetAnswer{Status: 200, Header: json, Body: []byte(`{"id":3,"owner_id":"chen","team":"west"}`)},
			0, "", TargetAudit{Fetched: "/api/customers/3", Status: 200, Allowed: true}, 0},
		{"a record the CRM does not have is 404", "", zhang, "/api/customers/9",
			TargetAnswer{Status: 404, Header: json, Body: []byte(`{"error":"not found"}`)},
			404, "does not exist", TargetAudit{Fetched: "/api/customers/9", Status: 404}, 0},
		{"a record the CRM says is gone is 404", "", zhang, "/api/customers/9",
			TargetAnswer{Status: 410},
			404, "does not exist", TargetAudit{Fetched: "/api/customers/9", Status: 410}, 0},
		{"a CRM that refuses to show the record makes the write 403", "", zhang, "/api/customers/9",
			TargetAnswer{Status: 403, Body: []byte(`{"owner_id":"zhang"}`)},
			403, "the CRM refused to show it", TargetAudit{Fetched: "/api/customers/9", Status: 403}, 0},
		{"a CRM error is 502", "", zhang, "/api/customers/1",
			TargetAnswer{Status: 500, Body: []byte(`{"owner_id":"zhang"}`)},
			502, "the CRM answered 500", TargetAudit{Fetched: "/api/customers/1", Status: 500}, 0},
		{"a stored record in GBK is 502: its owner cannot be read with certainty", "", zhang, "/api/customers/1",
			TargetAnswer{Status: 200, Header: http.Header{"Content-Type": {"application/json; charset=gbk"}}, Body: []byte(`{"id":1,"owner_id":"zhang","team":"east"}`)},
			502, `charset "gbk"`, TargetAudit{Fetched: "/api/customers/1", Status: 200}, 0},
		{"a redirect is 502, not followed", "", zhang, "/api/customers/1",
			TargetAnswer{Status: 302, Header: http.Header{"Location": {"/login"}}},
			502, "the CRM answered 302", TargetAudit{Fetched: "/api/customers/1", Status: 302}, 0},
		{"an empty 204 is 502", "", zhang, "/api/customers/1",
			TargetAnswer{Status: 204},
			502, "the CRM answered 204", TargetAudit{Fetched: "/api/customers/1", Status: 204}, 0},
		{"an answer that is not JSON is 502", "", zhang, "/api/customers/1",
			TargetAnswer{Status: 200, Body: []byte(`<html>owner_id: zhang</html>`)},
			502, "not valid JSON", TargetAudit{Fetched: "/api/customers/1", Status: 200}, 0},
		{"JSON with trailing data is 502", "", zhang, "/api/customers/1",
			TargetAnswer{Status: 200, Body: []byte(`{"owner_id":"zhang"} {"owner_id":"wu"}`)},
			502, "not valid JSON", TargetAudit{Fetched: "/api/customers/1", Status: 200}, 0},
		{"a list instead of a record is 502", "", zhang, "/api/customers/1",
			TargetAnswer{Status: 200, Body: []byte(`[{"owner_id":"zhang"}]`)},
			502, "is not a JSON object", TargetAudit{Fetched: "/api/customers/1", Status: 200}, 0},
		{"no answer at all is 502", "", zhang, "/api/customers/1",
			TargetAnswer{Err: errors.New("dial tcp: connection refused")},
			502, "could not be fetched: dial tcp: connection refused", TargetAudit{Fetched: "/api/customers/1"}, 0},
		{"a record without the owner key counts as false", "", zhang, "/api/customers/1",
			TargetAnswer{Status: 200, Body: []byte(`{"id":1}`)},
			403, "could not be evaluated", TargetAudit{Fetched: "/api/customers/1", Status: 200}, 1},
		{"an owner given twice with different values counts as false", "", zhang, "/api/customers/1",
			TargetAnswer{Status: 200, Body: []byte(`{"owner_id":"wu","owner_id":"zhang"}`)},
			403, "could not be evaluated", TargetAudit{Fetched: "/api/customers/1", Status: 200}, 1},
		{"an escaped owner key is read by its decoded name", "", zhang, "/api/customers/1",
			TargetAnswer{Status: 200, Body: []byte(`{"owner\u005fid":"zhang"}`)},
			0, "", TargetAudit{Fetched: "/api/customers/1", Status: 200, Allowed: true}, 0},
		{"the record is read where `record` says", "", zhang, "/api/customers/3/deals/9/notes",
			TargetAnswer{Status: 200, Body: []byte(`{"data":{"id":"9","attributes":{"owner":"zhang"}}}`)},
			0, "", TargetAudit{Fetched: "/v2/deals/9?expand=none&fields=owner%2Cteam", Status: 200, Allowed: true}, 0},
		{"a record key given twice on the way is 502", "", zhang, "/api/customers/3/deals/9/notes",
			TargetAnswer{Status: 200, Body: []byte(`{"data":{"attributes":{"owner":"zhang"}},"data":{"attributes":{"owner":"wu"}}}`)},
			502, `the key "data" appears 2 times`, TargetAudit{Fetched: "/v2/deals/9?expand=none&fields=owner%2Cteam", Status: 200}, 0},
		{"a missing record path is 502", "", zhang, "/api/customers/3/deals/9/notes",
			TargetAnswer{Status: 200, Body: []byte(`{"errors":[]}`)},
			502, `nothing at "data.attributes"`, TargetAudit{Fetched: "/v2/deals/9?expand=none&fields=owner%2Cteam", Status: 200}, 0},
		{"shadow mode audits a refusal but lets the write on", "shadow", zhang, "/api/customers/2",
			TargetAnswer{Status: 200, Body: []byte(`{"owner_id":"wu"}`)},
			0, "", TargetAudit{Fetched: "/api/customers/2", Status: 200}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := targetSet(t, c.mode)
			method := "PATCH"
			if strings.HasSuffix(c.path, "/notes") {
				method = "POST"
			}
			d := s.Decide(c.user, targetReq(method, c.path))
			if d.Outcome != Allow || d.Target() == nil {
				t.Fatalf("decision %v (%s), target %v; want an allowed request with a fetch", d.Outcome, d.Reason, d.Target())
			}
			b := d.JudgeTarget(c.answer)
			switch {
			case c.wantStatus == 0 && b != nil:
				t.Fatalf("refused with %d: %s", b.Status, b.Reason)
			case c.wantStatus != 0 && b == nil:
				t.Fatalf("allowed; want %d", c.wantStatus)
			case b != nil && (b.Status != c.wantStatus || !strings.Contains(b.Reason, c.wantReason)):
				t.Errorf("refused with %d %q; want %d containing %q", b.Status, b.Reason, c.wantStatus, c.wantReason)
			}
			if b != nil && (d.Outcome != Deny || d.Status != b.Status) {
				t.Errorf("after a refusal the decision is %v %d; want Deny %d", d.Outcome, d.Status, b.Status)
			}
			got := d.Audit.Target
			if got == nil {
				t.Fatal("the audit has no target")
			}
			reason := got.Reason
			got2 := *got
			got2.Reason = ""
			if !reflect.DeepEqual(got2, c.wantAudit) {
				t.Errorf("audit target %+v; want %+v", got2, c.wantAudit)
			}
			if c.wantStatus != 0 && !strings.Contains(reason, c.wantReason) {
				t.Errorf("audit target reason %q; want it to contain %q", reason, c.wantReason)
			}
			if d.Audit.EvalErrors != c.wantEval {
				t.Errorf("eval_errors %d, want %d", d.Audit.EvalErrors, c.wantEval)
			}
			if c.mode == "shadow" && !strings.HasPrefix(reason, "shadow mode, not enforced: route customers.update: you may not change this record") {
				t.Errorf("shadow audit reason %q; want the refusal that was not enforced", reason)
			}
		})
	}
}

func TestJudgeTargetIsANoOpWithoutATarget(t *testing.T) {
	s := targetSet(t, "")
	d := s.Decide(li, targetReq("POST", "/api/customers/3/deals/9/notes"))
	if b := d.JudgeTarget(TargetAnswer{Status: 200, Body: []byte(`{}`)}); b != nil || d.Audit.Target != nil {
		t.Errorf("a refused request was judged against a record: %+v, audit %+v", b, d.Audit.Target)
	}
}
