package oidc

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/session"
	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/examples/devidp"
	"github.com/crmguard/crmguard/rules"
)

const (
	testSecret      = "0123456789abcdef0123456789abcdef-test-secret"
	clientSecret    = "proxy-client-secret"
	sensitiveMaxAge = time.Hour
)

var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// testUsers: "zhang" has TOTP; "pat" has only a password.
func testUsers() []devidp.User {
	users := []devidp.User{
		{Username: "pat", Password: "pat-pw", Name: "Pat", Groups: []string{"crm-sales"}, Teams: []string{"east"}},
	}
	for _, n := range []string{"zhang", "wang", "li", "zhao", "sun", "xiao", "qian", "admin"} {
		users = append(users, devidp.User{Username: n, Password: n + "-pw", TOTPSecret: devidp.NewTOTPSecret(), Groups: []string{"crm-" + n}, Teams: []string{"east"}})
	}
	return users
}

// env is a development OpenID Provider and one or more proxies in front of
// a tiny handler that uses the Provider like the crm_guard handler does.
type env struct {
	t       testing.TB
	idp     *devidp.Server
	idpURL  string
	users   map[string]devidp.User
	proxies []*proxy
	// idpOffset moves the provider's sign-in clock (auth_time).
	idpOffset atomic.Int64
	// idpDown makes the provider cut every connection.
	idpDown atomic.Bool
	// tls: the proxies serve HTTPS.
	tls bool
	// steps is the last TOTP step used per user (each step works once).
	stepsMu sync.Mutex
	steps   map[string]int64
}

type envOptions struct {
	proxies        int
	store          string // session store ("" = a temp dir file store shared by the proxies)
	conditionalMFA bool
	accessTTL      time.Duration
	extraClients   []devidp.Client
	idpDown        bool // the provider starts down (connections are cut)
	tls            bool // the proxies serve HTTPS (the provider stays plain http)
	configure      func(*Config)
}

type proxy struct {
	p      *Provider
	cfg    Config
	store  store.Store // the state store (shared with the env's other proxies on the same location)
	logger *zap.Logger
	url    string
	srv    *httptest.Server
	logs   *observer.ObservedLogs
	offset atomic.Int64 // clock offset in ns
}

func (px *proxy) shift(d time.Duration) { px.offset.Store(int64(d)) }

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	if o.proxies == 0 {
		o.proxies = 1
	}
	e := &env{t: t, users: map[string]devidp.User{}, steps: map[string]int64{}, tls: o.tls}
	idpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.idpDown.Store(o.idpDown)
	e.idpURL = "http://" + idpLn.Addr().String()
	var lns []net.Listener
	var origins []string
	for range o.proxies {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		scheme := "http://"
		if o.tls {
			scheme = "https://"
		}
		origins = append(origins, scheme+ln.Addr().String())
	}
	crm := devidp.Client{ID: "crm", Secret: clientSecret, BackchannelLogoutURI: origins[0] + DefaultBackchannelLogoutPath}
	for _, o := range origins {
		crm.RedirectURIs = append(crm.RedirectURIs, o+DefaultCallbackPath)
		crm.PostLogoutRedirectURIs = append(crm.PostLogoutRedirectURIs, o+"/")
	}
	users := testUsers()
	for _, u := range users {
		e.users[u.Username] = u
	}
	idp, err := devidp.New(devidp.Config{
		Issuer:              e.idpURL,
		Users:               users,
		Clients:             append([]devidp.Client{crm}, o.extraClients...),
		SigningKey:          testKey(),
		ConditionalMFA:      o.conditionalMFA,
		AccessTokenLifetime: o.accessTTL,
		Logger:              slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:                 func() time.Time { return time.Now().Add(time.Duration(e.idpOffset.Load())) },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.idp = idp
	srv := &httptest.Server{Listener: idpLn, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.idpDown.Load() { // a crashed provider: the connection is cut
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				c.Close()
			}
			return
		}
		idp.ServeHTTP(w, r)
	})}}
	srv.Start()
	t.Cleanup(srv.Close)
	spec := o.store
	if spec == "" {
		spec = "file:" + t.TempDir()
	}
	for i, ln := range lns {
		e.proxies = append(e.proxies, e.startProxy(ln, origins[i], spec, o.configure))
	}
	return e
}

