package session

import (
	"fmt"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Defaults used when a Config field is left empty.
const (
	// DefaultCookieName is the name of the session cookie.
	DefaultCookieName = "crmguard_session"
	// DefaultIdleTimeout ends a session that saw no request for this long.
	DefaultIdleTimeout = 30 * time.Minute
	// DefaultLifetime ends every session this long after sign-in.
	DefaultLifetime = 12 * time.Hour
	// MinSecretLength is the shortest accepted session secret, in bytes.
	MinSecretLength = 32
)

// Config is the `session { ... }` block of the crm_guard handler: how
// sessions are encrypted, where they are kept and how long they live.
//
// Caddyfile:
//
//	session {
//		secret <current> [<older>...]   # repeatable; the first one encrypts
//		store  file [<dir>] | redis://... | rediss://...   # former spelling of crm_guard's `store`
//		idle_timeout 30m
//		lifetime 12h
//		cookie_name crmguard_session
//		insecure_cookie                  # omit Secure (plain-http development only)
//		secure_cookie                    # always Secure and __Host- (TLS ends before Caddy)
//	}
type Config struct {
	// Secrets are the keys that protect session and sign-in cookies, each
	// at least 32 bytes. The first one encrypts new cookies; every one of
	// them decrypts, so a key can be rotated by putting the new secret
	// first and removing the old one after the longest session lifetime.
	// Actual AES keys are derived from these with HKDF-SHA256.
	Secrets []string `json:"secrets,omitempty"`

	// Store is the former place of the state store's setting, kept so
	// existing configurations load: "file" for the default file, "file:<dir>"
	// for <dir>/state.db, or a redis:// / rediss:// URL. It configures the
	// same one store as `store` in the crm_guard block, which replaces it;
	// when both are set they must name the same store, or the
	// configuration does not load.
	Store string `json:"store,omitempty"`

	// IdleTimeout ends a session that saw no request for this long.
	// Default 30m.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// Lifetime ends a session this long after sign-in, whatever its
	// activity. Default 12h.
	Lifetime caddy.Duration `json:"lifetime,omitempty"`

	// CookieName is the session cookie's name. Default "crmguard_session".
	// The short-lived sign-in cookies use this name with a suffix.
	CookieName string `json:"cookie_name,omitempty"`

	// InsecureCookie drops the Secure attribute from the proxy's cookies
	// so that they work over plain http (development on localhost only).
	// By default cookies are Secure when the request came over TLS.
	InsecureCookie bool `json:"insecure_cookie,omitempty"`

	// SecureCookie makes the proxy's cookies Secure (and so named
	// "__Host-" + name) on every request, also those that reach Caddy
	// over plain http because TLS ends in front of it (a load balancer).
	// By default only requests that came over TLS get Secure cookies.
	SecureCookie bool `json:"secure_cookie,omitempty"`
}

// WithDefaults returns a copy of c with empty fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = caddy.Duration(DefaultIdleTimeout)
	}
	if c.Lifetime <= 0 {
		c.Lifetime = caddy.Duration(DefaultLifetime)
	}
	if c.CookieName == "" {
		c.CookieName = DefaultCookieName
	}
	return c
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	if len(c.Secrets) == 0 {
		return fmt.Errorf("session: no secret configured (session { secret <at least %d random bytes> })", MinSecretLength)
	}
	for i, s := range c.Secrets {
		if len(s) < MinSecretLength {
			return fmt.Errorf("session: secret #%d is %d bytes long, need at least %d", i+1, len(s), MinSecretLength)
		}
	}
	if c.InsecureCookie && c.SecureCookie {
		return fmt.Errorf("session: insecure_cookie and secure_cookie contradict each other; keep one")
	}
	if c.IdleTimeout < 0 || c.Lifetime < 0 {
		return fmt.Errorf("session: idle_timeout and lifetime must not be negative")
	}
	if c.Lifetime > 0 && c.IdleTimeout > c.Lifetime {
		return fmt.Errorf("session: idle_timeout %s is longer than lifetime %s", time.Duration(c.IdleTimeout), time.Duration(c.Lifetime))
	}
	return nil
}

// UnmarshalCaddyfile parses a `session { ... }` block. The dispenser must be
// positioned on the `session` token.
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.CountRemainingArgs() > 0 {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "secret", "secrets":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			c.Secrets = append(c.Secrets, args...)
		case "store":
			if !d.NextArg() {
				return d.ArgErr()
			}
			c.Store = d.Val()
			if d.NextArg() {
				if c.Store != "file" {
					return d.ArgErr()
				}
				c.Store = "file:" + d.Val()
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "idle_timeout", "lifetime":
			name := d.Val()
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("session: %s %q: %v", name, d.Val(), err)
			}
			if name == "lifetime" {
				c.Lifetime = caddy.Duration(dur)
			} else {
				c.IdleTimeout = caddy.Duration(dur)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "cookie_name":
			if !d.NextArg() {
				return d.ArgErr()
			}
			c.CookieName = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "insecure_cookie", "secure_cookie":
			name := d.Val()
			b := true
			if d.NextArg() {
				var err error
				if b, err = strconv.ParseBool(d.Val()); err != nil {
					return d.Errf("session: %s %q: %v", name, d.Val(), err)
				}
			}
			if name == "secure_cookie" {
				c.SecureCookie = b
			} else {
				c.InsecureCookie = b
			}
		default:
			return d.Errf("session: unknown subdirective %q", d.Val())
		}
	}
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Config)(nil)
