// Package devidp is a development OpenID Provider for crmguard's demo and
// tests. It is built on zitadel/oidc's `op` package (discovery, authorize,
// token, userinfo, keys, end_session are the library's); this package adds
// an in-memory storage, a login page with password and a real TOTP second
// factor (RFC 6238), single sign-on sessions, and OIDC Back-Channel Logout.
//
// FOR DEVELOPMENT ONLY: users, passwords and keys live in memory and the
// server binds to loopback unless told otherwise.
//
// # Tokens
//
// ID tokens carry `sub` (the username), `preferred_username`, `name`,
// `email`, `groups` (a list of crm-* group names), `teams` (a list of team
// names), `auth_time`, `sid` (the provider session), `amr` and `acr`:
//
//   - password only: amr ["pwd"], acr ACRPassword ("urn:crmguard:devidp:pwd");
//   - password + TOTP: amr ["pwd", "otp", "mfa"], acr ACRMFA
//     ("urn:crmguard:devidp:mfa").
//
// Access tokens are JWTs with the same amr/acr/auth_time/groups/teams
// claims and the audience of the client plus the client's extra Audience.
// Refresh tokens are issued for the offline_access scope and rotated on use.
//
// # Login
//
// The login page asks for username and password, then (for users with a
// TOTP secret) for the current code. With Config.ConditionalMFA the code is
// only asked when the client requests acr_values containing ACRMFA (as
// identity providers with conditional MFA do). A signed-in browser keeps an
// SSO session (cookie) that is reused unless the request says prompt=login,
// its max_age is exceeded, or it asks for MFA the session lacks.
//
// # Demo users
//
// DemoUsers returns one user per crmguard role, all with password
// "demo-<username>" and a TOTP secret (print codes with TOTP):
//
//	zhang  crm-sales            teams [east]   sales rep
//	wang   crm-sales-managers   teams [east]   sales manager of team east,
//	                                           direct_reports [zhang wu]
//	li     crm-service          teams [service]
//	zhao   crm-finance          teams [finance]
//	sun    crm-marketing        teams [marketing]
//	xiao   crm-observers        teams [east]   new hire, observation mode
//	qian   crm-compliance       teams [compliance]
//	admin  crm-admins           teams [east west]
package devidp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// ACR values this provider puts in tokens.
const (
	// ACRPassword is the acr of a password-only sign-in.
	ACRPassword = "urn:crmguard:devidp:pwd"
	// ACRMFA is the acr of a password + TOTP sign-in.
	ACRMFA = "urn:crmguard:devidp:mfa"
)

// User is a person who can sign in.
type User struct {
	// Username is the login name, the `sub` and `preferred_username`.
	Username string
	// Password is the password (plain text: development only).
	Password string
	// TOTPSecret is a base32 RFC 6238 secret; empty means the user has no
	// second factor and always signs in with amr ["pwd"].
	TOTPSecret string
	// Name is the display name.
	Name string
	// Email is the e-mail address.
	Email string
	// Groups go into the `groups` claim.
	Groups []string
	// Teams go into the `teams` claim.
	Teams []string
	// Reports are the user ids of a manager's direct reports, in the
	// `direct_reports` claim (absent when empty).
	Reports []string
	// Disabled users cannot sign in and their refresh tokens stop working.
	Disabled bool
}

// Client is a registered relying party (a confidential web client).
type Client struct {
	// ID is the client_id.
	ID string
	// Secret is the client_secret.
	Secret string
	// RedirectURIs are the accepted redirect_uri values.
	RedirectURIs []string
	// PostLogoutRedirectURIs are the accepted post_logout_redirect_uri values.
	PostLogoutRedirectURIs []string
	// BackchannelLogoutURI receives logout tokens when a session this
	// client took part in ends ("" for none).
	BackchannelLogoutURI string
	// Audience is added to the `aud` of access tokens issued to this
	// client (for APIs that accept them).
	Audience []string
}

// Config configures a Server.
type Config struct {
	// Issuer is the issuer URL (scheme, host, port, no path), e.g.
	// "http://127.0.0.1:9000".
	Issuer string
	// Users can sign in.
	Users []User
	// Clients are the registered relying parties.
	Clients []Client
	// SigningKey signs tokens; nil generates a 2048-bit RSA key.
	SigningKey *rsa.PrivateKey
	// AccessTokenLifetime defaults to 5 minutes.
	AccessTokenLifetime time.Duration
	// IDTokenLifetime defaults to 5 minutes.
	IDTokenLifetime time.Duration
	// ConditionalMFA asks for the TOTP code only when the client requests
	// acr_values containing ACRMFA; by default every user with a TOTP
	// secret is asked.
	ConditionalMFA bool
	// HTTPClient sends back-channel logout tokens (default: 5 s timeout).
	HTTPClient *http.Client
	// Logger logs sign-ins and logouts (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock that stamps sign-ins (auth_time) and judges
	// max_age; nil means time.Now. Tests move it to make sign-ins look old.
	Now func() time.Time
}

// Server is the development OpenID Provider; it is an http.Handler.
type Server struct {
	cfg     Config
	store   *storage
	handler http.Handler
	op      *op.Provider
}

