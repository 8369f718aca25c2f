// Package demo runs the demo stack that `crmguard demo` starts and the
// integration tests sign in to: the example CRM, the development OpenID
// Provider and the guard (Caddy with crm_guard, configured from a
// Caddyfile), all on loopback, in this process. It is example code: the
// guard itself never imports it.
package demo

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	// The Caddyfile adapter and the standard modules (reverse_proxy, ...).
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// The crm_guard handler.
	_ "github.com/crmguard/crmguard/caddymodule"

	"github.com/crmguard/crmguard/examples/crm"
	"github.com/crmguard/crmguard/examples/devidp"
)

// Demo defaults.
const (
	// DefaultListen is where the guard listens unless told otherwise.
	DefaultListen = "localhost:8080"
	// DefaultTOTPSeed derives the demo users' TOTP secrets, so that
	// `crmguard demo totp <user>` prints codes the running demo accepts.
	DefaultTOTPSeed = "crmguard-demo"
	// DefaultAuditKey is the chain key of the demo's audit file. It is a
	// demo value, printed in the banner: a deployment keeps its key secret.
	DefaultAuditKey = "crmguard-demo"
	// ClientID is the guard's client id at the development provider.
	ClientID = "crmguard-demo"
)

// Config configures Start. The zero value runs the repository's
// Caddyfile from the current directory on localhost:8080.
type Config struct {
	// Caddyfile is the configuration the guard runs. Default "Caddyfile".
	Caddyfile string
	// Rules is the rule file; it is passed to the Caddyfile as
	// {$CRMGUARD_RULES}. Default: examples/rules.yaml in the Caddyfile's
	// folder or the nearest folder above it that has one.
	Rules string
	// Listen is the guard's host:port; the host must be a loopback name.
	// Default "localhost:8080". Port 0 picks a free port.
	Listen string
	// Seed generates the CRM's data. Default 1.
	Seed int64
	// Now is the clock the CRM's data is generated around. Default: now.
	Now time.Time
	// TOTPSeed derives the demo users' TOTP secrets. Default DefaultTOTPSeed.
	TOTPSeed string
	// IdPNow is the identity provider's clock, which stamps sign-ins
	// (auth_time). Default: time.Now. Tests move it to make a sign-in
	// look newer or older.
	IdPNow func() time.Time
	// SessionStore is the session store ({$CRMGUARD_SESSION_STORE}), e.g.
	// "file:/tmp/x". Default "file" (Caddy's data directory).
	SessionStore string
	// StorageDir is Caddy's storage folder (certificates, the default
	// session files). Default: Caddy's data directory.
	StorageDir string
	// Admin is Caddy's admin address ({$CRMGUARD_ADMIN}), or "off".
	// Default "localhost:2019".
	Admin string
	// Audit is the file the guard writes its audit events to, chained
	// with AuditKey (`crmguard audit verify`). Empty: the Caddyfile's own
	// audit setting (the Caddy logger, in the repository's Caddyfile).
	Audit string
	// AuditKey is the audit file's chain_key. Default DefaultAuditKey.
	AuditKey string
	// Log receives the CRM's and the identity provider's log lines.
	// Default: standard error.
	Log io.Writer
}

// Stack is a running demo stack.
type Stack struct {
	// URL is where a browser opens the guarded CRM, e.g. http://localhost:8080.
	URL string
	// Issuer is the development identity provider's issuer URL.
	Issuer string
	// CRMAddr is the example CRM's address (reachable without the guard:
	// for tests only).
	CRMAddr string
	// CRM is the example CRM.
	CRM *crm.Server
	// IdP is the development identity provider.
	IdP *devidp.Server
	// Users are the demo users.
	Users []devidp.User
	// Rules is the rule file the guard runs.
	Rules string
	// Audit is the guard's audit file and AuditKey its chain key ("" when
	// events go where the Caddyfile says).
	Audit, AuditKey string

	servers []*http.Server
}

