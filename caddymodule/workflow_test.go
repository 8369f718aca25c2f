package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crmguard/crmguard/caddymodule/notify"
	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/caddymodule/store/redistest"
	"github.com/crmguard/crmguard/caddymodule/workflow"
)

func TestAnExportIsApprovedByTheManagerAndITThenUsedOnce(t *testing.T) {
	e := newWFEnv(t, nil)

	rec, ev := e.do("zhang", "GET", exportEast, nil)
	if rec.Code != http.StatusForbidden || e.up.got != nil {
		t.Fatalf("the export without a grant: %d %s", rec.Code, rec.Body)
	}
	var refusal struct {
		Message, Approval string
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &struct {
		Message  *string `json:"reason"`
		Approval *string `json:"request_approval"`
	}{&refusal.Message, &refusal.Approval})
	if want := "/.crmguard/approvals/new?method=GET&path=" + url.QueryEscape(exportEast); refusal.Approval != want {
		t.Errorf("the refusal links to %q, want %q", refusal.Approval, want)
	}
	if !strings.Contains(refusal.Message, "needs approval") || !ev.Export.Blocked {
		t.Errorf("the refusal says %q, audit export %+v", refusal.Message, ev.Export)
	}

	rec, ev = e.do("zhang", "POST", "/.crmguard/approvals", map[string]string{"method": "GET", "path": exportEast, "purpose": "quarterly review with the east team"})
	if rec.Code != http.StatusCreated {
		t.Fatalf("asking: %d %s", rec.Code, rec.Body)
	}
	a := approvalOf(t, rec)
	if a.Status != "pending" || a.Route != "customers.export" || len(a.Steps) != 2 || a.Steps[0].Status != "waiting" || a.Request != "GET /api/customers/export?team=east" {
		t.Fatalf("the new request: %+v", a)
	}
	if w := ev.Workflow; w == nil || w.Action != "requested" || w.ID != a.ID || w.Purpose != "quarterly review with the east team" {
		t.Errorf("audit workflow %+v", ev.Workflow)
	}

	// Who may approve the first step, and who may not.
	refusals := []struct {
		name, user string
		status     int
		says       string
	}{
		{name: "the requester may not approve their own request", user: "zhang", status: 403, says: "own request"},
		{name: "another team's manager may not approve", user: "zhao", status: 403, says: "may not approve"},
		{name: "IT security may not approve the manager's step", user: "zhou", status: 403, says: "may not approve"},
		{name: "the manager with a stale sign-in is asked to sign in again", user: "wang:stale", status: 401, says: "second factor"},
		{name: "the manager without MFA is asked to sign in with a second factor", user: "wang:nomfa", status: 401, says: "second factor"},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			rec, ev := e.do(r.user, "POST", "/.crmguard/approvals/"+a.ID+"/approve", map[string]string{"note": "ok"})
			if rec.Code != r.status || !strings.Contains(rec.Body.String(), r.says) {
				t.Fatalf("%d %s, want %d saying %q", rec.Code, rec.Body, r.status, r.says)
			}
			if r.status == 401 {
				if h := rec.Header().Get("WWW-Authenticate"); !strings.Contains(h, "insufficient_user_authentication") {
					t.Errorf("WWW-Authenticate %q", h)
				}
			}
			if ev.Workflow != nil || ev.Decision == "workflow" {
				t.Errorf("a refused approval is audited as %q with %+v", ev.Decision, ev.Workflow)
			}
		})
	}
	if rec, _ := e.do("zhao", "GET", "/.crmguard/approvals", nil); strings.Contains(rec.Body.String(), a.ID) {
		t.Errorf("another team's manager sees the request in their list: %s", rec.Body)
	}
	if rec, _ := e.do("zhou", "GET", "/.crmguard/approvals", nil); strings.Contains(rec.Body.String(), a.ID) {
		t.Errorf("IT security sees the request before the manager approved: %s", rec.Body)
	}
	rec, _ = e.do("wang", "GET", "/.crmguard/approvals", nil)
	var lists workflow.ApprovalLists
	_ = json.Unmarshal(rec.Body.Bytes(), &lists)
	if len(lists.Waiting) != 1 || lists.Waiting[0].ID != a.ID {
		t.Fatalf("wang's queue: %s", rec.Body)
	}

	rec, ev = e.do("wang", "POST", "/.crmguard/approvals/"+a.ID+"/approve", map[string]string{"note": "fine for the review"})
	if rec.Code != 200 || approvalOf(t, rec).Steps[1].Status != "waiting" {
		t.Fatalf("wang approving: %d %s", rec.Code, rec.Body)
	}
	if w := ev.Workflow; w == nil || w.Action != "approved" || w.Step != "manager" || w.By != "wang" {
		t.Errorf("audit workflow %+v", ev.Workflow)
	}
	if rec, _ := e.do("zhang", "GET", exportEast, nil); rec.Code != 403 {
		t.Fatalf("the export after one of two steps: %d", rec.Code)
	}
	rec, _ = e.do("zhou", "POST", "/.crmguard/approvals/"+a.ID+"/approve", map[string]string{})
	if got := approvalOf(t, rec); rec.Code != 200 || got.Status != "approved" || got.UsesLeft != 1 {
		t.Fatalf("zhou approving: %d %s", rec.Code, rec.Body)
	}

	if rec, _ := e.do("zhang", "GET", "/api/customers/export?team=west", nil); rec.Code != 403 || e.up.got != nil {
		t.Fatalf("a grant for team east allowed team west: %d", rec.Code)
	}
	if rec, _ := e.do("wang", "GET", exportEast, nil); rec.Code != 403 || e.up.got != nil {
		t.Fatalf("zhang's grant let his manager export: %d", rec.Code)
	}
	rec, ev = e.do("zhang", "GET", exportEast, nil)
	if rec.Code != 200 || e.up.got == nil {
		t.Fatalf("the approved export: %d %s", rec.Code, rec.Body)
	}
	if g := ev.Grant; g == nil || g.ID != a.ID || g.Purpose != "quarterly review with the east team" || strings.Join(g.Approvers, ",") != "wang,zhou" {
		t.Errorf("the export's audit names the grant as %+v", ev.Grant)
	}
	if rec, _ := e.do("zhang", "GET", exportEast, nil); rec.Code != 403 || e.up.got != nil {
		t.Fatalf("a second download with a one-use grant: %d", rec.Code)
	}
	rec, _ = e.do("zhang", "GET", "/.crmguard/approvals/"+a.ID, nil)
	if got := approvalOf(t, rec); got.Status != "used" || got.UsesLeft != 0 {
		t.Errorf("after the use: %+v", got)
	}
	if got, want := e.notes.types(), []string{notify.ApprovalWaiting, notify.ApprovalWaiting, notify.ApprovalApproved}; !slices.Equal(got, want) {
		t.Errorf("notifications %v, want %v", got, want)
	}
	e.notes.mu.Lock()
	first, second := e.notes.events[0], e.notes.events[1]
	e.notes.mu.Unlock()
	if !slices.Equal(first.To.Roles, []string{"sales_manager"}) || !slices.Equal(second.To.Roles, []string{"it_security"}) {
		t.Errorf("the waiting notifications went to %v then %v", first.To, second.To)
	}
}

