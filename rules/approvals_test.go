package rules

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// approvalRules is a small rule file with an export policy, an elevation
// and schedules, used by the tests in this file.
const approvalRules = `version: 1
role_map:
  crm-sales: sales
  crm-managers: sales_manager
  crm-it: it_security
  crm-service: service
  crm-compliance: compliance
roles:
  sales: {}
  sales_manager: {inherits: [sales]}
  it_security: {}
  service: {}
  service_plus: {inherits: [service]}
  compliance: {}
mfa: {required: true, amr: [mfa]}
schedules:
  business_hours: {days: mon-fri, hours: "08:00-20:00", tz: Asia/Shanghai}
approvals:
  export:
    valid_for: 24h
    uses: 1
    steps:
      - name: manager
        description: your manager
        approvers: [sales_manager]
        when: 'approver.attrs.teams.exists(t, t in requester.attrs.teams)'
      - name: it
        description: IT security
        approvers: [it_security]
    approver_mfa: {max_age: 10m}
elevations:
  complaint:
    for: [service]
    grant: [service_plus]
    max: 30m
    mfa: {max_age: 5m}
    review_by: [compliance]
routes:
  - id: customers.export
    match: {methods: [GET], path: /api/customers/export}
    allow: [sales]
    when: in_schedule("business_hours")
    export: {approval: export, without_approval: [sales_manager]}
  - id: deals.export
    match: {methods: [GET], path: /api/deals/export}
    allow: [sales]
    export: {approval: true}
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales, service, compliance, it_security]
    records: list
    fields:
      phone: {mask: phone, except: [service_plus]}
`

// fakeGrants is a GrantSource over a fixed list, counting uses.
type fakeGrants struct {
	mu     sync.Mutex
	grants []*fakeGrant
	err    error // returned by every call when set
	useErr error // returned by UseGrant when set
	found  int
	used   int
}

type fakeGrant struct {
	Grant
	q GrantQuery
}

func (f *fakeGrants) FindGrant(_ context.Context, q GrantQuery) (*Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.found++
	if f.err != nil {
		return nil, f.err
	}
	for _, g := range f.grants {
		if g.q.Requester == q.Requester && g.q.Route == q.Route && g.q.Policy == q.Policy && g.q.Request == q.Request && g.UsesLeft > 0 {
			cp := g.Grant
			return &cp, nil
		}
	}
	return nil, nil
}

func (f *fakeGrants) UseGrant(_ context.Context, q GrantQuery, id string) (*Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if f.useErr != nil {
		return nil, f.useErr
	}
	for _, g := range f.grants {
		if g.ID == id && g.q.Requester == q.Requester && g.q.Request == q.Request {
			if g.UsesLeft <= 0 {
				return nil, fmt.Errorf("grant %s: %w", id, ErrGrantGone)
			}
			g.UsesLeft--
			f.used++
			cp := g.Grant
			return &cp, nil
		}
	}
	return nil, fmt.Errorf("grant %s: %w", id, ErrGrantGone)
}

func grantFor(t *testing.T, user, route, method, target string, uses int) *fakeGrant {
	t.Helper()
	canon, err := CanonicalRequest(method, target)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeGrant{
		Grant: Grant{ID: "g-" + user, Policy: "export", Purpose: "quarterly review", Approvers: []string{"wang", "it1"}, UsesLeft: uses},
		q:     GrantQuery{Requester: user, Route: route, Policy: "export", Request: canon},
	}
}

var workday = time.Date(2026, 11, 20, 10, 0, 0, 0, time.FixedZone("CST", 8*3600))

