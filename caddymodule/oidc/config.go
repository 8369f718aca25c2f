package oidc

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Defaults used when a Config field is left empty.
const (
	// DefaultCallbackPath is where the provider sends the browser back.
	DefaultCallbackPath = "/.crmguard/callback"
	// DefaultLoginPath starts a sign-in explicitly (?return=/path).
	DefaultLoginPath = "/.crmguard/login"
	// DefaultLogoutPath ends the session (POST with a CSRF token).
	DefaultLogoutPath = "/.crmguard/logout"
	// DefaultBackchannelLogoutPath receives OIDC Back-Channel Logout tokens.
	DefaultBackchannelLogoutPath = "/.crmguard/backchannel-logout"
	// DefaultMFARetries is how many sign-ins without MFA a browser may
	// try before it gets the "your account needs MFA" page.
	DefaultMFARetries = 3
	// DefaultClockSkew is the allowance for clocks that are not in step.
	DefaultClockSkew = time.Minute
	// DefaultRefreshBefore refreshes tokens this long before they expire.
	DefaultRefreshBefore = time.Minute
	// DefaultFlowTimeout is how long a started sign-in may take.
	DefaultFlowTimeout = 10 * time.Minute
)

// DefaultScopes are requested when Config.Scopes is empty.
var DefaultScopes = []string{"openid", "profile", "email", "offline_access"}

// DefaultAlgorithms are the accepted token signature algorithms when
// Config.Algorithms is empty: asymmetric ones only.
var DefaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Config is the `oidc { ... }` block of the crm_guard handler: the OpenID
// Provider the proxy signs users in with, as a confidential client.
//
// Caddyfile:
//
//	oidc {
//		issuer https://idp.example.com/realms/corp
//		client_id crm
//		client_secret {env.OIDC_CLIENT_SECRET}
//		redirect_url https://crm.example.com/.crmguard/callback   # optional
//		callback_path /.crmguard/callback
//		scopes openid profile email offline_access groups
//		acr_values urn:example:mfa
//		login_path /.crmguard/login
//		logout_path /.crmguard/logout
//		backchannel_logout_path /.crmguard/backchannel-logout
//		post_logout_redirect /
//		bearer_audiences crm-api other-audience
//		algorithms RS256 ES256
//		mfa_retries 3
//		clock_skew 1m
//		refresh_before 1m
//		flow_timeout 10m
//		disable_bearer
//	}
type Config struct {
	// Issuer is the provider's issuer URL; its discovery document is read
	// from Issuer + "/.well-known/openid-configuration" and every token's
	// `iss` must equal it.
	Issuer string `json:"issuer,omitempty"`

	// ClientID is the proxy's client id at the provider; ID tokens must be
	// issued to it.
	ClientID string `json:"client_id,omitempty"`

	// ClientSecret is the proxy's client secret (confidential client).
	ClientSecret string `json:"client_secret,omitempty"`

	// RedirectURL is the absolute callback URL registered at the provider.
	// Empty: the scheme and host of the request that started the sign-in
	// plus CallbackPath (the provider only accepts registered URLs, so a
	// forged Host header cannot redirect codes elsewhere).
	RedirectURL string `json:"redirect_url,omitempty"`

	// CallbackPath is the path the provider redirects back to.
	// Default "/.crmguard/callback".
	CallbackPath string `json:"callback_path,omitempty"`

	// Scopes are the requested scopes. Default "openid profile email
	// offline_access"; "openid" is always added.
	Scopes []string `json:"scopes,omitempty"`

	// ACRValues are sent as `acr_values` when a sign-in must use MFA. They
	// only ask; the returned token's amr/acr claims are what is checked.
	ACRValues []string `json:"acr_values,omitempty"`

	// LoginPath starts a sign-in explicitly: GET <LoginPath>?return=/path
	// (a same-origin relative path; anything else returns to "/").
	// Default "/.crmguard/login".
	LoginPath string `json:"login_path,omitempty"`

	// LogoutPath ends the proxy session and then the provider session.
	// Default "/.crmguard/logout".
	LogoutPath string `json:"logout_path,omitempty"`

	// BackchannelLogoutPath receives logout tokens from the provider
	// (OIDC Back-Channel Logout 1.0). Default
	// "/.crmguard/backchannel-logout". Register <origin>+this path as the
	// client's backchannel_logout_uri at the provider.
	BackchannelLogoutPath string `json:"backchannel_logout_path,omitempty"`

	// PostLogoutRedirect is where the provider sends the browser after
	// logout: an absolute URL, or a path on the proxy's own origin.
	// Default "/".
	PostLogoutRedirect string `json:"post_logout_redirect,omitempty"`

	// BearerAudiences are the `aud` values accepted in bearer tokens
	// (Authorization: Bearer <JWT>). Default: ClientID.
	BearerAudiences []string `json:"bearer_audiences,omitempty"`

	// DisableBearer refuses Authorization: Bearer tokens altogether.
	DisableBearer bool `json:"disable_bearer,omitempty"`

	// Algorithms is the allow-list of token signature algorithms.
	// Default: RS256/384/512, PS256/384/512, ES256/384/512, EdDSA.
	// "none" and HMAC algorithms are refused.
	Algorithms []string `json:"algorithms,omitempty"`

	// MFARetries is how many sign-ins without MFA in a row are sent back
	// to the provider before the browser gets a page explaining that the
	// account needs MFA. Default 3.
	MFARetries int `json:"mfa_retries,omitempty"`

	// ClockSkew is the allowance for clock differences when checking
	// exp, iat and auth_time. Default 1m.
	ClockSkew caddy.Duration `json:"clock_skew,omitempty"`

	// RefreshBefore refreshes a session's tokens this long before the
	// access token expires. Default 1m.
	RefreshBefore caddy.Duration `json:"refresh_before,omitempty"`

	// FlowTimeout is how long a started sign-in may take (the lifetime of
	// its cookie). Default 10m.
	FlowTimeout caddy.Duration `json:"flow_timeout,omitempty"`
}

