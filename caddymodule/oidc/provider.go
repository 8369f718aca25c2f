// Package oidc signs browser users in with OpenID Connect (authorization
// code flow with PKCE), enforces MFA and step-up on the verified ID token,
// keeps revocable server-side sessions (package session), verifies bearer
// tokens for API clients, and serves the proxy's own endpoints: sign-in,
// callback, logout and OIDC Back-Channel Logout. It implements
// authn.Provider for the crm_guard handler, and registers the Caddy admin
// API module admin.api.crm_guard (POST /crm_guard/revoke).
//
// Browsers and API clients: a request without an Authorization header
// whose Accept header contains text/html is a browser (it is redirected to
// the provider); every other request is an API client (it gets 401 with a
// WWW-Authenticate challenge, RFC 6750 / RFC 9470).
package oidc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/session"
	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/rules"
)

// ErrUnavailable wraps every failure to reach the OpenID Provider; the
// handler answers 503.
var ErrUnavailable = errors.New("oidc: the identity provider is unavailable")

// Provider is the OIDC relying party. It is safe for concurrent use.
type Provider struct {
	cfg    Config
	sess   *session.Manager
	flows  *session.Codec // sign-in state cookies
	csrf   *session.Codec // CSRF tokens
	mfa    func() rules.MFAPolicy
	logger *zap.Logger
	audit  *zap.Logger
	client *http.Client
	now    func() time.Time

	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	disc     *discovered
	lastErr  error
	nextTry  time.Time
	backoff  time.Duration
	inflight chan struct{}
	// minBackoff and maxBackoff bound the wait between discovery attempts.
	minBackoff, maxBackoff time.Duration

	refreshes singleflight.Group

	// ended are called when sessions end (OnSessionEnd).
	endedMu sync.Mutex
	ended   []func(ctx context.Context, end authn.SessionEnd)

	cleanup sync.Once
}

// discovered is what the provider's discovery document told us.
type discovered struct {
	provider   *gooidc.Provider
	oauth      oauth2.Config
	idTokens   *gooidc.IDTokenVerifier
	bearer     *gooidc.IDTokenVerifier
	logout     *gooidc.IDTokenVerifier
	endSession string
	issParam   bool
}

// New builds a Provider from the handler's `oidc` and `session` blocks,
// keeping sessions in st, the guard's state store (the caller opened it
// and closes it after Cleanup). mfa returns the current rule file's mfa
// block (it may change on reload; nil means the defaults). Discovery is
// lazy: an unreachable provider does not fail New; it is logged and
// retried with backoff, and requests that need it get 503 until it
// answers. Call Cleanup when done.
func New(ctx caddy.Context, cfg *Config, sess *session.Config, st store.Store, mfa func() rules.MFAPolicy, logger *zap.Logger) (*Provider, error) {
	if cfg == nil {
		return nil, fmt.Errorf("oidc: no oidc configuration")
	}
	if sess == nil {
		sess = &session.Config{}
	}
	return newProvider(ctx, *cfg, *sess, st, mfa, logger, nil)
}

