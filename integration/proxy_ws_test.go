package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProxyPassesWebsocketUpgrades checks that an upgraded connection
// (websockets) goes through the guard: the 101 answer reaches the client
// and bytes flow both ways.
func TestProxyPassesWebsocketUpgrades(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "echo") || r.Header.Get("X-Crm-User") != "zhang" {
			http.Error(w, "want an upgrade from zhang", http.StatusBadRequest)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		_ = rw.Flush()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(rw, buf); err != nil {
			return
		}
		_, _ = rw.Write(buf)
		_ = rw.Flush()
	}))
	defer up.Close()

	dir := t.TempDir()
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", proxyRulesFile(t))
	srv := proxyStart(t, dir, proxySite(rulesPath, filepath.Join(dir, "audit.jsonl"), up.Listener.Addr().String(), ""))

	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(srv.URL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /api/events HTTP/1.1\r\nHost: %s\r\nUpgrade: echo\r\nConnection: Upgrade\r\nX-Test-User: zhang\r\n\r\n", strings.TrimPrefix(srv.URL, "http://"))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("want 101, got %d: %s", resp.StatusCode, body)
	}
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if string(got) != "ping" {
		t.Fatalf("echo: got %q", got)
	}
}