// WithDefaults returns a copy of c with empty fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.CallbackPath == "" {
		c.CallbackPath = DefaultCallbackPath
	}
	if c.LoginPath == "" {
		c.LoginPath = DefaultLoginPath
	}
	if c.LogoutPath == "" {
		c.LogoutPath = DefaultLogoutPath
	}
	if c.BackchannelLogoutPath == "" {
		c.BackchannelLogoutPath = DefaultBackchannelLogoutPath
	}
	if c.PostLogoutRedirect == "" {
		c.PostLogoutRedirect = "/"
	}
	if len(c.Scopes) == 0 {
		c.Scopes = append([]string(nil), DefaultScopes...)
	}
	hasOpenID := false
	for _, s := range c.Scopes {
		hasOpenID = hasOpenID || s == "openid"
	}
	if !hasOpenID {
		c.Scopes = append([]string{"openid"}, c.Scopes...)
	}
	if len(c.BearerAudiences) == 0 && c.ClientID != "" {
		c.BearerAudiences = []string{c.ClientID}
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = append([]string(nil), DefaultAlgorithms...)
	}
	if c.MFARetries <= 0 {
		c.MFARetries = DefaultMFARetries
	}
	if c.ClockSkew <= 0 {
		c.ClockSkew = caddy.Duration(DefaultClockSkew)
	}
	if c.RefreshBefore <= 0 {
		c.RefreshBefore = caddy.Duration(DefaultRefreshBefore)
	}
	if c.FlowTimeout <= 0 {
		c.FlowTimeout = caddy.Duration(DefaultFlowTimeout)
	}
	return c
}

// Validate reports the first problem with c (after WithDefaults).
func (c *Config) Validate() error {
	if c.Issuer == "" {
		return fmt.Errorf("oidc: issuer is required")
	}
	u, err := url.Parse(c.Issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("oidc: issuer %q is not an http(s) URL", c.Issuer)
	}
	if c.ClientID == "" {
		return fmt.Errorf("oidc: client_id is required")
	}
	if c.RedirectURL != "" {
		ru, err := url.Parse(c.RedirectURL)
		if err != nil || !ru.IsAbs() || ru.Host == "" {
			return fmt.Errorf("oidc: redirect_url %q is not an absolute URL", c.RedirectURL)
		}
	}
	for name, p := range map[string]string{"callback_path": c.CallbackPath, "login_path": c.LoginPath, "logout_path": c.LogoutPath, "backchannel_logout_path": c.BackchannelLogoutPath} {
		if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
			return fmt.Errorf("oidc: %s %q must be an absolute path", name, p)
		}
	}
	for _, a := range c.Algorithms {
		if !allowedAlgorithm(a) {
			return fmt.Errorf("oidc: algorithm %q is not accepted (use asymmetric ones: %s)", a, strings.Join(DefaultAlgorithms, ", "))
		}
	}
	return nil
}

func allowedAlgorithm(a string) bool {
	for _, ok := range DefaultAlgorithms {
		if a == ok {
			return true
		}
	}
	return false
}

// UnmarshalCaddyfile parses an `oidc { ... }` block. The dispenser must be
// positioned on the `oidc` token.
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.CountRemainingArgs() > 0 {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		args := d.RemainingArgs()
		one := func(dst *string) error {
			if len(args) != 1 {
				return d.ArgErr()
			}
			*dst = args[0]
			return nil
		}
		many := func(dst *[]string) error {
			if len(args) == 0 {
				return d.ArgErr()
			}
			*dst = append(*dst, args...)
			return nil
		}
		dur := func(dst *caddy.Duration) error {
			if len(args) != 1 {
				return d.ArgErr()
			}
			v, err := caddy.ParseDuration(args[0])
			if err != nil {
				return d.Errf("oidc: %s %q: %v", key, args[0], err)
			}
			*dst = caddy.Duration(v)
			return nil
		}
		var err error
		switch key {
		case "issuer":
			err = one(&c.Issuer)
		case "client_id":
			err = one(&c.ClientID)
		case "client_secret":
			err = one(&c.ClientSecret)
		case "redirect_url":
			err = one(&c.RedirectURL)
		case "callback_path":
			err = one(&c.CallbackPath)
		case "scopes":
			err = many(&c.Scopes)
		case "acr_values":
			err = many(&c.ACRValues)
		case "login_path":
			err = one(&c.LoginPath)
		case "logout_path":
			err = one(&c.LogoutPath)
		case "backchannel_logout_path":
			err = one(&c.BackchannelLogoutPath)
		case "post_logout_redirect":
			err = one(&c.PostLogoutRedirect)
		case "bearer_audiences", "bearer_audience":
			err = many(&c.BearerAudiences)
		case "disable_bearer":
			if len(args) != 0 {
				return d.ArgErr()
			}
			c.DisableBearer = true
		case "algorithms":
			err = many(&c.Algorithms)
		case "mfa_retries":
			if len(args) != 1 {
				return d.ArgErr()
			}
			n, perr := strconv.Atoi(args[0])
			if perr != nil || n < 1 {
				return d.Errf("oidc: mfa_retries %q is not a positive number", args[0])
			}
			c.MFARetries = n
		case "clock_skew":
			err = dur(&c.ClockSkew)
		case "refresh_before":
			err = dur(&c.RefreshBefore)
		case "flow_timeout":
			err = dur(&c.FlowTimeout)
		default:
			return d.Errf("oidc: unknown subdirective %q", key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Config)(nil)
