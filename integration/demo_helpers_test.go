// Package integration holds crmguard's end-to-end tests and benchmarks:
// real Caddy, the real development OpenID Provider, the example CRM and a
// real browser. It holds only _test.go files and testdata/; the demo stack
// the tests sign in to is examples/demo, which `crmguard demo` runs too.
package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crmguard/crmguard/examples/crm"
	"github.com/crmguard/crmguard/examples/demo"
)

// repoRoot is the repository's top folder (the tests run in integration/).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// demoCaddyfile is the Caddyfile the demo runs: the repository's own, or
// $CRMGUARD_DEMO_CADDYFILE to try another one.
func demoCaddyfile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "Caddyfile")
	if env := os.Getenv("CRMGUARD_DEMO_CADDYFILE"); env != "" {
		p = env
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the repository's Caddyfile, which `crmguard demo` runs, is missing: %v", err)
	}
	return p
}

// rulesWithStepUp copies examples/rules.yaml with the step-up age of the
// sensitive routes (5m in the file) set to maxAge, so that a test can see a
// sign-in grow too old without waiting five minutes. Everything else is the
// example file as it is.
func rulesWithStepUp(t *testing.T, maxAge time.Duration) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Only the two step-up routes change; other 5m ages (an elevation's
	// fresh sign-in, ...) stay as they are.
	const want = "mfa: {max_age: 5m"
	stepUp := map[string]bool{"ui.sensitive": true, "customers.sensitive": true}
	lines := strings.Split(string(b), "\n")
	route, n := "", 0
	for i, l := range lines {
		if id, ok := strings.CutPrefix(strings.TrimSpace(l), "- id: "); ok {
			route = id
		}
		if stepUp[route] && strings.Contains(l, want) {
			lines[i] = strings.Replace(l, want, "mfa: {max_age: "+maxAge.String(), 1)
			n++
		}
	}
	if n != 2 {
		t.Fatalf("examples/rules.yaml has %d step-up lines %q in routes ui.sensitive and customers.sensitive, the test expects 2", n, want)
	}
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startDemo starts the demo stack from the repository's Caddyfile on a
// free port, with its state in temporary folders, and stops it when the
// test ends.
func startDemo(t *testing.T, rules string) *demo.Stack {
	t.Helper()
	return startDemoConfig(t, demo.Config{Rules: rules})
}

// startDemoConfig is startDemo with more of the stack's configuration:
// what cfg leaves empty is as startDemo has it (the state store in a
// temporary folder unless cfg.SessionStore names one).
func startDemoConfig(t *testing.T, cfg demo.Config) *demo.Stack {
	t.Helper()
	tmp := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(tmp, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(tmp, "config"))
	t.Setenv("HOME", tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg.Caddyfile, cfg.Listen, cfg.StorageDir, cfg.Admin, cfg.Log = demoCaddyfile(t), "localhost:0", filepath.Join(tmp, "caddy"), "off", testLogWriter{t}
	if cfg.SessionStore == "" {
		cfg.SessionStore = "file:" + filepath.Join(tmp, "sessions")
	}
	d, err := demo.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d
}

// testLogWriter sends the stack's log lines to the test log.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// visibleToSalesRep is the rule file's customers.list `visible` condition
// for a sales rep, written out in Go: the ground truth the tests compare
// what the guard let through with.
func visibleToSalesRep(c crm.Customer, user, team string, now time.Time) bool {
	return c.OwnerID == user || c.Team == team || c.LastContactAt.Before(now.Add(-8760*time.Hour))
}
