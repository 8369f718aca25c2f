package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/crmguard/crmguard/examples/devidp"
)

// oidcE2ERules: sales may call /api/whoami with MFA; /api/sensitive also
// needs a sign-in younger than an hour.
const oidcE2ERules = `version: 1
default: deny
subject:
  id: claims.preferred_username
  roles: 'has(claims.groups) ? claims.groups : []'
role_map:
  crm-sales: sales
roles:
  sales: {}
mfa:
  required: true
  amr: [otp, mfa]
routes:
  - id: whoami
    match: {methods: [GET], path: /api/whoami}
    allow: [sales]
  - id: sensitive
    match: {methods: [GET], path: /api/sensitive}
    allow: [sales]
    mfa: {max_age: 1h}
`

var oidcE2EHiddenID = regexp.MustCompile(`name="id" value="([^"]+)"`)

// oidcE2EStack is the development provider, a CRM stand-in and Caddy with
// crm_guard (oidc + session blocks) and the admin API on loopback.
type oidcE2EStack struct {
	site, admin, issuer string
	idp                 *devidp.Server
	users               map[string]devidp.User
	upstreamSeen        chan http.Header
}

func startOIDCE2E(t *testing.T) *oidcE2EStack {
	t.Helper()
	dir := t.TempDir()
	s := &oidcE2EStack{users: map[string]devidp.User{}, upstreamSeen: make(chan http.Header, 100)}
	sitePort, adminPort := proxyFreePort(t), proxyFreePort(t)
	s.site = fmt.Sprintf("http://127.0.0.1:%d", sitePort)
	s.admin = fmt.Sprintf("127.0.0.1:%d", adminPort)

	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.upstreamSeen <- r.Header.Clone()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"user":%q,"path":%q}`, r.Header.Get("X-CRM-User"), r.URL.Path)
	}))
	t.Cleanup(crm.Close)

	idpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.issuer = "http://" + idpLn.Addr().String()
	users := []devidp.User{
		{Username: "zhang", Password: "zhang-pw", TOTPSecret: devidp.NewTOTPSecret(), Groups: []string{"crm-sales"}},
		{Username: "pat", Password: "pat-pw", Groups: []string{"crm-sales"}},
	}
	for _, u := range users {
		s.users[u.Username] = u
	}
	s.idp, err = devidp.New(devidp.Config{
		Issuer: s.issuer, Users: users,
		Clients: []devidp.Client{{
			ID: "crm", Secret: "crm-secret",
			RedirectURIs:           []string{s.site + "/.crmguard/callback"},
			PostLogoutRedirectURIs: []string{s.site + "/"},
			BackchannelLogoutURI:   s.site + "/.crmguard/backchannel-logout",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	idpSrv := &httptest.Server{Listener: idpLn, Config: &http.Server{Handler: s.idp}}
	idpSrv.Start()
	t.Cleanup(idpSrv.Close)

	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(oidcE2ERules), 0o600); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
	storage file_system %s
	log {
		output file %s
		format json
	}
}
%s {
	bind 127.0.0.1
	crm_guard {
		rules %s
		oidc {
			issuer %s
			client_id crm
			client_secret crm-secret
			acr_values %s
		}
		session {
			secret 0123456789abcdef0123456789abcdef-e2e
			store file %s
			idle_timeout 10m
		}
	}
	reverse_proxy %s
}
`, s.admin, filepath.Join(dir, "storage"), filepath.Join(dir, "caddy.log"), s.site, rulesPath, s.issuer, devidp.ACRMFA,
		filepath.Join(dir, "sessions"), strings.TrimPrefix(crm.URL, "http://"))
	cfg, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(src), nil)
	if err != nil {
		t.Fatalf("adapting: %v\n%s", err, src)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	return s
}

// oidcE2EBrowser follows redirects and fills the provider's forms.
type oidcE2EBrowser struct {
	t    *testing.T
	s    *oidcE2EStack
	c    *http.Client
	user string
	step int64
}