// Start starts the CRM and the identity provider on free loopback
// ports, then the guard from the Caddyfile with the {$...} values filled
// in. It returns once everything accepts connections. Stop ends it.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	if cfg.Caddyfile == "" {
		cfg.Caddyfile = "Caddyfile"
	}
	caddyfilePath, err := filepath.Abs(cfg.Caddyfile)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	body, err := os.ReadFile(caddyfilePath)
	if err != nil {
		return nil, fmt.Errorf("demo: reading the Caddyfile (run from the repository's top folder, or give --config): %w", err)
	}
	if cfg.Rules == "" {
		cfg.Rules = findUp(filepath.Dir(caddyfilePath), filepath.Join("examples", "rules.yaml"))
	}
	rulesPath, err := filepath.Abs(cfg.Rules)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if _, err := os.Stat(rulesPath); err != nil {
		return nil, fmt.Errorf("demo: the rule file: %w", err)
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.TOTPSeed == "" {
		cfg.TOTPSeed = DefaultTOTPSeed
	}
	if cfg.SessionStore == "" {
		cfg.SessionStore = "file"
	}
	if cfg.Admin == "" {
		cfg.Admin = "localhost:2019"
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("demo: listen address %q: %w", cfg.Listen, err)
	}
	if !isLoopbackName(host) {
		return nil, fmt.Errorf("demo: listen address %q: the demo only runs on loopback (localhost, 127.0.0.1)", cfg.Listen)
	}
	d := &Stack{Users: devidp.DemoUsers(cfg.TOTPSeed), Rules: rulesPath}
	ok := false
	defer func() {
		if !ok {
			d.Stop()
		}
	}()

	// The CRM.
	crmLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo: CRM listener: %w", err)
	}
	d.CRMAddr = crmLn.Addr().String()
	d.CRM = crm.New(crm.Options{Seed: cfg.Seed, Now: cfg.Now, Log: log.New(cfg.Log, "", log.LstdFlags)})
	d.serve(crmLn, d.CRM)

	// The identity provider: its address is fixed now; its client
	// registration follows the guard's address below.
	idpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo: identity provider listener: %w", err)
	}
	d.Issuer = "http://" + idpLn.Addr().String()
	var idp atomic.Pointer[devidp.Server]
	d.serve(idpLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := idp.Load(); s != nil {
			s.ServeHTTP(w, r)
			return
		}
		http.Error(w, "demo: the identity provider is starting", http.StatusServiceUnavailable)
	}))

	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		return nil, errors.New("demo: the Caddyfile adapter is not linked in")
	}
	// A free port picked for the guard can be taken by another socket
	// before Caddy binds it; then pick again.
	for attempt := 1; ; attempt++ {
		guardPort := port
		if port == "0" {
			if guardPort, err = freePort(); err != nil {
				return nil, err
			}
		}
		d.URL = "http://" + net.JoinHostPort(host, guardPort)
		secret := randomHex(24)
		srv, err := devidp.New(devidp.Config{
			Issuer: d.Issuer,
			Users:  d.Users,
			Clients: []devidp.Client{{
				ID:                     ClientID,
				Secret:                 secret,
				RedirectURIs:           []string{d.URL + "/.crmguard/callback"},
				PostLogoutRedirectURIs: []string{d.URL + "/"},
				BackchannelLogoutURI:   d.URL + "/.crmguard/backchannel-logout",
			}},
			Logger: slog.New(slog.NewTextHandler(cfg.Log, nil)),
			Now:    cfg.IdPNow,
		})
		if err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		d.IdP = srv
		idp.Store(srv)

		env := map[string]string{
			"CRMGUARD_SITE":           d.URL,
			"CRMGUARD_BIND":           "127.0.0.1",
			"CRMGUARD_RULES":          rulesPath,
			"CRMGUARD_UPSTREAM":       d.CRMAddr,
			"CRMGUARD_ADMIN":          cfg.Admin,
			"CRMGUARD_SESSION_SECRET": randomHex(32),
			"CRMGUARD_SESSION_STORE":  cfg.SessionStore,
			"CRMGUARD_HASH_KEY":       randomHex(32),
			"OIDC_ISSUER":             d.Issuer,
			"OIDC_CLIENT_ID":          ClientID,
			"OIDC_CLIENT_SECRET":      secret,
		}
		cfgJSON, warns, err := adaptWithEnv(adapter, body, caddyfilePath, env)
		if err != nil {
			return nil, fmt.Errorf("demo: %s: %w", caddyfilePath, err)
		}
		for _, w := range warns {
			fmt.Fprintf(cfg.Log, "demo: %s:%d: %s\n", w.File, w.Line, w.Message)
		}
		if !strings.Contains(string(cfgJSON), `"crm_guard"`) {
			return nil, fmt.Errorf("demo: %s has no crm_guard handler: the demo would run an unguarded CRM", caddyfilePath)
		}
		if cfg.StorageDir != "" {
			if cfgJSON, err = withStorage(cfgJSON, cfg.StorageDir); err != nil {
				return nil, err
			}
		}
		if cfg.Audit != "" {
			d.AuditKey = cmp.Or(cfg.AuditKey, DefaultAuditKey)
			if d.Audit, err = filepath.Abs(cfg.Audit); err != nil {
				return nil, fmt.Errorf("demo: the audit file %q: %w", cfg.Audit, err)
			}
			if cfgJSON, err = withAudit(cfgJSON, d.Audit, d.AuditKey); err != nil {
				return nil, err
			}
		}
		err = caddy.Load(cfgJSON, true)
		if err != nil && port == "0" && attempt < 5 && isAddrInUse(err) {
			fmt.Fprintf(cfg.Log, "demo: port %s was taken meanwhile; picking another\n", guardPort)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("demo: starting the guard from %s: %w", caddyfilePath, err)
		}
		if err := checkListening(ctx, net.JoinHostPort("127.0.0.1", guardPort)); err != nil {
			return nil, fmt.Errorf("demo: the guard does not accept connections on %s: %w", d.URL, err)
		}
		break
	}
	ok = true
	return d, nil
}

