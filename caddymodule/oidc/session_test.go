package oidc

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func TestStepUpByMaxAge(t *testing.T) {
	// Two tries per sign-in: a user may use at most three TOTP codes in 30 s.
	e := newEnv(t, envOptions{configure: func(c *Config) { c.MFARetries = 2 }})
	px := e.proxies[0]
	b := e.browser("zhao")
	b.signIn(px)

	t.Run("a recent sign-in opens the sensitive page without the provider", func(t *testing.T) {
		n := len(b.authRequests())
		if pg := b.visit(px.url + "/sensitive"); pg.status != http.StatusOK || len(b.authRequests()) != n {
			t.Fatalf("status %d, %d new authorization requests", pg.status, len(b.authRequests())-n)
		}
	})

	old := e.browser("qian")
	e.idpOffset.Store(int64(-2 * sensitiveMaxAge)) // this sign-in happened two hours ago
	before := old.signIn(px)
	e.idpOffset.Store(0)

	t.Run("an old sign-in is sent back with max_age and prompt=login, and the fresh one is accepted", func(t *testing.T) {
		n, logins := len(old.authRequests()), old.logins
		pg := old.visit(px.url + "/sensitive")
		if pg.status != http.StatusOK {
			t.Fatalf("status %d: %.300s", pg.status, pg.body)
		}
		reqs := old.authRequests()[n:]
		if len(reqs) != 1 {
			t.Fatalf("%d authorization requests, want 1", len(reqs))
		}
		q := reqs[0].Query()
		if q.Get("max_age") != "3600" || q.Get("prompt") != "login" {
			t.Fatalf("step-up request %s lacks max_age=3600 or prompt=login", reqs[0])
		}
		if old.logins != logins+1 {
			t.Fatal("the provider did not ask for the password again")
		}
		if got := pg.json(t)["auth_time"].(float64); got-before["auth_time"].(float64) < sensitiveMaxAge.Seconds() {
			t.Fatalf("auth_time %v is not fresh (was %v)", got, before["auth_time"])
		}
	})
	t.Run("an answer whose auth_time is older than max_age is not accepted", func(t *testing.T) {
		// The provider stamps even the fresh sign-in two hours in the
		// past: what a provider that ignored max_age would return.
		stale := e.browser("admin")
		e.idpOffset.Store(int64(-2 * sensitiveMaxAge))
		defer e.idpOffset.Store(0)
		stale.signIn(px)
		pg := stale.visit(px.url + "/sensitive")
		if pg.status != http.StatusForbidden || !strings.Contains(pg.body, "fresh sign-in") {
			t.Fatalf("status %d: %.300s", pg.status, pg.body)
		}
		if !px.logged("without the required fresh sign-in") {
			t.Fatal("not audited")
		}
		if got := stale.api(px.url + "/app"); got.status != http.StatusOK {
			t.Fatalf("the refused step-up ended the existing session: %d", got.status)
		}
	})
}

func TestRefresh(t *testing.T) {
	// Access tokens live 30 s, less than refresh_before (1 m): every
	// session needs a refresh at its next request.
	e := newEnv(t, envOptions{accessTTL: 30 * time.Second})
	px := e.proxies[0]
	b := e.browser("sun")
	b.signIn(px)
	base := e.idp.RefreshCount()
	if base != 1 {
		t.Fatalf("refreshes after sign-in: %d, want 1 (the first request after the callback)", base)
	}
	e.idp.SetAccessTokenLifetime(time.Hour)

	t.Run("twenty concurrent requests refresh the tokens exactly once", func(t *testing.T) {
		allOKAtOnce(t, 20, func(int) int { return b.api(px.url + "/app").status })
		if got := e.idp.RefreshCount() - base; got != 1 {
			t.Fatalf("%d refreshes, want 1", got)
		}
	})
	t.Run("later requests use the refreshed tokens without refreshing", func(t *testing.T) {
		if b.api(px.url+"/app").status != http.StatusOK || e.idp.RefreshCount()-base != 1 {
			t.Fatalf("refreshes: %d", e.idp.RefreshCount()-base)
		}
	})
}

func TestDisabledUserIsSignedOutAtTheNextRefresh(t *testing.T) {
	e := newEnv(t, envOptions{accessTTL: 30 * time.Second})
	px := e.proxies[0]
	b := e.browser("xiao")
	b.signIn(px)
	if err := e.idp.DisableUser("xiao"); err != nil {
		t.Fatal(err)
	}
	pg := b.api(px.url + "/app")
	if pg.status != http.StatusUnauthorized {
		t.Fatalf("a disabled user's API request got %d", pg.status)
	}
	if !px.logged("refused to refresh") {
		t.Fatal("the ended session is not audited")
	}
	t.Run("the browser is sent to sign in again", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, px.url+"/app", nil)
		req.Header.Set("Accept", "text/html")
		if got := b.do(req); got.status != http.StatusFound || !strings.HasPrefix(got.header.Get("Location"), e.idpURL) {
			t.Fatalf("status %d Location %q", got.status, got.header.Get("Location"))
		}
	})
}

