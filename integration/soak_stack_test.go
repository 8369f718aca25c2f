package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/crmguard/crmguard/caddymodule/store/redistest"
	"github.com/crmguard/crmguard/examples/crm"
	"github.com/crmguard/crmguard/examples/devidp"
)

// soakStack is what the soak test runs: the example CRM behind a
// fault-injecting wrapper, the development provider on a listener the
// test can close and reopen, one redis-server, and two crm_guard
// instances (two Caddy servers in one config, each with its own handler,
// rule file and audit file) sharing that Redis and one session secret.
type soakStack struct {
	sites  [2]string // the two guard instances
	rules  [2]string // their rule files (each reloaded by the test)
	audits [2]string // their audit files
	issuer string
	users  map[string]devidp.User
	crm    *crm.Server
	faults *soakFaults
	idp    *soakIdP
	redis  *redistest.Server
}

// soakFaults wraps the example CRM's handler: every resetEvery-th data
// answer is cut mid-body by a TCP reset (after a raw phone number, so a
// guard that passed partial answers would leak it), every slowEvery-th
// waits slow before answering. It also records every write that reaches
// the CRM, so the test can check that none the rules refuse got through.
type soakFaults struct {
	next       http.Handler
	rawPhone   string
	resetEvery int64
	slowEvery  int64
	slow       time.Duration

	n, resets, slows atomic.Int64
	mu               sync.Mutex
	writes           []soakWrite
}

// soakWrite is a write the CRM received: the user the guard named and the body.
type soakWrite struct{ user, method, path, body string }

func (f *soakFaults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		r.Body = io.NopCloser(bytes.NewReader(b))
		f.mu.Lock()
		f.writes = append(f.writes, soakWrite{r.Header.Get("X-CRM-User"), r.Method, r.URL.Path, string(b)})
		f.mu.Unlock()
		f.next.ServeHTTP(w, r)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/api/") || r.URL.Path == "/api/whoami" {
		f.next.ServeHTTP(w, r)
		return
	}
	n := f.n.Add(1)
	switch {
	case n%f.resetEvery == 0:
		f.resets.Add(1)
		f.reset(w)
	case n%f.slowEvery == 0:
		f.slows.Add(1)
		t := time.NewTimer(f.slow)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
		f.next.ServeHTTP(w, r)
	default:
		f.next.ServeHTTP(w, r)
	}
}

// reset sends the head of a JSON list with a raw phone number, promising
// more, then resets the connection (SO_LINGER 0: RST, not FIN).
func (f *soakFaults) reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "soak: cannot hijack", http.StatusInternalServerError)
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"+
		`{"list":[{"id":1,"owner_id":"zhang","team":"east","phone":%q,"name":"x"},{"id":2,"phone":"`, f.rawPhone)
	_ = buf.Flush()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// writesSeen returns the writes the CRM received so far.
func (f *soakFaults) writesSeen() []soakWrite {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]soakWrite(nil), f.writes...)
}

// soakIdP serves the development provider on a fixed loopback address
// and can stop (close the listener and every connection: clients get
// "connection refused") and start again on the same address.
type soakIdP struct {
	addr string
	h    http.Handler
	mu   sync.Mutex
	srv  *http.Server
}

func (p *soakIdP) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("soak: the provider listening again on %s: %w", p.addr, err)
	}
	p.addr = ln.Addr().String()
	p.srv = &http.Server{Handler: p.h, ReadHeaderTimeout: 10 * time.Second}
	go func(s *http.Server) { _ = s.Serve(ln) }(p.srv)
	return nil
}

func (p *soakIdP) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil {
		_ = p.srv.Close()
		p.srv = nil
	}
}