func TestNobodyApprovesTwoStepsOfOneRequest(t *testing.T) {
	e := newWFEnv(t, nil)
	id := e.ask()
	e.approve(id, "wu") // manager of east, and IT security
	rec, _ := e.do("wu", "POST", "/.crmguard/approvals/"+id+"/approve", map[string]string{})
	if rec.Code != 403 || !strings.Contains(rec.Body.String(), "another step") {
		t.Fatalf("wu approving the second step too: %d %s", rec.Code, rec.Body)
	}
	e.approve(id, "zhou")
}

func TestAskingForApprovalIsRefusedWhenThereIsNothingToApprove(t *testing.T) {
	e := newWFEnv(t, nil)
	cases := []struct {
		name string
		user string
		body any
		says string
	}{
		{name: "a request on a route without approval is refused", user: "zhang", body: map[string]string{"method": "GET", "path": "/api/customers", "purpose": "x"}, says: "needs no approval"},
		{name: "a request the user may not make at all is refused with why", user: "li", body: map[string]string{"method": "GET", "path": exportEast, "purpose": "x"}, says: "cannot be approved"},
		{name: "a request without a purpose is refused", user: "zhang", body: map[string]string{"method": "GET", "path": exportEast, "purpose": "  "}, says: "purpose"},
		{name: "a request for another site is refused", user: "zhang", body: map[string]string{"method": "GET", "path": "//evil.example/api/customers/export", "purpose": "x"}, says: "path on this site"},
		{name: "an absolute URL is refused", user: "zhang", body: map[string]string{"method": "GET", "path": "http://evil.example/api/customers/export", "purpose": "x"}, says: "path on this site"},
		{name: "a purpose of more than 500 characters is refused", user: "zhang", body: map[string]string{"method": "GET", "path": exportEast, "purpose": strings.Repeat("为", 501)}, says: "at most 500"},
		{name: "a body with unknown fields is refused", user: "zhang", body: `{"path":"/api/customers/export","purpose":"x","grant":true}`, says: "JSON object"},
		{name: "two JSON objects are refused", user: "zhang", body: `{"path":"/api/customers/export","purpose":"x"}{}`, says: "JSON object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec, _ := e.do(c.user, "POST", "/.crmguard/approvals", c.body)
			if rec.Code != 400 || !strings.Contains(rec.Body.String(), c.says) {
				t.Fatalf("%d %s, want 400 saying %q", rec.Code, rec.Body, c.says)
			}
		})
	}
	t.Run("an oversized body is refused", func(t *testing.T) {
		rec, _ := e.do("zhang", "POST", "/.crmguard/approvals", `{"purpose":"`+strings.Repeat("a", 70<<10)+`"}`)
		if rec.Code != 413 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
	})
	t.Run("an anonymous caller is asked to sign in", func(t *testing.T) {
		rec, ev := e.do("", "GET", "/.crmguard/approvals", nil)
		if rec.Code != 401 || ev.Decision != "sign_in" {
			t.Fatalf("%d %s (%s)", rec.Code, rec.Body, ev.Decision)
		}
	})
	t.Run("a path under the workflow never reaches the CRM", func(t *testing.T) {
		for _, p := range []string{"/.crmguard/approvals/../../api/customers", "/.crmguard/approvals/x/y/z", "/.crmguard/elevations/x/approve"} {
			rec, _ := e.do("zhang", "GET", p, nil)
			if e.up.got != nil || rec.Code < 400 {
				t.Errorf("%s: %d, reached the CRM: %v", p, rec.Code, e.up.got != nil)
			}
		}
	})
}