func TestBackchannelLogout(t *testing.T) {
	e := newEnv(t, envOptions{})
	px := e.proxies[0]
	b := e.browser("qian")
	other := e.browser("admin")
	b.signIn(px)
	other.signIn(px)

	if err := e.idp.LogoutUser(t.Context(), "qian"); err != nil {
		t.Fatal(err)
	}
	t.Run("the provider's logout token ends the user's session", func(t *testing.T) {
		if pg := b.api(px.url + "/app"); pg.status != http.StatusUnauthorized {
			t.Fatalf("status %d after back-channel logout", pg.status)
		}
		if !px.logged("back-channel logout") {
			t.Fatal("not audited")
		}
	})
	t.Run("other users stay signed in", func(t *testing.T) {
		if pg := other.api(px.url + "/app"); pg.status != http.StatusOK {
			t.Fatalf("status %d", pg.status)
		}
	})
}

func TestAdminRevoke(t *testing.T) {
	e := newEnv(t, envOptions{})
	px := e.proxies[0]
	b1, b2, other := e.browser("zhang"), e.browser("zhang"), e.browser("wang")
	b1.signIn(px)
	b2.signIn(px)
	other.signIn(px)

	handler := AdminAPI{}.Routes()[0].Handler
	rec := httptest.NewRecorder()
	if err := handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/crm_guard/revoke", strings.NewReader(`{"sub":"zhang"}`))); err != nil {
		t.Fatal(err)
	}
	var out map[string]int
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out["revoked"] != 2 {
		t.Fatalf("answer %q (%v), want revoked 2", rec.Body.String(), err)
	}
	t.Run("every session of the user stops working", func(t *testing.T) {
		for _, b := range []*browser{b1, b2} {
			if pg := b.api(px.url + "/app"); pg.status != http.StatusUnauthorized {
				t.Fatalf("status %d after revoke", pg.status)
			}
		}
	})
	t.Run("other users stay signed in", func(t *testing.T) {
		if pg := other.api(px.url + "/app"); pg.status != http.StatusOK {
			t.Fatalf("status %d", pg.status)
		}
	})
	for _, c := range []struct{ name, method, body string }{
		{"a GET is refused", http.MethodGet, ""},
		{"an empty body is refused", http.MethodPost, `{}`},
		{"unknown fields are refused", http.MethodPost, `{"user":"zhang"}`},
		{"broken JSON is refused", http.MethodPost, `{"sub":`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := handler.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(c.method, "/crm_guard/revoke", bytes.NewReader([]byte(c.body))))
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
	t.Run("an oversized body is refused with an error that wraps the size limit's", func(t *testing.T) {
		body := `{"sub":"` + strings.Repeat("z", 5000) + `"}`
		err := handler.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/crm_guard/revoke", strings.NewReader(body)))
		var apiErr caddy.APIError
		if !errors.As(err, &apiErr) || apiErr.HTTPStatus != http.StatusBadRequest {
			t.Fatalf("want a 400 caddy.APIError, got %#v", err)
		}
		var tooLarge *http.MaxBytesError
		if !errors.As(apiErr.Err, &tooLarge) {
			t.Fatalf("error %q does not wrap *http.MaxBytesError", apiErr.Err)
		}
	})
}

func TestSessionsSurviveARestartAndAKeyRotation(t *testing.T) {
	e := newEnv(t, envOptions{})
	px := e.proxies[0]
	b := e.browser("li")
	b.signIn(px)
	const newSecret = "a-brand-new-secret-a-brand-new-secret"

	t.Run("after a restart on the same file store the session still works", func(t *testing.T) {
		e.restart(px, []string{testSecret})
		if got := b.api(px.url + "/app"); got.status != http.StatusOK {
			t.Fatalf("status %d", got.status)
		}
	})
	t.Run("with a new secret first and the old one kept, old cookies still work", func(t *testing.T) {
		e.restart(px, []string{newSecret, testSecret})
		if got := b.api(px.url + "/app"); got.status != http.StatusOK {
			t.Fatalf("status %d", got.status)
		}
	})
	t.Run("new sessions are sealed with the new secret", func(t *testing.T) {
		nb := e.browser("zhao")
		nb.signIn(px)
		e.restart(px, []string{newSecret})
		if got := nb.api(px.url + "/app"); got.status != http.StatusOK {
			t.Fatalf("status %d", got.status)
		}
	})
	t.Run("once the old secret is removed, its cookies mean signed out", func(t *testing.T) {
		if got := b.api(px.url + "/app"); got.status != http.StatusUnauthorized {
			t.Fatalf("status %d", got.status)
		}
	})
}

// allOKAtOnce makes n requests at the same time, the i-th through
// status(i), and fails t unless every one is answered 200.
func allOKAtOnce(t *testing.T, n int, status func(i int) int) {
	t.Helper()
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for i := range n {
		wg.Go(func() { codes <- status(i) })
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Fatalf("a concurrent request got %d", c)
		}
	}
}