func TestExportDecisionsAskTheGrantSource(t *testing.T) {
	s := mustLoad(t, approvalRules)
	zhang := s.UserFromRoles("zhang", []string{"sales"}, map[string]any{"teams": []any{"east"}}, true, workday.Add(-time.Hour))
	wang := s.UserFromRoles("wang", []string{"sales_manager"}, map[string]any{"teams": []any{"east"}}, true, workday.Add(-time.Hour))
	const exportPath = "/api/customers/export?team=east"
	cases := []struct {
		name     string
		user     *User
		target   string
		now      time.Time
		src      *fakeGrants
		status   int    // 0: allowed and the grant used
		approval string // Decision.Approval
		message  string // a part of Decision.Message
		reason   string // a part of Decision.Reason
		used     int    // uses consumed
		audit    bool   // Audit.Grant names the grant
	}{
		{name: "without a grant the export is refused naming the policy", user: zhang, target: exportPath, src: &fakeGrants{},
			status: 403, approval: "export", message: "This export needs approval (policy export: your manager, then IT security). Request it with a purpose.", reason: "needs a grant of policy export"},
		{name: "without a grant source the export is refused naming the policy", user: zhang, target: exportPath,
			status: 403, approval: "export", message: "policy export"},
		{name: "a grant for this exact request allows the export and the audit names it", user: zhang, target: exportPath,
			src: &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "GET", exportPath, 1)}}, approval: "export", used: 1, audit: true},
		{name: "a grant asked for with the query in another order and encoding is the same request", user: zhang, target: "/api/customers/export?team=east",
			src: &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "get", "/api/customers/./export?team=%65ast", 1)}}, approval: "export", used: 1, audit: true},
		{name: "a grant for another query is refused", user: zhang, target: "/api/customers/export?team=west",
			src: &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "GET", exportPath, 1)}}, status: 403, approval: "export"},
		{name: "a grant for a narrower query does not allow the whole list", user: zhang, target: "/api/customers/export",
			src: &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "GET", exportPath, 1)}}, status: 403, approval: "export"},
		{name: "a grant with an extra parameter appended is refused", user: zhang, target: exportPath + "&team=west",
			src: &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "GET", exportPath, 1)}}, status: 403, approval: "export"},
		{name: "a grant of another user is refused", user: zhang, target: exportPath,
			src: &fakeGrants{grants: []*fakeGrant{grantFor(t, "li", "customers.export", "GET", exportPath, 1)}}, status: 403, approval: "export"},
		{name: "a used-up grant is refused", user: zhang, target: exportPath,
			src: &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "GET", exportPath, 0)}}, status: 403, approval: "export"},
		{name: "a failing grant source refuses with 503, never allows", user: zhang, target: exportPath,
			src: &fakeGrants{err: errors.New("redis: connection refused")}, status: 503, approval: "export", message: "cannot be checked right now", reason: "connection refused"},
		{name: "a grant that is gone when used is refused with 403", user: zhang, target: exportPath,
			src: &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "GET", exportPath, 1)}, useErr: fmt.Errorf("grant g-zhang: %w", ErrGrantGone)}, status: 403, approval: "export", message: "used up"},
		{name: "a source failing when the grant is used refuses with 503", user: zhang, target: exportPath,
			src: &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "GET", exportPath, 1)}, useErr: errors.New("redis: timeout")}, status: 503, approval: "export", reason: "timeout"},
		{name: "a role in without_approval needs no grant and the source is not asked", user: wang, target: exportPath, src: &fakeGrants{}},
		{name: "an export outside its schedule is refused before the source is asked", user: zhang, target: exportPath, now: workday.Add(12 * time.Hour),
			src: &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "GET", exportPath, 1)}}, status: 403,
			message: "Exports are open Monday to Friday, 08:00-20:00 (Asia/Shanghai)."},
		{name: "approval true without a policy is refused and says none can be requested", user: zhang, target: "/api/deals/export", src: &fakeGrants{},
			status: 403, message: "none can be requested"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := request("GET", c.target)
			r.Now = workday
			if !c.now.IsZero() {
				r.Now = c.now
			}
			if c.src != nil {
				r.Grants = c.src
			}
			d := s.Decide(c.user, r)
			if d.Outcome == Allow {
				if err := d.UseGrant(context.Background()); err != nil && c.status == 0 {
					t.Fatalf("UseGrant: %v", err)
				}
			}
			got := d.Status
			if d.Outcome == Allow {
				got = 0
			}
			if got != c.status {
				t.Fatalf("status %d (%s), want %d", got, d.Reason, c.status)
			}
			if d.Approval != c.approval {
				t.Errorf("Approval %q, want %q", d.Approval, c.approval)
			}
			if !strings.Contains(d.Message, c.message) || !strings.Contains(d.Reason, c.reason) {
				t.Errorf("message %q / reason %q, want them to contain %q / %q", d.Message, d.Reason, c.message, c.reason)
			}
			if c.status != 0 && (strings.Contains(d.Message, "in_schedule") || strings.Contains(d.Message, `\"`)) {
				t.Errorf("message %q shows a rule's internals", d.Message)
			}
			if c.approval != "" && d.Audit.Export.Blocked != (c.status != 0) {
				t.Errorf("export flags %+v with status %d", d.Audit.Export, c.status)
			}
			if c.src != nil && c.src.used != c.used {
				t.Errorf("%d uses consumed, want %d", c.src.used, c.used)
			}
			if c.src != nil && c.approval == "" && c.src.found != 0 {
				t.Errorf("the grant source was asked %d times, want never", c.src.found)
			}
			if c.audit {
				g := d.Audit.Grant
				if g == nil || g.ID != "g-zhang" || g.Policy != "export" || g.Purpose != "quarterly review" || strings.Join(g.Approvers, ",") != "wang,it1" {
					t.Errorf("Audit.Grant = %+v", g)
				}
				if d.Grant == nil || d.Grant.UsesLeft != 0 {
					t.Errorf("Grant = %+v, want the used grant with no use left", d.Grant)
				}
			} else if d.Audit.Grant != nil {
				t.Errorf("Audit.Grant = %+v, want none", d.Audit.Grant)
			}
		})
	}
}

