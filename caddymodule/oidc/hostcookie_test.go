package oidc

import (
	"net/http"
	"strings"
	"testing"
)

// setCookies returns the Set-Cookie lines of an answer whose name starts
// with prefix.
func setCookies(h http.Header, prefix string) []string {
	var out []string
	for _, l := range h.Values("Set-Cookie") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

func TestOverHTTPSTheProxysCookiesAreHostPrefixedAndAPlantedPlainCookieIsIgnored(t *testing.T) {
	e := newEnv(t, envOptions{tls: true})
	px := e.proxies[0]

	t.Run("the sign-in cookie is __Host- with Secure, Path=/ and no Domain", func(t *testing.T) {
		b := e.browser("zhang")
		req, _ := http.NewRequest(http.MethodGet, px.url+"/app", nil)
		req.Header.Set("Accept", "text/html")
		pg := b.do(req)
		lines := setCookies(pg.header, "__Host-crmguard_session_signin_")
		if pg.status/100 != 3 || len(lines) != 1 {
			t.Fatalf("status %d, Set-Cookie %v; want a redirect setting one __Host- sign-in cookie", pg.status, pg.header.Values("Set-Cookie"))
		}
		l := lines[0]
		if !strings.Contains(l, "; Path=/;") && !strings.HasSuffix(l, "; Path=/") || !strings.Contains(l, "; Secure") || strings.Contains(strings.ToLower(l), "domain=") {
			t.Errorf("sign-in cookie %q; want Path=/, Secure and no Domain", l)
		}
		if plain := setCookies(pg.header, "crmguard_session"); len(plain) != 0 {
			t.Errorf("plain-named cookies set over HTTPS: %v", plain)
		}
	})

	b := e.browser("zhang")
	b.signIn(px)
	c := b.cookie(px, "__Host-crmguard_session")
	t.Run("a signed-in browser holds the session under __Host- only", func(t *testing.T) {
		if c == nil || b.cookie(px, "crmguard_session") != nil {
			t.Fatalf("session cookie %v, plain %v", c, b.cookie(px, "crmguard_session"))
		}
		if pg := b.api(px.url + "/app"); pg.status != http.StatusOK || pg.json(t)["sub"] != "zhang" {
			t.Fatalf("the __Host- session does not sign in: %d %.200s", pg.status, pg.body)
		}
	})
	t.Run("a valid session value planted under the plain name (a sibling subdomain's cookie) is ignored", func(t *testing.T) {
		other := e.browser("wang")
		req, _ := http.NewRequest(http.MethodGet, px.url+"/app", nil)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Cookie", "crmguard_session="+c.Value)
		if pg := other.do(req); pg.status == http.StatusOK {
			t.Fatalf("the plain-named cookie signed in: %.200s", pg.body)
		}
	})
	t.Run("a planted plain cookie beside the real one does not sign the user out", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, px.url+"/app", nil)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Cookie", "crmguard_session=garbage; __Host-crmguard_session="+c.Value)
		if pg := e.browser("zhang").do(req); pg.status != http.StatusOK || pg.json(t)["sub"] != "zhang" {
			t.Fatalf("status %d %.200s", pg.status, pg.body)
		}
	})
}

func TestOverPlainHTTPTheProxysCookiesKeepTheirPlainNames(t *testing.T) {
	e := newEnv(t, envOptions{})
	px := e.proxies[0]
	b := e.browser("zhang")
	b.signIn(px)
	if b.cookie(px, "crmguard_session") == nil || b.cookie(px, "__Host-crmguard_session") != nil {
		t.Fatalf("plain-http session cookie missing or __Host- spelled")
	}
	req, _ := http.NewRequest(http.MethodGet, px.url+"/app", nil)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Cookie", "__Host-crmguard_session="+b.cookie(px, "crmguard_session").Value)
	if pg := e.browser("wang").do(req); pg.status == http.StatusOK {
		t.Fatalf("a __Host- cookie signed in over plain http: %.200s", pg.body)
	}
}
