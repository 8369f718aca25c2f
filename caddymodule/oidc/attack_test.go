package oidc

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/crmguard/crmguard/caddymodule/session"
	"github.com/crmguard/crmguard/examples/devidp"
)

func TestRPInitiatedLogout(t *testing.T) {
	e := newEnv(t, envOptions{})
	px := e.proxies[0]
	b := e.browser("wang")
	b.signIn(px)

	confirm := b.visit(px.url + DefaultLogoutPath)
	m := regexp1(`name="csrf" value="([^"]+)"`, confirm.body)
	if confirm.status != http.StatusOK || m == "" {
		t.Fatalf("GET logout: %d without a CSRF token: %.300s", confirm.status, confirm.body)
	}
	post := func(form url.Values, origin string) answer {
		req, _ := http.NewRequest(http.MethodPost, px.url+DefaultLogoutPath, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		return b.do(req)
	}
	t.Run("a GET only shows a confirmation form and keeps the session", func(t *testing.T) {
		if b.api(px.url+"/app").status != http.StatusOK {
			t.Fatal("GET logout ended the session")
		}
	})
	for _, c := range []struct {
		name, csrf, origin string
	}{
		{"a cross-site POST without a token is refused", "", "http://evil.example"},
		{"a cross-site POST with a forged token is refused", "AAAA" + m[4:], "http://evil.example"},
		{"a POST without token or Origin is refused", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := post(url.Values{"csrf": {c.csrf}}, c.origin); got.status != http.StatusForbidden {
				t.Fatalf("status %d", got.status)
			}
			if b.api(px.url+"/app").status != http.StatusOK {
				t.Fatal("the session ended")
			}
		})
	}
	t.Run("the confirmed POST ends the session and goes to end_session with id_token_hint", func(t *testing.T) {
		got := post(url.Values{"csrf": {m}}, "")
		loc, _ := url.Parse(got.header.Get("Location"))
		if got.status != http.StatusSeeOther || loc == nil || !strings.HasPrefix(loc.String(), e.idpURL+"/end_session") {
			t.Fatalf("status %d Location %q", got.status, got.header.Get("Location"))
		}
		q := loc.Query()
		if q.Get("id_token_hint") == "" || q.Get("post_logout_redirect_uri") != px.url+"/" {
			t.Fatalf("end_session URL %s", loc)
		}
		if b.api(px.url+"/app").status != http.StatusUnauthorized {
			t.Fatal("the session still works")
		}
		// Follow to the provider: it ends its own session and sends the
		// browser back to the post-logout URI.
		b.stop = func(u *url.URL) bool { return u.String() == px.url+"/" }
		req, _ := http.NewRequest(http.MethodGet, loc.String(), nil)
		b.follow(req)
		b.stop = nil
		logins := b.logins
		b.signIn(px)
		if b.logins != logins+1 {
			t.Fatal("the provider's session survived the logout (no password asked)")
		}
	})
}

func regexp1(expr, s string) string {
	m := mustCompile(expr).FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	return m[1]
}

func TestOpenRedirectAttemptsReturnHome(t *testing.T) {
	e := newEnv(t, envOptions{})
	px := e.proxies[0]
	b := e.browser("li")
	b.signIn(px) // later sign-ins reuse the provider's session
	for _, evil := range []string{
		"//evil.example/x", `/\evil.example`, "https://evil.example/", "/%2F%2Fevil.example", "/%2f%5cevil.example",
		"/%252F%252Fevil.example", "http:evil.example", "javascript:alert(1)", "/\t/evil.example", "/a\r\nLocation: https://evil.example",
		"evil.example", "", " //evil.example", "\\\\evil.example", "/%0d%0aSet-Cookie:x=1",
	} {
		t.Run("return="+strings.ToValidUTF8(strings.Map(func(r rune) rune {
			if r < 0x20 {
				return '?'
			}
			return r
		}, evil), "?")+" lands on /", func(t *testing.T) {
			n := len(b.hops)
			pg := b.visit(px.url + DefaultLoginPath + "?return=" + url.QueryEscape(evil))
			if pg.status != http.StatusOK || pg.url.String() != px.url+"/" {
				t.Fatalf("ended at %s with %d", pg.url, pg.status)
			}
			for _, h := range b.hops[n:] {
				if !strings.HasPrefix(h.String(), px.url) && !strings.HasPrefix(h.String(), e.idpURL) {
					t.Fatalf("visited %s", h)
				}
			}
		})
	}
	t.Run("a safe relative return URL is honoured", func(t *testing.T) {
		pg := b.visit(px.url + DefaultLoginPath + "?return=" + url.QueryEscape("/customers?page=2"))
		if pg.url.String() != px.url+"/customers?page=2" {
			t.Fatalf("ended at %s", pg.url)
		}
	})
	if !px.logged("open redirect attempt") {
		t.Fatal("open redirect attempts are not audited")
	}
}