func (s *oidcE2EStack) browser(t *testing.T, user string) *oidcE2EBrowser {
	jar, _ := cookiejar.New(nil)
	return &oidcE2EBrowser{t: t, s: s, user: user, c: &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *oidcE2EBrowser) visit(u string) (int, string, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for range 20 {
		req.Header.Set("Accept", "text/html")
		resp, err := b.c.Do(req)
		if err != nil {
			b.t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		page := string(body)
		form := url.Values{}
		action := ""
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			loc, _ := req.URL.Parse(resp.Header.Get("Location"))
			req, _ = http.NewRequest(http.MethodGet, loc.String(), nil)
			continue
		case strings.Contains(page, `id="login-form"`):
			action = "/login/password"
			form.Set("username", b.user)
			form.Set("password", b.s.users[b.user].Password)
		case strings.Contains(page, `id="totp-form"`):
			action = "/login/totp"
			now := time.Now().Unix() / 30
			b.step = max(b.step+1, now-1)
			code, _ := devidp.TOTP(b.s.users[b.user].TOTPSecret, time.Unix(b.step*30, 0))
			form.Set("code", code)
		default:
			return resp.StatusCode, req.URL.String(), page
		}
		m := oidcE2EHiddenID.FindStringSubmatch(page)
		if m == nil {
			b.t.Fatalf("form without id: %.300s", page)
		}
		form.Set("id", m[1])
		req, _ = http.NewRequest(http.MethodPost, b.s.issuer+action, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	b.t.Fatal("too many redirects")
	return 0, "", ""
}

func (b *oidcE2EBrowser) api(u string) (int, http.Header) {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Accept", "application/json")
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// TestOIDCThroughCaddy runs the sign-in machinery inside a real Caddy
// loaded from a Caddyfile (oidc and session blocks), with the admin API
// module admin.api.crm_guard.
func TestOIDCThroughCaddy(t *testing.T) {
	s := startOIDCE2E(t)
	b := s.browser(t, "zhang")

	t.Run("an MFA sign-in reaches the CRM as the verified user, without the proxy's cookies", func(t *testing.T) {
		status, at, body := b.visit(s.site + "/api/whoami")
		if status != http.StatusOK || at != s.site+"/api/whoami" || !strings.Contains(body, `"user":"zhang"`) {
			t.Fatalf("%d at %s: %.300s", status, at, body)
		}
		var h http.Header
		for len(s.upstreamSeen) > 0 {
			h = <-s.upstreamSeen
		}
		if h == nil || strings.Contains(h.Get("Cookie"), "crmguard") {
			t.Fatalf("the CRM saw cookies %q", h.Get("Cookie"))
		}
	})
	t.Run("a password-only account is refused with the MFA page", func(t *testing.T) {
		status, _, body := s.browser(t, "pat").visit(s.site + "/api/whoami")
		if status != http.StatusForbidden || !strings.Contains(body, "multi-factor") {
			t.Fatalf("%d: %.300s", status, body)
		}
	})
	t.Run("an API client with a forged bearer token gets 401 invalid_token", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, s.site+"/api/whoami", nil)
		req.Header.Set("Authorization", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ6aGFuZyJ9.")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})
	t.Run("POST /crm_guard/revoke on Caddy's admin API ends the user's sessions", func(t *testing.T) {
		if status, _ := b.api(s.site + "/api/whoami"); status != http.StatusOK {
			t.Fatalf("before: %d", status)
		}
		resp, err := http.Post("http://"+s.admin+"/crm_guard/revoke", "application/json", strings.NewReader(`{"sub":"zhang"}`))
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]int
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || out["revoked"] != 1 {
			t.Fatalf("admin API: %d %v", resp.StatusCode, out)
		}
		status, h := b.api(s.site + "/api/whoami")
		if status != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("after: %d %q", status, h.Get("WWW-Authenticate"))
		}
	})
}
