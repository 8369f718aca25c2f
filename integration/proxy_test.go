package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// proxyRulesFile returns the integration rule file's content.
func proxyRulesFile(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "proxy_rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// proxySite is the Caddyfile site of most tests: the guard with the test
// identity in front of the fake CRM.
func proxySite(rulesPath, auditPath, crm string, extra string) string {
	return fmt.Sprintf(`http://127.0.0.1:{PORT} {
	crm_guard {
		rules %s
		identity proxy_test_header
		audit %s
		max_body 64KiB
		reload_interval 50ms
		%s
	}
	reverse_proxy %s
}
`, rulesPath, auditPath, extra, crm)
}

func proxyBody(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestProxyEndToEnd(t *testing.T) {
	dir := t.TempDir()
	crm := newProxyCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", proxyRulesFile(t))
	auditPath := filepath.Join(dir, "audit.jsonl")
	srv := proxyStart(t, dir, proxySite(rulesPath, auditPath, crm.hostPort(), ""))
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}

	t.Run("a sales rep sees only own customers with phones and ID numbers masked and bank accounts removed", func(t *testing.T) {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/customers", "zhang", nil)
		body := proxyBody(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var got struct {
			List  []map[string]any `json:"list"`
			Total float64          `json:"total"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("not JSON: %v", err)
		}
		if len(got.List) != 3 {
			t.Fatalf("want zhang's 3 of 9 customers, got %d", len(got.List))
		}
		for _, c := range got.List {
			if c["owner_id"] != "zhang" {
				t.Errorf("a customer of %v leaked", c["owner_id"])
			}
			if _, ok := c["bank_account"]; ok {
				t.Errorf("bank_account not removed: %v", c)
			}
			if p, _ := c["phone"].(string); !strings.Contains(p, "****") {
				t.Errorf("phone not masked: %q", p)
			}
		}
		for _, c := range proxyCustomers(9) {
			if strings.Contains(body, c.Phone) || strings.Contains(body, c.BankAccount) || strings.Contains(body, c.IDCard) {
				t.Fatalf("a raw sensitive value reached the client: %s", body)
			}
		}
		if cl := resp.Header.Get("Content-Length"); cl != fmt.Sprint(len(body)) {
			t.Errorf("Content-Length %s for a %d-byte body", cl, len(body))
		}
		if resp.Header.Get("ETag") != "" || resp.Header.Get("Last-Modified") != "" || resp.Header.Get("Accept-Ranges") != "" {
			t.Errorf("validators of the CRM's bytes kept after a rewrite: %v", resp.Header)
		}
	})

	t.Run("a manager sees every customer and unmasked phones", func(t *testing.T) {
		body := proxyBody(t, proxyGet(t, client, "GET", srv.URL+"/api/customers", "wang", nil))
		if !strings.Contains(body, proxyCustomers(9)[1].Phone) || strings.Count(body, `"owner_id"`) != 9 {
			t.Fatalf("manager view wrong: %s", body)
		}
	})

	t.Run("a gzip answer from the CRM is decoded and rewritten", func(t *testing.T) {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/customers?shape=gzip", "zhang", map[string]string{"Accept-Encoding": "gzip"})
		body := proxyBody(t, resp)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "" {
			t.Fatalf("status %d encoding %q: %.200s", resp.StatusCode, resp.Header.Get("Content-Encoding"), body)
		}
		if strings.Count(body, `"owner_id":"zhang"`) != 3 || strings.Contains(body, `"owner_id":"li"`) {
			t.Fatalf("the gzip answer was not filtered: %.300s", body)
		}
	})

	t.Run("a br answer from the CRM is decoded and rewritten", func(t *testing.T) {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/customers?shape=br", "zhang", map[string]string{"Accept-Encoding": "br"})
		body := proxyBody(t, resp)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "" {
			t.Fatalf("status %d encoding %q: %.200s", resp.StatusCode, resp.Header.Get("Content-Encoding"), body)
		}
		if strings.Count(body, `"owner_id":"zhang"`) != 3 || strings.Contains(body, `"owner_id":"li"`) {
			t.Fatalf("the br answer was not filtered: %.300s", body)
		}
	})

	t.Run("a Range request on a rewriting route gets the whole rewritten answer, never raw bytes", func(t *testing.T) {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/customers", "zhang", map[string]string{"Range": "bytes=0-40"})
		body := proxyBody(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("want 200 with the full rewritten list, got %d: %s", resp.StatusCode, body)
		}
		if !json.Valid([]byte(body)) || strings.Contains(body, proxyCustomers(9)[0].Phone) {
			t.Fatalf("not the rewritten document: %s", body)
		}
		if r := crm.last(); r.Header.Get("Range") != "" {
			t.Errorf("the Range header reached the CRM: %q", r.Header.Get("Range"))
		}
	})

	t.Run("a CRM that answers 206 on a rewriting route gives 502 and no raw bytes", func(t *testing.T) {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/customers?shape=partial", "zhang", nil)
		body := proxyBody(t, resp)
		if resp.StatusCode != 502 || strings.Contains(body, `"list"`) || strings.Contains(body, "138") {
			t.Fatalf("want 502 without CRM bytes, got %d: %s", resp.StatusCode, body)
		}
	})

	t.Run("a list over max_body streams rewritten and no raw value of it leaks", func(t *testing.T) {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/customers?n=600", "zhang", nil)
		body := proxyBody(t, resp)
		if resp.StatusCode != 200 || resp.ContentLength != -1 {
			t.Fatalf("want a streamed 200, got %d (length %d)", resp.StatusCode, resp.ContentLength)
		}
		var doc struct{ List []proxyCustomer }
		if err := json.Unmarshal([]byte(body), &doc); err != nil || len(doc.List) != 200 {
			t.Fatalf("want zhang's 200 of 600 customers as JSON (%v), got %.300s", err, body)
		}
		for _, c := range proxyCustomers(600) {
			if strings.Contains(body, c.Phone) || strings.Contains(body, c.BankAccount) || strings.Contains(body, c.IDCard) {
				t.Fatalf("customer %d leaked: %.300s", c.ID, body)
			}
		}
	})

	t.Run("a compressed answer over max_body cannot stream and gives 502", func(t *testing.T) {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/customers?n=600&shape=gzip", "zhang", nil)
		body := proxyBody(t, resp)
		var refusal struct{ Error, Rule, Reason string }
		if resp.StatusCode != 502 || json.Unmarshal([]byte(body), &refusal) != nil || refusal.Rule != "customers.list" {
			t.Fatalf("want a JSON refusal naming the route, got %d: %.300s", resp.StatusCode, body)
		}
	})

	t.Run("an answer that is not JSON on a rewriting route gives 502", func(t *testing.T) {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/customers?shape=html", "zhang", nil)
		body := proxyBody(t, resp)
		if resp.StatusCode != 502 || strings.Contains(body, "13810000000") {
			t.Fatalf("want 502 without the CRM's page, got %d: %s", resp.StatusCode, body)
		}
	})

	t.Run("a route no rule matches is refused with 403", func(t *testing.T) {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/secret-admin", "zhang", nil)
		body := proxyBody(t, resp)
		if resp.StatusCode != 403 || !strings.Contains(body, `"error":"forbidden"`) {
			t.Fatalf("want 403 JSON, got %d: %s", resp.StatusCode, body)
		}
		if r := crm.last(); r != nil && r.URL.Path == "/api/secret-admin" {
			t.Errorf("a denied request reached the CRM")
		}
	})

	t.Run("a browser gets a readable page when refused", func(t *testing.T) {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/secret-admin", "zhang", map[string]string{"Accept": "text/html,*/*"})
		body := proxyBody(t, resp)
		if resp.StatusCode != 403 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, "<h1>") {
			t.Fatalf("want an HTML 403 page, got %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	})

	t.Run("a CSV download on a route not marked export is blocked", func(t *testing.T) {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/reports/customers.csv", "zhang", nil)
		body := proxyBody(t, resp)
		if resp.StatusCode != 403 || strings.Contains(body, "13810000000") || resp.Header.Get("Content-Disposition") != "" {
			t.Fatalf("want 403 without the file, got %d %v: %s", resp.StatusCode, resp.Header, body)
		}
	})

	t.Run("forged identity headers are stripped and the verified identity is sent", func(t *testing.T) {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/echo", "zhang", map[string]string{
			"X-Forwarded-User":    "admin",
			"X-Auth-Request-User": "admin",
			"X-CRM-User":          "admin",
			"X-CRM-Roles":         "admin",
			"Remote-User":         "admin",
			"X-Remote-User":       "admin",
			"X-Forwarded-Email":   "admin@corp",
			"Cookie":              "crmguard_session=stolen; crm_sid=ok",
		})
		body := proxyBody(t, resp)
		var echo struct{ Headers http.Header }
		if err := json.Unmarshal([]byte(body), &echo); err != nil {
			t.Fatalf("echo: %v: %s", err, body)
		}
		h := echo.Headers
		for _, k := range []string{"X-Forwarded-User", "X-Auth-Request-User", "Remote-User", "X-Remote-User", "X-Forwarded-Email"} {
			if v := h.Get(k); v != "" {
				t.Errorf("%s reached the CRM: %q", k, v)
			}
		}
		if h.Get("X-Crm-User") != "zhang" || h.Get("X-Crm-Roles") != "sales" {
			t.Errorf("identity headers: user %q roles %q", h.Get("X-Crm-User"), h.Get("X-Crm-Roles"))
		}
		if h.Get("Cookie") != "crm_sid=ok" {
			t.Errorf("Cookie at the CRM: %q", h.Get("Cookie"))
		}
	})

	t.Run("a HEAD request on a rewriting route gets headers without the CRM's length", func(t *testing.T) {
		resp := proxyGet(t, client, "HEAD", srv.URL+"/api/customers", "zhang", nil)
		body := proxyBody(t, resp)
		if resp.StatusCode != 200 || body != "" || resp.Header.Get("ETag") != "" {
			t.Fatalf("HEAD: %d %v %q", resp.StatusCode, resp.Header, body)
		}
	})

	t.Run("every request wrote one audit event", func(t *testing.T) {
		evs := readAuditEvents(t, auditPath)
		if len(evs) != 14 {
			t.Fatalf("want 14 audit events, got %d", len(evs))
		}
		if ev := evs[0]; ev["user"] != "zhang" || ev["route"] != "customers.list" || ev["records_in"] != float64(9) || ev["records_out"] != float64(3) || ev["request_id"] == "" {
			t.Errorf("first event: %v", ev)
		}
	})
}

func TestProxyServerSentEventsStream(t *testing.T) {
	dir := t.TempDir()
	crm := newProxyCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", proxyRulesFile(t))
	srv := proxyStart(t, dir, proxySite(rulesPath, filepath.Join(dir, "audit.jsonl"), crm.hostPort(), ""))
	// A buffered stream would never end (the CRM holds it open): the
	// client timeout turns that into a failure.
	client := &http.Client{Timeout: 10 * time.Second}
	resp := proxyGet(t, client, "GET", srv.URL+"/api/events", "zhang", map[string]string{"Accept": "text/event-stream"})
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The CRM holds the stream open until release is closed; the event
	// must arrive before that.
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if line != "event: update\n" {
		t.Fatalf("first line %q", line)
	}
	select {
	case <-crm.release:
		t.Fatal("the stream was closed before the event arrived")
	default:
	}
	close(crm.release)
}

func TestProxyBrokenRulesFileKeepsTheRunningRules(t *testing.T) {
	dir := t.TempDir()
	crm := newProxyCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", proxyRulesFile(t))
	srv := proxyStart(t, dir, proxySite(rulesPath, filepath.Join(dir, "audit.jsonl"), crm.hostPort(), ""))
	client := &http.Client{}
	expectOld := func() {
		t.Helper()
		resp := proxyGet(t, client, "GET", srv.URL+"/api/customers", "zhang", nil)
		body := proxyBody(t, resp)
		if resp.StatusCode != 200 || strings.Count(body, `"owner_id"`) != 3 {
			t.Fatalf("the running rules changed: %d %s", resp.StatusCode, body)
		}
	}
	expectOld()

	// A typo: `visibel` is not a key; the loader refuses the file.
	broken := strings.Replace(proxyRulesFile(t), "    visible:", "    visibel:", 1)
	proxyWriteFile(t, dir, "rules.yaml", broken)
	line := proxyWaitForLog(t, srv.LogFile, 10*time.Second, expectOld, "did not load", "rules.yaml:")
	if !strings.Contains(line, "visibel") {
		t.Errorf("the log does not name the bad key: %s", line)
	}
	expectOld()

	// A fix that compiles and changes the rules: service may no longer list.
	fixed := strings.Replace(proxyRulesFile(t), "allow: [sales, service]", "allow: [service]", 1)
	proxyWriteFile(t, dir, "rules.yaml", fixed)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/customers", "zhang", nil)
		status := resp.StatusCode
		proxyBody(t, resp)
		if status == 403 {
			break
		}
		if status != 200 || time.Now().After(deadline) {
			t.Fatalf("the fixed file was not applied: status %d", status)
		}
	}
}

func TestProxyCaddyReloadWithABrokenRulesFileIsRefused(t *testing.T) {
	dir := t.TempDir()
	crm := newProxyCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", proxyRulesFile(t))
	site := proxySite(rulesPath, filepath.Join(dir, "audit.jsonl"), crm.hostPort(), "")
	srv := proxyStart(t, dir, site)
	brokenPath := proxyWriteFile(t, dir, "broken.yaml", "version: 1\nroutes: [\n")
	port := strings.TrimPrefix(srv.URL, "http://127.0.0.1:")
	cfg := proxyAdapt(t, proxyGlobals(dir)+strings.ReplaceAll(strings.ReplaceAll(site, rulesPath, brokenPath), "{PORT}", port))
	err := caddy.Load(cfg, true)
	if err == nil || !strings.Contains(err.Error(), "broken.yaml") {
		t.Fatalf("want the reload refused naming the file, got %v", err)
	}
	resp := proxyGet(t, http.DefaultClient, "GET", srv.URL+"/api/customers", "zhang", nil)
	if body := proxyBody(t, resp); resp.StatusCode != 200 || strings.Count(body, `"owner_id"`) != 3 {
		t.Fatalf("the running config stopped working: %d %s", resp.StatusCode, body)
	}
}

func TestProxyWithoutOIDCOnlyPublicRoutesSucceed(t *testing.T) {
	dir := t.TempDir()
	crm := newProxyCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", proxyRulesFile(t))
	srv := proxyStart(t, dir, fmt.Sprintf("http://127.0.0.1:{PORT} {\n\tcrm_guard {\n\t\trules %s\n\t}\n\treverse_proxy %s\n}\n", rulesPath, crm.hostPort()))
	tests := []struct {
		name string
		path string
		want int
	}{
		{name: "a public route succeeds", path: "/healthz", want: 200},
		{name: "a role route answers 401", path: "/api/customers", want: 401},
		{name: "an unmatched route is still refused", path: "/api/nothing", want: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// X-Test-User is ignored: no identity module is configured.
			resp := proxyGet(t, http.DefaultClient, "GET", srv.URL+tt.path, "zhang", nil)
			proxyBody(t, resp)
			if resp.StatusCode != tt.want {
				t.Fatalf("want %d, got %d", tt.want, resp.StatusCode)
			}
			if tt.want == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %v", resp.Header)
			}
		})
	}
}