func TestSafeReturn(t *testing.T) {
	for _, c := range []struct {
		in   string
		safe bool
	}{
		{"/", true}, {"/customers/42?x=1#frag", true}, {"/a/b%20c", true},
		{"//evil", false}, {"/\\evil", false}, {"https://evil", false}, {"/%2F%2Fevil", false},
		{"/%2fevil", false}, {"/%E5%AE%A2%E6%88%B7/42", true}, {"/a%2Fb", true}, {"/%5Cevil", false}, {"/x\x00", false}, {"/x\x7f", false}, {"", false},
		{"evil", false}, {"/é", false}, {"/" + strings.Repeat("a", 3000), false}, {"/%252F%252Fevil", false},
	} {
		t.Run(strings.ToValidUTF8(c.in, "?")+map[bool]string{true: " is safe", false: " is refused"}[c.safe], func(t *testing.T) {
			if got := isSafeReturn(c.in); got != c.safe {
				t.Fatalf("isSafeReturn(%q) = %v", c.in, got)
			}
		})
	}
}

// captureCallback runs a sign-in up to (not including) the callback and
// returns the callback URL and the sign-in cookie.
func captureCallback(t *testing.T, b *browser, px *proxy, start string) (*url.URL, *http.Cookie) {
	t.Helper()
	var cb *url.URL
	b.stop = func(u *url.URL) bool {
		if u.Path == DefaultCallbackPath {
			cb = u
			return true
		}
		return false
	}
	b.visit(start)
	b.stop = nil
	if cb == nil {
		t.Fatal("no callback reached")
	}
	for _, c := range b.c.Jar.Cookies(mustURL(px.url + DefaultCallbackPath)) {
		if strings.Contains(c.Name, "_signin_") {
			c.Path = DefaultCallbackPath
			return cb, c
		}
	}
	t.Fatal("no sign-in cookie")
	return nil, nil
}