func TestAGrantIsUsedOnlyWhenTheRequestGoesThrough(t *testing.T) {
	s := mustLoad(t, approvalRules)
	zhang := s.UserFromRoles("zhang", []string{"sales"}, nil, true, workday.Add(-time.Hour))
	const target = "/api/customers/export?team=east"
	t.Run("a decision that is only made uses nothing", func(t *testing.T) {
		src := &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "GET", target, 1)}}
		r := request("GET", target)
		r.Now, r.Grants = workday, src
		d := s.Decide(zhang, r)
		if d.Outcome != Allow || !d.GrantPending() || src.used != 0 {
			t.Fatalf("outcome %d pending %v used %d", d.Outcome, d.GrantPending(), src.used)
		}
	})
	t.Run("an answer to a request whose grant was never used is withheld", func(t *testing.T) {
		src := &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "GET", target, 1)}}
		r := request("GET", target)
		r.Now, r.Grants = workday, src
		d := s.Decide(zhang, r)
		_, block := d.InspectResponse(200, http.Header{"Content-Type": {"text/csv"}})
		if block == nil || block.Status != 403 {
			t.Fatalf("block %+v, want 403", block)
		}
	})
	t.Run("a grant of one use lets exactly one of two requests through", func(t *testing.T) {
		src := &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "GET", target, 1)}}
		var allowed int
		for i := 0; i < 2; i++ {
			r := request("GET", target)
			r.Now, r.Grants = workday, src
			d := s.Decide(zhang, r)
			if d.Outcome == Allow && d.UseGrant(context.Background()) == nil {
				allowed++
			}
		}
		if allowed != 1 || src.used != 1 {
			t.Fatalf("%d allowed, %d used; want 1 and 1", allowed, src.used)
		}
	})
	t.Run("both decisions find the grant but only one can use it", func(t *testing.T) {
		src := &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "GET", target, 1)}}
		var ds []*Decision
		for i := 0; i < 2; i++ {
			r := request("GET", target)
			r.Now, r.Grants = workday, src
			ds = append(ds, s.Decide(zhang, r))
		}
		errA, errB := ds[0].UseGrant(context.Background()), ds[1].UseGrant(context.Background())
		if errA != nil || !errors.Is(errB, ErrGrantGone) || ds[1].Outcome != Deny || ds[1].Status != 403 {
			t.Fatalf("first %v, second %v (outcome %d status %d)", errA, errB, ds[1].Outcome, ds[1].Status)
		}
		if ds[1].Audit.Decision != "deny" || !ds[1].Audit.Export.Blocked || ds[1].Audit.Grant != nil {
			t.Errorf("second audit %+v", ds[1].Audit)
		}
	})
	t.Run("shadow mode finds a grant but never uses it", func(t *testing.T) {
		shadow := mustLoad(t, strings.Replace(approvalRules, "version: 1\n", "version: 1\nmode: shadow\n", 1))
		src := &fakeGrants{grants: []*fakeGrant{grantFor(t, "zhang", "customers.export", "GET", target, 1)}}
		r := request("GET", target)
		r.Now, r.Grants = workday, src
		d := shadow.Decide(shadow.UserFromRoles("zhang", []string{"sales"}, nil, true, workday), r)
		if err := d.UseGrant(context.Background()); err != nil || src.used != 0 {
			t.Fatalf("UseGrant %v, used %d", err, src.used)
		}
	})
}

