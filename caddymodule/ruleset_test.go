package caddymodule

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/crmguard/crmguard/rules"
)

const smallRules = `version: 1
default: deny
mfa: {required: false}
roles:
  sales: {}
routes:
  - id: %s
    match: {path: /healthz}
    allow: public
`

func writeRules(t *testing.T, path, routeID string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Replace(smallRules, "%s", routeID, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func routeOf(t *testing.T, s *ruleSource) string {
	t.Helper()
	d := s.Current().Decide(nil, &rules.Request{Method: "GET", URL: mustURL("/healthz")})
	return d.RouteID
}

func TestRuleSourceReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeRules(t, path, "first")
	core, logs := observer.New(zap.InfoLevel)
	s, err := newRuleSource(path, nil, 0, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("a change that compiles replaces the running set", func(t *testing.T) {
		writeRules(t, path, "second")
		s.check()
		if got := routeOf(t, s); got != "second" {
			t.Fatalf("want route second after reload, got %q", got)
		}
	})
	t.Run("a change that does not compile keeps the running set and logs file, line and column", func(t *testing.T) {
		if err := os.WriteFile(path, []byte("version: 1\nroutes:\n  - id: x\n    allow: [nobody\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s.check()
		if got := routeOf(t, s); got != "second" {
			t.Fatalf("want the running set kept, got route %q", got)
		}
		errs := logs.FilterMessageSnippet("did not load").All()
		if len(errs) != 1 {
			t.Fatalf("want one error log, got %d", len(errs))
		}
		msg, _ := errs[0].ContextMap()["error"].(string)
		if !strings.Contains(msg, "rules.yaml:") {
			t.Errorf("the error does not name the file and line: %q", msg)
		}
		s.check() // the same broken content is not reported twice
		if n := len(logs.FilterMessageSnippet("did not load").All()); n != 1 {
			t.Errorf("the same error was logged %d times", n)
		}
	})
	t.Run("an unchanged file is not recompiled", func(t *testing.T) {
		writeRules(t, path, "third")
		s.check()
		before := s.Current()
		s.check()
		if s.Current() != before {
			t.Errorf("an unchanged file produced a new set")
		}
	})
}

func TestRuleSourceSwapIsAtomicUnderLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeRules(t, path, "a")
	s, err := newRuleSource(path, nil, 0, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				set := s.Current()
				d := set.Decide(nil, &rules.Request{Method: "GET", URL: mustURL("/healthz")})
				if d.RouteID != "a" && d.RouteID != "b" {
					bad.Add(1)
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		id := "a"
		if i%2 == 0 {
			id = "b"
		}
		writeRules(t, path, id)
		s.check()
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d requests saw a set that was neither the old nor the new one", bad.Load())
	}
}

func TestAcquireRuleSourceSharesAcrossConfigReloads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeRules(t, path, "one")
	s1, key, err := acquireRuleSource(path, "", nil, 0, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	writeRules(t, path, "two")
	s2, key2, err := acquireRuleSource(path, "", nil, 0, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 || key != key2 {
		t.Fatalf("a config reload got a second source for the same file")
	}
	if got := routeOf(t, s2); got != "two" {
		t.Errorf("a config reload must read the file again, got route %q", got)
	}
	if err := os.WriteFile(path, []byte("version: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := acquireRuleSource(path, "", nil, 0, zap.NewNop()); err == nil {
		t.Errorf("a config reload with a broken rules file must fail")
	}
	if got := routeOf(t, s1); got != "two" {
		t.Errorf("the refused reload changed the running set: %q", got)
	}
	_, _ = ruleSources.Delete(key)
	_, _ = ruleSources.Delete(key)
}
