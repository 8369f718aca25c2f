package auditcli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/rules"
)

var exampleRules = filepath.Join("..", "..", "..", "..", "examples", "rules.yaml")

// reviewLog is a small log whose review is known.
const reviewLog = `{"time":"2026-09-01T09:00:00Z","user":"gone","roles":["sales"],"method":"GET","path":"/api/customers","route":"customers.list","decision":"allow","status":200,"records_in":1,"records_out":1,"export":{}}
{"time":"2026-11-02T09:00:00Z","user":"zhang","roles":["sales"],"method":"GET","path":"/api/customers","route":"customers.list","decision":"allow","status":200,"records_in":1,"records_out":1,"export":{}}
{"time":"2026-11-02T09:01:00Z","user":"zhang","roles":["sales"],"method":"GET","path":"/api/customers/7","route":"customers.get","decision":"allow","status":200,"records_in":1,"records_out":1,"export":{}}
{"time":"2026-11-02T09:02:00Z","user":"zhang","roles":["sales"],"method":"GET","path":"/api/deals","route":"deals.list","decision":"deny","status":403,"records_in":0,"records_out":0,"export":{}}
{"time":"2026-11-03T10:00:00Z","user":"li","roles":["service","service_plus"],"method":"GET","path":"/api/customers","route":"customers.list","decision":"allow","status":200,"records_in":3,"records_out":3,"export":{},"elevation":{"id":"el-1","name":"complaint","reason":"ticket 4711"}}
{"time":"2026-11-03T10:05:00Z","user":"li","roles":["service","service_plus"],"method":"GET","path":"/api/customers","route":"customers.list","decision":"allow","status":200,"records_in":3,"records_out":3,"export":{},"elevation":{"id":"el-1","name":"complaint","reason":"ticket 4711"}}
{"time":"2026-11-04T10:00:00Z","user":"li","roles":["service","service_plus"],"method":"GET","path":"/api/customers","route":"customers.list","decision":"allow","status":200,"records_in":3,"records_out":3,"export":{},"elevation":{"id":"el-2","name":"complaint","reason":"ticket 4712"}}
{"time":"2026-11-05T10:00:00Z","user":"comp","roles":["compliance"],"method":"POST","path":"/.crmguard/elevations/el-2/review","decision":"provider","status":200,"records_in":0,"records_out":0,"export":{}}
{"time":"2026-11-06T10:00:00Z","user":"mgr","roles":["sales","sales_manager"],"method":"POST","path":"/.crmguard/approvals/a-1/approve","decision":"provider","status":200,"records_in":0,"records_out":0,"export":{}}
{"time":"2026-11-06T10:01:00Z","user":"mgr","roles":["sales","sales_manager"],"method":"POST","path":"/.crmguard/approvals/a-2/approve","decision":"provider","status":200,"records_in":0,"records_out":0,"export":{}}
{"time":"2026-11-08T10:00:00Z","user":"mgr","roles":["sales","sales_manager"],"method":"POST","path":"/.crmguard/approvals/a-3/approve","decision":"workflow","status":200,"records_in":0,"records_out":0,"export":{},"workflow":{"kind":"approval","id":"a-3","action":"approved","status":"pending","step":"manager","by":"mgr"}}
{"time":"2026-11-08T11:00:00Z","user":"zhou","roles":["it_security"],"method":"POST","path":"/.crmguard/approvals/a-3/approve","decision":"workflow","status":200,"records_in":0,"records_out":0,"export":{},"workflow":{"kind":"approval","id":"a-3","action":"approved","status":"approved","step":"it","by":"zhou"}}
{"time":"2026-11-08T12:00:00Z","user":"mgr","roles":["sales","sales_manager"],"method":"POST","path":"/.crmguard/approvals/a-4/approve","decision":"workflow","status":200,"records_in":0,"records_out":0,"export":{},"workflow":{"kind":"approval","id":"a-4","action":"approved","status":"pending","step":"manager","by":"mgr"}}
{"time":"2026-11-08T13:00:00Z","user":"comp","roles":["compliance"],"method":"POST","path":"/.crmguard/elevations/el-3/review","decision":"workflow","status":200,"records_in":0,"records_out":0,"export":{},"workflow":{"kind":"elevation","id":"el-3","action":"reviewed","status":"reviewed","by":"comp"}}
{"time":"2026-11-07T09:00:00Z","method":"","path":"","rules_version":"bbbb","decision":"reload","status":0,"records_in":0,"records_out":0,"export":{},"reload":{"file":"/etc/crmguard/rules.yaml","old_version":"aaaa","new_version":"bbbb","roles":[{"role":"observer","added":["customers.list"]}]}}
{"time":"2026-11-07T10:00:00Z","user":"zhang","roles":["sales"],"method":"GET","path":"/api/customers/export","route":"customers.export","decision":"allow","status":200,"records_in":5,"records_out":5,"export":{"route":true,"approved":true},"grant":{"id":"a-1","policy":"export","purpose":"q4","approvers":["mgr","it1"]}}
`

