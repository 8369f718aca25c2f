package rules

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// handoverRules: a rep keeps an own customer's owner unless a grant of
// policy handover is bound to the new owner.
const handoverRules = `version: 1
roles: {sales: {}, sales_manager: {inherits: [sales]}}
approvals:
  handover:
    description: the manager of the team
    steps: [{name: manager, approvers: [sales_manager]}]
routes:
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales]
    body:
      owner_id:
        allow_if: body.owner_id == record.owner_id
        approval: handover
    target:
      fetch: "/api/customers/{id}"
      allow_if: record.owner_id == user.id
`

func handoverGrant(t *testing.T, user, target string, values map[string]any) *fakeGrant {
	t.Helper()
	canon, err := CanonicalWrite("PATCH", target, values)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeGrant{
		Grant: Grant{ID: "h-" + user, Policy: "handover", Purpose: "zhang leaves", Approvers: []string{"wang"}, UsesLeft: 1},
		q:     GrantQuery{Requester: user, Route: "customers.update", Policy: "handover", Request: canon},
	}
}

func TestAHandoverNeedsAGrantBoundToTheNewOwner(t *testing.T) {
	s := mustLoad(t, handoverRules)
	zhang := &User{ID: "zhang", Roles: []string{"sales"}, MFA: true}
	toWang := map[string]any{"owner_id": "wang"}
	const own = `{"id":7,"owner_id":"zhang"}`
	cases := []struct {
		name   string
		path   string
		ctype  string
		body   string
		src    *fakeGrants
		status int // 0: forwarded, the grant used
		used   int
		asked  int
		says   string // in the reason or the message
	}{
		{name: "handing customer 7 to wang with a grant for exactly that passes and uses the grant", path: "/api/customers/7", body: `{"owner_id":"wang"}`,
			src: &fakeGrants{grants: []*fakeGrant{handoverGrant(t, "zhang", "/api/customers/7", toWang)}}, used: 1, asked: 1},
		{name: "the same handover sent as a form is bound alike", path: "/api/customers/7", ctype: "application/x-www-form-urlencoded", body: `owner_id=wang`,
			src: &fakeGrants{grants: []*fakeGrant{handoverGrant(t, "zhang", "/api/customers/7", toWang)}}, used: 1, asked: 1},
		{name: "the grant to hand customer 7 to wang does not hand it to li", path: "/api/customers/7", body: `{"owner_id":"li"}`,
			src: &fakeGrants{grants: []*fakeGrant{handoverGrant(t, "zhang", "/api/customers/7", toWang)}}, status: 403, asked: 1, says: "policy handover"},
		{name: "the grant to hand customer 7 to wang does not hand customer 8", path: "/api/customers/8", body: `{"owner_id":"wang"}`,
			src: &fakeGrants{grants: []*fakeGrant{handoverGrant(t, "zhang", "/api/customers/7", toWang)}}, status: 403, asked: 1},
		{name: "another user's grant does not help", path: "/api/customers/7", body: `{"owner_id":"wang"}`,
			src: &fakeGrants{grants: []*fakeGrant{handoverGrant(t, "wu", "/api/customers/7", toWang)}}, status: 403, asked: 1},
		{name: "without a grant the refusal says which approval would allow it", path: "/api/customers/7", body: `{"owner_id":"wang"}`,
			src: &fakeGrants{}, status: 403, asked: 1, says: "With an approval (policy handover: the manager of the team) for exactly this change you may"},
		{name: "a grant source that fails refuses with 503", path: "/api/customers/7", body: `{"owner_id":"wang"}`,
			src: &fakeGrants{err: errors.New("redis: connection refused")}, status: 503, asked: 1, says: "connection refused"},
		{name: "a value allow_if allows needs no grant and the source is not asked", path: "/api/customers/7", body: `{"owner_id":"zhang","notes":"x"}`,
			src: &fakeGrants{}},
		{name: "a grant used up between finding and using it refuses with 403", path: "/api/customers/7", body: `{"owner_id":"wang"}`,
			src: &fakeGrants{grants: []*fakeGrant{handoverGrant(t, "zhang", "/api/customers/7", toWang)}, useErr: ErrGrantGone}, status: 403, asked: 1, says: "used up"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := targetReq("PATCH", c.path)
			r.Grants = c.src
			r.Now = workday
			d := s.Decide(zhang, r)
			if d.Outcome != Allow {
				t.Fatalf("not allowed: %s", d.Reason)
			}
			ctype := c.ctype
			if ctype == "" {
				ctype = "application/json"
			}
			status, text := 0, ""
			if be := d.CheckBody(ctype, []byte(c.body)); be != nil {
				status, text = be.Status, be.Reason+" "+be.Message
			} else if b := d.JudgeTarget(TargetAnswer{Status: 200, Header: http.Header{}, Body: []byte(own)}); b != nil {
				status, text = b.Status, b.Reason+" "+b.Message
			} else if err := d.UseGrant(context.Background()); err != nil {
				status, text = d.Status, d.Reason+" "+d.Message
			}
			if status != c.status {
				t.Fatalf("status %d (%s), want %d", status, text, c.status)
			}
			if !strings.Contains(text, c.says) {
				t.Errorf("%q does not say %q", text, c.says)
			}
			if c.src.used != c.used || c.src.found != c.asked {
				t.Errorf("the source was asked %d times and %d uses consumed; want %d and %d", c.src.found, c.src.used, c.asked, c.used)
			}
			if c.used == 1 && (d.Audit.Grant == nil || d.Audit.Grant.ID != "h-zhang" || d.Audit.Export.Approved) {
				t.Errorf("audit grant %+v export %+v: want the handover grant named and no export", d.Audit.Grant, d.Audit.Export)
			}
			if c.asked == 1 && d.Approval != "handover" {
				t.Errorf("Approval %q, want handover", d.Approval)
			}
		})
	}
}