func (e *env) startProxy(ln net.Listener, origin, spec string, configure func(*Config)) *proxy {
	t := e.t
	core, logs := observer.New(zapcore.DebugLevel)
	px := &proxy{url: origin, logs: logs}
	cfg := Config{Issuer: e.idpURL, ClientID: "crm", ClientSecret: clientSecret, ACRValues: []string{devidp.ACRMFA}}
	if configure != nil {
		configure(&cfg)
	}
	loc, err := store.ParseLocation(spec, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(loc, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	px.cfg, px.store, px.logger = cfg, st, zap.New(core)
	px.p = e.provider(px, []string{testSecret})
	px.srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: px}}
	if e.tls {
		px.srv.StartTLS()
	} else {
		px.srv.Start()
	}
	t.Cleanup(px.srv.Close)
	return px
}

// provider builds px's Provider with the given session secrets.
func (e *env) provider(px *proxy, secrets []string) *Provider {
	p, err := newProvider(context.Background(), px.cfg,
		session.Config{Secrets: secrets}, px.store, mfaPolicy, px.logger, nil, func(p *Provider) {
			p.now = func() time.Time { return time.Now().Add(time.Duration(px.offset.Load())) }
			p.minBackoff, p.maxBackoff = time.Hour, 4*time.Hour // no retry before a test moves the clock
		})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if err := p.Cleanup(); err != nil {
			e.t.Errorf("Cleanup: %v", err)
		}
	})
	return p
}

// restart replaces px's Provider by a new one on the same store (a proxy
// restart or config reload) with the given session secrets.
func (e *env) restart(px *proxy, secrets []string) {
	if err := px.p.Cleanup(); err != nil {
		e.t.Fatal(err)
	}
	px.p = e.provider(px, secrets)
}

func mfaPolicy() rules.MFAPolicy {
	return rules.MFAPolicy{Required: true, AMR: []string{"otp", "mfa", "hwk"}, ACR: []string{devidp.ACRMFA}}
}

// ServeHTTP does what the crm_guard handler does with an authn.Provider:
// own endpoints, identify, decide (MFA always; /sensitive needs a sign-in
// younger than sensitiveMaxAge), challenge or answer.
func (px *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if handled, err := px.p.Handle(w, r); handled || err != nil {
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
		return
	}
	id, err := px.p.Identify(r)
	if err != nil {
		http.Error(w, "provider unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	pol := mfaPolicy()
	var need authn.Need
	switch {
	case id == nil:
		need.SignIn = true
	case !pol.Satisfied(id.AMR, id.ACR):
		need.StepUp = rules.StepUpNeed{MFA: true, ACR: pol.ACR}
	case strings.HasPrefix(r.URL.Path, "/sensitive") && px.p.now().Sub(id.AuthTime) > sensitiveMaxAge:
		need.StepUp = rules.StepUpNeed{MaxAge: sensitiveMaxAge}
	}
	if need.SignIn || need.StepUp.MFA || need.StepUp.MaxAge > 0 {
		if err := px.p.Challenge(w, r, need); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"sub": id.Subject, "amr": id.AMR, "acr": id.ACR, "auth_time": id.AuthTime.Unix(),
		"bearer": id.Bearer, "path": r.URL.Path, "groups": id.Claims["groups"], "session": id.SessionID,
	})
}

// logged reports whether the proxy logged a message containing msg.
func (px *proxy) logged(msg string) bool {
	return px.logs.FilterMessageSnippet(msg).Len() > 0
}

// browser is a cookie-jar client that follows every redirect itself and
// fills the development provider's login forms.
type browser struct {
	t        testing.TB
	e        *env
	c        *http.Client
	user     string
	password string
	// rewrite may change a URL before it is requested.
	rewrite func(u *url.URL)
	// stop, when it returns true, ends a visit before u is requested.
	stop       func(u *url.URL) bool
	hops       []*url.URL
	logins     int
	totpLogins int
}

func (e *env) browser(user string) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: e.t, e: e, user: user, c: &http.Client{
		Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	if e.tls {
		// Trust the proxies' test certificate (httptest's, on 127.0.0.1).
		b.c.Transport = e.proxies[0].srv.Client().Transport
	}
	if u, ok := e.users[user]; ok {
		b.password = u.Password
	}
	return b
}

type answer struct {
	status int
	header http.Header
	body   string
	url    *url.URL
}

func (pg answer) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(pg.body), &m); err != nil {
		t.Fatalf("%s answered %d, not JSON: %.300s", pg.url, pg.status, pg.body)
	}
	return m
}

