package oidc

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/examples/devidp"
)

func TestBrowserSignIn(t *testing.T) {
	e := newEnv(t, envOptions{})
	px := e.proxies[0]
	b := e.browser("zhang")
	got := b.signIn(px)

	t.Run("the sign-in used MFA and the session carries the verified amr", func(t *testing.T) {
		amr, _ := got["amr"].([]any)
		if !slices.Contains(amr, any("otp")) || got["acr"] != devidp.ACRMFA {
			t.Fatalf("amr %v acr %v, want otp and %s", got["amr"], got["acr"], devidp.ACRMFA)
		}
		if b.totpLogins != 1 {
			t.Fatalf("TOTP forms filled: %d, want 1", b.totpLogins)
		}
	})
	t.Run("the authorization request uses PKCE S256, state, nonce and acr_values", func(t *testing.T) {
		reqs := b.authRequests()
		if len(reqs) != 1 {
			t.Fatalf("%d authorization requests, want 1", len(reqs))
		}
		q := reqs[0].Query()
		for k, want := range map[string]string{"code_challenge_method": "S256", "acr_values": devidp.ACRMFA, "response_type": "code", "client_id": "crm"} {
			if q.Get(k) != want {
				t.Errorf("%s = %q, want %q", k, q.Get(k), want)
			}
		}
		for _, k := range []string{"state", "nonce", "code_challenge"} {
			if len(q.Get(k)) < 32 {
				t.Errorf("%s = %q, want a long random value", k, q.Get(k))
			}
		}
		if q.Get("prompt") != "" {
			t.Errorf("a first sign-in sent prompt=%q", q.Get("prompt"))
		}
	})
	t.Run("the session cookie is small and holds no token; the store holds the tokens sealed", func(t *testing.T) {
		c := b.cookie(px, "crmguard_session")
		if c == nil {
			t.Fatal("no session cookie")
		}
		if len(c.Value) > 200 {
			t.Fatalf("session cookie is %d bytes", len(c.Value))
		}
		id, err := px.p.sess.Codec().Open(c.Value, []byte("crmguard_session"))
		if err != nil {
			t.Fatal(err)
		}
		d, err := px.p.sess.Get(t.Context(), string(id))
		if err != nil {
			t.Fatal(err)
		}
		if d.AccessToken == "" || d.IDToken == "" || d.RefreshToken == "" {
			t.Fatalf("the session lacks tokens: %+v", d)
		}
		raw, err := px.p.sess.Store().Get(t.Context(), string(id))
		if err != nil {
			t.Fatal(err)
		}
		stored, _ := json.Marshal(raw)
		for _, tok := range []string{d.AccessToken, d.IDToken, d.RefreshToken} {
			if strings.Contains(c.Value, tok) {
				t.Fatal("the cookie contains a token")
			}
			if strings.Contains(string(stored), tok) {
				t.Fatal("the store holds a token in clear")
			}
		}
	})
	t.Run("the sign-in cookie is HttpOnly, SameSite=Lax, short-lived and scoped to the callback", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, px.url+"/app", nil)
		req.Header.Set("Accept", "text/html")
		resp := must(noRedirect.Do(req))
		resp.Body.Close()
		cs := resp.Cookies()
		if len(cs) != 1 || !strings.Contains(cs[0].Name, "_signin_") || cs[0].Path != DefaultCallbackPath ||
			!cs[0].HttpOnly || cs[0].SameSite != http.SameSiteLaxMode || cs[0].MaxAge != int(DefaultFlowTimeout.Seconds()) || len(cs[0].Value) > 1024 {
			t.Fatalf("Set-Cookie: %v", resp.Header.Values("Set-Cookie"))
		}
	})
	t.Run("the sign-in cookie is gone after the callback", func(t *testing.T) {
		u, _ := url.Parse(px.url + DefaultCallbackPath)
		for _, c := range b.c.Jar.Cookies(u) {
			if strings.Contains(c.Name, "_signin_") {
				t.Fatalf("sign-in cookie %s still set", c.Name)
			}
		}
	})
	t.Run("a second request is served from the session without the provider", func(t *testing.T) {
		before := len(b.hops)
		pg := b.visit(px.url + "/app/other")
		if pg.status != http.StatusOK || len(b.hops) != before+1 {
			t.Fatalf("status %d after %d hops", pg.status, len(b.hops)-before)
		}
	})
	t.Run("the sign-in is audited", func(t *testing.T) {
		if !px.logged("signed in") {
			t.Fatal("no audit entry for the sign-in")
		}
	})
}

func TestSignInWithoutMFAIsRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	px := e.proxies[0]
	b := e.browser("pat")
	pg := b.visit(px.url + "/app")

	t.Run("after three password-only sign-ins the browser gets a page explaining MFA", func(t *testing.T) {
		if pg.status != http.StatusForbidden || !strings.Contains(pg.body, "multi-factor") {
			t.Fatalf("final answer %d: %.300s", pg.status, pg.body)
		}
		if b.logins != DefaultMFARetries {
			t.Fatalf("password forms filled: %d, want %d", b.logins, DefaultMFARetries)
		}
	})
	t.Run("the retries go back to the provider with acr_values and prompt=login", func(t *testing.T) {
		reqs := b.authRequests()
		if len(reqs) != DefaultMFARetries {
			t.Fatalf("%d authorization requests, want %d", len(reqs), DefaultMFARetries)
		}
		for _, r := range reqs[1:] {
			if r.Query().Get("acr_values") != devidp.ACRMFA || r.Query().Get("prompt") != "login" {
				t.Fatalf("retry %s lacks acr_values or prompt=login", r)
			}
		}
	})
	t.Run("no session was created", func(t *testing.T) {
		if c := b.cookie(px, "crmguard_session"); c != nil {
			t.Fatalf("session cookie set: %v", c)
		}
		if api := b.api(px.url + "/app"); api.status != http.StatusUnauthorized {
			t.Fatalf("API request after the refused sign-in: %d", api.status)
		}
	})
	t.Run("each refusal is audited", func(t *testing.T) {
		if n := px.logs.FilterMessageSnippet("without the required mfa").Len(); n != DefaultMFARetries {
			t.Fatalf("%d audit entries, want %d", n, DefaultMFARetries)
		}
	})
}

func TestStrippingACRValuesDoesNotHelp(t *testing.T) {
	// This provider asks for TOTP only when acr_values asks for MFA, like
	// identity providers with conditional MFA.
	e := newEnv(t, envOptions{conditionalMFA: true})
	px := e.proxies[0]

	t.Run("with acr_values intact the user is asked for TOTP and gets in", func(t *testing.T) {
		b := e.browser("wang")
		b.signIn(px)
		if b.totpLogins != 1 {
			t.Fatalf("TOTP forms: %d", b.totpLogins)
		}
	})
	t.Run("a browser that strips acr_values signs in with password only and is refused", func(t *testing.T) {
		b := e.browser("li")
		b.rewrite = func(u *url.URL) {
			if strings.HasPrefix(u.String(), e.idpURL) && strings.HasSuffix(u.Path, "/authorize") {
				q := u.Query()
				q.Del("acr_values")
				u.RawQuery = q.Encode()
			}
		}
		pg := b.visit(px.url + "/app")
		if pg.status != http.StatusForbidden || b.totpLogins != 0 || b.logins != DefaultMFARetries {
			t.Fatalf("status %d after %d password and %d TOTP forms", pg.status, b.logins, b.totpLogins)
		}
		if c := b.cookie(px, "crmguard_session"); c != nil {
			t.Fatal("a session was created")
		}
	})
}
