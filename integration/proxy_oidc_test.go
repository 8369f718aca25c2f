package integration

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
)

// TestProxyWiresTheOIDCProvider loads the Caddyfile shape (an
// oidc and a session block) into Caddy and checks that identities come
// from the OIDC provider: public routes pass, everything else is
// challenged and never reaches the CRM, whatever the client claims to be.
// The sign-in flows themselves are tested in caddymodule/oidc.
func TestProxyWiresTheOIDCProvider(t *testing.T) {
	dir := t.TempDir()
	crm := newProxyCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", proxyRulesFile(t))
	// The issuer is a closed loopback port: discovery fails, which must
	// never let a request through.
	site := fmt.Sprintf(`http://127.0.0.1:{PORT} {
	crm_guard {
		rules %s
		oidc {
			issuer http://127.0.0.1:%d
			client_id crm
			client_secret not-a-real-secret
		}
		session {
			secret 0123456789abcdef0123456789abcdef
			store file %s
			insecure_cookie
		}
		audit %s
		max_body 16MiB
		hash_key test-hash-key
	}
	reverse_proxy %s
}
`, rulesPath, proxyFreePort(t), filepath.Join(dir, "sessions"), filepath.Join(dir, "audit.jsonl"), crm.hostPort())
	srv := proxyStart(t, dir, site)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	tests := []struct {
		name    string
		path    string
		headers map[string]string
		public  bool
	}{
		{name: "a public route passes without a sign-in", path: "/healthz", public: true},
		{name: "an API client without a token is challenged", path: "/api/customers", headers: map[string]string{"Accept": "application/json"}},
		{name: "a browser without a session is challenged", path: "/api/customers", headers: map[string]string{"Accept": "text/html"}},
		{name: "a forged bearer token is not an identity", path: "/api/customers", headers: map[string]string{"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ6aGFuZyJ9."}},
		{name: "a tampered session cookie is not an identity", path: "/api/customers", headers: map[string]string{"Cookie": "crmguard_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}},
		{name: "identity headers are not an identity", path: "/api/customers", headers: map[string]string{"X-Forwarded-User": "zhang", "X-CRM-User": "zhang", "X-Test-User": "zhang"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := crm.count()
			resp := proxyGet(t, client, "GET", srv.URL+tt.path, "", tt.headers)
			body := proxyBody(t, resp)
			if tt.public {
				if resp.StatusCode != 200 {
					t.Fatalf("want 200, got %d: %s", resp.StatusCode, body)
				}
				return
			}
			if resp.StatusCode == 200 || resp.StatusCode >= 500 && resp.StatusCode != 503 {
				t.Fatalf("want a challenge (401, a redirect, or 503 while the provider is down), got %d: %s", resp.StatusCode, body)
			}
			if crm.count() > before {
				t.Fatalf("an unauthenticated request reached the CRM (status %d)", resp.StatusCode)
			}
			t.Logf("status %d", resp.StatusCode)
		})
	}
}
