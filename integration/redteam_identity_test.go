package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// redteamRawTo sends a raw request to base's host and returns the answer.
func redteamRawTo(t *testing.T, base, req string) (*http.Response, string) {
	t.Helper()
	u, _ := url.Parse(base)
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, strings.ReplaceAll(req, "{HOST}", u.Host)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// TestRedteamSignedInUserAttacksThroughCaddy signs zhang in for real
// (development OpenID Provider, TOTP) and then misuses the session: forged
// identity headers, the session cookie smuggled to the CRM, a Basic
// credential, and the cookie replayed after sign-out.
func TestRedteamSignedInUserAttacksThroughCaddy(t *testing.T) {
	s := startOIDCE2E(t)
	b := s.browser(t, "zhang")
	if status, _, body := b.visit(s.site + "/api/whoami"); status != http.StatusOK {
		t.Fatalf("sign-in: %d %.200s", status, body)
	}
	siteURL, _ := url.Parse(s.site)
	var session string
	for _, c := range b.c.Jar.Cookies(siteURL) {
		if c.Name == "crmguard_session" {
			session = c.Value
		}
	}
	if session == "" {
		t.Fatalf("no session cookie in %v", b.c.Jar.Cookies(siteURL))
	}
	drain := func() {
		for len(s.upstreamSeen) > 0 {
			<-s.upstreamSeen
		}
	}
	lastSeen := func() http.Header {
		var h http.Header
		for len(s.upstreamSeen) > 0 {
			h = <-s.upstreamSeen
		}
		return h
	}
	get := func(headers ...string) (*http.Response, string) {
		return redteamRawTo(t, s.site, "GET /api/whoami HTTP/1.1\r\nHost: {HOST}\r\nAccept: application/json\r\nConnection: close\r\n"+strings.Join(headers, "\r\n")+"\r\n\r\n")
	}

	tests := []struct {
		name    string
		headers []string
	}{
		{"forged X-CRM-User and X-CRM-Roles", []string{"Cookie: crmguard_session=" + session, "X-CRM-User: admin", "X-CRM-Roles: admin"}},
		{"a forged X-Forwarded-User", []string{"Cookie: crmguard_session=" + session, "X-Forwarded-User: admin", "Remote-User: admin"}},
		{"the session cookie in a second Cookie header", []string{"Cookie: crm_lang=zh", "Cookie: crmguard_session=" + session}},
		{"the session cookie with a __Host- prefixed copy", []string{"Cookie: crmguard_session=" + session + "; __Host-crmguard_session=" + session + "; crm_lang=zh"}},
	}
	for _, tt := range tests {
		t.Run(tt.name+" reach the CRM as zhang only, without the proxy's cookie", func(t *testing.T) {
			drain()
			resp, body := get(tt.headers...)
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"user":"zhang"`) {
				t.Fatalf("%d %.200s", resp.StatusCode, body)
			}
			h := lastSeen()
			if h == nil {
				t.Fatal("the CRM saw nothing")
			}
			for k, vs := range h {
				for _, v := range vs {
					if strings.Contains(v, "admin") || strings.Contains(v, session) {
						t.Fatalf("the CRM received %s: %q", k, v)
					}
				}
			}
			if h.Get("X-Crm-User") != "zhang" {
				t.Fatalf("X-CRM-User %q", h.Get("X-Crm-User"))
			}
		})
	}

	t.Run("a Basic credential next to the session is not an identity and never reaches the CRM", func(t *testing.T) {
		drain()
		resp, body := get("Cookie: crmguard_session="+session, "Authorization: Basic YWRtaW46YWRtaW4=")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%d %.200s", resp.StatusCode, body)
		}
		if h := lastSeen(); h != nil {
			t.Fatalf("the CRM was called: %v", h)
		}
	})

	t.Run("a cross-site sign-out POST without the CSRF token is refused and the session stays", func(t *testing.T) {
		resp, body := redteamRawTo(t, s.site, "POST /.crmguard/logout HTTP/1.1\r\nHost: {HOST}\r\nOrigin: http://evil.example\r\nCookie: crmguard_session="+session+"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%d %.200s", resp.StatusCode, body)
		}
		if resp, _ := get("Cookie: crmguard_session=" + session); resp.StatusCode != http.StatusOK {
			t.Fatalf("the session ended: %d", resp.StatusCode)
		}
	})

	t.Run("after sign-out the old session cookie means signed out", func(t *testing.T) {
		resp, body := redteamRawTo(t, s.site, fmt.Sprintf("POST /.crmguard/logout HTTP/1.1\r\nHost: {HOST}\r\nOrigin: %s\r\nCookie: crmguard_session=%s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", s.site, session))
		if resp.StatusCode >= 400 {
			t.Fatalf("sign-out: %d %.200s", resp.StatusCode, body)
		}
		drain()
		resp, body = get("Cookie: crmguard_session=" + session)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("replayed cookie: %d %.200s", resp.StatusCode, body)
		}
		if h := lastSeen(); h != nil {
			t.Fatalf("the CRM was called with a signed-out cookie")
		}
	})
}
