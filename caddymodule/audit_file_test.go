package caddymodule

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/crmguard/crmguard/caddymodule/auditlog"
)

var chainKey = []byte("sink-test-chain-key")

// writeEvents writes n events through a sink opened on path with opts,
// then closes it (the last configuration using it is gone).
func writeEvents(t *testing.T, path string, opts auditFileOptions, n int, now func() time.Time) {
	t.Helper()
	s, err := openAuditFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseAuditFile(path)
	s.configure(opts, nil)
	if now != nil {
		s.now = now
	}
	for i := 0; i < n; i++ {
		ev := &AuditEvent{Time: time.Date(2026, 11, 20, 2, 0, i, 0, time.UTC), User: "zhang", Method: "GET",
			Path: "/api/customers", Route: "customers.list", Decision: "allow", Status: 200, RecordIDs: []string{"1", "4"}}
		if err := s.Write(ev); err != nil {
			t.Fatal(err)
		}
	}
}

func verifyFiles(t *testing.T, keys [][]byte, files ...string) *auditlog.Result {
	t.Helper()
	res, err := auditlog.Verify(keys, files)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestAuditFileChain(t *testing.T) {
	t.Run("a restart continues the chain of the file it opens", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		writeEvents(t, path, auditFileOptions{ChainKey: chainKey}, 3, nil)
		writeEvents(t, path, auditFileOptions{ChainKey: chainKey}, 3, nil)
		res := verifyFiles(t, [][]byte{chainKey}, path)
		if res.Problem != nil || res.Lines != 6 || res.FirstSeq != 1 || res.LastSeq != 6 || !res.StartsChain {
			t.Fatalf("want 6 lines from the chain's start, got %+v %v", res, res.Problem)
		}
	})
	t.Run("a restart after a line cut short by a crash ends that line and chains on", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		writeEvents(t, path, auditFileOptions{ChainKey: chainKey}, 2, nil)
		appendBytes(t, path, []byte(`{"time":"2026-11-20T02:00:09Z","user":"zh`))
		writeEvents(t, path, auditFileOptions{ChainKey: chainKey}, 2, nil)
		res := verifyFiles(t, [][]byte{chainKey}, path)
		if res.Problem != nil || res.Lines != 4 || len(res.Notes) != 1 || res.Notes[0].Line != 3 {
			t.Fatalf("want 4 lines and a note on line 3, got %+v %v", res, res.Problem)
		}
	})
	t.Run("roll_size rolls into files that form one chain, gzip-compressed or not", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "audit.jsonl")
		clock := time.Date(2026, 11, 20, 2, 0, 0, 0, time.UTC)
		now := func() time.Time { clock = clock.Add(time.Second); return clock }
		writeEvents(t, path, auditFileOptions{ChainKey: chainKey, RollSize: 1000}, 12, now)
		files, _ := filepath.Glob(filepath.Join(dir, "audit*.jsonl"))
		if len(files) < 3 {
			t.Fatalf("want at least 3 files after rolling, got %v", files)
		}
		if _, err := os.Stat(filepath.Join(dir, "audit-2026-11-20T02-00-01.000.jsonl")); err != nil {
			t.Errorf("the first rolled file is not named like Caddy's: %v (files %v)", err, files)
		}
		gzipFile(t, files[0])
		files[0] += ".gz"
		res := verifyFiles(t, [][]byte{chainKey}, files...)
		if res.Problem != nil || res.Lines != 12 || len(res.Files) != len(files) {
			t.Fatalf("want 12 lines over %d files, got %+v %v", len(files), res, res.Problem)
		}
		for _, f := range files[1:] {
			if res := verifyFiles(t, [][]byte{chainKey}, f); res.Problem != nil || res.StartsChain {
				t.Errorf("%s alone should verify from the link it continues: %+v %v", f, res, res.Problem)
			}
		}
	})
	t.Run("logrotate's copytruncate is noticed and the copy and the file chain on", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "audit.jsonl")
		s, err := openAuditFile(path)
		if err != nil {
			t.Fatal(err)
		}
		defer releaseAuditFile(path)
		s.configure(auditFileOptions{ChainKey: chainKey}, nil)
		ev := &AuditEvent{Time: time.Date(2026, 11, 20, 2, 0, 0, 0, time.UTC), User: "zhang", Method: "GET", Path: "/x", Decision: "allow", Status: 200}
		for i := 0; i < 3; i++ {
			_ = s.Write(ev)
		}
		data, _ := os.ReadFile(path)
		if err := os.WriteFile(path+".1", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			_ = s.Write(ev)
		}
		res := verifyFiles(t, [][]byte{chainKey}, path, path+".1")
		if res.Problem != nil || res.Lines != 6 {
			t.Fatalf("want 6 lines over the copy and the file, got %+v %v", res, res.Problem)
		}
	})
	t.Run("a key changed on reload continues the chain and verifies with both keys", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		newKey := []byte("the next key")
		writeEvents(t, path, auditFileOptions{ChainKey: chainKey}, 2, nil)
		writeEvents(t, path, auditFileOptions{ChainKey: newKey}, 2, nil)
		res := verifyFiles(t, [][]byte{chainKey, newKey}, path)
		if res.Problem != nil || res.Lines != 4 || len(res.Notes) != 1 || res.Notes[0].Line != 3 {
			t.Fatalf("want 4 lines and a key-change note on line 3, got %+v %v", res, res.Problem)
		}
	})
	t.Run("without chain_key lines carry no chain keys, as before", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		writeEvents(t, path, auditFileOptions{}, 2, nil)
		data, _ := os.ReadFile(path)
		if bytes.Contains(data, []byte(`"chain"`)) || bytes.Contains(data, []byte(`"seq"`)) || bytes.Count(data, []byte("\n")) != 2 {
			t.Fatalf("unchained lines changed: %s", data)
		}
		if res := verifyFiles(t, [][]byte{chainKey}, path); res.Problem == nil || res.Problem.Kind != auditlog.Unchained {
			t.Fatalf("want unchained, got %v", res.Problem)
		}
	})
	t.Run("an edit of a line the sink wrote is found", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		writeEvents(t, path, auditFileOptions{ChainKey: chainKey}, 4, nil)
		data, _ := os.ReadFile(path)
		lines := strings.SplitAfter(string(data), "\n")
		lines[1] = strings.Replace(lines[1], `"user":"zhang"`, `"user":"wu"`, 1)
		_ = os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600)
		res := verifyFiles(t, [][]byte{chainKey}, path)
		if res.Problem == nil || res.Problem.Kind != auditlog.Edited || res.Problem.Line != 2 {
			t.Fatalf("want edited at line 2, got %v", res.Problem)
		}
	})
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func gzipFile(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = w.Write(data)
	_ = w.Close()
	if err := os.WriteFile(path+".gz", b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(path)
}

func TestAuditCaddyfile(t *testing.T) {
	site := func(audit string) string {
		return ":8080 {\n\tcrm_guard {\n\t\trules r.yaml\n\t\t" + audit + "\n\t}\n}\n"
	}
	tests := []struct {
		name    string
		src     string
		want    map[string]any
		wantErr string
	}{
		{name: "the short form names the file only", src: site("audit a.jsonl"),
			want: map[string]any{"audit": "a.jsonl", "audit_chain_key": nil, "audit_roll_size": nil}},
		{name: "the block form sets the chain key and the roll size",
			src:  site("audit a.jsonl {\n\t\t\tchain_key {env.CRMGUARD_AUDIT_KEY}\n\t\t\troll_size 100MiB\n\t\t}"),
			want: map[string]any{"audit": "a.jsonl", "audit_chain_key": "{env.CRMGUARD_AUDIT_KEY}", "audit_roll_size": float64(100 << 20)}},
		{name: "an unknown audit option is an error", src: site("audit a.jsonl {\n\t\t\tchain x\n\t\t}"), wantErr: `unknown audit option "chain"`},
		{name: "a roll size that is not a size is an error", src: site("audit a.jsonl {\n\t\t\troll_size big\n\t\t}"), wantErr: "roll_size"},
		{name: "a chain key without a value is an error", src: site("audit a.jsonl {\n\t\t\tchain_key\n\t\t}"), wantErr: "argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := adapt(t, tt.src)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want an error containing %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var v any
			_ = jsonUnmarshal(cfg, &v)
			h := findHandler(v, "crm_guard")
			for k, want := range tt.want {
				if h[k] != want {
					t.Errorf("%s: got %v, want %v", k, h[k], want)
				}
			}
		})
	}
}

