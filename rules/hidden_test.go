package rules

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

const hiddenRules = `version: 1
mfa: {required: false}
roles: {sales: {}, service: {}, admin: {}}
routes:
  - id: customers.list
    match: {methods: [GET, HEAD], path: /api/customers}
    allow: [sales, service, admin]
    records: list
    visible: &visible 'record.owner_id == user.id || "service" in user.roles || "admin" in user.roles'
  - id: customers.get
    match: {methods: [GET, HEAD], path: "/api/customers/{id}"}
    allow: [sales, service, admin]
    record: "@this"
    visible: *visible
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales, service, admin]
    target:
      fetch: "/api/customers/{id}"
      visible: *visible
      allow_if: 'record.owner_id == user.id || "admin" in user.roles'
`

var jsonHeader = http.Header{"Content-Type": {"application/json"}}

func TestAHiddenRecordAnswersExactlyLikeAMissingOne(t *testing.T) {
	s := mustLoad(t, hiddenRules)
	zhang := s.UserFromRoles("zhang", []string{"sales"}, nil, false, time.Time{})

	hidden := s.Decide(zhang, request("GET", "/api/customers/2"))
	buffer, b := hidden.InspectResponse(200, jsonHeader.Clone())
	if !buffer || b != nil {
		t.Fatalf("a 200 answer is not buffered for rewriting: %v %+v", buffer, b)
	}
	_, hiddenBlock, err := hidden.Rewrite(nil, 200, jsonHeader.Clone(), []byte(`{"id":2,"owner_id":"wu","name":"吴芳"}`))
	if err != nil || hiddenBlock == nil {
		t.Fatalf("the hidden record was not blocked: %+v %v", hiddenBlock, err)
	}

	missing := s.Decide(zhang, request("GET", "/api/customers/999"))
	_, missingBlock := missing.InspectResponse(404, jsonHeader.Clone())
	if missingBlock == nil {
		t.Fatal("the CRM's 404 was not blocked")
	}

	t.Run("the client gets the same status and message", func(t *testing.T) {
		if hiddenBlock.Status != 404 || hiddenBlock.Status != missingBlock.Status ||
			hiddenBlock.Message != notFoundMessage || hiddenBlock.Message != missingBlock.Message {
			t.Errorf("hidden %+v\nmissing %+v", hiddenBlock, missingBlock)
		}
	})
	t.Run("the audit says which it was", func(t *testing.T) {
		if !strings.Contains(hiddenBlock.Reason, "not visible to role sales") || hidden.Audit.Reason != hiddenBlock.Reason {
			t.Errorf("hidden: block reason %q, audit %q", hiddenBlock.Reason, hidden.Audit.Reason)
		}
		if !strings.Contains(missingBlock.Reason, "the CRM answered 404") || missing.Audit.Reason != missingBlock.Reason {
			t.Errorf("missing: block reason %q, audit %q", missingBlock.Reason, missing.Audit.Reason)
		}
		if hidden.Audit.Decision != "block" || missing.Audit.Decision != "block" {
			t.Errorf("decisions %q and %q, want block", hidden.Audit.Decision, missing.Audit.Decision)
		}
	})
	t.Run("shadow mode blocks neither and audits both", func(t *testing.T) {
		sh := mustLoad(t, "version: 1\nmode: shadow\n"+strings.TrimPrefix(hiddenRules, "version: 1\n"))
		d := sh.Decide(zhang, request("GET", "/api/customers/999"))
		if _, b := d.InspectResponse(404, jsonHeader.Clone()); b != nil || !strings.HasPrefix(d.Audit.Reason, "shadow mode, not enforced: ") {
			t.Errorf("block %+v, audit reason %q", b, d.Audit.Reason)
		}
		d = sh.Decide(zhang, request("GET", "/api/customers/2"))
		out, b, err := d.Rewrite(nil, 200, jsonHeader.Clone(), []byte(`{"id":2,"owner_id":"wu"}`))
		if b != nil || err != nil || string(out) != `{"id":2,"owner_id":"wu"}` || !strings.Contains(d.Audit.Reason, "not visible") {
			t.Errorf("out %s block %+v err %v audit %q", out, b, err, d.Audit.Reason)
		}
	})
	t.Run("a list route keeps the CRM's 404 as it was", func(t *testing.T) {
		d := s.Decide(zhang, request("GET", "/api/customers"))
		_, b := d.InspectResponse(404, jsonHeader.Clone())
		if b == nil || !strings.Contains(b.Reason, "the CRM answered 404; the body of a non-2xx answer cannot be checked") {
			t.Errorf("block %+v", b)
		}
	})
}

