package caddymodule

import (
	"encoding/json"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/crmguard/crmguard/caddymodule/notify"
	"github.com/crmguard/crmguard/caddymodule/oidc"
	"github.com/crmguard/crmguard/caddymodule/session"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("crm_guard", parseCaddyfile)
	// Before `invoke` and `handle`: routing directives (handle, route,
	// handle_path) are terminal, so a guard ordered after them (for
	// example directly before reverse_proxy) would never run for a site
	// that proxies inside a handle block. Request rewriting directives
	// (rewrite, uri, try_files) and header/request_header run earlier, so
	// the rules judge the request as it will reach the CRM, and encode
	// wraps the guard, compressing its rewritten answers.
	httpcaddyfile.RegisterDirectiveOrder("crm_guard", httpcaddyfile.Before, "invoke")
}

// parseCaddyfile builds the handler from a crm_guard directive.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return m, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	crm_guard [<rules_file>] {
//		rules <file>
//		oidc { ... }                 # see package oidc
//		session { ... }              # see package session
//		store <file> | redis://... | rediss://...   # the state store
//		identity <module> { ... }    # an identity module instead of oidc
//		audit <file> [{ chain_key <secret>; roll_size <size> }]
//		max_body <size>              # e.g. 16MiB
//		hash_key <secret>
//		strip_headers <name>...      # a trailing * strips a prefix
//		cookie_prefixes <prefix>...
//		mode shadow                  # decide and audit, never enforce
//		reload_interval <duration>|off
//		notify { webhook <url> { header <name> <value> } }   # see package notify
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		h.Rules = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "rules":
			if err := oneArg(d, &h.Rules); err != nil {
				return err
			}
		case "oidc":
			c := new(oidc.Config)
			if err := c.UnmarshalCaddyfile(d); err != nil {
				return err
			}
			h.OIDC = c
		case "notify":
			c := new(notify.Config)
			if err := c.UnmarshalCaddyfile(d); err != nil {
				return err
			}
			h.Notify = c
		case "session":
			c := new(session.Config)
			if err := c.UnmarshalCaddyfile(d); err != nil {
				return err
			}
			h.Session = c
		case "store":
			if err := oneArg(d, &h.Store); err != nil {
				return err
			}
		case "identity":
			if !d.NextArg() {
				return d.ArgErr()
			}
			name := d.Val() // the module's parser sees its name first
			mod, err := caddyfile.UnmarshalModule(d, "crm_guard.identity."+name)
			if err != nil {
				return err
			}
			raw := caddyconfig.JSONModuleObject(mod, "source", name, nil)
			h.IdentityRaw = json.RawMessage(raw)
		case "audit":
			if err := h.unmarshalAudit(d); err != nil { // caddyfile_audit.go
				return err
			}
		case "max_body":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			n, err := humanize.ParseBytes(s)
			if err != nil || n == 0 {
				return d.Errf("crm_guard: max_body %q is not a size (e.g. 16MiB)", s)
			}
			h.MaxBody = int64(n)
		case "hash_key":
			if err := oneArg(d, &h.HashKey); err != nil {
				return err
			}
		case "strip_headers":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.StripHeaders = append(h.StripHeaders, args...)
		case "cookie_prefixes", "cookie_prefix":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.CookiePrefixes = append(h.CookiePrefixes, args...)
		case "mode":
			if err := oneArg(d, &h.Mode); err != nil {
				return err
			}
			if h.Mode != "shadow" {
				return d.Errf("crm_guard: mode must be shadow, got %q (without `mode` the rule file decides)", h.Mode)
			}
		case "reload_interval":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			if s == "off" {
				h.ReloadInterval = -1
				continue
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil || dur <= 0 {
				return d.Errf("crm_guard: reload_interval %q is not a positive duration or off", s)
			}
			h.ReloadInterval = caddy.Duration(dur)
		default:
			return d.Errf("crm_guard: unknown subdirective %q", d.Val())
		}
	}
	if h.Rules == "" {
		return d.Err("crm_guard: the rules file is required (rules <file>)")
	}
	return nil
}

// oneArg reads exactly one argument into dst.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.Errf("crm_guard: %s takes one argument, got another: %s", d.Val(), strconv.Quote(d.Val()))
	}
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Handler)(nil)