func TestAGrantIsBoundToTheExactRequest(t *testing.T) {
	e := newWFEnv(t, nil)
	id := e.ask()
	e.approve(id, "wang", "zhou")
	for _, target := range []string{
		"/api/customers/export",                       // everything
		"/api/customers/export?team=east&team=west",   // one more team
		"/api/customers/export?team=west",             // another team
		"/api/customers/export?team=east&limit=99999", // another parameter
	} {
		if rec, _ := e.do("zhang", "GET", target, nil); rec.Code != 403 || e.up.got != nil {
			t.Errorf("%s with the grant for team east: %d", target, rec.Code)
		}
	}
	if rec, _ := e.do("li", "GET", exportEast, nil); rec.Code != 403 {
		t.Errorf("another user with zhang's grant: %d", rec.Code)
	}
	// The same request written differently is the same request.
	if rec, _ := e.do("zhang", "GET", "/api/customers/./export?team=%65ast", nil); rec.Code != 200 {
		t.Errorf("the same export spelled differently: %d %s", rec.Code, rec.Body)
	}
}

func TestDenyAndRevoke(t *testing.T) {
	e := newWFEnv(t, nil)
	t.Run("a denied request is over and tells the requester", func(t *testing.T) {
		id := e.ask()
		rec, ev := e.do("wang", "POST", "/.crmguard/approvals/"+id+"/deny", map[string]string{"note": "use the monthly report"})
		a := approvalOf(t, rec)
		if rec.Code != 200 || a.Status != "denied" || a.Note != "use the monthly report" || a.EndedBy != "wang" {
			t.Fatalf("deny: %d %s", rec.Code, rec.Body)
		}
		if ev.Workflow == nil || ev.Workflow.Action != "denied" {
			t.Errorf("audit %+v", ev.Workflow)
		}
		if rec, _ := e.do("zhou", "POST", "/.crmguard/approvals/"+id+"/approve", map[string]string{}); rec.Code != 409 && rec.Code != 404 {
			t.Errorf("approving a denied request: %d", rec.Code)
		}
		if types := e.notes.types(); types[len(types)-1] != notify.ApprovalDenied {
			t.Errorf("notifications %v", types)
		}
	})
	t.Run("the requester may not deny their own request", func(t *testing.T) {
		id := e.ask()
		if rec, _ := e.do("zhang", "POST", "/.crmguard/approvals/"+id+"/deny", map[string]string{}); rec.Code != 403 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
	})
	t.Run("a revoked grant no longer lets the export through", func(t *testing.T) {
		id := e.ask()
		e.approve(id, "wang", "zhou")
		rec, ev := e.do("zhang", "POST", "/.crmguard/approvals/"+id+"/revoke", map[string]string{"note": "not needed any more"})
		if rec.Code != 200 || approvalOf(t, rec).Status != "revoked" || ev.Workflow.Action != "revoked" {
			t.Fatalf("revoke: %d %s", rec.Code, rec.Body)
		}
		if rec, _ := e.do("zhang", "GET", exportEast, nil); rec.Code != 403 {
			t.Errorf("the export after the revoke: %d", rec.Code)
		}
	})
	t.Run("IT security may revoke a grant it approved; another team's manager may not", func(t *testing.T) {
		id := e.ask()
		e.approve(id, "wang", "zhou")
		if rec, _ := e.do("zhao", "POST", "/.crmguard/approvals/"+id+"/revoke", map[string]string{}); rec.Code != 403 && rec.Code != 404 {
			t.Errorf("zhao revoking: %d", rec.Code)
		}
		if rec, _ := e.do("zhou", "POST", "/.crmguard/approvals/"+id+"/revoke", map[string]string{}); rec.Code != 200 {
			t.Errorf("zhou revoking: %d %s", rec.Code, rec.Body)
		}
	})
	t.Run("a stranger cannot see a request", func(t *testing.T) {
		id := e.ask()
		if rec, _ := e.do("li", "GET", "/.crmguard/approvals/"+id, nil); rec.Code != 404 {
			t.Errorf("li reading zhang's request: %d", rec.Code)
		}
	})
}

func TestRequestsAndGrantsExpire(t *testing.T) {
	e := newWFEnv(t, nil)
	pending := e.ask()
	granted := e.ask()
	e.approve(granted, "wang", "zhou")
	e.clock.advance(25 * time.Hour) // the grant is valid for 24h
	if rec, _ := e.do("zhang", "GET", exportEast, nil); rec.Code != 403 {
		t.Fatalf("an expired grant: %d", rec.Code)
	}
	if err := e.wf.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec, _ := e.do("zhang", "GET", "/.crmguard/approvals/"+granted, nil)
	if a := approvalOf(t, rec); a.Status != "expired" {
		t.Errorf("the grant after its validity: %s", a.Status)
	}
	e.clock.advance(workflow.PendingFor)
	if err := e.wf.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.wf.Sweep(context.Background()); err != nil { // a second sweep finds nothing new
		t.Fatal(err)
	}
	rec, _ = e.do("zhang", "GET", "/.crmguard/approvals/"+pending, nil)
	if a := approvalOf(t, rec); a.Status != "expired" {
		t.Errorf("the request after a week: %s", a.Status)
	}
	expired := 0
	e.sink.mu.Lock()
	for _, ev := range e.sink.events {
		if ev.Workflow != nil && ev.Workflow.Action == "expired" {
			expired++
		}
	}
	e.sink.mu.Unlock()
	if expired != 2 {
		t.Errorf("%d expiry audit events, want 2 (one each)", expired)
	}
}

func TestAOneUseGrantIsUsedExactlyOnceUnderConcurrency(t *testing.T) {
	e := newWFEnv(t, nil)
	e.approve(e.ask(), "wang", "zhou")
	const n = 50
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := httptest.NewRequest("GET", exportEast, nil)
			req.Header.Set("X-Test-User", "zhang")
			rec := httptest.NewRecorder()
			up := &upstream{header: http.Header{"Content-Type": {"text/csv"}}, body: []byte("id\n1\n")}
			if err := e.g.ServeHTTP(rec, req, up.handler()); err != nil {
				t.Error(err)
			}
			codes <- rec.Code
		}()
	}
	wg.Wait()
	close(codes)
	ok := 0
	for c := range codes {
		if c == 200 {
			ok++
		} else if c != 403 {
			t.Errorf("status %d", c)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent exports went through with a one-use grant, want 1", ok, n)
	}
}

