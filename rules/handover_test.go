package rules

import (
	"context"
	"encoding/json"
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

// bulkHandoverRules: two approval policies, a bulk route whose ids sit in
// objects, and a nested guarded field.
const bulkHandoverRules = `version: 1
roles: {sales: {}, sales_manager: {inherits: [sales]}}
approvals:
  handover: {steps: [{name: manager, approvers: [sales_manager]}]}
  pricing: {steps: [{name: manager, approvers: [sales_manager]}]}
routes:
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales]
    body:
      owner_id: {allow_if: body.owner_id == user.id, approval: handover}
      deal.stage: {allow_if: 'false', approval: handover}
      discount: {allow_if: 'false', approval: pricing}
  - id: customers.bulk
    match: {methods: [POST], path: /api/customers/bulk}
    allow: [sales]
    body:
      owner_id: {allow_if: body.owner_id == user.id, approval: handover}
    target:
      ids: items.#.id
      fetch: "/api/customers/{id}"
      allow_if: 'true'
`

func TestAWriteNamedByItsValuesAsksForTheGrantItsBodyWouldNeed(t *testing.T) {
	s := mustLoad(t, bulkHandoverRules)
	zhang := &User{ID: "zhang", Roles: []string{"sales"}, MFA: true}
	decide := func(method, path string) *Decision {
		r := targetReq(method, path)
		r.Now = workday
		return s.Decide(zhang, r)
	}
	cases := []struct {
		name         string
		method, path string
		values       string // JSON
		body         string // the body whose query must be the same
		wantErr      string
	}{
		{name: "a new owner binds as its body would", method: "PATCH", path: "/api/customers/7", values: `{"owner_id":"wang"}`, body: `{"owner_id":"wang","notes":"x"}`},
		{name: "a nested field is written at its path", method: "PATCH", path: "/api/customers/7", values: `{"owner_id":"wang","deal.stage":"won"}`, body: `{"deal":{"stage":"won"},"owner_id":"wang"}`},
		{name: "a number stays a number", method: "PATCH", path: "/api/customers/7", values: `{"owner_id":7}`, body: `{"owner_id":7}`},
		{name: "a bulk write's ids are written into the route's list", method: "POST", path: "/api/customers/bulk", values: `{"@ids":["2","5"],"owner_id":"wang"}`, body: `{"items":[{"id":2},{"id":5},{"id":2}],"owner_id":"wang"}`},
		{name: "a key that names no guard with an approval is refused", method: "PATCH", path: "/api/customers/7", values: `{"notes":"x"}`, wantErr: `no body guard with an approval at "notes"`},
		{name: "a key in another case is not a guard's path", method: "PATCH", path: "/api/customers/7", values: `{"OWNER_ID":"wang"}`, wantErr: "no body guard"},
		{name: "values of two policies are refused", method: "PATCH", path: "/api/customers/7", values: `{"owner_id":"wang","discount":30}`, wantErr: "one approval binds the values of one policy"},
		{name: "ids on a route that is no bulk write are refused", method: "PATCH", path: "/api/customers/7", values: `{"owner_id":"wang","@ids":["7"]}`, wantErr: "not a bulk write"},
		{name: "ids that are not a list are refused", method: "POST", path: "/api/customers/bulk", values: `{"owner_id":"wang","@ids":"7"}`, wantErr: "list of record ids"},
		{name: "more ids than the route judges in one request are refused", method: "POST", path: "/api/customers/bulk", values: `{"owner_id":"wang","@ids":[` + strings.Repeat(`"1",`, 1000) + `"2"]}`, wantErr: "max_ids"},
		{name: "ids that are objects are refused", method: "POST", path: "/api/customers/bulk", values: `{"owner_id":"wang","@ids":[{"id":1}]}`, wantErr: "no id"},
		{name: "ids alone set nothing that needs approval", method: "POST", path: "/api/customers/bulk", values: `{"@ids":["7"]}`, wantErr: "nothing that needs approval"},
		{name: "no values are refused", method: "PATCH", path: "/api/customers/7", values: `{}`, wantErr: "no values"},
		{name: "a request the route does not allow is refused", method: "DELETE", path: "/api/customers/7", values: `{"owner_id":"wang"}`, wantErr: "does not allow"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dec := json.NewDecoder(strings.NewReader(c.values))
			dec.UseNumber()
			var values map[string]any
			if err := dec.Decode(&values); err != nil {
				t.Fatal(err)
			}
			q, err := decide(c.method, c.path).WriteGrantQueryValues(values)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("query %+v, error %v; want an error saying %q", q, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			d := decide(c.method, c.path)
			want, err := d.WriteGrantQuery("application/json", []byte(c.body))
			if err != nil || want == nil {
				t.Fatalf("the body's query %v, %v", want, err)
			}
			if q.Request != want.Request || q.Policy != want.Policy || q.Route != want.Route || q.Requester != want.Requester {
				t.Errorf("named by values: %+v\nnamed by the body: %+v", q, want)
			}
			if got, _ := json.Marshal(d.ApprovalValues()); !strings.Contains(q.Request, string(got)) {
				t.Errorf("ApprovalValues %s are not the values of %s", got, q.Request)
			}
		})
	}
}

func TestARefusedWriteSaysWhichValuesItsApprovalBinds(t *testing.T) {
	s := mustLoad(t, handoverRules)
	zhang := &User{ID: "zhang", Roles: []string{"sales"}, MFA: true}
	const own = `{"id":7,"owner_id":"zhang"}`
	run := func(body string, src *fakeGrants) *Decision {
		r := targetReq("PATCH", "/api/customers/7")
		r.Now, r.Grants = workday, src
		d := s.Decide(zhang, r)
		if be := d.CheckBody("application/json", []byte(body)); be != nil {
			t.Fatal(be)
		}
		if b := d.JudgeTarget(TargetAnswer{Status: 200, Header: http.Header{}, Body: []byte(own)}); b == nil {
			_ = d.UseGrant(context.Background())
		}
		return d
	}
	toWang := map[string]any{"owner_id": "wang"}
	cases := []struct {
		name string
		body string
		src  *fakeGrants
		want string // JSON of ApprovalValues; "null" for none
	}{
		{name: "a handover without a grant names the new owner", body: `{"owner_id":"li","notes":"x"}`, src: &fakeGrants{}, want: `{"owner_id":"li"}`},
		{name: "a handover whose grant was used up meanwhile names it too", body: `{"owner_id":"wang"}`,
			src: &fakeGrants{grants: []*fakeGrant{handoverGrant(t, "zhang", "/api/customers/7", toWang)}, useErr: ErrGrantGone}, want: `{"owner_id":"wang"}`},
		{name: "a handover with its grant names nothing", body: `{"owner_id":"wang"}`,
			src: &fakeGrants{grants: []*fakeGrant{handoverGrant(t, "zhang", "/api/customers/7", toWang)}}, want: `null`},
		{name: "a write that needs no approval names nothing", body: `{"owner_id":"zhang"}`, src: &fakeGrants{}, want: `null`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := run(c.body, c.src)
			if got, _ := json.Marshal(d.ApprovalValues()); string(got) != c.want {
				t.Errorf("ApprovalValues %s, want %s (%s)", got, c.want, d.Reason)
			}
		})
	}
}
