package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/crmguard/crmguard/examples/devidp"
)

// TestRedTeamHostPrefixedCookiesNeverReachTheCRM: over HTTPS the proxy's
// session and sign-in cookies are named __Host-<name>; the guard must strip
// that spelling before the CRM (on the request and on a target's record
// fetch) and drop a CRM's Set-Cookie for it, as for the plain names.
func TestRedTeamHostPrefixedCookiesNeverReachTheCRM(t *testing.T) {
	var mu sync.Mutex
	var seen []string // Cookie header of every request the CRM received
	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.Header.Get("Cookie"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Add("Set-Cookie", "__Host-crmguard_session=planted; Path=/; Secure")
		w.Header().Add("Set-Cookie", "__Secure-crmguard_session_signin_abc=planted; Path=/; Secure")
		w.Header().Add("Set-Cookie", "crm_sid=fresh; Path=/")
		_, _ = w.Write([]byte(`{"id":"1","owner_id":"zhang"}`))
	}))
	t.Cleanup(crm.Close)
	dir := t.TempDir()
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", redteamTargetRules)
	auditPath := filepath.Join(dir, "audit.jsonl")
	srv := proxyStart(t, dir, proxySite(rulesPath, auditPath, strings.TrimPrefix(crm.URL, "http://"), ""))

	cookie := "__Host-crmguard_session=s1; crm_sid=abc; __Host-crmguard_session_signin_0123456789=f1; __HOST-CRMGUARD_SESSION=s2; __Secure-crmguard_session=s3; crmguard_session=s4"
	cases := []struct {
		name, method, path string
		wantHits           int
	}{
		{"on a read, only the CRM's own cookie reaches the CRM", "GET", "/api/customers/1", 1},
		{"on a write with a target, neither the record fetch nor the write carries the proxy's cookies", "PATCH", "/api/customers/1", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			h := map[string]string{"Cookie": cookie}
			body := ""
			if c.method == "PATCH" {
				h["Content-Type"] = "application/json"
				body = `{}`
			}
			status, _ := redteamSendHeaders(t, srv.URL, c.method, c.path, h, body, func(resp *http.Response) {
				for _, l := range resp.Header.Values("Set-Cookie") {
					if strings.Contains(strings.ToLower(l), "crmguard") {
						t.Errorf("the CRM's Set-Cookie %q for the proxy's cookie reached the browser", l)
					}
				}
				if !strings.Contains(strings.Join(resp.Header.Values("Set-Cookie"), "\n"), "crm_sid=fresh") {
					t.Errorf("the CRM's own Set-Cookie was dropped: %v", resp.Header.Values("Set-Cookie"))
				}
			})
			if status != 200 {
				t.Fatalf("status %d", status)
			}
			targetAuditSettle(t, auditPath)
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != c.wantHits {
				t.Fatalf("the CRM received %v, want %d requests", seen, c.wantHits)
			}
			for _, s := range seen {
				if !strings.HasSuffix(s, " crm_sid=abc") {
					t.Errorf("the CRM received Cookie %q, want only crm_sid=abc", s)
				}
			}
		})
	}
}