func TestStateChangesWithASessionCookieMustComeFromThisSite(t *testing.T) {
	e := newWFEnv(t, nil)
	id := e.ask()
	path := "/.crmguard/approvals/" + id + "/approve"
	cases := []struct {
		name   string
		user   string
		body   any
		hdr    []string
		status int
	}{
		{name: "a form without the CSRF token is refused", user: "wang", body: url.Values{"note": {"x"}}, status: 403},
		{name: "a form with another session's token is refused", user: "wang", body: url.Values{"csrf": {"csrf-sess-zhang"}}, status: 403},
		{name: "a form with the token but from another origin is refused", user: "wang", body: url.Values{"csrf": {"csrf-sess-wang"}}, hdr: []string{"Origin", "https://evil.example"}, status: 403},
		{name: "JSON from another origin is refused", user: "wang", body: map[string]string{}, hdr: []string{"Origin", "https://evil.example"}, status: 403},
		{name: "JSON without an Origin header and without a token is refused", user: "wang", body: map[string]string{}, hdr: []string{"Origin", ""}, status: 403},
		{name: "a text/plain body (a cross-site form's) is refused", user: "wang", body: "note=x", hdr: []string{"Content-Type", "text/plain"}, status: 415},
		{name: "JSON from the same origin is accepted", user: "wang", body: map[string]string{"note": "same origin"}, status: 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec, _ := e.do(c.user, "POST", path, c.body, c.hdr...)
			if rec.Code != c.status {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body, c.status)
			}
		})
	}
	t.Run("a form with the session's token is accepted and redirects to the request's page", func(t *testing.T) {
		rec, _ := e.do("zhou", "POST", path, url.Values{"csrf": {"csrf-sess-zhou"}, "note": {"ok"}}, "Accept", "text/html", "Origin", "")
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/.crmguard/approvals/"+id {
			t.Fatalf("%d %v %s", rec.Code, rec.Header(), rec.Body)
		}
	})
	t.Run("a bearer token needs no CSRF token", func(t *testing.T) {
		id := e.ask()
		rec, _ := e.do("wang:bearer", "POST", "/.crmguard/approvals/"+id+"/deny", map[string]string{}, "Origin", "")
		if rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
	})
}

func TestABreakGlassElevationAddsRolesUntilItEnds(t *testing.T) {
	e := newWFEnv(t, nil)
	phoneMasked := func(user string) (bool, AuditEvent) {
		t.Helper()
		e.up.header = http.Header{"Content-Type": {"application/json"}}
		e.up.body = []byte(`{"list":[{"id":1,"phone":"13812345678"}]}`)
		rec, ev := e.do(user, "GET", "/api/customers", nil)
		if rec.Code != 200 {
			t.Fatalf("the list: %d %s", rec.Code, rec.Body)
		}
		return !strings.Contains(rec.Body.String(), "13812345678"), ev
	}
	if masked, _ := phoneMasked("li"); !masked {
		t.Fatal("the phone is clear before any elevation")
	}
	refusals := []struct {
		name, user string
		body       map[string]string
		status     int
		says       string
	}{
		{name: "an elevation without a reason is refused", user: "li", body: map[string]string{"elevation": "complaint", "reason": "", "duration": "30m"}, status: 400, says: "reason"},
		{name: "an elevation longer than allowed is refused", user: "li", body: map[string]string{"elevation": "complaint", "reason": "x", "duration": "2h"}, status: 400, says: "at most"},
		{name: "an elevation with a stale sign-in asks for a fresh one", user: "li:stale", body: map[string]string{"elevation": "complaint", "reason": "x"}, status: 401, says: "second factor"},
		{name: "a user it is not for is refused", user: "zhang", body: map[string]string{"elevation": "complaint", "reason": "x"}, status: 403, says: "may not use"},
		{name: "an unknown elevation is refused", user: "li", body: map[string]string{"elevation": "root", "reason": "x"}, status: 400, says: "no temporary access"},
		{name: "a bearer token cannot start one", user: "li:bearer", body: map[string]string{"elevation": "complaint", "reason": "x"}, status: 400, says: "browser"},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			rec, _ := e.do(r.user, "POST", "/.crmguard/elevations", r.body)
			if rec.Code != r.status || !strings.Contains(rec.Body.String(), r.says) {
				t.Fatalf("%d %s, want %d saying %q", rec.Code, rec.Body, r.status, r.says)
			}
		})
	}

	rec, ev := e.do("li", "POST", "/.crmguard/elevations", map[string]string{"elevation": "complaint", "reason": "customer 1 complains about a call", "duration": "30m"})
	el := elevationOf(t, rec)
	if rec.Code != 201 || el.Status != "active" || !el.Expires.Equal(e.clock.Now().Add(30*time.Minute)) {
		t.Fatalf("start: %d %s", rec.Code, rec.Body)
	}
	if ev.Workflow == nil || ev.Workflow.Action != "started" {
		t.Errorf("audit %+v", ev.Workflow)
	}
	if rec, _ := e.do("li", "POST", "/.crmguard/elevations", map[string]string{"elevation": "complaint", "reason": "again"}); rec.Code != 409 {
		t.Errorf("a second one in the same session: %d", rec.Code)
	}
	masked, ev := phoneMasked("li")
	if masked || !slices.Contains(ev.Roles, "service_plus") {
		t.Fatalf("while elevated the phone is masked (%v) or the roles lack service_plus: %v", masked, ev.Roles)
	}
	if ev.Elevation == nil || ev.Elevation.ID != el.ID || ev.Elevation.Name != "complaint" || ev.Elevation.Reason != "customer 1 complains about a call" {
		t.Errorf("the audit event's elevation: %+v", ev.Elevation)
	}
	if masked, ev := phoneMasked("sun"); !masked || ev.Elevation != nil {
		t.Error("another service agent is elevated too")
	}

	rec, ev = e.do("li", "DELETE", "/.crmguard/elevations/"+el.ID, nil, "Origin", "http://example.com")
	if got := elevationOf(t, rec); rec.Code != 200 || got.Status != "ended" || got.EndReason != workflow.EndByUser {
		t.Fatalf("end: %d %s", rec.Code, rec.Body)
	}
	if masked, ev := phoneMasked("li"); !masked || ev.Elevation != nil {
		t.Fatal("the elevation still applies after it ended")
	}

	// Review.
	if rec, _ := e.do("li", "POST", "/.crmguard/elevations/"+el.ID+"/review", map[string]string{"note": "fine"}); rec.Code != 404 && rec.Code != 403 {
		t.Errorf("li reviewing her own: %d", rec.Code)
	}
	rec, _ = e.do("qian", "GET", "/.crmguard/elevations", nil)
	var lists workflow.ElevationLists
	_ = json.Unmarshal(rec.Body.Bytes(), &lists)
	if len(lists.Review) != 1 || lists.Review[0].ID != el.ID {
		t.Fatalf("qian's review queue: %s", rec.Body)
	}
	if rec, _ := e.do("qian", "POST", "/.crmguard/elevations/"+el.ID+"/review", map[string]string{"note": " "}); rec.Code != 400 {
		t.Errorf("a review without a note: %d", rec.Code)
	}
	rec, ev = e.do("qian", "POST", "/.crmguard/elevations/"+el.ID+"/review", map[string]string{"note": "call recording checked; justified"})
	if got := elevationOf(t, rec); rec.Code != 200 || got.Review == nil || got.Review.By != "qian" || ev.Workflow.Action != "reviewed" {
		t.Fatalf("review: %d %s", rec.Code, rec.Body)
	}
	rec, _ = e.do("qian", "GET", "/.crmguard/elevations", nil)
	_ = json.Unmarshal(rec.Body.Bytes(), &lists)
	if len(lists.Review) != 0 {
		t.Errorf("the queue after the review: %s", rec.Body)
	}
	if got, want := e.notes.types(), []string{notify.ElevationStarted, notify.ElevationReview}; !slices.Equal(got, want) {
		t.Errorf("notifications %v, want %v", got, want)
	}
}