// startSoakStack starts everything on 127.0.0.1 (Redis on a unix socket)
// and stops it when the test ends.
func startSoakStack(t *testing.T) *soakStack {
	t.Helper()
	dir := t.TempDir()
	s := &soakStack{users: map[string]devidp.User{}}
	s.redis = redistest.Run(t)

	now := time.Now()
	s.crm = crm.New(crm.Options{Seed: 1, Now: now, Log: log.New(io.Discard, "", 0)})
	s.faults = &soakFaults{next: s.crm, rawPhone: s.crm.Data().Customers[0].Phone,
		resetEvery: 53, slowEvery: 17, slow: 300 * time.Millisecond}
	crmLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	crmSrv := &http.Server{Handler: s.faults, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = crmSrv.Serve(crmLn) }()
	t.Cleanup(func() { _ = crmSrv.Close() })

	for i := range s.sites {
		s.sites[i] = fmt.Sprintf("http://127.0.0.1:%d", proxyFreePort(t))
	}
	s.idp = &soakIdP{addr: "127.0.0.1:0"}
	idpLn, err := net.Listen("tcp", s.idp.addr)
	if err != nil {
		t.Fatal(err)
	}
	s.idp.addr = idpLn.Addr().String()
	idpLn.Close() // start() listens on the same address again
	s.issuer = "http://" + s.idp.addr
	users := devidp.DemoUsers("soak")
	for _, u := range users {
		s.users[u.Username] = u
	}
	var redirects, logouts []string
	for _, site := range s.sites {
		redirects = append(redirects, site+"/.crmguard/callback")
		logouts = append(logouts, site+"/")
	}
	idp, err := devidp.New(devidp.Config{
		Issuer: s.issuer, Users: users,
		Clients: []devidp.Client{{ID: "crm", Secret: "crm-secret", RedirectURIs: redirects, PostLogoutRedirectURIs: logouts}},
		Logger:  soakDiscardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.idp.h = idp
	if err := s.idp.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.idp.stop)

	rulesSrc, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rulesSrc = soakRules(t, rulesSrc)
	var sites strings.Builder
	for i, site := range s.sites {
		s.rules[i] = filepath.Join(dir, fmt.Sprintf("rules-%d.yaml", i))
		s.audits[i] = filepath.Join(dir, fmt.Sprintf("audit-%d.jsonl", i))
		if err := os.WriteFile(s.rules[i], rulesSrc, 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sites, `%s {
	bind 127.0.0.1
	header X-Request-Id {http.request.uuid}
	crm_guard {
		rules %s
		reload_interval 500ms
		oidc {
			issuer %s
			client_id crm
			client_secret crm-secret
		}
		session {
			secret 0123456789abcdef0123456789abcdef-soak
		}
		store %s
		audit %s
		hash_key soak-hash-key-0123456789abcdef0123
	}
	reverse_proxy %s {
		transport http {
			keepalive 2s
		}
	}
}
`, site, s.rules[i], s.issuer, s.redis.URL, s.audits[i], crmLn.Addr())
	}
	proxyStart(t, dir, sites.String()) // the sites name their own ports
	return s
}

// soakIdentity is one signed-in user: a cookie session (a jar with the
// guard's cookie) or an access token from the provider.
type soakIdentity struct {
	user   string
	role   string
	bearer string         // "" for a cookie session
	jar    http.CookieJar // the cookie session
	// anonymous: not signed in (no cookie, or a forged bearer token).
	anonymous bool
}

// signIn signs user in once through guard 0 with password and TOTP and
// returns the cookie session and an access token: the token comes from
// the provider's token endpoint through the code flow, reusing the
// provider's single sign-on session of that sign-in (no second TOTP).
func (s *soakStack) signIn(t *testing.T, user, role string, codeAt time.Time) (cookie, bearer soakIdentity) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	resp, body := signInAt(t, c, s.sites[0], s.issuer, s.users[user], "/", codeAt)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Request.URL.String(), s.sites[0]) {
		t.Fatalf("signing %s in ended at %s with status %d:\n%.300s", user, resp.Request.URL, resp.StatusCode, body)
	}
	var disc struct {
		Auth  string `json:"authorization_endpoint"`
		Token string `json:"token_endpoint"`
	}
	_, body = apiGet(t, c, s.issuer+"/.well-known/openid-configuration")
	if err := json.Unmarshal([]byte(body), &disc); err != nil || disc.Auth == "" || disc.Token == "" {
		t.Fatalf("the provider's discovery document %q: %v", body, err)
	}
	conf := oauth2.Config{ClientID: "crm", ClientSecret: "crm-secret", RedirectURL: s.sites[0] + "/.crmguard/callback",
		Scopes: []string{"openid", "profile"}, Endpoint: oauth2.Endpoint{AuthURL: disc.Auth, TokenURL: disc.Token}}
	verifier := oauth2.GenerateVerifier()
	noFollow := &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	next := conf.AuthCodeURL("soak-state", oauth2.S256ChallengeOption(verifier))
	code := ""
	for range 10 {
		r, err := noFollow.Get(next)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		loc, err := r.Request.URL.Parse(r.Header.Get("Location"))
		if r.StatusCode < 300 || r.StatusCode >= 400 || err != nil {
			t.Fatalf("the code flow for %s stopped at %s with status %d", user, next, r.StatusCode)
		}
		if strings.HasPrefix(loc.String(), conf.RedirectURL) {
			code = loc.Query().Get("code")
			break
		}
		next = loc.String()
	}
	if code == "" {
		t.Fatalf("the provider gave %s no code through its single sign-on session", user)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging %s's code at the token endpoint: %v", user, err)
	}
	return soakIdentity{user: user, role: role, jar: jar}, soakIdentity{user: user, role: role, bearer: tok.AccessToken}
}

