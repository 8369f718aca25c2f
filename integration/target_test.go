package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// targetRulesFile judges customer changes against the stored customer: a
// rep changes only own customers, service any.
const targetRulesFile = `version: 1
roles: {sales: {}, sales_manager: {inherits: [sales]}, service: {}}
routes:
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales, service]
    body:
      stage: {deny: [service]}
    target:
      fetch: "/api/customers/{id}"
      allow_if: record.owner_id == user.id || "service" in user.roles
`

// targetCRM is a CRM that logs every request it receives and serves
// customers 1 (zhang's) and 2 (wu's).
type targetCRM struct {
	*httptest.Server
	mu  sync.Mutex
	log []string // "METHOD /path user=X body=..."
}

func newTargetCRM(t *testing.T) *targetCRM {
	c := &targetCRM{}
	owners := map[string]string{"1": "zhang", "2": "wu"}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.log = append(c.log, r.Method+" "+r.URL.RequestURI()+" user="+r.Header.Get("X-CRM-User")+" body="+string(b))
		c.mu.Unlock()
		id := strings.TrimPrefix(r.URL.Path, "/api/customers/")
		owner, ok := owners[id]
		w.Header().Set("Content-Type", "application/json")
		switch {
		case !ok:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"not found"}`))
		case r.Method == http.MethodGet:
			_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "owner_id": owner, "team": "east"})
		default:
			_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "owner_id": owner, "updated": true})
		}
	}))
	t.Cleanup(c.Close)
	return c
}

// take returns and clears the CRM's log.
func (c *targetCRM) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.log
	c.log = nil
	return out
}

// targetAuditEvents waits until the audit file holds n events (an event is
// written as the handler returns, which may be just after the client has
// its answer) and returns them.
func targetAuditEvents(t *testing.T, path string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs := readAuditEvents(t, path)
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d audit events, want %d", len(evs), n)
		}
		// Wait for the writer, not for time: yield and re-read.
		_, _ = os.Stat(path)
	}
}

func TestWritesAreJudgedAgainstTheStoredRecordThroughCaddy(t *testing.T) {
	dir := t.TempDir()
	crm := newTargetCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", targetRulesFile)
	auditPath := filepath.Join(dir, "audit.jsonl")
	srv := proxyStart(t, dir, proxySite(rulesPath, auditPath, strings.TrimPrefix(crm.URL, "http://"), ""))
	client := &http.Client{}

	patch := func(t *testing.T, user, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPatch, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Test-User", user)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	events := 0
	cases := []struct {
		name, user, path, body string
		wantStatus             int
		wantCRM                []string
		wantInBody             string
		wantTarget             map[string]any // nil: no target in the audit event
	}{
		{"a rep's change to an own customer reaches the CRM after the fetch", "zhang", "/api/customers/1", `{"notes":"called"}`, 200,
			[]string{"GET /api/customers/1 user=zhang body=", `PATCH /api/customers/1 user=zhang body={"notes":"called"}`}, `"updated":true`,
			map[string]any{"fetched": "/api/customers/1", "status": 200.0, "allowed": true}},
		{"a rep's change to another rep's customer is refused and the CRM never sees the PATCH", "zhang", "/api/customers/2", `{"notes":"mine now"}`, 403,
			[]string{"GET /api/customers/2 user=zhang body="}, "you may not change this record",
			map[string]any{"fetched": "/api/customers/2", "status": 200.0, "allowed": false}},
		{"service changes another rep's customer", "li", "/api/customers/2", `{"notes":"ticket closed"}`, 200,
			[]string{"GET /api/customers/2 user=li body=", `PATCH /api/customers/2 user=li body={"notes":"ticket closed"}`}, `"updated":true`,
			map[string]any{"fetched": "/api/customers/2", "status": 200.0, "allowed": true}},
		{"a change to a customer the CRM does not have is 404 and not sent", "zhang", "/api/customers/77", `{"notes":"x"}`, 404,
			[]string{"GET /api/customers/77 user=zhang body="}, "does not exist",
			map[string]any{"fetched": "/api/customers/77", "status": 404.0, "allowed": false}},
		{"an id that would climb to another path is refused before anything reaches the CRM", "zhang", "/api/customers/2%2F..%2F1", `{"notes":"x"}`, 400,
			nil, "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := patch(t, c.user, c.path, c.body)
			if status != c.wantStatus || !strings.Contains(body, c.wantInBody) {
				t.Errorf("status %d %s; want %d containing %q", status, body, c.wantStatus, c.wantInBody)
			}
			events++
			evs := targetAuditEvents(t, auditPath, events)
			if got := crm.take(); strings.Join(got, "\n") != strings.Join(c.wantCRM, "\n") {
				t.Errorf("the CRM received:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.wantCRM, "\n"))
			}
			ev := evs[len(evs)-1]
			got, _ := ev["target"].(map[string]any)
			if c.wantTarget == nil {
				if got != nil {
					t.Errorf("audit target %v, want none", got)
				}
				return
			}
			for k, want := range c.wantTarget {
				if got[k] != want {
					t.Errorf("audit target %s = %v, want %v (event %v)", k, got[k], want, ev)
				}
			}
			if ev["route"] != "customers.update" || ev["status"] != float64(c.wantStatus) {
				t.Errorf("audit event %v", ev)
			}
		})
	}
}
