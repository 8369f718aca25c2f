// Package redistest starts a private redis-server for tests.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
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

	bin, dir, sock string

	mu  sync.Mutex
	cmd *exec.Cmd // nil while stopped
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
	s := &Server{URL: "unix://" + sock, bin: bin, dir: dir, sock: sock}
	t.Cleanup(s.Stop)
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	return s
}

// Restart stops the server if it runs and starts it again on the same
// socket and folder: what was written to the folder by a SAVE command
// before (dump.rdb) is loaded again, anything else is gone, as after a
// crash. It returns once the server accepts connections.
func (s *Server) Restart() error {
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.bin, "--port", "0", "--unixsocket", s.sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--loglevel", "notice")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("redistest: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: starting redis-server: %w", err)
	}
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
	var fail error
	select {
	case ok := <-ready:
		if !ok {
			fail = errors.New("redistest: redis-server exited before it was ready")
		}
	case <-time.After(20 * time.Second):
		fail = errors.New("redistest: redis-server did not become ready in 20 s")
	}
	if fail != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fail
	}
	s.cmd = cmd
	return nil
}

// Stop kills the server (a crash: nothing is saved) and waits until it
// has exited; calling it again does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}
