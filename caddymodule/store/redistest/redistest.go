// Package redistest starts a private redis-server for tests.
package redistest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a running redis-server that listens only on a unix socket in
// a temporary directory (never on a network port).
type Server struct {
	// URL names the server (unix://...).
	URL string

	cmd  *exec.Cmd
	once sync.Once
}

// Start runs redis-server until the test ends and returns its URL.
func Start(t testing.TB) string { return Run(t).URL }

// Run runs redis-server until the test ends (or Stop). Without
// redis-server the test fails when CI is set (CI must install it) and is
// skipped otherwise.
func Run(t testing.TB) *Server {
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
	s := &Server{URL: "unix://" + sock, cmd: cmd}
	t.Cleanup(s.Stop)
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
	return s
}

// Stop kills the server (a crash: nothing is saved) and waits until it
// has exited; calling it again does nothing.
func (s *Server) Stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	})
}
