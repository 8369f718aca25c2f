package demo

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// unguardedCaddyfile writes a Caddyfile that proxies to the CRM without
// crm_guard.
func unguardedCaddyfile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(p, []byte("{$CRMGUARD_SITE} {\n\treverse_proxy {$CRMGUARD_UPSTREAM}\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStartRefusesWhatWouldExposeTheCRM(t *testing.T) {
	unguarded := unguardedCaddyfile(t)
	rules := filepath.Join("..", "rules.yaml")
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"a Caddyfile without crm_guard is refused", Config{Caddyfile: unguarded, Rules: rules, Listen: "localhost:0", Admin: "off"}, "no crm_guard handler"},
		{"a listen address off loopback is refused", Config{Caddyfile: unguarded, Rules: rules, Listen: "0.0.0.0:0", Admin: "off"}, "loopback"},
		{"a missing Caddyfile is named", Config{Caddyfile: filepath.Join(t.TempDir(), "nope"), Rules: rules}, "reading the Caddyfile"},
		{"a missing rule file is named", Config{Caddyfile: unguarded, Rules: filepath.Join(t.TempDir(), "none.yaml")}, "the rule file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Log = t.Output()
			d, err := Start(context.Background(), tt.cfg)
			if err == nil {
				d.Stop()
				t.Fatal("the demo started")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not say %q", err, tt.wantErr)
			}
		})
	}
}

// recordingAdapter is a Caddyfile adapter that records the environment
// variables it is asked about while it adapts.
type recordingAdapter struct {
	names []string
	seen  map[string]string
	err   error
}

func (a *recordingAdapter) Adapt(body []byte, _ map[string]any) ([]byte, []caddyconfig.Warning, error) {
	a.seen = map[string]string{}
	for _, k := range a.names {
		a.seen[k] = os.Getenv(k)
	}
	return body, nil, a.err
}

// envState is a variable's value, or unset.
type envState struct {
	value string
	set   bool
}

func lookupEnv(k string) envState {
	v, ok := os.LookupEnv(k)
	return envState{v, ok}
}

func TestAdaptWithEnvSetsTheValuesOnlyWhileTheAdapterRuns(t *testing.T) {
	const preset, unset = "CRMGUARD_DEMO_TEST_PRESET", "CRMGUARD_DEMO_TEST_UNSET"
	tests := []struct {
		name      string
		adaptErr  error
		wantError bool
	}{
		{"after a successful adaptation every variable is as before", nil, false},
		{"after a failed adaptation every variable is as before too", errors.New("bad Caddyfile"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(preset, "the operator's value")
			t.Setenv(unset, "")
			if err := os.Unsetenv(unset); err != nil { // t.Setenv restores it at the end
				t.Fatal(err)
			}
			a := &recordingAdapter{names: []string{preset, unset}, err: tt.adaptErr}
			env := map[string]string{preset: "demo value 1", unset: "demo value 2"}
			_, _, err := adaptWithEnv(a, []byte("body"), "Caddyfile", env)
			if (err != nil) != tt.wantError {
				t.Fatalf("error %v, want an error: %v", err, tt.wantError)
			}
			for k, want := range env {
				if got := a.seen[k]; got != want {
					t.Errorf("the adapter read %s=%q, want %q", k, got, want)
				}
			}
			if got, want := lookupEnv(preset), (envState{"the operator's value", true}); got != want {
				t.Errorf("%s is %+v afterwards, want %+v", preset, got, want)
			}
			if got := lookupEnv(unset); got.set {
				t.Errorf("%s is set to %q afterwards, want it unset as before", unset, got.value)
			}
		})
	}
}

// TestStartLeavesTheEnvironmentAsItWas runs Start to the point where the
// Caddyfile has been adapted (an unguarded Caddyfile is refused right
// after) and checks that none of the demo's values, secrets included, stay
// in the environment: no variable the repository's Caddyfile reads changes.
func TestStartLeavesTheEnvironmentAsItWas(t *testing.T) {
	caddyfile, err := os.ReadFile(filepath.Join("..", "..", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`\{\$([A-Za-z0-9_]+)`).FindAllSubmatch(caddyfile, -1) {
		names = append(names, string(m[1]))
	}
	if !slices.Contains(names, "CRMGUARD_SESSION_SECRET") || !slices.Contains(names, "CRMGUARD_SITE") {
		t.Fatalf("the Caddyfile's placeholders %v lack CRMGUARD_SITE or CRMGUARD_SESSION_SECRET", names)
	}
	before := map[string]envState{}
	for _, k := range names {
		before[k] = lookupEnv(k)
	}
	t.Setenv("CRMGUARD_SITE", "http://localhost:1") // an operator's own value
	before["CRMGUARD_SITE"] = lookupEnv("CRMGUARD_SITE")

	_, err = Start(context.Background(), Config{
		Caddyfile: unguardedCaddyfile(t), Rules: filepath.Join("..", "rules.yaml"),
		Listen: "localhost:0", Admin: "off", Log: t.Output(),
	})
	if err == nil || !strings.Contains(err.Error(), "no crm_guard handler") {
		t.Fatalf("error %v, want the unguarded Caddyfile refused after adapting it", err)
	}
	for _, k := range names {
		if got := lookupEnv(k); got != before[k] {
			t.Errorf("%s is %+v after Start, want %+v as before", k, got, before[k])
		}
	}
}
