package caddymodule

import (
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/crmguard/crmguard/caddymodule/oidc"
	"github.com/crmguard/crmguard/caddymodule/session"

	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func httpcaddyfileServerType() httpcaddyfile.ServerType { return httpcaddyfile.ServerType{} }

type oidcConfig = oidc.Config

func proxyBrokenRules(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "broken.yaml")
	if err := os.WriteFile(p, []byte("version: 1\nroutes:\n  - id: a\n    allow: [nobody]\n    bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var timeZero = time.Time{}

type sessionConfig = session.Config