func TestCanonicalWriteBindsTheValuesSet(t *testing.T) {
	cases := []struct {
		name         string
		a, b         map[string]any
		pathA, pathB string
		same         bool
		want         string // the canonical form of a, when set
	}{
		{name: "the values follow the canonical request as sorted JSON", a: map[string]any{"owner_id": "wang", "deal.stage": "won"}, pathA: "/api/customers/./7",
			want: `PATCH /api/customers/7 {"deal.stage":"won","owner_id":"wang"}`},
		{name: "no values is the canonical request", a: nil, pathA: "/api/customers/7", want: "PATCH /api/customers/7"},
		{name: "another value is another write", a: map[string]any{"owner_id": "wang"}, b: map[string]any{"owner_id": "li"}},
		{name: "another record is another write", a: map[string]any{"owner_id": "wang"}, b: map[string]any{"owner_id": "wang"}, pathB: "/api/customers/8"},
		{name: "a string and a number are different values", a: map[string]any{"n": "7"}, b: map[string]any{"n": 7}},
		{name: "HTML characters are written as they are", a: map[string]any{"note": "<b>&"}, pathA: "/x", want: `PATCH /x {"note":"<b>&"}`},
		{name: "the ids of a bulk write are bound too", a: map[string]any{"owner_id": "wang", "@ids": []string{"7"}}, b: map[string]any{"owner_id": "wang", "@ids": []string{"7", "8"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.pathA == "" {
				c.pathA = "/api/customers/7"
			}
			if c.pathB == "" {
				c.pathB = c.pathA
			}
			a, err := CanonicalWrite("PATCH", c.pathA, c.a)
			if err != nil {
				t.Fatal(err)
			}
			if c.want != "" {
				if a != c.want {
					t.Errorf("got %q, want %q", a, c.want)
				}
				return
			}
			b, err := CanonicalWrite("patch", c.pathB, c.b)
			if err != nil {
				t.Fatal(err)
			}
			if (a == b) != c.same {
				t.Errorf("%q and %q: same %v, want %v", a, b, a == b, c.same)
			}
		})
	}
}

func TestTheApprovalWorkflowAsksForTheGrantTheGuardLooksFor(t *testing.T) {
	s := mustLoad(t, handoverRules)
	zhang := &User{ID: "zhang", Roles: []string{"sales"}, MFA: true}
	ask := func(body string) (*GrantQuery, error) {
		r := targetReq("PATCH", "/api/customers/7")
		r.Now = workday
		return s.Decide(zhang, r).WriteGrantQuery("application/json", []byte(body))
	}
	q, err := ask(`{"owner_id":"wang","notes":"x"}`)
	if err != nil || q == nil {
		t.Fatalf("query %v, error %v", q, err)
	}
	src := &fakeGrants{grants: []*fakeGrant{{Grant: Grant{ID: "h", Policy: "handover", UsesLeft: 1}, q: *q}}}
	r := targetReq("PATCH", "/api/customers/7")
	r.Now, r.Grants = workday, src
	d := s.Decide(zhang, r)
	if be := d.CheckBody("application/json", []byte(`{"notes":"x","owner_id":"wang"}`)); be != nil {
		t.Fatal(be)
	}
	if b := d.JudgeTarget(TargetAnswer{Status: 200, Header: http.Header{}, Body: []byte(`{"owner_id":"zhang"}`)}); b != nil {
		t.Fatalf("the grant asked for with WriteGrantQuery was not found: %s", b.Reason)
	}
	if q.Policy != "handover" || q.Requester != "zhang" || q.Route != "customers.update" || q.Request != `PATCH /api/customers/7 {"owner_id":"wang"}` {
		t.Errorf("query %+v", q)
	}
	if q, err := ask(`{"notes":"x"}`); q != nil || err != nil {
		t.Errorf("a body that sets no approved field: query %+v, error %v; want none", q, err)
	}
	if _, err := ask(`{"owner_id":"wang","OWNER_ID":"li"}`); err == nil {
		t.Error("an ambiguous body gave a query")
	}
}
