package integration

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/crmguard/crmguard/internal/listgen"
)

// TestACutStreamedExportResetsItsHTTP2StreamAndKeepsTheConnection sends
// streamed exports that break midway through a real Caddy serving HTTPS
// with HTTP/2: the client reads the rewritten records sent before the
// break, then the body read fails with the stream reset (RST_STREAM
// INTERNAL_ERROR, which net/http's HTTP/2 server sends for
// panic(http.ErrAbortHandler)), never a clean end; the audit event says
// cut; and the next request is served on the same TLS connection, because
// only the stream was reset.
func TestACutStreamedExportResetsItsHTTP2StreamAndKeepsTheConnection(t *testing.T) {
	dir := t.TempDir()
	crm := streamCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", streamRules)
	auditPath := filepath.Join(dir, "audit.jsonl")
	certFile, keyFile, pool := loopbackCert(t, dir)
	site := fmt.Sprintf("https://127.0.0.1:%d", proxyFreePort(t))
	src := proxyTLSGlobals(dir) + fmt.Sprintf(`%s {
	bind 127.0.0.1
	tls %s %s
	crm_guard {
		rules %s
		identity proxy_test_header
		audit %s
		max_body 64KiB
	}
	reverse_proxy %s
}
`, site, certFile, keyFile, rulesPath, auditPath, crm.Listener.Addr())
	if err := caddy.Load(proxyAdapt(t, src), true); err != nil {
		t.Fatalf("loading: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	// get sends a request and returns the answer with the connection it
	// went over and whether that connection was reused.
	get := func(t *testing.T, query string) (*http.Response, net.Conn, bool) {
		t.Helper()
		var conn net.Conn
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { conn, reused = info.Conn, info.Reused }}
		req, err := http.NewRequest(http.MethodGet, site+"/api/customers/export?"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		req.Header.Set("X-Test-User", "wang")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", query, err)
		}
		if resp.ProtoMajor != 2 {
			resp.Body.Close()
			t.Fatalf("GET %s went over %s, want HTTP/2", query, resp.Proto)
		}
		return resp, conn, reused
	}
	lastEvent := func(t *testing.T) map[string]any { return streamLastEvent(t, auditPath) }

	for _, tc := range []struct{ name, bad string }{
		{"an export that turns into broken JSON midway is reset on its stream", "json"},
		{"an export whose CRM connection drops midway is reset on its stream", "reset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, cutConn, _ := get(t, "size=8388608&bad="+tc.bad)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || err == nil || !strings.Contains(err.Error(), "stream error") || !strings.Contains(err.Error(), "INTERNAL_ERROR") {
				t.Fatalf("status %d, read error %v after %d bytes: the client must see the stream reset", resp.StatusCode, err, len(body))
			}
			t.Logf("%d bytes, then: %v", len(body), err)
			if len(body) < 1<<20 || bytes.Contains(body, []byte(listgen.Phone)) || json.Valid(body) {
				t.Fatalf("%d bytes reached the client; a raw phone among them: %v; whole JSON: %v",
					len(body), bytes.Contains(body, []byte(listgen.Phone)), json.Valid(body))
			}
			ev := lastEvent(t)
			if ev["decision"] != "cut" || ev["streamed"] != true || ev["records_out"].(float64) == 0 || !strings.Contains(ev["reason"].(string), "cut after") {
				t.Fatalf("audit event %v", ev)
			}

			resp, nextConn, reused := get(t, "size=1048576")
			next := proxyBody(t, resp)
			if resp.StatusCode != 200 || !json.Valid([]byte(next)) {
				t.Fatalf("the next request: status %d, %d bytes, whole JSON %v", resp.StatusCode, len(next), json.Valid([]byte(next)))
			}
			if !reused || nextConn != cutConn {
				t.Fatalf("the next request went over a new connection (reused %v, same %v): the reset closed the connection", reused, nextConn == cutConn)
			}
			if ev := lastEvent(t); ev["decision"] != "allow" {
				t.Fatalf("the next request's audit event %v", ev)
			}
		})
	}
}
