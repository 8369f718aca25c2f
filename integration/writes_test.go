package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crmguard/crmguard/examples/crm"
)

// TestDemoStackJudgesWritesByWhatTheySet drives the three ownership moves
// through Caddy with the example rule file, the example CRM and real
// sign-ins: a claim from the public pool, a manager's bulk reassignment,
// and a DELETE. Every refusal is shown to have reached the CRM not at all
// (its record of write requests is unchanged) and to have left the data
// as it was.
func TestDemoStackJudgesWritesByWhatTheySet(t *testing.T) {
	d := startDemo(t, filepath.Join(repoRoot(t), "examples", "rules.yaml"))
	now := time.Now()
	truth := d.CRM.Data()
	pool := now.Add(-8760 * time.Hour)
	find := func(what string, ok func(c *crm.Customer) bool, skip ...int) *crm.Customer {
		t.Helper()
		for _, c := range truth.Customers {
			if ok(c) && !slices.Contains(skip, c.ID) {
				return c
			}
		}
		t.Fatalf("the demo data has no %s", what)
		return nil
	}
	poolA := find("pool customer of another team", func(c *crm.Customer) bool { return c.Team != "east" && c.LastContactAt.Before(pool) })
	poolB := find("second pool customer of another team", func(c *crm.Customer) bool { return c.Team != "east" && c.LastContactAt.Before(pool) }, poolA.ID)
	teamC := find("team customer of another rep, not in the pool", func(c *crm.Customer) bool {
		return c.Team == "east" && c.OwnerID != "zhang" && c.LastContactAt.After(pool.Add(24*time.Hour))
	})
	team2 := find("second team customer of another rep", func(c *crm.Customer) bool { return c.Team == "east" && c.OwnerID != "zhang" }, teamC.ID)
	foreign := find("customer of another team, not in the pool", func(c *crm.Customer) bool {
		return c.Team != "east" && c.LastContactAt.After(pool.Add(24*time.Hour))
	})

	send := func(t *testing.T, c *http.Client, method, path, body string) (int, string) {
		t.Helper()
		resp, answer := sendJSON(t, c, d, method, path, rawJSON(body))
		return resp.StatusCode, answer
	}
	signIn := func(user string) *http.Client {
		c := browserLike(t)
		if resp, body := signInHTTP(t, c, d, user, "/", now); resp.StatusCode != 200 || !strings.Contains(body, "Signed in as <b>"+user+"</b>") {
			t.Fatalf("signing in %s: status %d\n%.300s", user, resp.StatusCode, body)
		}
		return c
	}
	zhang, wang := signIn("zhang"), signIn("wang")
	owner := func(id int) string {
		for _, c := range d.CRM.Data().Customers {
			if c.ID == id {
				return c.OwnerID
			}
		}
		return "(deleted)"
	}
	// refused checks a refusal and that the CRM received no write.
	refused := func(t *testing.T, c *http.Client, method, path, body string, status int, says ...string) {
		t.Helper()
		before := len(d.CRM.Writes())
		got, answer := send(t, c, method, path, body)
		if got != status {
			t.Fatalf("%s %s: status %d %.300s; want %d", method, path, got, answer, status)
		}
		for _, s := range says {
			if !strings.Contains(answer, s) {
				t.Errorf("the refusal %.300s does not say %q", answer, s)
			}
		}
		if w := d.CRM.Writes(); len(w) != before {
			t.Errorf("the CRM received %q", w[before:])
		}
	}

	t.Run("a rep claims a pool customer of another team for themselves", func(t *testing.T) {
		status, body := send(t, zhang, "PATCH", fmt.Sprintf("/api/customers/%d", poolA.ID), `{"owner_id":"zhang"}`)
		if status != 200 || owner(poolA.ID) != "zhang" {
			t.Fatalf("status %d %.300s; the CRM's owner is %q", status, body, owner(poolA.ID))
		}
	})
	t.Run("a rep may not claim a team customer that is not in the pool", func(t *testing.T) {
		refused(t, zhang, "PATCH", fmt.Sprintf("/api/customers/%d", teamC.ID), `{"owner_id":"zhang"}`, 403, "customers.update")
		if got := owner(teamC.ID); got != teamC.OwnerID {
			t.Errorf("customer %d moved to %q", teamC.ID, got)
		}
	})
	t.Run("a rep may not set another owner on a pool customer", func(t *testing.T) {
		refused(t, zhang, "PATCH", fmt.Sprintf("/api/customers/%d", poolB.ID), `{"owner_id":"wu"}`, 403, "customers.update")
		if got := owner(poolB.ID); got != poolB.OwnerID {
			t.Errorf("customer %d moved to %q", poolB.ID, got)
		}
	})
	t.Run("a rep may not hide a second owner in the claim", func(t *testing.T) {
		refused(t, zhang, "PATCH", fmt.Sprintf("/api/customers/%d", poolB.ID), `{"owner_id":"zhang","Owner_ID":"wu"}`, 400)
	})
	t.Run("a manager's bulk update naming one customer of another team is refused whole and the CRM receives nothing", func(t *testing.T) {
		body := fmt.Sprintf(`{"ids":[%d,%d,%d],"owner_id":"wu"}`, teamC.ID, foreign.ID, team2.ID)
		refused(t, wang, "POST", "/api/customers/bulk-update", body, 403, "customers.bulk_update")
		for _, c := range []*crm.Customer{teamC, foreign, team2} {
			if got := owner(c.ID); got != c.OwnerID {
				t.Errorf("customer %d moved to %q", c.ID, got)
			}
		}
	})
	t.Run("a manager's bulk update of the team's customers to a direct report goes through", func(t *testing.T) {
		status, body := send(t, wang, "POST", "/api/customers/bulk-update", fmt.Sprintf(`{"ids":[%d,%d],"owner_id":"zhang"}`, teamC.ID, team2.ID))
		if status != 200 || owner(teamC.ID) != "zhang" || owner(team2.ID) != "zhang" {
			t.Fatalf("status %d %.300s; owners %q %q", status, body, owner(teamC.ID), owner(team2.ID))
		}
	})
	t.Run("a DELETE of someone else's customer is refused and the CRM receives nothing", func(t *testing.T) {
		victim := find("team customer of another rep", func(c *crm.Customer) bool {
			return c.Team == "east" && c.OwnerID != "zhang" && c.ID != teamC.ID && c.ID != team2.ID
		})
		refused(t, zhang, "DELETE", fmt.Sprintf("/api/customers/%d", victim.ID), "", 403, "customers.delete")
		if owner(victim.ID) == "(deleted)" {
			t.Errorf("customer %d was deleted", victim.ID)
		}
	})
}

// rawJSON is body as sendJSON sends it: as written, or no body for "".
func rawJSON(body string) any {
	if body == "" {
		return nil
	}
	return json.RawMessage(body)
}
