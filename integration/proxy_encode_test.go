package integration

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestProxyEncodeCompressesTheRewrittenAnswer puts Caddy's encode
// directive in the same site: it wraps the guard (no order line), so the
// client gets the rewritten answer compressed, never the CRM's.
func TestProxyEncodeCompressesTheRewrittenAnswer(t *testing.T) {
	dir := t.TempDir()
	crm := newProxyCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", proxyRulesFile(t))
	srv := proxyStart(t, dir, fmt.Sprintf(`http://127.0.0.1:{PORT} {
	encode gzip
	crm_guard {
		rules %s
		identity proxy_test_header
	}
	reverse_proxy %s
}
`, rulesPath, crm.hostPort()))
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	resp := proxyGet(t, client, "GET", srv.URL+"/api/customers?n=60", "zhang", map[string]string{"Accept-Encoding": "gzip"})
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("want a gzip answer, got %d %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(body), `"owner_id":"zhang"`) != 20 || strings.Contains(string(body), `"owner_id":"li"`) {
		t.Fatalf("the compressed answer is not the rewritten one: %.300s", body)
	}
	if got := crm.last().Header.Get("Accept-Encoding"); got != "identity" {
		t.Errorf("the CRM was asked for %q, want identity", got)
	}
}
