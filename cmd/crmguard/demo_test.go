package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/crmguard/crmguard/examples/demo"
	"github.com/crmguard/crmguard/examples/devidp"
)

func TestDemoTOTPPrintsTheCodeTheProviderAccepts(t *testing.T) {
	cmd := caddycmd.Commands()["demo"]
	if cmd.CobraFunc == nil {
		t.Fatal("the demo command is not registered")
	}
	tests := []struct {
		name, user, seed string
		wantErr          string
	}{
		{"a demo user's code comes from the demo seed", "zhang", "", ""},
		{"another seed gives that seed's code", "qian", "another-seed", ""},
		{"an unknown user is refused with the list of users", "nobody", "", "zhang"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newDemoCobra(cmd)
			var out bytes.Buffer
			c.SetOut(&out)
			c.SetErr(&out)
			args := []string{"totp", tt.user}
			if tt.seed != "" {
				args = append(args, "--totp-seed", tt.seed)
			}
			c.SetArgs(args)
			before := time.Now()
			err := c.Execute()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			seed := tt.seed
			if seed == "" {
				seed = demo.DefaultTOTPSeed
			}
			got := strings.TrimSpace(out.String())
			var want []string
			for _, at := range []time.Time{before, time.Now()} { // the step may turn during the call
				code, err := demo.TOTP(devidp.DemoUsers(seed), tt.user, at)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, code)
			}
			if !regexp.MustCompile(`^\d{6}$`).MatchString(got) || (got != want[0] && got != want[1]) {
				t.Errorf("printed %q, want %v", got, want)
			}
		})
	}
}

// newDemoCobra builds the demo command the way Caddy's CLI does.
func newDemoCobra(cmd caddycmd.Command) *cobra.Command {
	c := &cobra.Command{Use: cmd.Name + " " + cmd.Usage, Short: cmd.Short, SilenceUsage: true}
	cmd.CobraFunc(c)
	return c
}

// syncBuffer is a bytes.Buffer safe for the demo's goroutine and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	hit chan struct{}
	on  string
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.on != "" && strings.Contains(b.buf.String(), b.on) {
		b.on = ""
		close(b.hit)
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunDemoPrintsTheBannerAndStopsWhenCancelled(t *testing.T) {
	caddyfile, err := filepath.Abs(filepath.Join("..", "..", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	if env := os.Getenv("CRMGUARD_DEMO_CADDYFILE"); env != "" {
		caddyfile = env
	}
	tmp := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{hit: make(chan struct{}), on: "Ctrl-C stops everything."}
	done := make(chan error, 1)
	go func() {
		done <- runDemo(ctx, demo.Config{
			Caddyfile: caddyfile, Listen: "localhost:0", Admin: "off",
			SessionStore: "file:" + filepath.Join(tmp, "s"), StorageDir: filepath.Join(tmp, "c"),
			Log: &bytes.Buffer{},
		}, out)
	}()
	select {
	case <-out.hit:
	case err := <-done:
		t.Fatalf("the demo ended before printing its banner: %v\n%s", err, out)
	case <-time.After(60 * time.Second):
		t.Fatalf("no banner after 60s:\n%s", out)
	}
	banner := out.String()
	for _, want := range []string{"Open      http://localhost:", "demo totp <user>", "zhang  demo-zhang", "qian   demo-qian", "What to try:"} {
		if !strings.Contains(banner, want) {
			t.Errorf("the banner lacks %q:\n%s", want, banner)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the demo ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the demo did not stop within 30s of Ctrl-C")
	}
	if !strings.Contains(out.String(), "stopping the guard") {
		t.Errorf("no goodbye after Ctrl-C:\n%s", out)
	}
}