// newProvider is New without Caddy (tests pass their own store, HTTP
// client, and options that set the clock or the backoff).
func newProvider(parent context.Context, cfg Config, scfg session.Config, st store.Store, mfa func() rules.MFAPolicy, logger *zap.Logger, client *http.Client, opts ...func(*Provider)) (*Provider, error) {
	c := cfg.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	if mfa == nil {
		mfa = func() rules.MFAPolicy { return rules.MFAPolicy{Required: true} }
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	scfg = scfg.WithDefaults()
	if err := scfg.Validate(); err != nil {
		return nil, err
	}
	if time.Duration(c.FlowTimeout) > time.Duration(scfg.Lifetime) {
		c.FlowTimeout = scfg.Lifetime
	}
	sm, err := session.NewManager(scfg, st)
	if err != nil {
		return nil, err
	}
	if err := sm.Check(parent); err != nil {
		logger.Error("session store unreachable; requests that need a session answer 503 until it is back", zap.Error(err))
	}
	flows, err := session.NewCodec(scfg.Secrets, "sign-in state")
	if err != nil {
		return nil, err
	}
	csrf, err := session.NewCodec(scfg.Secrets, "csrf")
	if err != nil {
		return nil, err
	}
	p := &Provider{
		cfg: c, sess: sm, flows: flows, csrf: csrf, mfa: mfa,
		logger: logger, audit: logger.Named("audit"), client: client, now: time.Now,
		minBackoff: DefaultMinBackoff, maxBackoff: DefaultMaxBackoff,
	}
	for _, o := range opts {
		o(p)
	}
	sm.Now = func() time.Time { return p.now() }
	p.ctx, p.cancel = context.WithCancel(context.WithoutCancel(parent))
	register(p)
	// Try discovery now so a provider that is down at start is logged
	// at once; requests retry later with backoff.
	go func() { _, _ = p.discovery(p.ctx) }()
	return p, nil
}

// Cleanup stops the background work (the state store is its opener's to
// close). Calling it again does nothing.
func (p *Provider) Cleanup() error {
	p.cleanup.Do(func() {
		unregister(p)
		p.cancel()
	})
	return nil
}

// Sessions is the session manager (its store is the truth about sessions).
func (p *Provider) Sessions() *session.Manager { return p.sess }

// policy is the current MFA policy with the default methods filled in
// (a loaded rule set has them; a policy built by hand may not).
func (p *Provider) policy() rules.MFAPolicy {
	return p.mfa().WithDefaults()
}

// Discovery retry backoff bounds.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
)

// discovery returns the provider's metadata, fetching it when needed. After
// a failure it does not ask again before the backoff (1 s doubling to
// 1 min) has passed; meanwhile it returns the last error at once.
func (p *Provider) discovery(ctx context.Context) (*discovered, error) {
	for {
		p.mu.Lock()
		if p.disc != nil {
			d := p.disc
			p.mu.Unlock()
			return d, nil
		}
		if p.lastErr != nil && p.now().Before(p.nextTry) {
			err := p.lastErr
			p.mu.Unlock()
			return nil, err
		}
		if p.inflight != nil { // someone else is asking: wait for the answer
			ch := p.inflight
			p.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
			}
		}
		ch := make(chan struct{})
		p.inflight = ch
		p.mu.Unlock()

		d, err := p.discover()

		p.mu.Lock()
		p.inflight = nil
		close(ch)
		if err != nil {
			if p.backoff == 0 {
				p.backoff = p.minBackoff
			} else if p.backoff < p.maxBackoff {
				p.backoff = min(2*p.backoff, p.maxBackoff)
			}
			p.lastErr = fmt.Errorf("%w: discovery at %s failed (next try in %s): %w", ErrUnavailable, p.cfg.Issuer, p.backoff, err)
			p.nextTry = p.now().Add(p.backoff)
			p.logger.Error("identity provider unreachable; sign-in answers 503 until it is back",
				zap.String("issuer", p.cfg.Issuer), zap.Error(err), zap.Duration("retry_in", p.backoff))
			err = p.lastErr
			p.mu.Unlock()
			return nil, err
		}
		if p.lastErr != nil {
			p.logger.Info("identity provider reachable again", zap.String("issuer", p.cfg.Issuer))
		}
		p.disc, p.lastErr, p.backoff = d, nil, 0
		p.mu.Unlock()
		return d, nil
	}
}