func TestCallbackAttacks(t *testing.T) {
	e := newEnv(t, envOptions{extraClients: []devidp.Client{{ID: "other", Secret: "other-secret", RedirectURIs: []string{"http://127.0.0.1:1/cb"}}}})
	px := e.proxies[0]
	get := func(b *browser, u string) answer {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Accept", "text/html")
		return b.do(req)
	}

	t.Run("a replayed callback with its cookie put back is refused and audited", func(t *testing.T) {
		b := e.browser("zhang")
		cb, flowCookie := captureCallback(t, b, px, px.url+"/app")
		if got := get(b, cb.String()); got.status != http.StatusSeeOther {
			t.Fatalf("first callback: %d %.200s", got.status, got.body)
		}
		pu, _ := url.Parse(px.url)
		b.c.Jar.SetCookies(pu, []*http.Cookie{flowCookie})
		if got := get(b, cb.String()); got.status != http.StatusBadRequest || !strings.Contains(got.body, "replayed") {
			t.Fatalf("replay: %d %.300s", got.status, got.body)
		}
		if !px.logged("sign-in refused") {
			t.Fatal("not audited")
		}
	})
	t.Run("a callback URL from another browser (no sign-in cookie) is refused", func(t *testing.T) {
		victim := e.browser("wang")
		cb, _ := captureCallback(t, victim, px, px.url+"/app")
		attacker := e.browser("wang")
		if got := get(attacker, cb.String()); got.status != http.StatusBadRequest {
			t.Fatalf("status %d", got.status)
		}
	})
	t.Run("a nonce mismatch is refused and audited", func(t *testing.T) {
		b := e.browser("li")
		cb, fc := captureCallback(t, b, px, px.url+"/app")
		raw, err := px.p.flows.Open(fc.Value, []byte(fc.Name))
		if err != nil {
			t.Fatal(err)
		}
		var f flow
		_ = json.Unmarshal(raw, &f)
		f.Nonce = session.RandomID(24)
		nb, _ := json.Marshal(&f)
		pu, _ := url.Parse(px.url)
		b.c.Jar.SetCookies(pu, []*http.Cookie{{Name: fc.Name, Value: px.p.flows.Seal(nb, []byte(fc.Name)), Path: DefaultCallbackPath}})
		got := get(b, cb.String())
		if got.status != http.StatusUnauthorized || !strings.Contains(got.body, "nonce") {
			t.Fatalf("status %d %.300s", got.status, got.body)
		}
		if !px.logged("sign-in refused") || b.cookie(px, "crmguard_session") != nil {
			t.Fatal("not audited, or a session was created")
		}
	})
	t.Run("a code issued to another client is refused and audited", func(t *testing.T) {
		b := e.browser("zhao")
		// The proxy's own sign-in, up to its callback.
		cb, fc := captureCallback(t, b, px, px.url+"/app")
		raw, err := px.p.flows.Open(fc.Value, []byte(fc.Name))
		if err != nil {
			t.Fatal(err)
		}
		var f flow
		_ = json.Unmarshal(raw, &f)
		// A code for client "other", even with the proxy's PKCE challenge,
		// so that only the client differs.
		var code string
		b.stop = func(u *url.URL) bool {
			if u.Host == "127.0.0.1:1" {
				code = u.Query().Get("code")
				return true
			}
			return false
		}
		b.visit(e.idpURL + "/authorize?" + url.Values{"client_id": {"other"}, "redirect_uri": {"http://127.0.0.1:1/cb"},
			"response_type": {"code"}, "scope": {"openid"}, "state": {"s-" + session.RandomID(16)}, "nonce": {f.Nonce},
			"code_challenge": {oauth2.S256ChallengeFromVerifier(f.Verifier)}, "code_challenge_method": {"S256"}}.Encode())
		b.stop = nil
		if code == "" {
			t.Fatal("no code for the other client")
		}
		q := cb.Query()
		q.Set("code", code)
		cb.RawQuery = q.Encode()
		got := get(b, cb.String())
		if got.status != http.StatusUnauthorized || !strings.Contains(got.body, "refused the authorization code") {
			t.Fatalf("status %d %.300s", got.status, got.body)
		}
		audited := false
		for _, en := range px.logs.FilterMessage("sign-in refused").All() {
			m := en.ContextMap()
			audited = audited || (strings.Contains(fmt.Sprint(m["reason"]), "authorization code") && m["error"] == "invalid_grant")
		}
		if !audited {
			t.Fatal("the refused code is not audited with the provider's invalid_grant")
		}
		if b.cookie(px, "crmguard_session") != nil {
			t.Fatal("a session was created")
		}
	})
	t.Run("a response naming another issuer (RFC 9207) is refused", func(t *testing.T) {
		b := e.browser("sun")
		cb, _ := captureCallback(t, b, px, px.url+"/app")
		q := cb.Query()
		q.Set("iss", "https://evil.example")
		cb.RawQuery = q.Encode()
		if got := get(b, cb.String()); got.status != http.StatusBadRequest || !strings.Contains(got.body, "9207") {
			t.Fatalf("status %d %.300s", got.status, got.body)
		}
	})
	t.Run("a tampered sign-in cookie is refused", func(t *testing.T) {
		b := e.browser("xiao")
		cb, fc := captureCallback(t, b, px, px.url+"/app")
		pu, _ := url.Parse(px.url)
		b.c.Jar.SetCookies(pu, []*http.Cookie{{Name: fc.Name, Value: flip(fc.Value), Path: DefaultCallbackPath}})
		if got := get(b, cb.String()); got.status != http.StatusBadRequest {
			t.Fatalf("status %d", got.status)
		}
	})
}