func TestAnElevationEndsAtExpiryAndWhenTheSessionEnds(t *testing.T) {
	e := newWFEnv(t, nil)
	start := func() string {
		t.Helper()
		rec, _ := e.do("li", "POST", "/.crmguard/elevations", map[string]string{"elevation": "complaint", "reason": "complaint", "duration": "10m"})
		if rec.Code != 201 {
			t.Fatalf("start: %d %s", rec.Code, rec.Body)
		}
		return elevationOf(t, rec).ID
	}
	elevated := func() bool {
		_, ev := e.do("li", "GET", "/api/customers", nil)
		return ev.Elevation != nil
	}
	id := start()
	e.clock.advance(10 * time.Minute)
	if elevated() {
		t.Fatal("elevated after the expiry")
	}
	if err := e.wf.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec, _ := e.do("li", "GET", "/.crmguard/elevations/"+id, nil)
	if got := elevationOf(t, rec); got.Status != "ended" || got.EndReason != workflow.EndExpired {
		t.Errorf("after expiry: %+v", got)
	}

	for _, c := range []struct{ name, ref, sid, sub, why string }{
		{name: "at logout of the session", ref: "sess-li", why: "signed out"},
		{name: "at a back-channel logout of the provider session", sid: "idp-li", why: "session revoked"},
		{name: "when an administrator revokes the user's sessions", sub: "li", why: "session revoked"},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := start()
			if !elevated() {
				t.Fatal("not elevated after the start")
			}
			n, err := e.wf.SessionEnded(context.Background(), c.ref, c.sid, c.sub, c.why)
			if err != nil || n != 1 {
				t.Fatalf("SessionEnded: %d, %v", n, err)
			}
			if elevated() {
				t.Fatal("still elevated")
			}
			rec, _ := e.do("li", "GET", "/.crmguard/elevations/"+id, nil)
			if got := elevationOf(t, rec); got.Status != "ended" || got.EndReason != c.why {
				t.Errorf("%+v", got)
			}
		})
	}
}

func TestAnElevationThatNeedsApprovalStartsWhenApproved(t *testing.T) {
	e := newWFEnv(t, nil)
	rec, _ := e.do("li", "POST", "/.crmguard/elevations", map[string]string{"elevation": "night", "reason": "server room flood; customer calls", "duration": "1h"})
	el := elevationOf(t, rec)
	if rec.Code != 201 || el.Status != "pending" || el.Approval == "" {
		t.Fatalf("start: %d %s", rec.Code, rec.Body)
	}
	if _, ev := e.do("li", "GET", "/api/customers", nil); ev.Elevation != nil {
		t.Fatal("elevated before the approval")
	}
	if rec, _ := e.do("qian", "POST", "/.crmguard/approvals/"+el.Approval+"/approve", map[string]string{"note": "go"}); rec.Code != 200 {
		t.Fatalf("qian approving: %d %s", rec.Code, rec.Body)
	}
	_, ev := e.do("li", "GET", "/api/customers", nil)
	if ev.Elevation == nil || ev.Elevation.ID != el.ID {
		t.Fatalf("not elevated after the approval: %+v", ev.Elevation)
	}
	rec, _ = e.do("li", "GET", "/.crmguard/elevations/"+el.ID, nil)
	if got := elevationOf(t, rec); got.Status != "active" || !got.Expires.Equal(e.clock.Now().Add(time.Hour)) {
		t.Errorf("%+v", got)
	}
}