// New builds a Server. Serve it at the issuer's host.
func New(cfg Config) (*Server, error) {
	cfg.Issuer = strings.TrimSuffix(cfg.Issuer, "/")
	if cfg.Issuer == "" {
		return nil, fmt.Errorf("devidp: Issuer is required")
	}
	if cfg.AccessTokenLifetime <= 0 {
		cfg.AccessTokenLifetime = 5 * time.Minute
	}
	if cfg.IDTokenLifetime <= 0 {
		cfg.IDTokenLifetime = 5 * time.Minute
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	key := cfg.SigningKey
	if key == nil {
		var err error
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, fmt.Errorf("devidp: generating signing key: %w", err)
		}
	}
	st := newStorage(cfg, key)
	var cryptoKey [32]byte
	if _, err := rand.Read(cryptoKey[:]); err != nil {
		return nil, fmt.Errorf("devidp: %w", err)
	}
	p, err := op.NewProvider(&op.Config{
		CryptoKey:                         cryptoKey,
		DefaultLogoutRedirectURI:          "/logged-out",
		CodeMethodS256:                    true,
		AuthMethodPost:                    true,
		GrantTypeRefreshToken:             true,
		SupportedUILocales:                []language.Tag{language.English},
		BackChannelLogoutSupported:        true,
		BackChannelLogoutSessionSupported: true,
	}, st, op.StaticIssuer(cfg.Issuer), op.WithAllowInsecure())
	if err != nil {
		return nil, fmt.Errorf("devidp: %w", err)
	}
	s := &Server{cfg: cfg, store: st, op: p}
	st.server = s
	mux := http.NewServeMux()
	l := &login{s: s, callback: op.AuthCallbackURL(p)}
	icpt := op.NewIssuerInterceptor(p.IssuerFromRequest)
	mux.Handle("/login", icpt.Handler(http.HandlerFunc(l.show)))
	mux.Handle("POST /login/password", icpt.Handler(http.HandlerFunc(l.password)))
	mux.Handle("POST /login/totp", icpt.Handler(http.HandlerFunc(l.totp)))
	mux.HandleFunc("/logged-out", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!doctype html><title>Signed out</title><p>You are signed out of the development identity provider.</p>")
	})
	mux.Handle("/", p)
	s.handler = mux
	return s, nil
}

// ServeHTTP serves the provider and its login pages.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Devidp", "development only")
	s.handler.ServeHTTP(w, r)
}

// Issuer is the configured issuer URL.
func (s *Server) Issuer() string { return s.cfg.Issuer }

// DisableUser stops a user from signing in; the user's refresh tokens stop
// working at once (the relying party learns it at its next refresh).
func (s *Server) DisableUser(username string) error { return s.store.setDisabled(username, true) }

// EnableUser undoes DisableUser.
func (s *Server) EnableUser(username string) error { return s.store.setDisabled(username, false) }

// LogoutUser ends every provider session of the user and sends
// back-channel logout tokens to the clients that took part in them.
func (s *Server) LogoutUser(ctx context.Context, username string) error {
	for _, sid := range s.store.sessionsOf(username) {
		s.store.endSession(ctx, sid)
	}
	return nil
}

// RotateKey makes key the signing key; the previous key stays in the key
// set so tokens it signed still verify.
func (s *Server) RotateKey(key *rsa.PrivateKey) { s.store.rotate(key) }

// RefreshCount is how many refresh_token grants have succeeded.
func (s *Server) RefreshCount() int { return s.store.refreshCount() }

// SetAccessTokenLifetime changes the lifetime of access tokens issued from
// now on.
func (s *Server) SetAccessTokenLifetime(d time.Duration) { s.store.setAccessLifetime(d) }

// NewTOTPSecret returns a random base32 TOTP secret.
func NewTOTPSecret() string {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)
}

// DemoUsers returns one user per crmguard demo role (see the package
// documentation). The TOTP secrets are derived from seed so a demo can
// print the same codes after a restart.
func DemoUsers(seed string) []User {
	mk := func(name, display, group string, teams ...string) User {
		sum := sha256.Sum256([]byte(seed + "/" + name))
		return User{
			Username:   name,
			Password:   "demo-" + name,
			TOTPSecret: base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:20]),
			Name:       display,
			Email:      name + "@crm.example",
			Groups:     []string{group},
			Teams:      teams,
		}
	}
	wang := mk("wang", "Wang Fang", "crm-sales-managers", "east")
	wang.Reports = []string{"zhang", "wu"}
	return []User{
		mk("zhang", "Zhang Wei", "crm-sales", "east"),
		wang,
		mk("li", "Li Na", "crm-service", "service"),
		mk("zhao", "Zhao Lei", "crm-finance", "finance"),
		mk("sun", "Sun Li", "crm-marketing", "marketing"),
		mk("xiao", "Xiao Ming", "crm-observers", "east"),
		mk("qian", "Qian Jun", "crm-compliance", "compliance"),
		mk("zhou", "Zhou Min", "crm-it-security", "it"),
		mk("admin", "Admin", "crm-admins", "east", "west"),
	}
}

func randomID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
