package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProxyPathTricksNeverReachRawData sends paths that a lenient legacy
// CRM routes to its customer list (or to a route the rules deny) while
// looking different to a naive matcher. Whatever the guard answers, the
// client must never see a raw phone number, ID number or bank account.
func TestProxyPathTricksNeverReachRawData(t *testing.T) {
	dir := t.TempDir()
	crm := newProxyCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", proxyRulesFile(t))
	srv := proxyStart(t, dir, proxySite(rulesPath, filepath.Join(dir, "audit.jsonl"), crm.hostPort(), ""))
	addr := strings.TrimPrefix(srv.URL, "http://")
	paths := []string{
		"/api/customers",
		"/api/customers/",
		"/api//customers",
		"//api/customers",
		"/API/Customers",
		"/api/customers;jsessionid=1",
		"/api;x=1/customers",
		"/api/customers%3bx",
		"/api/%63ustomers",
		"/api/customers%2f",
		"/api/customers/.",
		"/api/x/../customers",
		"/api/x/%2e%2e/customers",
		"/api/x/%2E%2E/customers",
		"/api/x/%252e%252e/customers",
		"/api/x/..%2fcustomers",
		"/api/x/..%5ccustomers",
		"/api/events/../customers",
		"/api/echo/../customers",
		"/healthz/../api/customers",
		"/healthz/%2e%2e/api/customers",
		"/api/customers%00",
		"/api/customers%20",
		"/api/customers?x=/healthz",
		"/./api/customers",
	}
	var raw []string
	for _, c := range proxyCustomers(9) {
		if c.OwnerID != "zhang" {
			raw = append(raw, fmt.Sprintf(`"owner_id":"%s"`, c.OwnerID))
		}
		raw = append(raw, c.Phone, c.BankAccount, c.IDCard)
	}
	for _, p := range paths {
		t.Run(fmt.Sprintf("the path %q leaks nothing", p), func(t *testing.T) {
			// Raw request line: no client-side cleaning of the path.
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nX-Test-User: zhang\r\nConnection: close\r\n\r\n", p, addr)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, s := range raw {
				if strings.Contains(string(body), s) {
					t.Fatalf("status %d leaked %q: %.300s", resp.StatusCode, s, body)
				}
			}
			t.Logf("status %d", resp.StatusCode)
		})
	}
}

// TestProxyOversizeRequestBodyOnAGuardedRoute sends a body larger than
// max_body, chunked (no Content-Length to trust), to a route with body
// guards: 413, and nothing reaches the CRM.
func TestProxyOversizeRequestBodyOnAGuardedRoute(t *testing.T) {
	dir := t.TempDir()
	crm := newProxyCRM(t)
	rules := proxyRulesFile(t) + `
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales]
    body:
      stage: {deny: [sales]}
`
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", rules)
	srv := proxyStart(t, dir, proxySite(rulesPath, filepath.Join(dir, "audit.jsonl"), crm.hostPort(), ""))
	tests := []struct {
		name string
		body string
		want int
	}{
		{name: "a chunked body over max_body is refused with 413", body: `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, want: 413},
		{name: "a guarded field hidden in a nested array is refused with 403", body: `{"items":[{"id":1,"stage":"won"}]}`, want: 403},
		{name: "a duplicate key carrying the guarded field is refused", body: `{"name":"x","stage":"lead","stage":"won"}`, want: 403},
		{name: "an escaped key is still the guarded field", body: `{"st\u0061ge":"won"}`, want: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := crm.count()
			pr, pw := io.Pipe()
			go func() {
				_, _ = pw.Write([]byte(tt.body))
				_ = pw.Close()
			}()
			req, _ := http.NewRequest("PATCH", srv.URL+"/api/customers/7", pr)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Test-User", "zhang")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			proxyBody(t, resp)
			if resp.StatusCode != tt.want {
				t.Fatalf("want %d, got %d", tt.want, resp.StatusCode)
			}
			if crm.count() != before {
				t.Fatalf("the refused body reached the CRM")
			}
		})
	}
}