func TestPagesWorkWithoutScript(t *testing.T) {
	e := newWFEnv(t, nil)
	html := []string{"Accept", "text/html,application/xhtml+xml", "Origin", ""}
	rec, _ := e.do("zhang", "GET", exportEast, nil, html...)
	if rec.Code != 403 || !strings.Contains(rec.Body.String(), `href="/.crmguard/approvals/new?method=GET&amp;path=%2Fapi%2Fcustomers%2Fexport%3Fteam%3Deast"`) {
		t.Fatalf("the refusal page does not link to the request form: %s", rec.Body)
	}
	rec, _ = e.do("zhang", "GET", "/.crmguard/approvals/new?method=GET&path="+url.QueryEscape(exportEast), nil, html...)
	body := rec.Body.String()
	for _, want := range []string{`name="csrf" value="csrf-sess-zhang"`, `value="/api/customers/export?team=east"`, "your manager, then IT security", `<textarea id="purpose"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the request form lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<script") || strings.Contains(body, "http://") || strings.Contains(body, "https://") {
		t.Errorf("the page loads a script or an external asset:\n%s", body)
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	rec, _ = e.do("zhang", "POST", "/.crmguard/approvals", url.Values{"csrf": {"csrf-sess-zhang"}, "method": {"GET"}, "path": {exportEast}, "purpose": {"<b>board meeting</b>"}}, html...)
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("posting the form: %d %s", rec.Code, rec.Body)
	}
	page := rec.Header().Get("Location")
	rec, _ = e.do("wang", "GET", page, nil, html...)
	body = rec.Body.String()
	for _, want := range []string{`id="approve"`, `id="deny"`, "&lt;b&gt;board meeting&lt;/b&gt;", "within 10 minutes"} {
		if !strings.Contains(body, want) {
			t.Errorf("wang's page of the request lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<b>board") {
		t.Error("the purpose is not escaped")
	}
	rec, _ = e.do("wang:stale", "POST", page+"/approve", url.Values{"csrf": {"csrf-sess-wang"}}, html...)
	if rec.Code != http.StatusFound || !strings.Contains(rec.Header().Get("Location"), url.QueryEscape(page)) || strings.Contains(rec.Header().Get("Location"), "approve") {
		t.Errorf("a stale approver is sent to sign in and back to the page: %d %s", rec.Code, rec.Header().Get("Location"))
	}
	rec, _ = e.do("zhang", "GET", page, nil, html...)
	if body := rec.Body.String(); strings.Contains(body, `id="approve"`) || !strings.Contains(body, `id="revoke"`) {
		t.Errorf("zhang's page of his own request:\n%s", body)
	}
	rec, _ = e.do("li", "GET", "/.crmguard/elevations", nil, html...)
	if body := rec.Body.String(); !strings.Contains(body, `<select id="elevation"`) || !strings.Contains(body, `<option value="30m0s">30 minutes</option>`) {
		t.Errorf("li's elevation page:\n%s", body)
	}
	rec, _ = e.do("li", "POST", "/.crmguard/elevations", url.Values{"csrf": {"csrf-sess-li"}, "elevation": {"complaint"}, "reason": {"complaint"}, "duration": {"15m0s"}}, html...)
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(rec.Header().Get("Location"), "/.crmguard/elevations/el-") {
		t.Fatalf("starting from the form: %d %s", rec.Code, rec.Body)
	}
	rec, _ = e.do("li", "GET", "/.crmguard/nope", nil, html...)
	if rec.Code < 400 {
		t.Errorf("an unknown page: %d", rec.Code)
	}
	rec, _ = e.do("zhang", "POST", "/.crmguard/approvals", url.Values{"csrf": {"csrf-sess-zhang"}, "method": {"GET"}, "path": {"/api/customers"}, "purpose": {"x"}}, html...)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "needs no approval") {
		t.Errorf("a refused form: %d %s", rec.Code, rec.Body)
	}
}

func TestAnUnreachableStoreRefusesWithServiceUnavailable(t *testing.T) {
	srv := redistest.Run(t)
	st, err := store.OpenRedis(srv.URL, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := newWFEnv(t, st)
	e.approve(e.ask(), "wang", "zhou")
	rec, _ := e.do("li", "POST", "/.crmguard/elevations", map[string]string{"elevation": "complaint", "reason": "complaint"})
	if rec.Code != 201 {
		t.Fatalf("start: %d %s", rec.Code, rec.Body)
	}
	srv.Stop()
	cases := []struct {
		name, user, method, path string
	}{
		{name: "the approvals API", user: "zhang", method: "GET", path: "/.crmguard/approvals"},
		{name: "an export that needs a grant", user: "zhang", method: "GET", path: exportEast},
		{name: "an elevated session", user: "li", method: "GET", path: "/api/customers"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec, ev := e.do(c.user, c.method, c.path, nil)
			if rec.Code != http.StatusServiceUnavailable || e.up.got != nil {
				t.Fatalf("%d %s (reached the CRM: %v)", rec.Code, rec.Body, e.up.got != nil)
			}
			if ev.Decision != "error" && ev.Decision != "deny" || ev.Reason == "" {
				t.Errorf("audit %s: %q", ev.Decision, ev.Reason)
			}
		})
	}
	t.Run("a user who cannot be elevated is not stopped by the store", func(t *testing.T) {
		e.up.header = http.Header{"Content-Type": {"application/json"}}
		e.up.body = []byte(`{"list":[]}`)
		if rec, _ := e.do("qian", "GET", "/api/customers", nil); rec.Code != 200 {
			t.Errorf("%d %s", rec.Code, rec.Body)
		}
	})
}

// handover is zhang handing customer 7 to wang, as the approval binds it.
const handover = `PATCH /api/customers/7 {"owner_id":"wang"}`

func TestAHandoverIsAskedForByItsValuesApprovedAndUsedOnce(t *testing.T) {
	e := newWFEnv(t, nil)
	e.up = jsonUpstream(`{"id":7,"owner_id":"zhang"}`) // the stored customer, for the target fetch
	patched := func() bool { return e.up.got != nil && e.up.got.Method == "PATCH" }

	rec, _ := e.do("zhang", "PATCH", "/api/customers/7", `{"owner_id":"wang","notes":"moves west"}`)
	var refusal struct {
		Approval string `json:"request_approval"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &refusal)
	link := "/.crmguard/approvals/new?" + url.Values{"method": {"PATCH"}, "path": {"/api/customers/7"}, "values": {`{"owner_id":"wang"}`}}.Encode()
	if rec.Code != 403 || patched() || refusal.Approval != link {
		t.Fatalf("the handover without a grant: %d %s (patched %v); want 403 linking to %s", rec.Code, rec.Body, patched(), link)
	}

	asks := []struct {
		name   string
		body   any
		status int
		says   string
	}{
		{name: "the same change named by its body binds the same values", status: 201,
			body: map[string]any{"method": "PATCH", "path": "/api/customers/7", "body": map[string]string{"owner_id": "wang", "notes": "x"}, "purpose": "zhang moves west"}},
		{name: "the same change named by a form body binds the same values", status: 201,
			body: map[string]any{"method": "PATCH", "path": "/api/customers/7", "body": "owner_id=wang", "content_type": "application/x-www-form-urlencoded", "purpose": "zhang moves west"}},
		{name: "values that name no guarded field are refused", status: 400, says: "no body guard with an approval",
			body: map[string]any{"method": "PATCH", "path": "/api/customers/7", "values": map[string]string{"notes": "x"}, "purpose": "p"}},
		{name: "a change named by both its values and its body is refused", status: 400, says: "not both",
			body: map[string]any{"method": "PATCH", "path": "/api/customers/7", "values": map[string]string{"owner_id": "wang"}, "body": map[string]string{"owner_id": "li"}, "purpose": "p"}},
		{name: "a body the guard cannot read with certainty is refused", status: 400, says: "cannot be asked for",
			body: map[string]any{"method": "PATCH", "path": "/api/customers/7", "body": `{"owner_id":"wang","OWNER_ID":"li"}`, "purpose": "p"}},
		{name: "values that are not an object are refused", status: 400, says: "one JSON object",
			body: map[string]any{"method": "PATCH", "path": "/api/customers/7", "values": []string{"wang"}, "purpose": "p"}},
		{name: "a change without its values is told how to name them", status: 400, says: "(values)",
			body: map[string]any{"method": "PATCH", "path": "/api/customers/7", "purpose": "p"}},
		{name: "a change without a purpose is refused", status: 400, says: "purpose",
			body: map[string]any{"method": "PATCH", "path": "/api/customers/7", "values": map[string]string{"owner_id": "wang"}}},
	}
	for _, c := range asks {
		t.Run(c.name, func(t *testing.T) {
			rec, _ := e.do("zhang", "POST", "/.crmguard/approvals", c.body)
			if rec.Code != c.status || !strings.Contains(rec.Body.String(), c.says) {
				t.Fatalf("%d %s; want %d saying %q", rec.Code, rec.Body, c.status, c.says)
			}
			if c.status != 201 {
				return
			}
			a := approvalOf(t, rec)
			if a.Kind != "write" || a.Request != handover || a.Values["owner_id"] != "wang" || len(a.Values) != 1 {
				t.Errorf("asked for %+v, want a write bound to %s", a, handover)
			}
			if rec, _ := e.do("zhang", "POST", "/.crmguard/approvals/"+a.ID+"/revoke", map[string]string{}); rec.Code != 200 {
				t.Fatalf("withdrawing: %d %s", rec.Code, rec.Body)
			}
		})
	}

	rec, ev := e.do("zhang", "POST", "/.crmguard/approvals", map[string]any{"method": "PATCH", "path": "/api/customers/7", "values": map[string]string{"owner_id": "wang"}, "purpose": "zhang moves west"})
	if rec.Code != 201 {
		t.Fatalf("asking: %d %s", rec.Code, rec.Body)
	}
	a := approvalOf(t, rec)
	if a.Kind != "write" || a.Route != "customers.update" || a.Policy != "handover" || a.Request != handover || a.Status != "pending" {
		t.Fatalf("the request: %+v", a)
	}
	if w := ev.Workflow; w == nil || w.Action != "requested" || w.Request != handover {
		t.Errorf("audit workflow %+v", ev.Workflow)
	}
	for _, c := range []struct {
		user   string
		status int
	}{{"zhang", 403}, {"zhao", 403}, {"wang:stale", 401}} {
		if rec, _ := e.do(c.user, "POST", "/.crmguard/approvals/"+a.ID+"/approve", map[string]string{}); rec.Code != c.status {
			t.Errorf("%s approving: %d %s, want %d", c.user, rec.Code, rec.Body, c.status)
		}
	}
	if rec, _ := e.do("zhang", "PATCH", "/api/customers/7", `{"owner_id":"wang"}`); rec.Code != 403 || patched() {
		t.Fatalf("the handover while its approval waits: %d", rec.Code)
	}
	e.approve(a.ID, "wang")

	refused := []struct{ name, user, path, body string }{
		{"the approval to hand customer 7 to wang does not hand it to li", "zhang", "/api/customers/7", `{"owner_id":"li"}`},
		{"nor customer 8 to wang", "zhang", "/api/customers/8", `{"owner_id":"wang"}`},
		{"nor does it serve another rep", "sun", "/api/customers/7", `{"owner_id":"wang"}`},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			if rec, _ := e.do(c.user, "PATCH", c.path, c.body); rec.Code != 403 || patched() {
				t.Fatalf("%d %s (patched %v)", rec.Code, rec.Body, patched())
			}
		})
	}
	rec, ev = e.do("zhang", "PATCH", "/api/customers/7", `{"notes":"handed over","owner_id":"wang"}`)
	if rec.Code != 200 || !patched() {
		t.Fatalf("the approved handover: %d %s", rec.Code, rec.Body)
	}
	if g := ev.Grant; g == nil || g.ID != a.ID || g.Policy != "handover" || strings.Join(g.Approvers, ",") != "wang" {
		t.Errorf("the handover's audit names the grant as %+v", ev.Grant)
	}
	if rec, _ := e.do("zhang", "PATCH", "/api/customers/7", `{"owner_id":"wang"}`); rec.Code != 403 || patched() {
		t.Fatalf("a second handover with a one-use grant: %d", rec.Code)
	}
	rec, _ = e.do("zhang", "GET", "/.crmguard/approvals/"+a.ID, nil)
	if got := approvalOf(t, rec); got.Status != "used" || got.UsesLeft != 0 {
		t.Errorf("after the use: %+v", got)
	}
}

