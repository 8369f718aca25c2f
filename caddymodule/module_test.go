package caddymodule

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/crmguard/crmguard/caddymodule/notify"
)

func TestProvisionRegistersMetricsOnCaddysRegistry(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Rules: "testdata/rules.yaml", Audit: filepath.Join(t.TempDir(), "audit.jsonl"), ReloadInterval: -1}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil), jsonUpstream(`{"ok":true}`).handler()); err != nil {
		t.Fatal(err)
	}
	const want = `
# HELP crmguard_decisions_total Requests judged by crm_guard, by route and outcome.
# TYPE crmguard_decisions_total counter
crmguard_decisions_total{outcome="allow",route="health"} 1
`
	if err := testutil.GatherAndCompare(ctx.GetMetricsRegistry(), strings.NewReader(want), "crmguard_decisions_total"); err != nil {
		t.Error(err)
	}
}

func TestProvisionStartsTheNotifierAfterReplacingPlaceholders(t *testing.T) {
	t.Setenv("CRMGUARD_TEST_HOOK_URL", "ftp://hooks.example.com/crm")
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Rules: "testdata/rules.yaml", ReloadInterval: -1, Notify: &notify.Config{Webhooks: []notify.Webhook{{URL: "{env.CRMGUARD_TEST_HOOK_URL}"}}}}
	err := h.Provision(ctx)
	if err == nil || !strings.Contains(err.Error(), `"ftp://hooks.example.com/crm" is not an http or https URL`) {
		t.Fatalf("want the replaced URL refused, got %v", err)
	}
	t.Setenv("CRMGUARD_TEST_HOOK_URL", "https://hooks.example.com/crm")
	h = &Handler{Rules: "testdata/rules.yaml", ReloadInterval: -1, Notify: &notify.Config{Webhooks: []notify.Webhook{{URL: "{env.CRMGUARD_TEST_HOOK_URL}"}}}}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	if h.notifier == nil {
		t.Fatal("no notifier was started")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		h    Handler
		want string
	}{
		{name: "a handler without rules is refused", h: Handler{}, want: "rules file"},
		{name: "a negative max_body is refused", h: Handler{Rules: "r.yaml", MaxBody: -1}, want: "max_body"},
		{name: "an unknown mode is refused", h: Handler{Rules: "r.yaml", Mode: "enforce"}, want: "mode"},
		{name: "oidc and an identity module together are refused", h: Handler{Rules: "r.yaml", OIDC: new(oidcConfig), IdentityRaw: []byte(`{}`)}, want: "either oidc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.h.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error containing %q, got %v", tt.want, err)
			}
		})
	}
}

func TestProvisionRefusesARulesFileThatDoesNotCompile(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	p := proxyBrokenRules(t)
	h := &Handler{Rules: p, ReloadInterval: -1}
	err := h.Provision(ctx)
	if err == nil || !strings.Contains(err.Error(), "broken.yaml:") {
		t.Fatalf("want an error naming the file and line, got %v", err)
	}
}

func TestSessionCookiesNeverReachTheCRM(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	// Extra prefixes are configured, and the session cookie has its own
	// name: neither replaces the other.
	h := &Handler{Rules: "testdata/rules.yaml", ReloadInterval: -1, CookiePrefixes: []string{"legacy_sso"},
		Session: &sessionConfig{CookieName: "corp_sess"}}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	req := httptest.NewRequest("GET", "/healthz", nil)
	req.Header.Set("Cookie", "corp_sess=a; corp_sess_flow=b; legacy_sso_token=c; crmguard_x=d; crm_sid=keep")
	up := jsonUpstream(`{}`)
	if err := h.ServeHTTP(httptest.NewRecorder(), req, up.handler()); err != nil {
		t.Fatal(err)
	}
	if got := up.got.Header.Get("Cookie"); got != "crm_sid=keep" {
		t.Errorf("Cookie at the CRM: %q", got)
	}
}
