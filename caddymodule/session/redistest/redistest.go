// Package redistest starts a private redis-server for tests.
package redistest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Start runs redis-server on a unix socket in a temporary directory until
// the test ends and returns its URL (unix://...). Without redis-server the
// test fails when CI is set (CI must install it) and is skipped otherwise.
func Start(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redistest: redis-server is not installed (CI must install it): %v", err)
		}
		t.Skipf("redistest: redis-server is not installed: %v", err)
	}
	dir, err := os.MkdirTemp("", "redis") // short: unix socket paths are limited to ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "notice")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("redistest: starting redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(strings.ToLower(sc.Text()), "ready to accept connections") {
				ready <- true
				break
			}
		}
		for sc.Scan() { // keep draining so redis-server never blocks on its output
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("redistest: redis-server exited before it was ready")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("redistest: redis-server did not become ready in 20 s")
	}
	return "unix://" + sock
}