func TestTheHandoverFormWorksWithoutScript(t *testing.T) {
	e := newWFEnv(t, nil)
	e.up = jsonUpstream(`{"id":7,"owner_id":"zhang"}`)
	html := []string{"Accept", "text/html,application/xhtml+xml", "Origin", ""}
	rec, _ := e.do("zhang", "PATCH", "/api/customers/7", `{"owner_id":"<b>wang</b>"}`, html...)
	body := rec.Body.String()
	if rec.Code != 403 || !strings.Contains(body, "Ask for approval of this change") {
		t.Fatalf("the refusal page: %d %s", rec.Code, body)
	}
	m := regexp.MustCompile(`href="([^"]+)" id="request-approval"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no link to the request form: %s", body)
	}
	form := strings.ReplaceAll(m[1], "&amp;", "&")
	rec, _ = e.do("zhang", "GET", form, nil, html...)
	body = rec.Body.String()
	for _, want := range []string{`name="csrf" value="csrf-sess-zhang"`, `name="method" value="PATCH"`, `value="/api/customers/7"`,
		`name="values" value="{&#34;owner_id&#34;:&#34;\u003cb\u003ewang\u003c/b\u003e&#34;}"`, `owner_id &#34;&lt;b&gt;wang&lt;/b&gt;&#34;`, "one change", `<textarea id="purpose"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the request form lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<b>wang") || strings.Contains(body, "<script") {
		t.Errorf("the form shows the value unescaped or loads a script:\n%s", body)
	}
	rec, _ = e.do("zhang", "POST", "/.crmguard/approvals", url.Values{"csrf": {"csrf-sess-zhang"}, "method": {"PATCH"}, "path": {"/api/customers/7"},
		"values": {`{"owner_id":"<b>wang</b>"}`}, "purpose": {"moves west"}}, html...)
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("posting the form: %d %s", rec.Code, rec.Body)
	}
	page := rec.Header().Get("Location")
	rec, _ = e.do("wang", "GET", "/.crmguard/approvals", nil, html...)
	if body := rec.Body.String(); !strings.Contains(body, `<code>PATCH /api/customers/7</code> setting <code>owner_id &#34;&lt;b&gt;wang&lt;/b&gt;&#34;</code>`) {
		t.Errorf("wang's list does not show what the change sets:\n%s", body)
	}
	rec, _ = e.do("wang", "GET", page, nil, html...)
	if body := rec.Body.String(); !strings.Contains(body, `id="values">owner_id &#34;&lt;b&gt;wang&lt;/b&gt;&#34;`) || !strings.Contains(body, `id="approve"`) {
		t.Errorf("wang's page of the request:\n%s", body)
	}
	if rec, _ := e.do("wang", "POST", page+"/approve", url.Values{"csrf": {"csrf-sess-wang"}}, html...); rec.Code != http.StatusSeeOther {
		t.Fatalf("approving from the page: %d %s", rec.Code, rec.Body)
	}
	rec, _ = e.do("zhang", "GET", page, nil, html...)
	if body := rec.Body.String(); !strings.Contains(body, `id="resend"`) || strings.Contains(body, `id="download"`) {
		t.Errorf("zhang's page of the approved change:\n%s", body)
	}
	rec, _ = e.do("zhang", "GET", "/.crmguard/approvals/new?method=PATCH&path=/api/customers/7&values=%5B1%5D", nil, html...)
	if body := rec.Body.String(); !strings.Contains(body, "one JSON object") || strings.Contains(body, `id="request-form"`) {
		t.Errorf("a link with values that are no object:\n%s", body)
	}
}