func (p *Provider) discover() (*discovered, error) {
	ctx := gooidc.ClientContext(p.ctx, p.client)
	prov, err := gooidc.NewProvider(ctx, p.cfg.Issuer)
	if err != nil {
		return nil, err
	}
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
		IssParam   bool   `json:"authorization_response_iss_parameter_supported"`
	}
	if err := prov.Claims(&meta); err != nil {
		return nil, err
	}
	skewedNow := func() time.Time { return p.now().Add(-time.Duration(p.cfg.ClockSkew)) }
	return &discovered{
		provider: prov,
		oauth: oauth2.Config{
			ClientID:     p.cfg.ClientID,
			ClientSecret: p.cfg.ClientSecret,
			Endpoint:     prov.Endpoint(),
			Scopes:       p.cfg.Scopes,
		},
		idTokens:   prov.Verifier(&gooidc.Config{ClientID: p.cfg.ClientID, SupportedSigningAlgs: p.cfg.Algorithms, Now: skewedNow}),
		bearer:     prov.Verifier(&gooidc.Config{SkipClientIDCheck: true, SupportedSigningAlgs: p.cfg.Algorithms, Now: skewedNow}),
		logout:     prov.Verifier(&gooidc.Config{ClientID: p.cfg.ClientID, SupportedSigningAlgs: p.cfg.Algorithms, Now: skewedNow}),
		endSession: meta.EndSession,
		issParam:   meta.IssParam,
	}, nil
}

// oauthCtx carries the provider's HTTP client to golang.org/x/oauth2.
func (p *Provider) oauthCtx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, p.client)
}

// Handle implements authn.Provider: it serves the sign-in, callback,
// logout and back-channel logout paths.
func (p *Provider) Handle(w http.ResponseWriter, r *http.Request) (bool, error) {
	switch r.URL.Path {
	case p.cfg.CallbackPath:
		p.callback(w, r)
	case p.cfg.LoginPath:
		p.login(w, r)
	case p.cfg.LogoutPath:
		p.logout(w, r)
	case p.cfg.BackchannelLogoutPath:
		p.backchannelLogout(w, r)
	default:
		return false, nil
	}
	return true, nil
}

// sessionRef is how a session is named in logs and Identity.SessionID: a
// hash, never the id itself (which is a credential).
func sessionRef(id string) string {
	if id == "" {
		return ""
	}
	sum := sha256.Sum256([]byte("crmguard session " + id))
	return hex.EncodeToString(sum[:12])
}

// Revoke ends every session of the subject sub (or, with sid, of that
// provider session) in this provider's store and returns how many ended.
func (p *Provider) Revoke(ctx context.Context, sub, sid string) (int, error) {
	n := 0
	if sid != "" {
		k, err := p.sess.Store().DeleteBySID(ctx, sid)
		if err != nil {
			return n, err
		}
		n += k
	}
	if sub != "" {
		k, err := p.sess.Store().DeleteBySubject(ctx, sub)
		if err != nil {
			return n, err
		}
		n += k
	}
	p.sessionsEnded(ctx, authn.SessionEnd{SID: sid, Subject: sub, Why: "session revoked"})
	return n, nil
}

// OnSessionEnd implements authn.SessionWatcher: fn is called after a
// logout, a back-channel logout or an administrator's revoke ended
// sessions (also when none was found: what is bound to them may
// outlive them on another instance).
func (p *Provider) OnSessionEnd(fn func(ctx context.Context, end authn.SessionEnd)) {
	p.endedMu.Lock()
	defer p.endedMu.Unlock()
	p.ended = append(p.ended, fn)
}

// sessionsEnded calls the OnSessionEnd functions with a context that
// outlives the request.
func (p *Provider) sessionsEnded(ctx context.Context, end authn.SessionEnd) {
	p.endedMu.Lock()
	fns := slices.Clone(p.ended)
	p.endedMu.Unlock()
	ctx = context.WithoutCancel(ctx)
	for _, fn := range fns {
		fn(ctx, end)
	}
}

// Interface guards.
var (
	_ authn.Provider       = (*Provider)(nil)
	_ authn.FormTokens     = (*Provider)(nil)
	_ authn.SessionWatcher = (*Provider)(nil)
	_ caddy.CleanerUpper   = (*Provider)(nil)
)
