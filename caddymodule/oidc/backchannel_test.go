package oidc

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/crmguard/crmguard/caddymodule/session"
)

// sessionOf returns the stored session behind b's cookie at px.
func sessionOf(t *testing.T, b *browser, px *proxy) *session.Data {
	t.Helper()
	c := b.cookie(px, "crmguard_session")
	if c == nil {
		t.Fatal("no session cookie")
	}
	id, err := px.p.sess.Codec().Open(c.Value, []byte("crmguard_session"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := px.p.sess.Store().Get(t.Context(), string(id))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func signJWT(t *testing.T, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("logout+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	return must(jws.CompactSerialize())
}

func TestBackchannelLogoutTokenChecks(t *testing.T) {
	e := newEnv(t, envOptions{})
	px := e.proxies[0]
	b := e.browser("zhao")
	b.signIn(px)
	d := sessionOf(t, b, px)
	if d.SID == "" {
		t.Fatal("the session has no provider sid")
	}
	now := time.Now()
	claims := func(change func(map[string]any)) map[string]any {
		c := map[string]any{
			"iss": e.idpURL, "aud": "crm", "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
			"jti": session.RandomID(12), "sid": d.SID, "sub": d.Subject,
			"events": map[string]any{backchannelEvent: map[string]any{}},
		}
		if change != nil {
			change(c)
		}
		return c
	}
	post := func(token string) answer {
		req, _ := http.NewRequest(http.MethodPost, px.url+DefaultBackchannelLogoutPath, strings.NewReader(url.Values{"logout_token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return b.do(req)
	}
	attacker, _ := rsa.GenerateKey(rand.Reader, 2048)
	noneToken := b64(map[string]any{"alg": "none"}) + "." + b64(claims(nil)) + "."
	for _, c := range []struct{ name, token string }{
		{"a token with a nonce", signJWT(t, testKey(), claims(func(c map[string]any) { c["nonce"] = "n" }))},
		{"a token without the events claim", signJWT(t, testKey(), claims(func(c map[string]any) { delete(c, "events") }))},
		{"a token with another event", signJWT(t, testKey(), claims(func(c map[string]any) { c["events"] = map[string]any{"urn:other": map[string]any{}} }))},
		{"a token naming neither sid nor sub", signJWT(t, testKey(), claims(func(c map[string]any) { delete(c, "sid"); delete(c, "sub") }))},
		{"a token for another client", signJWT(t, testKey(), claims(func(c map[string]any) { c["aud"] = "other" }))},
		{"a token from another issuer", signJWT(t, testKey(), claims(func(c map[string]any) { c["iss"] = "https://evil.example" }))},
		{"an expired token", signJWT(t, testKey(), claims(func(c map[string]any) { c["exp"] = now.Add(-time.Hour).Unix() }))},
		{"a token issued an hour ago", signJWT(t, testKey(), claims(func(c map[string]any) { c["iat"] = now.Add(-time.Hour).Unix() }))},
		{"a token without iat", signJWT(t, testKey(), claims(func(c map[string]any) { delete(c, "iat") }))},
		{"a token signed by another key", signJWT(t, attacker, claims(nil))},
		{"an unsigned token (alg none)", noneToken},
		{"no token", ""},
		{"garbage", "not.a.token"},
	} {
		t.Run(c.name+" is refused with 400 and the session stays", func(t *testing.T) {
			if got := post(c.token); got.status != http.StatusBadRequest {
				t.Fatalf("status %d %.200s", got.status, got.body)
			}
			if b.api(px.url+"/app").status != http.StatusOK {
				t.Fatal("the session ended")
			}
		})
	}
	t.Run("a GET is refused", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, px.url+DefaultBackchannelLogoutPath, nil)
		if got := b.do(req); got.status != http.StatusMethodNotAllowed {
			t.Fatalf("status %d", got.status)
		}
	})
	valid := signJWT(t, testKey(), claims(nil))
	t.Run("a valid token for the session's sid ends it", func(t *testing.T) {
		if got := post(valid); got.status != http.StatusOK {
			t.Fatalf("status %d %.200s", got.status, got.body)
		}
		if b.api(px.url+"/app").status != http.StatusUnauthorized {
			t.Fatal("the session still works")
		}
	})
	t.Run("the same token again (replayed jti) is refused", func(t *testing.T) {
		if got := post(valid); got.status != http.StatusBadRequest {
			t.Fatalf("status %d", got.status)
		}
	})
	t.Run("a token with only sub ends every session of the user", func(t *testing.T) {
		b1, b2 := e.browser("sun"), e.browser("sun")
		b1.signIn(px)
		b2.signIn(px)
		tok := signJWT(t, testKey(), claims(func(c map[string]any) { delete(c, "sid"); c["sub"] = "sun" }))
		if got := post(tok); got.status != http.StatusOK {
			t.Fatalf("status %d", got.status)
		}
		for _, x := range []*browser{b1, b2} {
			if x.api(px.url+"/app").status != http.StatusUnauthorized {
				t.Fatal("a session survived")
			}
		}
	})
}

func TestIdleTimeoutAndLifetime(t *testing.T) {
	// Tokens outlive the session here, so moving the proxy's clock by
	// hours tests the session deadlines, not token refresh.
	e := newEnv(t, envOptions{accessTTL: 48 * time.Hour})
	px := e.proxies[0]
	cfg := px.p.sess.Config()
	b := e.browser("xiao")
	b.signIn(px)

	t.Run("activity within the idle timeout keeps the session", func(t *testing.T) {
		px.shift(time.Duration(cfg.IdleTimeout) * 3 / 4)
		if b.api(px.url+"/app").status != http.StatusOK {
			t.Fatal("refused")
		}
		px.shift(time.Duration(cfg.IdleTimeout) * 3 / 2) // 3/4 idle after the last request
		if b.api(px.url+"/app").status != http.StatusOK {
			t.Fatal("refused: the previous request did not extend the idle deadline")
		}
	})
	t.Run("a session idle longer than the idle timeout ends", func(t *testing.T) {
		px.shift(time.Duration(cfg.IdleTimeout)*5/2 + time.Minute)
		defer px.shift(0)
		if got := b.api(px.url + "/app"); got.status != http.StatusUnauthorized {
			t.Fatalf("status %d", got.status)
		}
	})
	t.Run("an active session ends at its absolute lifetime", func(t *testing.T) {
		nb := e.browser("wang")
		nb.signIn(px)
		step := time.Duration(cfg.IdleTimeout) / 2
		var at time.Duration
		for at = step; at < time.Duration(cfg.Lifetime)-step; at += step {
			px.shift(at)
			if got := nb.api(px.url + "/app"); got.status != http.StatusOK {
				t.Fatalf("refused at %s: %d", at, got.status)
			}
		}
		px.shift(time.Duration(cfg.Lifetime) + time.Second)
		defer px.shift(0)
		if got := nb.api(px.url + "/app"); got.status != http.StatusUnauthorized {
			t.Fatalf("status %d after the lifetime", got.status)
		}
	})
}