func TestAHEADOnARouteThatHidesRecordsCannotBeJudged(t *testing.T) {
	s := mustLoad(t, hiddenRules)
	zhang := s.UserFromRoles("zhang", []string{"sales"}, nil, false, time.Time{})
	cases := []struct {
		name, method, target string
		status               int
	}{
		{"a HEAD on a hidden-record route is refused", "HEAD", "/api/customers/2", 400},
		{"a HEAD in lower case is refused too", "head", "/api/customers/2", 400},
		{"a GET on the same route is judged by its answer", "GET", "/api/customers/2", 0},
		{"a HEAD on a list route passes (its answer holds no record)", "HEAD", "/api/customers", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(zhang, request(c.method, c.target))
			switch {
			case c.status == 0 && d.Outcome != Allow:
				t.Errorf("refused %d: %s", d.Status, d.Reason)
			case c.status != 0 && (d.Outcome != Deny || d.Status != c.status || !strings.Contains(d.Reason, "HEAD")):
				t.Errorf("outcome %v %d: %s", d.Outcome, d.Status, d.Reason)
			}
		})
	}
}

func TestAWriteToAHiddenRecordAnswersLikeAMissingOne(t *testing.T) {
	s := mustLoad(t, hiddenRules)
	zhang := s.UserFromRoles("zhang", []string{"sales"}, nil, false, time.Time{})
	li := s.UserFromRoles("li", []string{"service"}, nil, false, time.Time{})
	judge := func(u *User, a TargetAnswer) (*Decision, *Block) {
		t.Helper()
		d := s.Decide(u, request("PATCH", "/api/customers/2"))
		if d.Target() == nil {
			t.Fatalf("no target fetch: %s", d.Reason)
		}
		return d, d.JudgeTarget(a)
	}
	wu := TargetAnswer{Status: 200, Header: jsonHeader, Body: []byte(`{"id":2,"owner_id":"wu"}`)}
	hd, hidden := judge(zhang, wu)
	md, missing := judge(zhang, TargetAnswer{Status: 404, Header: jsonHeader, Body: []byte(`{"error":"customer 2 not found"}`)})
	_, forbidden := judge(li, wu)

	t.Run("a hidden record and a missing one give the client the same answer", func(t *testing.T) {
		if hidden == nil || missing == nil || hidden.Status != 404 || hidden.Status != missing.Status || hidden.Message != notFoundMessage || hidden.Message != missing.Message {
			t.Fatalf("hidden %+v\nmissing %+v", hidden, missing)
		}
		if hd.Message != md.Message || hd.Status != md.Status {
			t.Errorf("the decisions differ: %d %q and %d %q", hd.Status, hd.Message, md.Status, md.Message)
		}
	})
	t.Run("the audit tells them apart", func(t *testing.T) {
		if !strings.Contains(hd.Audit.Target.Reason, "not visible to role sales") || hd.Audit.Target.Status != 200 {
			t.Errorf("hidden audit %+v", hd.Audit.Target)
		}
		if !strings.Contains(md.Audit.Target.Reason, "does not exist") || md.Audit.Target.Status != 404 {
			t.Errorf("missing audit %+v", md.Audit.Target)
		}
	})
	t.Run("a visible record the user may not change is 403", func(t *testing.T) {
		if forbidden == nil || forbidden.Status != 403 || !strings.Contains(forbidden.Reason, "you may not change this record") {
			t.Errorf("block %+v", forbidden)
		}
	})
	t.Run("a visible condition that cannot be evaluated hides the record", func(t *testing.T) {
		d, b := judge(zhang, TargetAnswer{Status: 200, Header: jsonHeader, Body: []byte(`{"id":2}`)})
		if b == nil || b.Status != 404 || b.Message != missing.Message || d.Audit.EvalErrors != 1 {
			t.Errorf("block %+v, eval errors %d", b, d.Audit.EvalErrors)
		}
	})
	t.Run("the owner's own record goes on", func(t *testing.T) {
		if _, b := judge(zhang, TargetAnswer{Status: 200, Header: jsonHeader, Body: []byte(`{"id":2,"owner_id":"zhang"}`)}); b != nil {
			t.Errorf("refused: %+v", b)
		}
	})
}
