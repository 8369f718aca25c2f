package integration

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestRedTeamHostPrefixedCookiesNeverReachTheCRM: over HTTPS the proxy's
// session and sign-in cookies are named __Host-<name>; the guard must strip
// that spelling before the CRM (on the request and on a target's record
// fetch) and drop a CRM's Set-Cookie for it, as for the plain names.
func TestRedTeamHostPrefixedCookiesNeverReachTheCRM(t *testing.T) {
	var mu sync.Mutex
	var seen []string // Cookie header of every request the CRM received
	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.Header.Get("Cookie"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Add("Set-Cookie", "__Host-crmguard_session=planted; Path=/; Secure")
		w.Header().Add("Set-Cookie", "__Secure-crmguard_session_signin_abc=planted; Path=/; Secure")
		w.Header().Add("Set-Cookie", "crm_sid=fresh; Path=/")
		_, _ = w.Write([]byte(`{"id":"1","owner_id":"zhang"}`))
	}))
	t.Cleanup(crm.Close)
	dir := t.TempDir()
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", redteamTargetRules)
	auditPath := filepath.Join(dir, "audit.jsonl")
	srv := proxyStart(t, dir, proxySite(rulesPath, auditPath, strings.TrimPrefix(crm.URL, "http://"), ""))

	cookie := "__Host-crmguard_session=s1; crm_sid=abc; __Host-crmguard_session_signin_0123456789=f1; __HOST-CRMGUARD_SESSION=s2; __Secure-crmguard_session=s3; crmguard_session=s4"
	cases := []struct {
		name, method, path string
		wantHits           int
	}{
		{"on a read, only the CRM's own cookie reaches the CRM", "GET", "/api/customers/1", 1},
		{"on a write with a target, neither the record fetch nor the write carries the proxy's cookies", "PATCH", "/api/customers/1", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			h := map[string]string{"Cookie": cookie}
			body := ""
			if c.method == "PATCH" {
				h["Content-Type"] = "application/json"
				body = `{}`
			}
			status, _ := redteamSendHeaders(t, srv.URL, c.method, c.path, h, body, func(resp *http.Response) {
				for _, l := range resp.Header.Values("Set-Cookie") {
					if strings.Contains(strings.ToLower(l), "crmguard") {
						t.Errorf("the CRM's Set-Cookie %q for the proxy's cookie reached the browser", l)
					}
				}
				if !strings.Contains(strings.Join(resp.Header.Values("Set-Cookie"), "\n"), "crm_sid=fresh") {
					t.Errorf("the CRM's own Set-Cookie was dropped: %v", resp.Header.Values("Set-Cookie"))
				}
			})
			if status != 200 {
				t.Fatalf("status %d", status)
			}
			targetAuditSettle(t, auditPath)
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != c.wantHits {
				t.Fatalf("the CRM received %v, want %d requests", seen, c.wantHits)
			}
			for _, s := range seen {
				if !strings.HasSuffix(s, " crm_sid=abc") {
					t.Errorf("the CRM received Cookie %q, want only crm_sid=abc", s)
				}
			}
		})
	}
}
