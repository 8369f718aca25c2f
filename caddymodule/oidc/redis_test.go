package oidc

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/crmguard/crmguard/caddymodule/session"
	"github.com/crmguard/crmguard/caddymodule/store/redistest"
)

func TestRedisStoreSharedByTwoInstances(t *testing.T) {
	store := redistest.Start(t)
	e := newEnv(t, envOptions{proxies: 2, store: store, accessTTL: 30 * time.Second})
	a, b := e.proxies[0], e.proxies[1]

	br := e.browser("zhang")
	br.signIn(a)
	// The same cookie at the other instance (another origin in this test,
	// the same one behind a load balancer): copy it over.
	moveCookie := func(br *browser, from, to *proxy) {
		c := br.cookie(from, "crmguard_session")
		if c == nil {
			t.Fatal("no session cookie")
		}
		tu := mustURL(to.url)
		br.c.Jar.SetCookies(tu, []*http.Cookie{{Name: c.Name, Value: c.Value, Path: "/"}})
	}
	moveCookie(br, a, b)

	t.Run("a session made on one instance works on the other", func(t *testing.T) {
		if got := br.api(b.url + "/app"); got.status != http.StatusOK || got.json(t)["sub"] != "zhang" {
			t.Fatalf("status %d %.200s", got.status, got.body)
		}
	})
	t.Run("a sign-in started on one instance finishes on the other", func(t *testing.T) {
		nb := e.browser("wang")
		cb, fc := captureCallback(t, nb, a, a.url+"/app")
		nb.c.Jar.SetCookies(mustURL(b.url), []*http.Cookie{{Name: fc.Name, Value: fc.Value, Path: "/"}})
		cbB := *cb
		cbB.Host = mustURL(b.url).Host
		req, _ := http.NewRequest(http.MethodGet, cbB.String(), nil)
		req.Header.Set("Accept", "text/html")
		if got := nb.do(req); got.status != http.StatusSeeOther {
			t.Fatalf("callback at the other instance: %d %.300s", got.status, got.body)
		}
		if got := nb.api(b.url + "/app"); got.status != http.StatusOK {
			t.Fatalf("status %d", got.status)
		}
	})
	t.Run("concurrent requests on both instances refresh the tokens once", func(t *testing.T) {
		e.idp.SetAccessTokenLifetime(time.Hour)
		defer e.idp.SetAccessTokenLifetime(30 * time.Second)
		base := e.idp.RefreshCount()
		allOKAtOnce(t, 40, func(i int) int { return br.api([]*proxy{a, b}[i%2].url + "/app").status })
		if got := e.idp.RefreshCount() - base; got != 1 {
			t.Fatalf("%d refreshes, want 1", got)
		}
	})
	t.Run("a revocation through the admin API of one instance ends the session on both", func(t *testing.T) {
		v := e.browser("li")
		v.signIn(b)
		moveCookie(v, b, a)
		rec := httptest.NewRecorder()
		if err := (AdminAPI{}).revoke(rec, httptest.NewRequest(http.MethodPost, "/crm_guard/revoke", strings.NewReader(`{"sub":"li"}`))); err != nil {
			t.Fatal(err)
		}
		for _, px := range []*proxy{a, b} {
			if got := v.api(px.url + "/app"); got.status != http.StatusUnauthorized {
				t.Fatalf("%s: status %d after revoke", px.url, got.status)
			}
		}
	})
	t.Run("a back-channel logout received by one instance ends the session on both", func(t *testing.T) {
		v := e.browser("qian")
		v.signIn(b)
		moveCookie(v, b, a)
		if err := e.idp.LogoutUser(t.Context(), "qian"); err != nil { // the provider notifies instance a only
			t.Fatal(err)
		}
		for _, px := range []*proxy{a, b} {
			if got := v.api(px.url + "/app"); got.status != http.StatusUnauthorized {
				t.Fatalf("%s: status %d after back-channel logout", px.url, got.status)
			}
		}
	})
	t.Run("a replayed state is refused across instances", func(t *testing.T) {
		nb := e.browser("sun")
		cb, fc := captureCallback(t, nb, a, a.url+"/app")
		req, _ := http.NewRequest(http.MethodGet, cb.String(), nil)
		if got := nb.do(req); got.status != http.StatusSeeOther {
			t.Fatalf("first callback: %d", got.status)
		}
		nb.c.Jar.SetCookies(mustURL(b.url), []*http.Cookie{{Name: fc.Name, Value: fc.Value, Path: "/"}})
		cbB := *cb
		cbB.Host = mustURL(b.url).Host
		req, _ = http.NewRequest(http.MethodGet, cbB.String(), nil)
		if got := nb.do(req); got.status != http.StatusBadRequest {
			t.Fatalf("replay at the other instance: %d", got.status)
		}
	})
}

func TestSessionStoreDown(t *testing.T) {
	e := newEnv(t, envOptions{store: "redis://127.0.0.1:1/0"}) // nothing listens there
	px := e.proxies[0]
	if !px.logged("session store unreachable") {
		t.Fatal("the unreachable store is not logged at start")
	}
	t.Run("a sign-in cannot finish and gets 503", func(t *testing.T) {
		pg := e.browser("zhang").visit(px.url + "/app")
		if pg.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d %.200s", pg.status, pg.body)
		}
	})
	t.Run("a request with a session cookie gets 503, not 401 or 500", func(t *testing.T) {
		req := httptest.NewRequest(http.MethodGet, px.url+"/app", nil)
		req.RequestURI = ""
		req.AddCookie(&http.Cookie{Name: "crmguard_session", Value: px.p.sess.Codec().Seal([]byte(session.RandomID(32)), []byte("crmguard_session"))})
		resp := must(noRedirect.Do(req))
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

func TestRedisStoppedMidTest(t *testing.T) {
	srv := redistest.Run(t)
	e := newEnv(t, envOptions{store: srv.URL})
	px := e.proxies[0]
	br := e.browser("zhang")
	br.signIn(px)
	if got := br.api(px.url + "/app"); got.status != http.StatusOK {
		t.Fatalf("signed in: status %d", got.status)
	}
	srv.Stop()
	t.Run("the signed-in user gets 503, never treated as signed in or as signed out", func(t *testing.T) {
		got := br.api(px.url + "/app")
		if got.status != http.StatusServiceUnavailable || !strings.Contains(got.body, "store: unavailable") {
			t.Fatalf("status %d %.300s", got.status, got.body)
		}
	})
	t.Run("a new sign-in cannot finish and gets 503", func(t *testing.T) {
		if pg := e.browser("wang").visit(px.url + "/app"); pg.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d %.200s", pg.status, pg.body)
		}
	})
}