// soakRun is one request the load sent and what came of it.
type soakRun struct {
	start, end time.Time
	id         *soakIdentity
	method     string
	path       string
	refused    bool   // the rules refuse it: it must not pass
	status     int    // 0: no answer
	requestID  string // the guard's X-Request-Id
	err        string // the transport error, if any
	leak       string // a raw sensitive value found in the answer
	reason     string // the refusal's JSON reason, if any
}

// sensitiveRe finds the digit runs a raw phone (11 digits), ID number
// (18, last may be X) or bank account (16-19) would be.
var sensitiveRe = regexp.MustCompile(`[0-9]{11,}X?`)

// soakSecrets is every raw phone, ID number and bank account of the CRM's
// seed data (customers and their contacts).
func soakSecrets(d *crm.Data) map[string]bool {
	m := map[string]bool{}
	for _, c := range d.Customers {
		m[c.Phone], m[c.IDCard], m[c.BankAccount] = true, true, true
		for _, ct := range c.Contacts {
			m[ct.Mobile] = true
		}
	}
	delete(m, "")
	return m
}

// soakAudit is what the audit files hold: the request ids of the request
// events, how many there are, and how many reload events each file has.
type soakAudit struct {
	ids      map[string]int
	requests int
	reloads  []int
}

// soakAuditIDs reads the audit files' events: a rule file reload writes an
// event of its own (decision "reload", no request id), counted apart.
func soakAuditIDs(paths []string) (soakAudit, error) {
	a := soakAudit{ids: map[string]int{}, reloads: make([]int, len(paths))}
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return a, fmt.Errorf("reading the audit file %s: %w", p, err)
		}
		for line := range bytes.Lines(b) {
			var ev struct {
				RequestID string `json:"request_id"`
				Decision  string `json:"decision"`
			}
			if err := json.Unmarshal(line, &ev); err != nil {
				return a, fmt.Errorf("audit file %s: a line that is not JSON %.100q: %w", p, line, err)
			}
			if ev.Decision == "reload" {
				a.reloads[i]++
				continue
			}
			a.requests++
			a.ids[ev.RequestID]++
		}
	}
	return a, nil
}

// soakDiscardLogger drops the provider's log lines (thousands under load).
func soakDiscardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// soakRules is the example rule file without its off_hours limit, which
// covers every request outside Shanghai business hours: what a request
// needs (a usage counter, hence the store) would depend on the hour the
// soak runs. The bulk_view limit stays: zhang's customer requests are
// counted on the shared Redis store under load.
func soakRules(t *testing.T, src []byte) []byte {
	t.Helper()
	const off = "\n  - id: off_hours\n"
	i := strings.Index(string(src), off)
	if i < 0 || !strings.Contains(string(src), "\n  - id: bulk_view\n") {
		t.Fatal("examples/rules.yaml has no bulk_view and off_hours limits: update soakRules")
	}
	rest := string(src)[i+len(off):]
	end := strings.Index(rest, "\n  - id: ")
	if end < 0 {
		return src[:i+1]
	}
	return append(append([]byte(nil), src[:i+1]...), rest[end+1:]...)
}
