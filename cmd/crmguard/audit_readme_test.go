package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/crmguard/crmguard/examples/demo"
)

// readmeAuditCommands returns the commands of the README's "The audit
// trail" block, as argument lists (without "go run ./cmd/crmguard").
func readmeAuditCommands(t *testing.T) [][]string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "### The audit trail")
	if !ok {
		t.Fatal("README.md has no \"The audit trail\" section")
	}
	_, block, _ := strings.Cut(section, "```sh\n")
	block, _, _ = strings.Cut(block, "```")
	var out [][]string
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		rest, ok := strings.CutPrefix(line, "go run ./cmd/crmguard ")
		if !ok {
			t.Fatalf("a line of the block is not a crmguard command: %q", line)
		}
		rest, _, _ = strings.Cut(rest, " > ") // the redirect is the shell's
		out = append(out, strings.Fields(rest))
	}
	return out
}

// runCommand runs a registered crmguard command in-process and returns
// its output and exit code.
func runCommand(t *testing.T, args []string) (string, int) {
	t.Helper()
	cmd, ok := caddycmd.Commands()[args[0]]
	if !ok {
		t.Fatalf("no command %q", args[0])
	}
	c := &cobra.Command{Use: cmd.Name, SilenceUsage: true}
	cmd.CobraFunc(c)
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetArgs(args[1:])
	code := 0
	osExit = func(c int) { code = c }
	defer func() { osExit = os.Exit }()
	if err := c.Execute(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out.String())
	}
	return out.String(), code
}

// TestREADMEAuditCommandsRunOnTheDemosAuditLog runs the demo with its
// audit file, sends it requests, and runs every command of the README's
// "The audit trail" block on the file the demo wrote.
func TestREADMEAuditCommandsRunOnTheDemosAuditLog(t *testing.T) {
	cmds := readmeAuditCommands(t)
	if len(cmds) < 4 {
		t.Fatalf("the README's audit block has %d commands", len(cmds))
	}
	tmp := t.TempDir()
	auditFile := filepath.Join(tmp, "demo-audit.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := demo.Start(ctx, demo.Config{
		Caddyfile: filepath.Join("..", "..", "Caddyfile"), Listen: "localhost:0", Admin: "off",
		SessionStore: "file:" + filepath.Join(tmp, "s"), StorageDir: filepath.Join(tmp, "c"),
		Log: io.Discard, Audit: auditFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/healthz", "/api/customers", "/api/customers/1", "/healthz"} {
		resp, err := client.Get(d.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	d.Stop()
	data, err := os.ReadFile(auditFile)
	if err != nil || bytes.Count(data, []byte("\n")) != 4 {
		t.Fatalf("the demo wrote %d audit lines (%v), want 4", bytes.Count(data, []byte("\n")), err)
	}
	today := time.Now().Format(time.DateOnly)
	for _, args := range cmds {
		for i, a := range args {
			switch a {
			case "demo-audit.jsonl":
				args[i] = auditFile
			case "$(date":
				args[i] = today
			case "examples/rules.yaml":
				args[i] = filepath.Join("..", "..", "examples", "rules.yaml")
			}
		}
		args = slicesDelete(args, "+%F)")
		t.Run(strings.Join(args[:2], " ")+" runs on the demo's audit log", func(t *testing.T) {
			out, code := runCommand(t, args)
			if code != 0 {
				t.Fatalf("exit %d:\n%s", code, out)
			}
			switch args[1] {
			case "verify":
				if !strings.HasPrefix(out, "OK: 4 lines in 1 files") {
					t.Errorf("verify says:\n%s", out)
				}
			case "report":
				if !strings.Contains(out, "4 events; 4 in the period") && !strings.Contains(out, "<svg") {
					t.Errorf("report says:\n%s", out)
				}
			case "review":
				if !strings.Contains(out, "4 events in the window") {
					t.Errorf("review says:\n%s", out)
				}
			case "matrix":
				if !strings.Contains(out, "customers.list") {
					t.Errorf("matrix says:\n%s", out)
				}
			}
		})
	}
}

func slicesDelete(s []string, v string) []string {
	out := s[:0]
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}
