// Package caddymodule is the Caddy glue of crmguard: the crm_guard HTTP
// handler (module http.handlers.crm_guard), its Caddyfile directive, rule
// file reloading, audit events and metrics. Decisions and rewriting are
// done by package rules; sign-in by the authn.Provider (package oidc).
package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/notify"
	"github.com/crmguard/crmguard/caddymodule/oidc"
	"github.com/crmguard/crmguard/caddymodule/session"
	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/caddymodule/workflow"
	"github.com/crmguard/crmguard/rules"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// DefaultReloadInterval is how often the rules file is checked for changes.
const DefaultReloadInterval = caddy.Duration(time.Second)

// DefaultCookiePrefix names the proxy's cookies when no session block says
// otherwise; cookies starting with it never reach the CRM.
const DefaultCookiePrefix = "crmguard"

// Handler is the crm_guard HTTP handler: it puts an operator's rule file
// between clients and a CRM behind reverse_proxy. It signs users in (oidc),
// decides every request, checks request bodies, rewrites JSON answers,
// and writes one audit event per request.
type Handler struct {
	// Rules is the path of the rule file (YAML). It is watched: a change
	// that compiles replaces the running rules for new requests; one that
	// does not is logged with file, line and column and changes nothing.
	Rules string `json:"rules,omitempty"`

	// OIDC configures sign-in with an OpenID Provider. Without it (and
	// without Identity) every request is anonymous: only `public` routes
	// succeed and every other route answers 401.
	OIDC *oidc.Config `json:"oidc,omitempty"`

	// Session configures the proxy's sessions (used with OIDC).
	Session *session.Config `json:"session,omitempty"`

	// Store is where the guard keeps what outlives a request (sessions,
	// approval requests and grants, elevations, usage counters): the path
	// of one bbolt file for one instance (default: <caddy data
	// dir>/crmguard/state.db), or a redis:// or rediss:// URL for several
	// instances that share the state. See docs/workflows.md. It replaces
	// `session { store ... }`: both set to different stores is an error.
	Store string `json:"store,omitempty"`

	// IdentityRaw is an identity source module (namespace
	// crm_guard.identity) used instead of OIDC. The crmguard binary ships
	// none; tests register their own.
	IdentityRaw json.RawMessage `json:"identity,omitempty" caddy:"namespace=crm_guard.identity inline_key=source"`

	// Audit is the file audit events are appended to, one JSON object per
	// line. Empty: events go to the Caddy logger named crm_guard.audit.
	Audit string `json:"audit,omitempty"`

	// AuditChainKey keys the hash chain that makes the audit file
	// tamper-evident (package auditlog; `crmguard audit verify` checks
	// it). Placeholders such as {env.CRMGUARD_AUDIT_KEY} are replaced; one
	// that yields nothing fails the configuration. Empty: no chain. Needs
	// Audit: events sent to the Caddy logger are not chained.
	AuditChainKey string `json:"audit_chain_key,omitempty"`

	// AuditRollSize rolls the audit file once it has reached this many
	// bytes: it is renamed to name-<time>.ext and a new file started, the
	// chain running on across them. 0: never (rotate with logrotate's
	// copytruncate, which the chain also follows). Rolled files are never
	// deleted by crm_guard.
	AuditRollSize int64 `json:"audit_roll_size,omitempty"`

	// MaxBody caps, in bytes, the request bodies read on guarded routes
	// (over it: 413) and the answers buffered for a rewrite (over it: 502).
	// Default 16 MiB.
	MaxBody int64 `json:"max_body,omitempty"`

	// HashKey is the secret key of the rules' `hash` field action (keyed
	// HMAC). A rule file that uses `hash` does not load without it.
	HashKey string `json:"hash_key,omitempty"`

	// StripHeaders are request headers removed before the request goes to
	// the CRM, in addition to the built-in list of identity headers
	// (X-Forwarded-User, X-Auth-Request-*, X-CRM-*, Remote-User, ...). A
	// trailing * makes a prefix.
	StripHeaders []string `json:"strip_headers,omitempty"`

	// CookiePrefixes name more of the proxy's own cookies (by name
	// prefix), which never reach the CRM. The session cookie name and
	// "crmguard" are always included.
	CookiePrefixes []string `json:"cookie_prefixes,omitempty"`

	// Mode, when "shadow", runs the rules in shadow mode whatever the rule
	// file says: decide and audit, never block or rewrite. Empty: the rule
	// file's own `mode` decides. (There is no "enforce" override: a file
	// that says shadow is not meant to block.)
	Mode string `json:"mode,omitempty"`

	// ReloadInterval is how often the rules file is checked for changes.
	// Default 1s; a negative value turns watching off.
	ReloadInterval caddy.Duration `json:"reload_interval,omitempty"`

	// Notify configures the webhooks that notifications (an export waits
	// for approval, temporary access started, ...) are posted to.
	// Without it nobody is notified; the pages and the audit still work.
	Notify *notify.Config `json:"notify,omitempty"`

	guard     *Guard
	source    *ruleSource
	sourceKey string
	provider  authn.Provider
	owned     caddy.CleanerUpper // provider built here, cleaned up here
	state     store.Store        // the state store, released at Cleanup
	auditPath string
	notifier  *notify.Notifier
	workflow  *workflow.Service
	logger    *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.crm_guard",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision loads the rule file, the identity source, the audit sink and
// the metrics.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	rulesPath := repl.ReplaceKnown(h.Rules, "")
	if rulesPath == "" {
		return errNoRules
	}
	hashKey := repl.ReplaceKnown(h.HashKey, "")
	var opts []rules.LoadOption
	keySuffix := ""
	if hashKey != "" {
		opts = append(opts, rules.WithHashKey([]byte(hashKey)))
		sum := sha256.Sum256([]byte(hashKey))
		keySuffix = "#" + hex.EncodeToString(sum[:8])
	}
	load := func(name string, data []byte) (*rules.Set, error) { return rules.Load(name, data, opts...) }
	interval := time.Duration(h.ReloadInterval)
	if interval == 0 {
		interval = time.Duration(DefaultReloadInterval)
	}
	if interval < 0 {
		interval = 0
	}
	src, key, err := acquireRuleSource(rulesPath, keySuffix, load, interval, h.logger)
	if err != nil {
		return fmt.Errorf("caddymodule: crm_guard: %w", err)
	}
	h.source, h.sourceKey = src, key
	for _, w := range src.Current().Warnings() {
		h.logger.Warn("rules file warning", zap.String("warning", w.String()))
	}

	// The session's cookies are always the proxy's own, whatever else is
	// configured.
	cookiePrefixes := append([]string{DefaultCookiePrefix, session.DefaultCookieName}, h.CookiePrefixes...)
	if h.Session != nil && h.Session.CookieName != "" {
		cookiePrefixes = append(cookiePrefixes, h.Session.CookieName)
	}

	h.state, err = h.openState(repl)
	if err != nil {
		return err
	}

	switch {
	case h.IdentityRaw != nil:
		mod, err := ctx.LoadModule(h, "IdentityRaw")
		if err != nil {
			return fmt.Errorf("caddymodule: loading the identity module: %w", err)
		}
		p, ok := mod.(authn.Provider)
		if !ok {
			return fmt.Errorf("caddymodule: identity module %T is not an authn.Provider", mod)
		}
		h.provider = p
	case h.OIDC != nil:
		oc := *h.OIDC
		oc.ClientSecret = repl.ReplaceKnown(oc.ClientSecret, "")
		oc.Issuer = repl.ReplaceKnown(oc.Issuer, "")
		oc.ClientID = repl.ReplaceKnown(oc.ClientID, "")
		var sc *session.Config
		if h.Session != nil {
			c := *h.Session
			c.Secrets = nil
			for _, s := range h.Session.Secrets {
				c.Secrets = append(c.Secrets, repl.ReplaceKnown(s, ""))
			}
			sc = &c
		}
		p, err := oidc.New(ctx, &oc, sc, h.state, func() rules.MFAPolicy { return src.Current().MFA() }, h.logger.Named("oidc"))
		if err != nil {
			return fmt.Errorf("caddymodule: crm_guard oidc: %w", err)
		}
		h.provider = p
		h.owned = p
	}

	var sink AuditSink
	if h.Audit != "" {
		h.auditPath = repl.ReplaceKnown(h.Audit, "")
		opts := auditFileOptions{RollSize: h.AuditRollSize}
		if h.AuditChainKey != "" {
			key := repl.ReplaceKnown(h.AuditChainKey, "")
			if key == "" {
				return fmt.Errorf("caddymodule: audit chain_key %q is empty once placeholders are replaced (is the variable set?)", h.AuditChainKey)
			}
			opts.ChainKey = []byte(key)
		}
		fs, err := openAuditFile(h.auditPath)
		if err != nil {
			return err
		}
		fs.configure(opts, h.logger)
		sink = fs
	} else {
		sink = loggerSink{log: caddy.Log().Named("crm_guard.audit")}
	}

	if h.Notify != nil {
		nc := h.Notify.Replace(repl)
		fails, err := notifyFailures(ctx.GetMetricsRegistry())
		if err != nil {
			return err
		}
		h.notifier, err = notify.New(nc, notify.Options{Logger: h.logger.Named("notify"), Failures: fails})
		if err != nil {
			return fmt.Errorf("caddymodule: crm_guard notify: %w", err)
		}
	}

	sink = versionStamp{AuditSink: sink, current: src.Current} // audit_version.go
	if err := h.startWorkflow(src.Current, sink); err != nil { // workflow.go
		return err
	}

	var mode *rules.Mode
	if h.Mode == "shadow" {
		m := rules.Shadow
		mode = &m
	}

	h.guard, err = NewGuard(GuardOptions{
		Rules:          src.Current,
		Provider:       h.provider,
		Audit:          sink,
		Logger:         h.logger,
		Metrics:        ctx.GetMetricsRegistry(),
		MaxBody:        h.MaxBody,
		StripHeaders:   h.StripHeaders,
		CookiePrefixes: cookiePrefixes,
		Mode:           mode,
		Store:          h.state,
		Workflow:       h.workflow,
		Notifier:       h.notifier,
	})
	if err != nil {
		return err
	}
	// A reload of the rule file writes an event of its own.
	auditor := &reloadAuditor{sink: sink, logger: h.logger, now: time.Now}
	src.listeners.add(h, auditor.reloaded)
	return nil
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	if h.Rules == "" {
		return errNoRules
	}
	if h.MaxBody < 0 {
		return fmt.Errorf("caddymodule: max_body must not be negative, got %d", h.MaxBody)
	}
	switch h.Mode {
	case "", "shadow":
	default:
		return fmt.Errorf("caddymodule: mode must be shadow (or empty: the rule file decides), got %q", h.Mode)
	}
	if h.Audit == "" && (h.AuditChainKey != "" || h.AuditRollSize != 0) {
		return fmt.Errorf("caddymodule: audit chain_key and roll_size need an audit file (events sent to the Caddy logger are neither chained nor rolled by crm_guard)")
	}
	if h.AuditRollSize < 0 {
		return fmt.Errorf("caddymodule: audit roll_size must not be negative, got %d", h.AuditRollSize)
	}
	if h.OIDC != nil && h.IdentityRaw != nil {
		return fmt.Errorf("caddymodule: configure either oidc or an identity module, not both")
	}
	if h.Session != nil && h.OIDC == nil {
		return fmt.Errorf("caddymodule: a session block needs an oidc block")
	}
	return nil
}

// Cleanup releases the rules watcher, the audit file and the provider.
// The notifier delivers what it has queued in the background (for at most
// notify.DefaultDrain), so a reload does not wait for a slow webhook.
func (h *Handler) Cleanup() error {
	if h.workflow != nil {
		_ = h.workflow.Close()
	}
	if n := h.notifier; n != nil {
		go func() { _ = n.Close() }()
	}
	var err error
	if h.owned != nil {
		err = h.owned.Cleanup()
	}
	if h.state != nil {
		err = errors.Join(err, h.state.Close())
	}
	if h.sourceKey != "" {
		h.source.listeners.remove(h)
		_, _ = ruleSources.Delete(h.sourceKey)
	}
	if h.auditPath != "" {
		releaseAuditFile(h.auditPath)
	}
	return err
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	return h.guard.ServeHTTP(w, r, next)
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