func TestApprovalStepsSayWhoMayApprove(t *testing.T) {
	s := mustLoad(t, approvalRules)
	p, _ := s.ApprovalPolicy("export")
	fresh := workday.Add(-time.Minute)
	east := map[string]any{"teams": []any{"east"}}
	zhang := s.UserFromRoles("zhang", []string{"sales"}, east, true, fresh)
	wang := s.UserFromRoles("wang", []string{"sales_manager"}, east, true, fresh)
	chen := s.UserFromRoles("chen", []string{"sales_manager"}, map[string]any{"teams": []any{"west"}}, true, fresh)
	zhou := s.UserFromRoles("zhou", []string{"it_security"}, nil, true, fresh)
	staleZhou := s.UserFromRoles("zhou", []string{"it_security"}, nil, true, workday.Add(-time.Hour))
	noMFAWang := s.UserFromRoles("wang", []string{"sales_manager"}, east, false, fresh)
	noTeams := s.UserFromRoles("wang", []string{"sales_manager"}, nil, true, fresh)
	// A manager who is also in IT security, and a manager asking for his
	// own export.
	both := s.UserFromRoles("liu", []string{"sales_manager", "it_security"}, east, true, fresh)
	cases := []struct {
		name      string
		step      int
		approver  *User
		requester *User
		others    []string
		status    int // 0: may approve
		message   string
	}{
		{name: "the requester's own manager may approve the manager step", step: 0, approver: wang, requester: zhang},
		{name: "another team's manager may not approve the manager step", step: 0, approver: chen, requester: zhang, status: 403, message: `You may not approve the step "manager" (your manager).`},
		{name: "IT security may approve the IT step", step: 1, approver: zhou, requester: zhang},
		{name: "a manager may not approve the IT step", step: 1, approver: wang, requester: zhang, status: 403},
		{name: "IT security may not approve the manager step", step: 0, approver: zhou, requester: zhang, status: 403},
		{name: "the requester may not approve a step of his own request", step: 0, approver: wang, requester: wang, status: 403, message: "Nobody approves their own request."},
		{name: "someone who approved one step may not approve the next", step: 1, approver: both, requester: zhang, others: []string{"liu"}, status: 403, message: "each step needs a different person"},
		{name: "someone who holds both roles may approve one step", step: 1, approver: both, requester: zhang, others: []string{"wang"}},
		{name: "an approver without MFA must sign in again", step: 0, approver: noMFAWang, requester: zhang, status: 401, message: "second factor"},
		{name: "an approver whose MFA sign-in is older than approver_mfa must sign in again", step: 1, approver: staleZhou, requester: zhang, status: 401, message: "within the last 10 minutes"},
		{name: "a condition that cannot be evaluated counts as no", step: 0, approver: noTeams, requester: zhang, status: 403},
		{name: "a step that does not exist is refused", step: 2, approver: zhou, requester: zhang, status: 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := p.MayApprove(c.step, c.approver, c.requester, c.others, workday)
			if c.status == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var we *WorkflowError
			if !errors.As(err, &we) || we.Status != c.status || !strings.Contains(we.Message, c.message) {
				t.Fatalf("got %#v, want status %d with %q", err, c.status, c.message)
			}
			if c.status == 401 && (!we.StepUp.MFA || we.StepUp.MaxAge != 10*time.Minute) {
				t.Errorf("StepUp %+v, want MFA within 10m", we.StepUp)
			}
		})
	}
	t.Run("Permits says why a condition could not be evaluated", func(t *testing.T) {
		ok, err := p.Steps[0].Permits(noTeams, zhang, workday)
		if ok || err == nil || !strings.Contains(err.Error(), "step manager") {
			t.Fatalf("Permits = %v, %v", ok, err)
		}
	})
}