func flip(s string) string {
	b := []byte(s)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestTamperedSessionCookiesMeanSignedOut(t *testing.T) {
	e := newEnv(t, envOptions{})
	px := e.proxies[0]
	b := e.browser("admin")
	b.signIn(px)
	valid := b.cookie(px, "crmguard_session").Value
	foreign, _ := session.NewCodec([]string{"another-secret-another-secret-another"}, "session cookie")
	id, _ := px.p.sess.Codec().Open(valid, []byte("crmguard_session"))
	for _, c := range []struct{ name, value string }{
		{"a flipped byte", flip(valid)},
		{"a truncated value", valid[:len(valid)/2]},
		{"the last byte cut", valid[:len(valid)-1]},
		{"an empty value", ""},
		{"garbage", "not-a-cookie"},
		{"invalid base64", "!!!!" + valid},
		{"a value sealed with another secret", foreign.Seal(id, []byte("crmguard_session"))},
		{"a value sealed for another cookie name", px.p.sess.Codec().Seal(id, []byte("other"))},
		{"a sealed unknown session id", px.p.sess.Codec().Seal([]byte(session.RandomID(32)), []byte("crmguard_session"))},
		{"a sealed path-like id", px.p.sess.Codec().Seal([]byte("../../../../etc/passwd"), []byte("crmguard_session"))},
		{"a 6 KB value", strings.Repeat("A", 6000)},
	} {
		t.Run(c.name+" means signed out", func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, px.url+"/app", nil)
			req.RequestURI = ""
			req.Header.Set("Cookie", "crmguard_session="+c.value)
			req.Header.Set("Accept", "text/html")
			resp := must(noRedirect.Do(req))
			resp.Body.Close()
			if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), e.idpURL) {
				t.Fatalf("browser: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			req.Header.Set("Accept", "application/json")
			resp = must(noRedirect.Do(req))
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Bearer realm="crmguard"`) {
				t.Fatalf("API: %d WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	t.Run("the valid cookie still works", func(t *testing.T) {
		if b.api(px.url+"/app").status != http.StatusOK {
			t.Fatal("valid cookie refused")
		}
	})
}

var noRedirect = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// tokenFor gets an access token for user from client "cli" (whose tokens
// are also meant for the audience "crm") or "other" (they are not).
func tokenFor(t testing.TB, e *env, clientID, user string) string {
	t.Helper()
	b := e.browser(user)
	const cb = "http://127.0.0.1:1/cli"
	var code string
	b.stop = func(u *url.URL) bool {
		if u.Host == "127.0.0.1:1" {
			code = u.Query().Get("code")
			return true
		}
		return false
	}
	conf := oauth2.Config{ClientID: clientID, ClientSecret: clientID + "-secret", RedirectURL: cb,
		Endpoint: oauth2.Endpoint{AuthURL: e.idpURL + "/authorize", TokenURL: e.idpURL + "/oauth/token"}, Scopes: []string{"openid", "profile"}}
	b.visit(conf.AuthCodeURL("state-"+session.RandomID(16), oauth2.SetAuthURLParam("acr_values", devidp.ACRMFA)))
	if code == "" {
		t.Fatalf("no code for %s", clientID)
	}
	tok, err := conf.Exchange(t.Context(), code)
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// idTokenFor signs user in at the provider as the proxy's own client
// (audience "crm", which bearer tokens are accepted for by default) and
// returns the ID token the provider issues, requested with nonce unless
// nonce is empty.
func idTokenFor(t testing.TB, e *env, user, nonce string) string {
	t.Helper()
	b := e.browser(user)
	cb := e.proxies[0].url + DefaultCallbackPath
	var code string
	b.stop = func(u *url.URL) bool {
		if strings.HasPrefix(u.String(), cb) {
			code = u.Query().Get("code")
			return true
		}
		return false
	}
	conf := oauth2.Config{ClientID: "crm", ClientSecret: clientSecret, RedirectURL: cb,
		Endpoint: oauth2.Endpoint{AuthURL: e.idpURL + "/authorize", TokenURL: e.idpURL + "/oauth/token"}, Scopes: []string{"openid", "profile"}}
	opts := []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("acr_values", devidp.ACRMFA)}
	if nonce != "" {
		opts = append(opts, oauth2.SetAuthURLParam("nonce", nonce))
	}
	b.visit(conf.AuthCodeURL("state-"+session.RandomID(16), opts...))
	if code == "" {
		t.Fatal("no code for the proxy's client")
	}
	tok, err := conf.Exchange(t.Context(), code)
	if err != nil {
		t.Fatal(err)
	}
	idt, _ := tok.Extra("id_token").(string)
	if idt == "" {
		t.Fatal("the provider issued no ID token")
	}
	return idt
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestBearerTokens(t *testing.T) {
	cli := devidp.Client{ID: "cli", Secret: "cli-secret", RedirectURIs: []string{"http://127.0.0.1:1/cli"}, Audience: []string{"crm"}}
	other := devidp.Client{ID: "other", Secret: "other-secret", RedirectURIs: []string{"http://127.0.0.1:1/cli"}}
	e := newEnv(t, envOptions{extraClients: []devidp.Client{cli, other}})
	px := e.proxies[0]
	good := tokenFor(t, e, "cli", "zhang")
	parts := strings.Split(good, ".")
	var header map[string]any
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	_ = json.Unmarshal(hb, &header)
	var claims map[string]any
	pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	_ = json.Unmarshal(pb, &claims)

	pubDER, _ := x509.MarshalPKIXPublicKey(&testKey().PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hs256 := func(key []byte) string {
		h := b64(map[string]any{"alg": "HS256", "typ": "JWT", "kid": header["kid"]}) + "." + parts[1]
		m := hmac.New(sha256.New, key)
		m.Write([]byte(h))
		return h + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	attackerKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: attackerKey}, (&jose.SignerOptions{}).WithHeader("kid", header["kid"]))
	forgedJWS, _ := signer.Sign(pb)
	forged, _ := forgedJWS.CompactSerialize()
	admin := map[string]any{}
	for k, v := range claims {
		admin[k] = v
	}
	admin["sub"] = "admin"

	call := func(token, path string) answer {
		req, _ := http.NewRequest(http.MethodGet, px.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Accept", "text/html") // a bearer request is an API request whatever it accepts
		resp := must(noRedirect.Do(req))
		defer resp.Body.Close()
		return answer{status: resp.StatusCode, header: resp.Header}
	}

	t.Run("a valid MFA access token for this audience is accepted", func(t *testing.T) {
		if got := call(good, "/app"); got.status != http.StatusOK {
			t.Fatalf("status %d %s", got.status, got.header.Get("WWW-Authenticate"))
		}
	})
	for _, c := range []struct{ name, token string }{
		{"alg none", b64(map[string]any{"alg": "none", "typ": "JWT"}) + "." + parts[1] + "."},
		{"alg none with the original signature", b64(map[string]any{"alg": "none"}) + "." + parts[1] + "." + parts[2]},
		{"HS256 keyed with the provider's public key (PEM)", hs256(pubPEM)},
		{"HS256 keyed with the provider's public key (DER)", hs256(pubDER)},
		{"a token signed by another key with the provider's kid", forged},
		{"a changed payload with the original signature", parts[0] + "." + b64(admin) + "." + parts[2]},
		{"a token for another audience", tokenFor(t, e, "other", "wang")},
		{"the proxy's own ID token (audience crm, with a nonce)", idTokenFor(t, e, "zhang", "n-"+session.RandomID(8))},
		{"the proxy's own ID token requested without a nonce", idTokenFor(t, e, "zhang", "")},
		{"garbage", "abc"},
		{"three empty parts", ".."},
		{"a truncated token", good[:len(good)-10]},
	} {
		t.Run(c.name+" is refused with 401 invalid_token", func(t *testing.T) {
			got := call(c.token, "/app")
			if got.status != http.StatusUnauthorized || !strings.Contains(got.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Fatalf("status %d WWW-Authenticate %q", got.status, got.header.Get("WWW-Authenticate"))
			}
		})
	}
	t.Run("an expired token is refused", func(t *testing.T) {
		px.shift(time.Hour)
		defer px.shift(0)
		if got := call(good, "/app"); got.status != http.StatusUnauthorized {
			t.Fatalf("status %d", got.status)
		}
	})
	t.Run("a password-only token gets 401 insufficient_user_authentication with acr_values", func(t *testing.T) {
		got := call(tokenFor(t, e, "cli", "pat"), "/app")
		h := got.header.Get("WWW-Authenticate")
		if got.status != http.StatusUnauthorized || !strings.Contains(h, `error="insufficient_user_authentication"`) || !strings.Contains(h, `acr_values="`+devidp.ACRMFA+`"`) {
			t.Fatalf("status %d WWW-Authenticate %q", got.status, h)
		}
	})
	t.Run("an old sign-in gets 401 insufficient_user_authentication with max_age", func(t *testing.T) {
		e.idpOffset.Store(int64(-2 * sensitiveMaxAge))
		old := tokenFor(t, e, "cli", "qian")
		e.idpOffset.Store(0)
		if got := call(old, "/app"); got.status != http.StatusOK {
			t.Fatalf("ordinary route: %d", got.status)
		}
		got := call(old, "/sensitive")
		h := got.header.Get("WWW-Authenticate")
		if got.status != http.StatusUnauthorized || !strings.Contains(h, `error="insufficient_user_authentication"`) || !strings.Contains(h, "max_age=3600") {
			t.Fatalf("status %d WWW-Authenticate %q", got.status, h)
		}
	})
	t.Run("tokens signed with a rotated provider key are accepted (the key set is fetched again)", func(t *testing.T) {
		k, _ := rsa.GenerateKey(rand.Reader, 2048)
		e.idp.RotateKey(k)
		if got := call(tokenFor(t, e, "cli", "li"), "/app"); got.status != http.StatusOK {
			t.Fatalf("status %d", got.status)
		}
		if got := call(good, "/app"); got.status != http.StatusOK {
			t.Fatalf("a token of the previous key: %d", got.status)
		}
	})
	t.Run("signed-out API clients get a Bearer realm challenge", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, px.url+"/app", nil)
		resp := must(noRedirect.Do(req))
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Bearer realm="crmguard"` {
			t.Fatalf("status %d WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})
}

func TestProviderDown(t *testing.T) {
	e := newEnv(t, envOptions{idpDown: true})
	px := e.proxies[0]
	b := e.browser("zhang")

	t.Run("at start: browsers get a 503 page and the log says why", func(t *testing.T) {
		pg := b.visit(px.url + "/app")
		if pg.status != http.StatusServiceUnavailable || !strings.Contains(pg.body, "cannot be reached") {
			t.Fatalf("status %d %.300s", pg.status, pg.body)
		}
		if !px.logged("identity provider unreachable") {
			t.Fatal("no clear log line")
		}
	})
	t.Run("at start: API clients with a token get 503", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, px.url+"/app", nil)
		req.Header.Set("Authorization", "Bearer a.b.c")
		resp := must(noRedirect.Do(req))
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("at start: the discovery error is ErrUnavailable and wraps the cut connection", func(t *testing.T) {
		_, err := px.p.discovery(context.Background())
		var urlErr *url.Error
		if !errors.Is(err, ErrUnavailable) || !errors.As(err, &urlErr) {
			t.Fatalf("error %v: want ErrUnavailable wrapping a *url.Error", err)
		}
		if !strings.Contains(err.Error(), px.cfg.Issuer) {
			t.Errorf("error %q does not name the issuer", err)
		}
	})
	t.Run("within the backoff the provider is not asked again", func(t *testing.T) {
		e.idpDown.Store(false)
		if pg := b.visit(px.url + "/app"); pg.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d: discovery retried before the backoff passed", pg.status)
		}
	})
	t.Run("after the backoff discovery is retried and sign-in works", func(t *testing.T) {
		px.shift(9 * time.Hour)
		b.visit(px.url + DefaultLoginPath) // discovery succeeds, a sign-in starts
		px.shift(0)
		b.signIn(px)
		if !px.logged("reachable again") {
			t.Fatal("recovery not logged")
		}
	})
	t.Run("later: a signed-in user whose tokens need a refresh keeps working while the access token is valid", func(t *testing.T) {
		e.idpDown.Store(true)
		defer e.idpDown.Store(false)
		px.shift(4*time.Minute + 30*time.Second) // 30 s left of the 5 min access token
		defer px.shift(0)
		if got := b.api(px.url + "/app"); got.status != http.StatusOK {
			t.Fatalf("status %d", got.status)
		}
		if !px.logged("refresh postponed") {
			t.Fatal("the postponed refresh is not logged")
		}
	})
	t.Run("later: once the access token has expired and cannot be refreshed the answer is 503", func(t *testing.T) {
		e.idpDown.Store(true)
		defer e.idpDown.Store(false)
		px.shift(6 * time.Minute)
		defer px.shift(0)
		if got := b.api(px.url + "/app"); got.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d", got.status)
		}
	})
	t.Run("later: a new sign-in while the token endpoint is down gets 503, never 500", func(t *testing.T) {
		nb := e.browser("wang")
		var cb *url.URL
		nb.stop = func(u *url.URL) bool {
			if u.Path == DefaultCallbackPath {
				cb = u
				return true
			}
			return false
		}
		nb.visit(px.url + "/app")
		e.idpDown.Store(true)
		defer e.idpDown.Store(false)
		req, _ := http.NewRequest(http.MethodGet, cb.String(), nil)
		req.Header.Set("Accept", "text/html")
		if got := nb.do(req); got.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d", got.status)
		}
	})
}
