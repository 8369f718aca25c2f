package rulescli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/crmguard/crmguard/caddymodule"
	"github.com/crmguard/crmguard/caddymodule/oidc"
	"github.com/crmguard/crmguard/caddymodule/session"
	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/rules"
)

// TestRulesTestChallengeIsTheServers compares the 401 that `rules test`
// produces for a case with the 401 the handler with the OIDC provider
// answers the same request with, byte for byte: status, WWW-Authenticate,
// Content-Type and body (and every other header).
func TestRulesTestChallengeIsTheServers(t *testing.T) {
	set, err := rules.LoadFile("testdata/challenge_rules.yaml", rules.WithHashKey([]byte(DefaultTestHashKey)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	srv := newOIDCServer(t, set, now)
	sales := map[string]any{"preferred_username": "pat", "groups": []any{"crm-sales"}}
	api := map[string]any{"Accept": "application/json"}

	for _, c := range []struct {
		name string
		c    Case
		// sess is the server's session for the case's user (nil: none).
		sess *session.Data
		want string // the challenge's error, to be sure the case is what it says
	}{
		{name: "a request without a sign-in",
			c:    Case{Request: Request{Method: "GET", Path: "/api/whoami", Headers: api}},
			want: `Bearer realm="crmguard"`},
		{name: "a request with a bearer token the provider refuses",
			c:    Case{Request: Request{Method: "GET", Path: "/api/whoami", Headers: map[string]any{"Accept": "application/json", "Authorization": "Bearer not-a-jwt"}}},
			want: `Bearer realm="crmguard", error="invalid_token", error_description="route whoami needs a signed-in user"`},
		{name: "a password-only sign-in that must step up to MFA with the file's acr values",
			c:    Case{User: &User{Claims: sales, MFA: false}, Request: Request{Method: "GET", Path: "/api/whoami", Headers: api}},
			sess: &session.Data{Subject: "pat", Claims: sales, AMR: []string{"pwd"}, AuthTime: now},
			want: `Bearer realm="crmguard", error="insufficient_user_authentication", error_description="this sign-in did not use multi-factor authentication", acr_values="urn:example:mfa gold \"plus\" \\ x"`},
		{name: "an MFA sign-in two hours old on a route with max_age 1h",
			c:    Case{User: &User{Claims: sales, MFA: true, AuthAge: "2h"}, Request: Request{Method: "GET", Path: "/api/sensitive", Headers: api}},
			sess: &session.Data{Subject: "pat", Claims: sales, AMR: []string{"pwd", "otp"}, AuthTime: now.Add(-2 * time.Hour)},
			want: `Bearer realm="crmguard", error="insufficient_user_authentication", error_description="route sensitive needs a sign-in within 1h0m0s; this one is 2h0m0s old", max_age=3600`},
	} {
		t.Run(c.name+" gets the same 401 from rules test as from the server", func(t *testing.T) {
			c.c.Name, c.c.Now = c.name, now.Format(time.RFC3339)
			a, fails := serveCase(set, c.c, Options{})
			if fails != nil {
				t.Fatal(fails)
			}
			got := a.rec

			req, err := buildRequest(c.c.Request)
			if err != nil {
				t.Fatal(err)
			}
			if c.sess != nil {
				req.AddCookie(srv.signIn(t, c.sess))
			}
			want := srv.serve(t, req)

			if got.Code != http.StatusUnauthorized || want.Code != http.StatusUnauthorized {
				t.Fatalf("status: rules test %d, server %d", got.Code, want.Code)
			}
			if h := want.Header().Get("WWW-Authenticate"); h != c.want {
				t.Fatalf("the server's challenge is not the case's:\nwant %s\ngot  %s", c.want, h)
			}
			for _, name := range []string{"WWW-Authenticate", "Content-Type"} {
				if g, w := got.Header().Values(name), want.Header().Values(name); !slices.Equal(g, w) {
					t.Errorf("%s:\nrules test %q\nserver     %q", name, g, w)
				}
			}
			if g, w := got.Body.Bytes(), want.Body.Bytes(); !bytes.Equal(g, w) {
				t.Errorf("body:\nrules test %q\nserver     %q", g, w)
			}
			for name := range want.Header() {
				if g, w := got.Header().Values(name), want.Header().Values(name); !slices.Equal(g, w) {
					t.Errorf("header %s: rules test %q, server %q", name, g, w)
				}
			}
			if len(got.Header()) != len(want.Header()) {
				t.Errorf("headers: rules test %v, server %v", got.Header(), want.Header())
			}
		})
	}
}

// oidcServer is the crm_guard handler with the OIDC provider, as the Caddy
// module builds it: the provider's own session store and challenge, the
// rule file, a fixed clock for the rules.
type oidcServer struct {
	p     *oidc.Provider
	guard *caddymodule.Guard
}

func newOIDCServer(t *testing.T, set *rules.Set, now time.Time) *oidcServer {
	t.Helper()
	// The issuer is never asked: neither an API challenge nor a session
	// or a malformed bearer token needs discovery. It answers 404 to the
	// provider's first discovery attempt.
	issuer := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(issuer.Close)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	p, err := oidc.New(ctx,
		// acr_values is what the provider names when the rule file has
		// none; this file has its own, which win here and in rules test.
		&oidc.Config{Issuer: issuer.URL, ClientID: "crm", ClientSecret: "secret", ACRValues: []string{"urn:caddyfile:acr"}},
		&session.Config{Secrets: []string{"0123456789abcdef0123456789abcdef-challenge-test"}},
		st, func() rules.MFAPolicy { return set.MFA() }, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Cleanup() })
	g, err := caddymodule.NewGuard(caddymodule.GuardOptions{
		Rules:    func() *rules.Set { return set },
		Provider: p,
		Now:      func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return &oidcServer{p: p, guard: g}
}

// signIn stores d as a session the way the provider's callback does and
// returns its cookie.
func (s *oidcServer) signIn(t *testing.T, d *session.Data) *http.Cookie {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := s.p.Sessions().Start(rec, httptest.NewRequest("GET", "http://crm.test/", nil), d); err != nil {
		t.Fatal(err)
	}
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("want one session cookie, got %v", cookies)
	}
	return cookies[0]
}

// serve sends req through the handler; the CRM must not be reached.
func (s *oidcServer) serve(t *testing.T, req *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Errorf("the server passed %s %s to the CRM", req.Method, req.URL.Path)
		return nil
	})
	if err := s.guard.ServeHTTP(rec, req, next); err != nil {
		t.Fatal(err)
	}
	return rec
}