// Stop stops the guard, the identity provider and the CRM.
func (d *Stack) Stop() {
	_ = caddy.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range d.servers {
		_ = s.Shutdown(ctx)
	}
	d.servers = nil
}

// TOTP returns the code the demo user's authenticator shows at t.
func (d *Stack) TOTP(username string, t time.Time) (string, error) {
	return TOTP(d.Users, username, t)
}

// User returns the demo user with the given name.
func (d *Stack) User(username string) (devidp.User, bool) {
	for _, u := range d.Users {
		if u.Username == username {
			return u, true
		}
	}
	return devidp.User{}, false
}

// TOTP returns the code the authenticator of the user with the given name
// among users shows at t.
func TOTP(users []devidp.User, username string, t time.Time) (string, error) {
	for _, u := range users {
		if u.Username == username {
			return devidp.TOTP(u.TOTPSecret, t)
		}
	}
	names := make([]string, len(users))
	for i, u := range users {
		names[i] = u.Username
	}
	return "", fmt.Errorf("demo: no demo user %q (the users are %s)", username, strings.Join(names, ", "))
}

func (d *Stack) serve(ln net.Listener, h http.Handler) {
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	d.servers = append(d.servers, s)
	go func() { _ = s.Serve(ln) }()
}

// findUp returns dir/rel for the first of dir and its parents where it
// exists, else dir/rel.
func findUp(dir, rel string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, rel)); err == nil {
			return filepath.Join(d, rel)
		}
		if filepath.Dir(d) == d {
			return filepath.Join(dir, rel)
		}
	}
}

func isLoopbackName(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("demo: finding a free port: %w", err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), nil
}

// checkListening dials addr once: caddy.Load has bound the listeners when
// it returns, so a refused connection means the Caddyfile's site address
// is not the demo's listen address.
func checkListening(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// isAddrInUse reports whether err is a listener's "address already in
// use" (Caddy does not always wrap the syscall error).
func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// withStorage sets Caddy's storage to a file_system folder.
func withStorage(cfgJSON []byte, dir string) ([]byte, error) {
	var cfg map[string]any
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return nil, fmt.Errorf("demo: reading the adapted config: %w", err)
	}
	cfg["storage"] = map[string]any{"module": "file_system", "root": dir}
	return json.Marshal(cfg)
}

// withAudit makes every crm_guard handler of the adapted config write its
// audit events to file (an absolute path), chained with key.
func withAudit(cfgJSON []byte, file, key string) ([]byte, error) {
	var cfg any
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return nil, fmt.Errorf("demo: reading the adapted config: %w", err)
	}
	found := 0
	var walk func(any)
	walk = func(x any) {
		switch n := x.(type) {
		case map[string]any:
			if n["handler"] == "crm_guard" {
				n["audit"], n["audit_chain_key"] = file, key
				found++
			}
			for _, c := range n {
				walk(c)
			}
		case []any:
			for _, c := range n {
				walk(c)
			}
		}
	}
	walk(cfg)
	if found == 0 {
		return nil, fmt.Errorf("demo: the config has no crm_guard handler to write %s", file)
	}
	return json.Marshal(cfg)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
