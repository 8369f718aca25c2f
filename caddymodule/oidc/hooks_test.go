package oidc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/crmguard/crmguard/caddymodule/authn"
)

// endings records the session ends a provider reports.
type endings struct {
	mu   sync.Mutex
	seen []authn.SessionEnd
}

func (e *endings) record(_ context.Context, end authn.SessionEnd) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen = append(e.seen, end)
}

func (e *endings) last(t *testing.T) authn.SessionEnd {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.seen) == 0 {
		t.Fatal("no session end was reported")
	}
	return e.seen[len(e.seen)-1]
}

func TestFormTokensAreTheLogoutFormsToken(t *testing.T) {
	e := newEnv(t, envOptions{})
	px := e.proxies[0]
	b := e.browser("wang")
	b.signIn(px)
	ref, _ := b.api(px.url + "/app").json(t)["session"].(string)
	id := &authn.Identity{Subject: "wang", SessionID: ref}
	confirm := b.visit(px.url + DefaultLogoutPath)
	tok := regexp1(`name="csrf" value="([^"]+)"`, confirm.body)
	if ref == "" || tok == "" || px.p.FormToken(id) != tok {
		t.Fatalf("FormToken %q, the logout form's %q (session %q)", px.p.FormToken(id), tok, ref)
	}
	cases := []struct {
		name  string
		id    *authn.Identity
		token string
		ok    bool
	}{
		{name: "the session's token is accepted", id: id, token: tok, ok: true},
		{name: "another session's token is refused", id: &authn.Identity{SessionID: "other"}, token: tok},
		{name: "a bearer token has no form token", id: &authn.Identity{SessionID: ref, Bearer: true}, token: tok},
		{name: "an empty token is refused", id: id, token: ""},
		{name: "a token changed in one character is refused", id: id, token: "A" + tok[1:]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := px.p.CheckFormToken(c.id, c.token); got != c.ok {
				t.Fatalf("CheckFormToken = %v", got)
			}
		})
	}
	if px.p.FormToken(&authn.Identity{Bearer: true}) != "" {
		t.Error("a bearer identity got a form token")
	}
}

func TestSessionEndsAreReported(t *testing.T) {
	e := newEnv(t, envOptions{})
	px := e.proxies[0]
	var got endings
	px.p.OnSessionEnd(got.record)

	t.Run("a logout reports the session that ended", func(t *testing.T) {
		b := e.browser("wang")
		b.signIn(px)
		ref, _ := b.api(px.url + "/app").json(t)["session"].(string)
		tok := regexp1(`name="csrf" value="([^"]+)"`, b.visit(px.url+DefaultLogoutPath).body)
		req, _ := http.NewRequest(http.MethodPost, px.url+DefaultLogoutPath, strings.NewReader(url.Values{"csrf": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if a := b.do(req); a.status != http.StatusSeeOther {
			t.Fatalf("logout: %d", a.status)
		}
		if end := got.last(t); end.SessionID != ref || ref == "" || end.Subject != "" || end.Why != "signed out" {
			t.Errorf("reported %+v, want session %q signed out", end, ref)
		}
	})
	t.Run("a back-channel logout reports the provider session or subject", func(t *testing.T) {
		b := e.browser("qian")
		b.signIn(px)
		if err := e.idp.LogoutUser(t.Context(), "qian"); err != nil {
			t.Fatal(err)
		}
		if end := got.last(t); (end.SID == "" && end.Subject != "qian") || end.Why != "session revoked" {
			t.Errorf("reported %+v", end)
		}
	})
	t.Run("an administrator's revoke reports the subject", func(t *testing.T) {
		rec := httptest.NewRecorder()
		if err := (AdminAPI{}).Routes()[0].Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/crm_guard/revoke", strings.NewReader(`{"sub":"zhang"}`))); err != nil {
			t.Fatal(err)
		}
		if end := got.last(t); end.Subject != "zhang" || end.Why != "session revoked" {
			t.Errorf("reported %+v", end)
		}
	})
}