func TestElevations(t *testing.T) {
	s := mustLoad(t, approvalRules)
	e, _ := s.Elevation("complaint")
	li := s.UserFromRoles("li", []string{"service"}, nil, true, workday.Add(-2*time.Minute))
	staleLi := s.UserFromRoles("li", []string{"service"}, nil, true, workday.Add(-10*time.Minute))
	zhang := s.UserFromRoles("zhang", []string{"sales"}, nil, true, workday.Add(-2*time.Minute))
	cases := []struct {
		name     string
		user     *User
		reason   string
		duration time.Duration
		want     time.Duration
		status   int
	}{
		{name: "a service agent with a fresh MFA sign-in and a reason starts it for its maximum", user: li, reason: "customer 42 complains", want: 30 * time.Minute},
		{name: "a shorter duration is kept", user: li, reason: "r", duration: 10 * time.Minute, want: 10 * time.Minute},
		{name: "a duration over max is refused", user: li, reason: "r", duration: 31 * time.Minute, status: 400},
		{name: "a missing reason is refused", user: li, reason: "  ", status: 400},
		{name: "a role not in for is refused", user: zhang, reason: "r", status: 403},
		{name: "an old sign-in must be renewed", user: staleLi, reason: "r", status: 401},
		{name: "nobody signed in is refused", reason: "r", status: 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := e.MayStart(c.user, c.reason, c.duration, workday)
			if c.status == 0 {
				if err != nil || got != c.want {
					t.Fatalf("MayStart = %v, %v; want %v", got, err, c.want)
				}
				return
			}
			var we *WorkflowError
			if !errors.As(err, &we) || we.Status != c.status {
				t.Fatalf("got %v, want status %d", err, c.status)
			}
		})
	}
	t.Run("an elevated user has the sign-in's roles plus the grant with what it inherits", func(t *testing.T) {
		up := s.Elevate(li, e.Grant)
		if got := strings.Join(up.Roles, ","); got != "service,service_plus" {
			t.Errorf("roles %s", got)
		}
		if strings.Join(li.Roles, ",") != "service" {
			t.Errorf("Elevate changed the user: %v", li.Roles)
		}
		if s.Elevate(nil, e.Grant) != nil {
			t.Error("Elevate(nil) is not nil")
		}
	})
	t.Run("a granted role that is no longer declared is dropped", func(t *testing.T) {
		if got := strings.Join(s.Elevate(li, []string{"gone", "compliance"}).Roles, ","); got != "compliance,service" {
			t.Errorf("roles %s", got)
		}
	})
	t.Run("while elevated the user sees phones unmasked", func(t *testing.T) {
		for _, u := range []*User{li, s.Elevate(li, e.Grant)} {
			r := request("GET", "/api/customers")
			d := s.Decide(u, r)
			out, _, err := d.Rewrite(nil, 200, http.Header{"Content-Type": {"application/json"}}, []byte(`{"list":[{"phone":"13812345678"}]}`))
			if err != nil {
				t.Fatal(err)
			}
			masked := strings.Contains(string(out), "138****5678")
			if masked == u.HasRole("service_plus") {
				t.Errorf("roles %v: answer %s", u.Roles, out)
			}
		}
	})
}