// TestRedTeamSessionCookieOverHTTPSThroughCaddy signs a user in (OIDC with
// TOTP) through a real Caddy serving HTTPS (tls internal): the session
// cookie is __Host-crmguard_session, a session value planted under the
// plain name (a sibling subdomain's cookie for the parent domain) signs
// nobody in, a planted plain cookie beside the real one signs nobody out,
// and no spelling reaches the CRM.
func TestRedTeamSessionCookieOverHTTPSThroughCaddy(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var crmCookies []string
	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		crmCookies = append(crmCookies, r.Header.Get("Cookie"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"user":%q}`, r.Header.Get("X-CRM-User"))
	}))
	t.Cleanup(crm.Close)

	port := proxyFreePort(t)
	site := fmt.Sprintf("https://127.0.0.1:%d", port)
	s := &oidcE2EStack{site: site, users: map[string]devidp.User{}}
	idpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.issuer = "http://" + idpLn.Addr().String()
	users := []devidp.User{{Username: "zhang", Password: "zhang-pw", TOTPSecret: devidp.NewTOTPSecret(), Groups: []string{"crm-sales"}}}
	s.users["zhang"] = users[0]
	s.idp, err = devidp.New(devidp.Config{Issuer: s.issuer, Users: users, Clients: []devidp.Client{{
		ID: "crm", Secret: "crm-secret", RedirectURIs: []string{site + "/.crmguard/callback"}, PostLogoutRedirectURIs: []string{site + "/"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	idpSrv := &httptest.Server{Listener: idpLn, Config: &http.Server{Handler: s.idp}}
	idpSrv.Start()
	t.Cleanup(idpSrv.Close)

	rulesPath := proxyWriteFile(t, dir, "rules.yaml", oidcE2ERules)
	certFile, keyFile, pool := loopbackCert(t, dir)
	src := proxyTLSGlobals(dir) + fmt.Sprintf(`%s {
	bind 127.0.0.1
	tls %s %s
	crm_guard {
		rules %s
		oidc {
			issuer %s
			client_id crm
			client_secret crm-secret
			acr_values %s
		}
		session {
			secret 0123456789abcdef0123456789abcdef-tls
			store file %s
		}
	}
	reverse_proxy %s
}
`, site, certFile, keyFile, rulesPath, s.issuer, devidp.ACRMFA, filepath.Join(dir, "sessions"), strings.TrimPrefix(crm.URL, "http://"))
	if err := caddy.Load(proxyAdapt(t, src), true); err != nil {
		t.Fatalf("loading: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	newClient := func() *http.Client {
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar, Timeout: 20 * time.Second,
			Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	b := &oidcE2EBrowser{t: t, s: s, user: "zhang", c: newClient()}
	status, _, page := b.visit(site + "/api/whoami")
	if status != 200 || !strings.Contains(page, `"user":"zhang"`) {
		t.Fatalf("sign-in over HTTPS ended with %d: %.300s", status, page)
	}
	siteURL, _ := url.Parse(site)
	var session string
	for _, c := range b.c.Jar.Cookies(siteURL) {
		switch {
		case c.Name == "__Host-crmguard_session":
			session = c.Value
		case strings.Contains(c.Name, "crmguard"):
			t.Errorf("the browser holds %s besides the __Host- session cookie", c.Name)
		}
	}
	get := func(cookie string) int {
		req, _ := http.NewRequest(http.MethodGet, site+"/api/whoami", nil)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Cookie", cookie)
		resp, err := newClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	t.Run("the session cookie over HTTPS is __Host-crmguard_session", func(t *testing.T) {
		if session == "" {
			t.Fatalf("no __Host-crmguard_session in the browser: %v", b.c.Jar.Cookies(siteURL))
		}
	})
	t.Run("a session value planted under the plain name signs nobody in", func(t *testing.T) {
		if st := get("crmguard_session=" + session); st == 200 {
			t.Fatalf("status %d; the plain-named cookie was read", st)
		}
	})
	t.Run("a planted plain cookie beside the real one does not sign the user out", func(t *testing.T) {
		if st := get("crmguard_session=garbage; __Host-crmguard_session=" + session); st != 200 {
			t.Fatalf("status %d", st)
		}
	})
	t.Run("no spelling of the proxy's cookies reached the CRM", func(t *testing.T) {
		mu.Lock()
		defer mu.Unlock()
		if len(crmCookies) == 0 {
			t.Fatal("the CRM saw no request")
		}
		for _, c := range crmCookies {
			if strings.Contains(strings.ToLower(c), "crmguard") {
				t.Errorf("the CRM received Cookie %q", c)
			}
		}
	})
}

// loopbackCert writes a self-signed certificate for 127.0.0.1 (and its
// key) into dir and returns their paths and a pool that trusts it.
func loopbackCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certFile = proxyWriteFile(t, dir, "cert.pem", string(certPEM))
	keyFile = proxyWriteFile(t, dir, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return certFile, keyFile, pool
}
