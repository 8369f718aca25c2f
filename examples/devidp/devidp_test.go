package devidp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

const redirect = "http://127.0.0.1:1/cb"

type fixture struct {
	t      *testing.T
	s      *Server
	url    string
	users  map[string]User
	offset atomic.Int64
	logout chan url.Values
	steps  map[string]int64 // the last TOTP step used per user
}

func newFixture(t *testing.T, conditional bool) *fixture {
	f := &fixture{t: t, users: map[string]User{}, logout: make(chan url.Values, 4), steps: map[string]int64{}}
	rp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		f.logout <- r.PostForm
	}))
	t.Cleanup(rp.Close)
	srv := httptest.NewUnstartedServer(nil)
	f.url = "http://" + srv.Listener.Addr().String()
	users := []User{
		{Username: "ann", Password: "ann-pw", TOTPSecret: NewTOTPSecret(), Groups: []string{"crm-sales"}, Teams: []string{"east"}},
		{Username: "bob", Password: "bob-pw", Groups: []string{"crm-sales"}},
		{Username: "mia", Password: "mia-pw", Groups: []string{"crm-sales-managers"}, Teams: []string{"east"}, Reports: []string{"ann", "bob"}},
	}
	for _, u := range users {
		f.users[u.Username] = u
	}
	s, err := New(Config{
		Issuer: f.url, Users: users, ConditionalMFA: conditional,
		Clients: []Client{{ID: "app", Secret: "app-secret", RedirectURIs: []string{redirect},
			PostLogoutRedirectURIs: []string{redirect}, BackchannelLogoutURI: rp.URL}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:    func() time.Time { return time.Now().Add(time.Duration(f.offset.Load())) },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.s = s
	srv.Config.Handler = s
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

func (f *fixture) oauth() *oauth2.Config {
	return &oauth2.Config{ClientID: "app", ClientSecret: "app-secret", RedirectURL: redirect,
		Endpoint: oauth2.Endpoint{AuthURL: f.url + "/authorize", TokenURL: f.url + "/oauth/token"},
		Scopes:   []string{"openid", "profile", "offline_access"}}
}

// agent is a browser: a cookie jar; it uses each TOTP step once unless
// replay is set.
type agent struct {
	f      *fixture
	c      *http.Client
	replay bool
	// forms counts the login forms shown.
	forms []string
}

func (f *fixture) agent() *agent {
	jar, _ := cookiejar.New(nil)
	return &agent{f: f, c: &http.Client{Jar: jar, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if r.URL.Host == "127.0.0.1:1" {
			return http.ErrUseLastResponse
		}
		return nil
	}}}
}

var idRe = regexp.MustCompile(`name="id" value="([^"]+)"`)

// authorize runs an authorization request as user and returns the code
// (or "" and the last page when the provider did not issue one).
func (a *agent) authorize(user, password string, opts ...oauth2.AuthCodeOption) (string, string) {
	t := a.f.t
	resp, err := a.c.Get(a.f.oauth().AuthCodeURL("state-123456789", opts...))
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if loc := resp.Header.Get("Location"); strings.HasPrefix(loc, redirect) {
			resp.Body.Close()
			return must(url.Parse(loc)).Query().Get("code"), ""
		}
		body := string(must(io.ReadAll(resp.Body)))
		resp.Body.Close()
		m := idRe.FindStringSubmatch(body)
		if m == nil || strings.Contains(body, `id="error"`) {
			return "", body
		}
		var form url.Values
		switch {
		case strings.Contains(body, `id="login-form"`):
			a.forms = append(a.forms, "password")
			form = url.Values{"id": {m[1]}, "username": {user}, "password": {password}}
			resp, err = a.c.PostForm(a.f.url+"/login/password", form)
		case strings.Contains(body, `id="totp-form"`):
			a.forms = append(a.forms, "totp")
			step := a.f.steps[user]
			if !a.replay {
				step = max(step+1, time.Now().Unix()/30-1)
				a.f.steps[user] = step
			}
			code := must(TOTP(a.f.users[user].TOTPSecret, time.Unix(step*30, 0)))
			resp, err = a.c.PostForm(a.f.url+"/login/totp", url.Values{"id": {m[1]}, "code": {code}})
		default:
			return "", body
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("no code after five steps")
	return "", ""
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func claimsOf(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	var c map[string]any
	if err := json.Unmarshal(must(base64.RawURLEncoding.DecodeString(parts[1])), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fixture) exchange(code string) *oauth2.Token {
	f.t.Helper()
	tok, err := f.oauth().Exchange(context.Background(), code)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

func TestSignInAndTokens(t *testing.T) {
	f := newFixture(t, false)
	t.Run("discovery advertises PKCE, end_session and back-channel logout", func(t *testing.T) {
		resp := must(http.Get(f.url + "/.well-known/openid-configuration"))
		var d map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&d)
		resp.Body.Close()
		if d["backchannel_logout_supported"] != true || d["end_session_endpoint"] == nil || !slices.Contains(d["code_challenge_methods_supported"].([]any), any("S256")) {
			t.Fatalf("%v", d)
		}
	})
	t.Run("password and TOTP give amr pwd+otp+mfa, the MFA acr, auth_time, sid, groups and teams", func(t *testing.T) {
		a := f.agent()
		code, page := a.authorize("ann", "ann-pw")
		if code == "" {
			t.Fatalf("no code: %.300s", page)
		}
		tok := f.exchange(code)
		c := claimsOf(t, tok.Extra("id_token").(string))
		if !slices.Equal(toStrings(c["amr"]), []string{"pwd", "otp", "mfa"}) || c["acr"] != ACRMFA || c["sid"] == "" || c["auth_time"] == nil ||
			!slices.Equal(toStrings(c["groups"]), []string{"crm-sales"}) || !slices.Equal(toStrings(c["teams"]), []string{"east"}) {
			t.Fatalf("ID token claims %v", c)
		}
		at := claimsOf(t, tok.AccessToken)
		if !slices.Equal(toStrings(at["amr"]), []string{"pwd", "otp", "mfa"}) || at["auth_time"] == nil {
			t.Fatalf("access token claims %v", at)
		}
		if tok.RefreshToken == "" {
			t.Fatal("no refresh token")
		}
	})
	t.Run("a manager's direct reports are in the ID and access tokens, and nobody else has the claim", func(t *testing.T) {
		tok := f.exchange(mustCode(t, f.agent(), "mia", "mia-pw"))
		for name, c := range map[string]map[string]any{"ID token": claimsOf(t, tok.Extra("id_token").(string)), "access token": claimsOf(t, tok.AccessToken)} {
			if !slices.Equal(toStrings(c["direct_reports"]), []string{"ann", "bob"}) {
				t.Errorf("%s direct_reports %v", name, c["direct_reports"])
			}
		}
		c := claimsOf(t, f.exchange(mustCode(t, f.agent(), "bob", "bob-pw")).Extra("id_token").(string))
		if _, ok := c["direct_reports"]; ok {
			t.Errorf("a user without reports has direct_reports %v", c["direct_reports"])
		}
	})
	t.Run("a password-only user gets amr pwd", func(t *testing.T) {
		code, _ := f.agent().authorize("bob", "bob-pw")
		c := claimsOf(t, f.exchange(code).Extra("id_token").(string))
		if !slices.Equal(toStrings(c["amr"]), []string{"pwd"}) || c["acr"] != ACRPassword {
			t.Fatalf("%v", c)
		}
	})
	t.Run("a wrong password is refused", func(t *testing.T) {
		code, page := f.agent().authorize("ann", "nope")
		if code != "" || !strings.Contains(page, "Wrong username or password") {
			t.Fatalf("code %q page %.200s", code, page)
		}
	})
	t.Run("a TOTP code is accepted once", func(t *testing.T) {
		a := f.agent()
		if code, _ := a.authorize("ann", "ann-pw"); code == "" {
			t.Fatal("first use refused")
		}
		b := f.agent()
		b.replay = true // the code a just used
		if code, page := b.authorize("ann", "ann-pw"); code != "" || !strings.Contains(page, "already used") {
			t.Fatalf("reuse: code %q page %.200s", code, page)
		}
	})
}

func toStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func TestSingleSignOnHonoursPromptMaxAgeAndACR(t *testing.T) {
	f := newFixture(t, true)
	a := f.agent()
	if code, _ := a.authorize("ann", "ann-pw"); code == "" {
		t.Fatal("first sign-in failed")
	}
	for _, c := range []struct {
		name   string
		opts   []oauth2.AuthCodeOption
		offset time.Duration
		forms  []string
	}{
		{"a second request reuses the session without a form", nil, 0, nil},
		{"prompt=login asks for the password again", []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "login")}, 0, []string{"password"}},
		{"max_age shorter than the session's age asks again", []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("max_age", "60")}, 2 * time.Minute, []string{"password"}},
		{"max_age longer than the session's age reuses it", []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("max_age", "3600")}, 2 * time.Minute, nil},
		{"acr_values asking for MFA on a password session asks for both factors", []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("acr_values", ACRMFA)}, 0, []string{"password", "totp"}},
		{"an MFA session satisfies acr_values without a form", []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("acr_values", ACRMFA)}, 0, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			f.offset.Store(int64(c.offset))
			defer f.offset.Store(0)
			a.forms = nil
			if code, page := a.authorize("ann", "ann-pw", c.opts...); code == "" {
				t.Fatalf("no code: %.300s", page)
			}
			if !slices.Equal(a.forms, c.forms) {
				t.Fatalf("forms %v, want %v", a.forms, c.forms)
			}
		})
	}
}