func TestReviewFindsWhatNobodyUsedAndWhatWaitsForAReviewer(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(p, []byte(reviewLog), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := BuildReview(ReviewOptions{RulesFile: exampleRules, Since: "30d", Now: "2026-11-20T00:00:00Z"}, []string{p})
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadFile(exampleRules, rules.WithHashKey([]byte("k")))
	if err != nil {
		t.Fatal(err)
	}
	// What the log above uses in the window.
	used := map[string][]string{
		"sales":         {"customers.list", "customers.get", "customers.export"},
		"service":       {"customers.list"},
		"service_plus":  {"customers.list"},
		"sales_manager": nil, // mgr only approved
	}
	usedRoutes := []string{"customers.list", "customers.get", "customers.export"}
	t.Run("the window holds every request from 30 days before now, the rule file's reload left out", func(t *testing.T) {
		if r.InWindow != 14 {
			t.Errorf("%d events in the window, want 14", r.InWindow)
		}
	})
	t.Run("roles no request carried are listed", func(t *testing.T) {
		want := []string{"admin", "finance", "marketing", "observer"} // compliance reviewed, it_security approved
		if !slices.Equal(r.UnusedRoles, want) {
			t.Errorf("got %v, want %v", r.UnusedRoles, want)
		}
	})
	t.Run("routes nobody was allowed on are listed", func(t *testing.T) {
		var want []string
		for _, ri := range set.Routes() {
			if !slices.Contains(usedRoutes, ri.ID) {
				want = append(want, ri.ID)
			}
		}
		if !slices.Equal(r.UnusedRoutes, want) {
			t.Errorf("got %v, want %v", r.UnusedRoutes, want)
		}
	})
	t.Run("each role's grants that no holder used are listed", func(t *testing.T) {
		got := map[string][]string{}
		for _, g := range r.UnusedGrants {
			got[g.Role] = g.Routes
		}
		for role, routes := range used {
			var want []string
			for _, a := range set.Access(role) {
				if a.Allowed && !a.Public && !slices.Contains(routes, a.Route) {
					want = append(want, a.Route)
				}
			}
			if !slices.Equal(got[role], want) {
				t.Errorf("%s: got %v, want %v", role, got[role], want)
			}
		}
		if !slices.Contains(got["sales_manager"], "customers.bulk_update") || slices.Contains(got["sales"], "customers.list") {
			t.Errorf("unexpected grants: %v", got)
		}
	})
	t.Run("a user seen only before the window is not seen", func(t *testing.T) {
		if len(r.UsersNotSeen) != 1 || r.UsersNotSeen[0].User != "gone" || r.UsersNotSeen[0].LastSeen != "2026-09-01T09:00:00Z" {
			t.Errorf("got %v", r.UsersNotSeen)
		}
	})
	t.Run("an elevation without a review is listed with its reviewers", func(t *testing.T) {
		if len(r.ElevationsNotReviewed) != 1 {
			t.Fatalf("got %v", r.ElevationsNotReviewed)
		}
		e := r.ElevationsNotReviewed[0]
		if e.ID != "el-1" || e.User != "li" || e.Requests != 2 || e.Reason != "ticket 4711" || !slices.Equal(e.ReviewBy, []string{"compliance"}) {
			t.Errorf("got %+v", e)
		}
	})
	t.Run("approved grants no export used are listed, with everyone who approved them", func(t *testing.T) {
		// a-2 (a page event of an older log), a-3 (both steps, recorded in
		// workflow); a-4 waits for its second step: no grant yet.
		if len(r.GrantsNeverUsed) != 2 || r.GrantsNeverUsed[0].ID != "a-2" || r.GrantsNeverUsed[1].ID != "a-3" ||
			!slices.Equal(r.GrantsNeverUsed[1].By, []string{"mgr", "zhou"}) {
			t.Errorf("got %+v", r.GrantsNeverUsed)
		}
	})
	t.Run("text and json say the same", func(t *testing.T) {
		var out, errOut bytes.Buffer
		o := ReviewOptions{RulesFile: exampleRules, Since: "30d", Now: "2026-11-20T00:00:00Z"}
		if code := ReviewCommand(o, []string{p}, &out, &errOut); code != 0 {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		for _, s := range []string{"gone", "el-1", "a-2", "observer"} {
			if !strings.Contains(out.String(), s) {
				t.Errorf("the text does not mention %s", s)
			}
		}
		out.Reset()
		o.Format = "json"
		if code := ReviewCommand(o, []string{p}, &out, &errOut); code != 0 {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		var back Review
		if err := json.Unmarshal(out.Bytes(), &back); err != nil || len(back.GrantsNeverUsed) != 2 {
			t.Errorf("json: %v %+v", err, back.GrantsNeverUsed)
		}
	})
}

func TestReviewRefusesABadWindow(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit.jsonl")
	_ = os.WriteFile(p, []byte(reviewLog), 0o600)
	var out, errOut bytes.Buffer
	if code := ReviewCommand(ReviewOptions{RulesFile: exampleRules, Since: "ninety days"}, []string{p}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--since") {
		t.Errorf("exit %d: %s", code, errOut.String())
	}
}

func TestReviewCountsAGrantAWriteUsedAsUsed(t *testing.T) {
	const log = `{"time":"2026-11-08T10:00:00Z","user":"wang","roles":["sales","sales_manager"],"method":"POST","path":"/.crmguard/approvals/h-1/approve","decision":"workflow","status":200,"records_in":0,"records_out":0,"export":{},"workflow":{"kind":"approval","id":"h-1","action":"approved","status":"approved","step":"manager","by":"wang"}}
{"time":"2026-11-08T10:01:00Z","user":"wang","roles":["sales","sales_manager"],"method":"POST","path":"/.crmguard/approvals/h-2/approve","decision":"workflow","status":200,"records_in":0,"records_out":0,"export":{},"workflow":{"kind":"approval","id":"h-2","action":"approved","status":"approved","step":"manager","by":"wang"}}
{"time":"2026-11-08T11:00:00Z","user":"zhang","roles":["sales"],"method":"PATCH","path":"/api/customers/7","route":"customers.update","decision":"allow","status":200,"records_in":1,"records_out":1,"export":{},"body_fields":["owner_id"],"grant":{"id":"h-1","policy":"handover","purpose":"moves west","approvers":["wang"]}}
`
	p := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(p, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := BuildReview(ReviewOptions{RulesFile: exampleRules, Since: "30d", Now: "2026-11-20T00:00:00Z"}, []string{p})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GrantsNeverUsed) != 1 || r.GrantsNeverUsed[0].ID != "h-2" {
		t.Errorf("grants never used: %+v; want only h-2 (the handover h-1 was used by its PATCH)", r.GrantsNeverUsed)
	}
}
