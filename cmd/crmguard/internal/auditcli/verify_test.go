package auditcli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/caddymodule/auditlog"
)

func TestVerifyCommand(t *testing.T) {
	key := "cli-test-key"
	dir := t.TempDir()
	c := auditlog.NewChain([]byte(key), auditlog.State{})
	var good bytes.Buffer
	for i := 0; i < 4; i++ {
		ev := fmt.Appendf(nil, `{"time":"2026-11-20T02:00:0%dZ","user":"zhang","rules_version":"aaaa","decision":"allow"}`, i)
		if i == 1 { // a rule file reload is chained like any event
			ev = []byte(`{"time":"2026-11-20T02:00:01Z","method":"","path":"","rules_version":"bbbb","decision":"reload","status":0,"reload":{"old_version":"aaaa","new_version":"bbbb"}}`)
		}
		good.Write(c.Append(nil, ev, i == 0))
	}
	okFile := filepath.Join(dir, "ok.jsonl")
	_ = os.WriteFile(okFile, good.Bytes(), 0o600)
	bad := strings.Replace(good.String(), `02:00:02Z`, `02:00:09Z`, 1)
	badFile := filepath.Join(dir, "bad.jsonl")
	_ = os.WriteFile(badFile, []byte(bad), 0o600)
	// The reload's new version edited, as someone hiding a rule change would.
	badReload := strings.Replace(good.String(), `"new_version":"bbbb"`, `"new_version":"aaaa"`, 1)
	badReloadFile := filepath.Join(dir, "bad-reload.jsonl")
	_ = os.WriteFile(badReloadFile, []byte(badReload), 0o600)
	// The reload line removed.
	lines := strings.SplitAfter(good.String(), "\n")
	noReloadFile := filepath.Join(dir, "no-reload.jsonl")
	_ = os.WriteFile(noReloadFile, []byte(lines[0]+strings.Join(lines[2:], "")), 0o600)
	tests := []struct {
		name  string
		keys  []string
		files []string
		code  int
		want  string
	}{
		{name: "an untouched file prints OK and the last link", keys: []string{key}, files: []string{okFile}, code: 0, want: "OK: 4 lines in 1 files (seq 1 to 4), the chain starts at its first line"},
		{name: "an edited line is named with file, line and kind", keys: []string{key}, files: []string{badFile}, code: 1, want: "FAIL: " + badFile + ":3: edited:"},
		{name: "an edited reload event is named", keys: []string{key}, files: []string{badReloadFile}, code: 1, want: "FAIL: " + badReloadFile + ":2: edited:"},
		{name: "a removed reload event is named", keys: []string{key}, files: []string{noReloadFile}, code: 1, want: "FAIL: " + noReloadFile + ":2: removed"},
		{name: "the wrong key fails on the first line", keys: []string{"wrong"}, files: []string{okFile}, code: 1, want: okFile + ":1: edited"},
		{name: "no key is a usage error", files: []string{okFile}, code: 2, want: "CRMGUARD_AUDIT_KEY"},
		{name: "a missing file is a read error", keys: []string{key}, files: []string{filepath.Join(dir, "nope")}, code: 2, want: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			code := Verify(tt.keys, tt.files, false, &out)
			if code != tt.code || !strings.Contains(out.String(), tt.want) {
				t.Fatalf("exit %d, want %d; output:\n%s\nwant it to contain %q", code, tt.code, out.String(), tt.want)
			}
		})
	}
}
