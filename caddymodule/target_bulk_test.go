package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/crmguard/crmguard/rules"
)

const bulkTargetRules = `version: 1
roles: {sales: {}}
routes:
  - id: customers.bulk
    match: {methods: [POST], path: /api/customers/bulk-update}
    allow: [sales]
    target:
      ids: ids.#
      fetch: "/api/customers/{id}"
      allow_if: record.owner_id == user.id
      concurrency: 3
`

// bulkCRM serves customers 1-9: 5 is wu's, the others zhang's. A fetch
// waits until three fetches are in flight at once (or, failing that, a
// long timeout, which fails the test), so the guard's concurrency shows.
type bulkCRM struct {
	mu       sync.Mutex
	inFlight int
	most     int
	gate     chan struct{}
	gateOnce sync.Once
	calls    []string
}

func newBulkCRM() *bulkCRM { return &bulkCRM{gate: make(chan struct{})} }

func (c *bulkCRM) handler() caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.calls = append(c.calls, r.Method+" "+r.URL.RequestURI()+" "+string(b))
		if !IsTargetFetch(r) {
			c.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"updated":true}`))
			return nil
		}
		c.inFlight++
		c.most = max(c.most, c.inFlight)
		if c.inFlight == 3 {
			c.gateOnce.Do(func() { close(c.gate) })
		}
		c.mu.Unlock()
		select {
		case <-c.gate:
		case <-time.After(10 * time.Second):
		}
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
		id := strings.TrimPrefix(r.URL.Path, "/api/customers/")
		owner := "zhang"
		if id == "5" {
			owner = "wu"
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"id":%s,"owner_id":%q,"notes":"a record of some length to fill the answer"}`, id, owner)
		return nil
	})
}

func (c *bulkCRM) writes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, s := range c.calls {
		if strings.HasPrefix(s, "POST ") {
			out = append(out, s)
		}
	}
	return out
}

func TestABulkWriteIsForwardedOnlyWhenEveryRecordAllowsIt(t *testing.T) {
	set, err := rules.Load("bulk.yaml", []byte(bulkTargetRules))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		body    string
		maxBody int64
		status  int
		writes  int
		says    string
		target  rules.TargetAudit // without Reason and Fetched
	}{
		{name: "seven own customers are fetched, three at a time, and the write goes on", body: `{"ids":[1,2,3,4,6,7,8],"notes":"x"}`, status: 200, writes: 1,
			target: rules.TargetAudit{Status: 200, Allowed: true, IDs: []string{"1", "2", "3", "4", "6", "7", "8"}, Fetches: 7}},
		{name: "one customer of another rep refuses the whole write and the CRM receives nothing", body: `{"ids":[1,2,3,5,6,7],"notes":"x"}`, status: 403, says: "record 5",
			target: rules.TargetAudit{Status: 200, IDs: []string{"1", "2", "3", "5", "6", "7"}, Fetches: 6, Refused: "5"}},
		{name: "answers larger than max_body together refuse the write", body: `{"ids":[1,2,3,4,6,7],"notes":"x"}`, maxBody: 300, status: 502, says: "together",
			target: rules.TargetAudit{Status: 200, IDs: []string{"1", "2", "3", "4", "6", "7"}, Fetches: 6}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sink := &memSink{}
			maxBody := c.maxBody
			if maxBody == 0 {
				maxBody = 1 << 20
			}
			g, err := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Audit: sink, MaxBody: maxBody, Provider: &testProvider{user: &testUser{id: "zhang", roles: []string{"sales"}}}})
			if err != nil {
				t.Fatal(err)
			}
			crm := newBulkCRM()
			r := httptest.NewRequest(http.MethodPost, "/api/customers/bulk-update", strings.NewReader(c.body))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Accept", "application/json")
			w := httptest.NewRecorder()
			if err := g.ServeHTTP(w, r, crm.handler()); err != nil {
				t.Fatal(err)
			}
			if w.Code != c.status || !strings.Contains(w.Body.String(), c.says) {
				t.Fatalf("status %d %s; want %d saying %q", w.Code, w.Body, c.status, c.says)
			}
			if got := crm.writes(); len(got) != c.writes {
				t.Errorf("the CRM received the writes %q; want %d", got, c.writes)
			}
			if c.maxBody == 0 && crm.most != 3 {
				t.Errorf("at most %d fetches ran at once; want 3 (the route's concurrency)", crm.most)
			}
			ev := sink.last(t)
			if ev.Target == nil {
				t.Fatal("the audit event has no target")
			}
			got := *ev.Target
			if c.status != 200 && !strings.Contains(got.Reason, c.says) {
				t.Errorf("audit reason %q does not say %q", got.Reason, c.says)
			}
			if c.status == 502 {
				// Which answer ran out of the shared budget depends on the
				// order the fetches finished in; one is named.
				if got.Refused == "" {
					t.Error("the audit names no record whose answer ran out of the budget")
				}
				got.Refused = ""
			}
			got.Reason, got.Fetched = "", ""
			if !reflect.DeepEqual(got, c.target) {
				t.Errorf("audit target %+v, want %+v", got, c.target)
			}
		})
	}
}