func TestAuditChainKeyIsRequiredOnceSet(t *testing.T) {
	t.Run("a chain key without an audit file is refused", func(t *testing.T) {
		h := Handler{Rules: "r.yaml", AuditChainKey: "k"}
		if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "need an audit file") {
			t.Fatalf("want a refusal, got %v", err)
		}
	})
	t.Run("a chain key whose variable is unset fails provisioning", func(t *testing.T) {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		h := &Handler{Rules: "testdata/rules.yaml", Audit: filepath.Join(t.TempDir(), "a.jsonl"), ReloadInterval: -1,
			AuditChainKey: "{env.CRMGUARD_TEST_UNSET_AUDIT_KEY}"}
		err := h.Provision(ctx)
		defer h.Cleanup()
		if err == nil || !strings.Contains(err.Error(), "chain_key") {
			t.Fatalf("want a chain_key error, got %v", err)
		}
	})
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// BenchmarkAuditFileWrite is the cost of one event written to a file,
// without and with the hash chain, in the same run.
func BenchmarkAuditFileWrite(b *testing.B) {
	ev := &AuditEvent{Time: time.Date(2026, 11, 20, 2, 0, 0, 0, time.UTC), RequestID: "6f1d8a4e-2c1b-4b8e-9a57-0e5c7f3b2a11",
		User: "zhang", Roles: []string{"sales"}, Method: "GET", Path: "/api/customers", Route: "customers.list",
		Decision: "allow", Status: 200, RecordsIn: 9, RecordsOut: 3, RecordIDs: []string{"1", "4", "7"},
		Fields: map[string]int{"mask:phone": 3, "remove:bank_account": 3}, Rewritten: true, DurationMS: 0.412}
	for _, bc := range []struct {
		name string
		opts auditFileOptions
	}{{"unchained", auditFileOptions{}}, {"chained", auditFileOptions{ChainKey: chainKey}}} {
		b.Run(bc.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "audit.jsonl")
			s, err := openAuditFile(path)
			if err != nil {
				b.Fatal(err)
			}
			defer releaseAuditFile(path)
			s.configure(bc.opts, nil)
			b.SetBytes(int64(len(ev.appendJSON(nil)) + 1))
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Write(ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