var hiddenID = regexp.MustCompile(`name="id" value="([^"]+)"`)

// visit requests rawURL as a browser (Accept: text/html) and follows
// redirects and login forms until a final page.
func (b *browser) visit(rawURL string) answer {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.follow(req)
}

func (b *browser) follow(req *http.Request) answer {
	b.t.Helper()
	for range 30 {
		if b.rewrite != nil {
			b.rewrite(req.URL)
		}
		if b.stop != nil && b.stop(req.URL) {
			return answer{url: req.URL}
		}
		req.Header.Set("Accept", "text/html,application/xhtml+xml")
		b.hops = append(b.hops, req.URL)
		resp, err := b.c.Do(req)
		if err != nil {
			b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		pg := answer{status: resp.StatusCode, header: resp.Header, body: string(body), url: req.URL}
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			loc, err := req.URL.Parse(resp.Header.Get("Location"))
			if err != nil {
				b.t.Fatalf("bad Location %q: %v", resp.Header.Get("Location"), err)
			}
			req, _ = http.NewRequest(http.MethodGet, loc.String(), nil)
		case strings.Contains(pg.body, `id="login-form"`):
			b.logins++
			req = b.form(req.URL, "/login/password", pg.body, url.Values{"username": {b.user}, "password": {b.password}})
		case strings.Contains(pg.body, `id="totp-form"`):
			b.totpLogins++
			req = b.form(req.URL, "/login/totp", pg.body, url.Values{"code": {b.totpCode()}})
		default:
			return pg
		}
	}
	b.t.Fatalf("too many redirects; hops: %v", b.hops)
	return answer{}
}

func (b *browser) form(base *url.URL, action, body string, v url.Values) *http.Request {
	m := hiddenID.FindStringSubmatch(body)
	if m == nil {
		b.t.Fatalf("login form without id: %.300s", body)
	}
	v.Set("id", m[1])
	u, _ := base.Parse(action)
	req, _ := http.NewRequest(http.MethodPost, u.String(), strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

// totpCode returns a code the provider has not seen for this user: each
// RFC 6238 step is usable once, and the provider accepts the previous,
// current and next step.
func (b *browser) totpCode() string {
	u := b.e.users[b.user]
	cur := time.Now().Unix() / 30
	b.e.stepsMu.Lock()
	step := max(b.e.steps[b.user]+1, cur-1)
	b.e.steps[b.user] = step
	b.e.stepsMu.Unlock()
	if step > cur+1 {
		b.t.Fatalf("test signs %s in more than three times in 30 s", b.user)
	}
	code, err := devidp.TOTP(u.TOTPSecret, time.Unix(step*30, 0))
	if err != nil {
		b.t.Fatal(err)
	}
	return code
}

// do sends one request with the browser's cookies, without following.
func (b *browser) do(req *http.Request) answer {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return answer{status: resp.StatusCode, header: resp.Header, body: string(body), url: req.URL}
}

// api sends a request as an API client (no Accept: text/html).
func (b *browser) api(rawURL string) answer {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, rawURL, nil)
	req.Header.Set("Accept", "application/json")
	return b.do(req)
}

// authRequests are the hops that went to the provider's authorization
// endpoint.
func (b *browser) authRequests() []*url.URL {
	var out []*url.URL
	for _, h := range b.hops {
		if strings.HasPrefix(h.String(), b.e.idpURL) && strings.HasSuffix(h.Path, "/authorize") {
			out = append(out, h)
		}
	}
	return out
}

func (b *browser) cookie(px *proxy, name string) *http.Cookie {
	u, _ := url.Parse(px.url)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// signIn signs b's user in at px and checks that it worked.
func (b *browser) signIn(px *proxy) map[string]any {
	b.t.Helper()
	pg := b.visit(px.url + "/app")
	if pg.status != http.StatusOK {
		b.t.Fatalf("sign-in of %s ended with %d at %s: %.400s", b.user, pg.status, pg.url, pg.body)
	}
	m := pg.json(b.t)
	if m["sub"] != b.user {
		b.t.Fatalf("signed in as %v, want %s", m["sub"], b.user)
	}
	return m
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}

var reCache sync.Map

func mustCompile(expr string) *regexp.Regexp {
	if re, ok := reCache.Load(expr); ok {
		return re.(*regexp.Regexp)
	}
	re := regexp.MustCompile(expr)
	reCache.Store(expr, re)
	return re
}

func mustURL(s string) *url.URL { return must(url.Parse(s)) }
