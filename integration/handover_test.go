package integration

import (
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crmguard/crmguard/examples/crm"
	"github.com/crmguard/crmguard/examples/demo"
)

// TestAHandoverIsApprovedThenUsedOnceThroughCaddy runs the handover
// approval (转交审批) of the example rule file through Caddy with the real
// development provider and the example CRM: zhang's handover of an own
// customer to wang is refused with a link to the request form, zhang asks
// from that form, wang approves once his MFA sign-in is fresh enough, and
// the PATCH setting owner_id to wang goes through exactly once; setting li,
// or handing over another customer, stays refused and never reaches the
// CRM.
func TestAHandoverIsApprovedThenUsedOnceThroughCaddy(t *testing.T) {
	clock := &idpClock{}
	d := startDemoConfig(t, demo.Config{Rules: filepath.Join(repoRoot(t), "examples", "rules.yaml"), IdPNow: clock.Now})
	var own []*crm.Customer
	for _, c := range d.CRM.Data().Customers {
		if c.OwnerID == "zhang" && c.Team == "east" {
			own = append(own, c)
		}
	}
	if len(own) < 2 {
		t.Fatalf("the demo data gives zhang %d customers; the test needs two", len(own))
	}
	first, other := own[0], own[1]
	path := fmt.Sprintf("/api/customers/%d", first.ID)
	owner := func(id int) string {
		for _, c := range d.CRM.Data().Customers {
			if c.ID == id {
				return c.OwnerID
			}
		}
		return "(deleted)"
	}
	zhang := browserLike(t)
	signInHTTP(t, zhang, d, "zhang", "/", time.Now())
	// refused sends a PATCH that must be refused without reaching the CRM.
	refused := func(t *testing.T, path, body string) string {
		t.Helper()
		before := len(d.CRM.Writes())
		resp, answer := sendJSON(t, zhang, d, "PATCH", path, rawJSON(body))
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("PATCH %s %s: %d %.300s; want 403", path, body, resp.StatusCode, answer)
		}
		if w := d.CRM.Writes(); len(w) != before {
			t.Errorf("the CRM received %q", w[before:])
		}
		return answer
	}

	answer := refused(t, path, `{"owner_id":"wang","stage":"negotiation"}`)
	link := decodeJSON[struct {
		Approval string `json:"request_approval"`
	}](t, answer).Approval
	want := "/.crmguard/approvals/new?" + url.Values{"method": {"PATCH"}, "path": {path}, "values": {`{"owner_id":"wang"}`}}.Encode()
	if link != want || !strings.Contains(answer, "policy handover") {
		t.Fatalf("the refusal %s links to %q, want %q", answer, link, want)
	}

	// zhang asks from the form the link opens, as a browser without
	// script does.
	resp, page := postPageForm(t, zhang, d, link, "/.crmguard/approvals", url.Values{
		"method": {"PATCH"}, "path": {path}, "values": {`{"owner_id":"wang"}`}, "purpose": {"zhang moves to the west team"}})
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Request.URL.Path, "/.crmguard/approvals/ap-") || !strings.Contains(page, `owner_id &#34;wang&#34;`) {
		t.Fatalf("sending the form: %d at %s:\n%.800s", resp.StatusCode, resp.Request.URL, page)
	}
	id := strings.TrimPrefix(resp.Request.URL.Path, "/.crmguard/approvals/")
	_, body := apiGet(t, zhang, d.URL+"/.crmguard/approvals/"+id)
	a := decodeJSON[struct {
		Kind, Status, Request, Route, Policy string
		Values                               map[string]any
	}](t, body)
	if a.Kind != "write" || a.Status != "pending" || a.Route != "customers.update" || a.Policy != "handover" ||
		a.Request != fmt.Sprintf(`PATCH %s {"owner_id":"wang"}`, path) || a.Values["owner_id"] != "wang" {
		t.Fatalf("the request: %s", body)
	}

	t.Run("wang, signed in longer ago than the policy's approver_mfa allows, must sign in again", func(t *testing.T) {
		clock.advance(-20 * time.Minute)
		stale := browserLike(t)
		signInHTTP(t, stale, d, "wang", "/", time.Now())
		clock.advance(20 * time.Minute)
		resp, body := sendJSON(t, stale, d, "POST", "/.crmguard/approvals/"+id+"/approve", map[string]string{})
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "max_age=600") {
			t.Fatalf("%d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
	})
	t.Run("zhang may not approve his own handover", func(t *testing.T) {
		if status, body := approveJSON(t, zhang, d, id); status != http.StatusForbidden || !strings.Contains(body, "own request") {
			t.Fatalf("%d %s", status, body)
		}
	})
	t.Run("until it is approved the handover is refused", func(t *testing.T) {
		refused(t, path, `{"owner_id":"wang"}`)
	})
	wang := browserLike(t)
	// A TOTP code is accepted once: the next step's code.
	signInHTTP(t, wang, d, "wang", "/", time.Now().Add(30*time.Second))
	if status, body := approveJSON(t, wang, d, id); status != 200 || decodeJSON[approvalJSON](t, body).Status != "approved" {
		t.Fatalf("wang approving with a fresh sign-in: %d %s", status, body)
	}

	t.Run("the approval to hand the customer to wang does not hand it to li", func(t *testing.T) {
		refused(t, path, `{"owner_id":"li"}`)
	})
	t.Run("nor another of zhang's customers to wang", func(t *testing.T) {
		refused(t, fmt.Sprintf("/api/customers/%d", other.ID), `{"owner_id":"wang"}`)
	})
	t.Run("of concurrent handovers to wang exactly one goes through", func(t *testing.T) {
		const n = 6
		ok := allowedAtOnce(t, n, func(int) (*http.Response, error) {
			req, _ := http.NewRequest("PATCH", d.URL+path, strings.NewReader(`{"owner_id":"wang","notes":"handed over"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json")
			req.Header.Set("Origin", d.URL)
			return zhang.Do(req)
		})
		if ok != 1 {
			t.Fatalf("%d of %d concurrent handovers went through a one-use grant, want exactly 1", ok, n)
		}
		if got := owner(first.ID); got != "wang" {
			t.Errorf("customer %d is owned by %q after the handover", first.ID, got)
		}
		if got := owner(other.ID); got != "zhang" {
			t.Errorf("customer %d moved to %q", other.ID, got)
		}
		_, body := apiGet(t, zhang, d.URL+"/.crmguard/approvals/"+id)
		if a := decodeJSON[approvalJSON](t, body); a.Status != "used" || a.UsesLeft != 0 {
			t.Errorf("the grant after its use: %s", body)
		}
	})
}
