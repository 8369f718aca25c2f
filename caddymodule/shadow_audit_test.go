package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/rules"
)

// TestShadowModeAuditSaysWhatWouldHaveBeenBlocked: in shadow mode an answer
// the rules would refuse passes, and the event's reason says so (docs/audit.md,
// docs/rules.md "Shadow mode"), whether the Caddyfile or the rule file asks
// for shadow mode.
func TestShadowModeAuditSaysWhatWouldHaveBeenBlocked(t *testing.T) {
	src, err := os.ReadFile("testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), "\nmode: enforce\n") {
		t.Fatal("testdata/rules.yaml no longer says mode: enforce")
	}
	shadowSet, err := rules.Load("rules.yaml", []byte(strings.Replace(string(src), "\nmode: enforce\n", "\nmode: shadow\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	shadow := rules.Shadow
	setups := []struct {
		name string
		opt  func(*GuardOptions)
	}{
		{"shadow mode from the Caddyfile", func(o *GuardOptions) { o.Mode = &shadow }},
		{"shadow mode from the rule file", func(o *GuardOptions) { o.Rules = func() *rules.Set { return shadowSet } }},
	}
	tests := []struct {
		name, path, contentType, body string
		wantReason                    string
	}{
		{"a download on a route that is no export", "/files/x.csv", "text/csv", "a,b\n1,2\n", "shadow mode, not enforced: "},
		{"an answer that passes keeps the decision's reason", "/api/customers", "application/json", customers, "role sales may call customers.list"},
	}
	for _, s := range setups {
		for _, tt := range tests {
			t.Run(s.name+": "+tt.name, func(t *testing.T) {
				set := loadTestRules(t)
				sink := &memSink{}
				opt := GuardOptions{Rules: func() *rules.Set { return set }, Audit: sink, Provider: &testProvider{user: zhang}}
				s.opt(&opt)
				g, err := NewGuard(opt)
				if err != nil {
					t.Fatal(err)
				}
				up := &upstream{header: http.Header{"Content-Type": {tt.contentType}}, body: []byte(tt.body)}
				rec := serve(t, g, httptest.NewRequest("GET", tt.path, nil), up)
				if rec.Code != http.StatusOK || rec.Body.String() != tt.body {
					t.Errorf("the client got %d %q, want the CRM's answer unchanged", rec.Code, rec.Body.String())
				}
				ev := sink.last(t)
				if !ev.Shadow || ev.Decision != "allow" || !strings.HasPrefix(ev.Reason, tt.wantReason) {
					t.Errorf("event shadow %v, decision %q, reason %q; want shadow, allow and a reason starting %q", ev.Shadow, ev.Decision, ev.Reason, tt.wantReason)
				}
			})
		}
	}
}