func TestRefreshDisableAndLogout(t *testing.T) {
	f := newFixture(t, false)
	a := f.agent()
	code, _ := a.authorize("ann", "ann-pw")
	tok := f.exchange(code)
	sid := claimsOf(t, tok.Extra("id_token").(string))["sid"]

	t.Run("a refresh token gives new tokens once (rotation)", func(t *testing.T) {
		nt, err := f.oauth().TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
		if err != nil || nt.RefreshToken == tok.RefreshToken || f.s.RefreshCount() != 1 {
			t.Fatalf("%v %v", nt, err)
		}
		if _, err := f.oauth().TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err == nil {
			t.Fatal("the old refresh token still works")
		}
		tok = nt
	})
	t.Run("a disabled user's refresh is refused with invalid_grant", func(t *testing.T) {
		_ = f.s.DisableUser("ann")
		defer f.s.EnableUser("ann")
		_, err := f.oauth().TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
		var re *oauth2.RetrieveError
		if err == nil || !errorsAs(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Fatalf("err = %v", err)
		}
		if _, page := f.agent().authorize("ann", "ann-pw"); !strings.Contains(page, "disabled") {
			t.Fatalf("a disabled user signed in: %.200s", page)
		}
	})
	t.Run("end_session sends a signed back-channel logout token for the session", func(t *testing.T) {
		code, _ := a.authorize("ann", "ann-pw")
		idt := f.exchange(code).Extra("id_token").(string)
		resp, err := a.c.Get(f.url + "/end_session?" + url.Values{"id_token_hint": {idt}, "post_logout_redirect_uri": {redirect}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if !strings.HasPrefix(resp.Header.Get("Location"), redirect) {
			t.Fatalf("end_session answered %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		var form url.Values
		select {
		case form = <-f.logout:
		default:
			t.Fatal("no logout token was sent before end_session answered")
		}
		c := claimsOf(t, form.Get("logout_token"))
		events, _ := c["events"].(map[string]any)
		if c["sid"] != sid || c["sub"] != "ann" || c["aud"] == nil || events["http://schemas.openid.net/event/backchannel-logout"] == nil || c["nonce"] != nil {
			t.Fatalf("logout token claims %v", c)
		}
		a.forms = nil
		if code, _ := a.authorize("ann", "ann-pw"); code == "" || len(a.forms) == 0 {
			t.Fatal("the provider session survived end_session")
		}
	})
}

func errorsAs(err error, target **oauth2.RetrieveError) bool {
	return errors.As(err, target)
}

// mustCode signs user in and returns the authorization code.
func mustCode(t *testing.T, a *agent, user, password string) string {
	t.Helper()
	code, page := a.authorize(user, password)
	if code == "" {
		t.Fatalf("no code for %s: %.300s", user, page)
	}
	return code
}
