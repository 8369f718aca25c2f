package oidc

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/session"
	"github.com/crmguard/crmguard/rules"
)

// flow is a started sign-in, kept in a short-lived encrypted cookie so
// that any proxy instance can finish it.
type flow struct {
	State    string   `json:"s"`
	Nonce    string   `json:"n"`
	Verifier string   `json:"v"`
	Return   string   `json:"r"`
	Redirect string   `json:"u"`
	Created  int64    `json:"c"`
	Tries    int      `json:"t,omitempty"`
	MaxAge   int64    `json:"a,omitempty"` // seconds; step-up
	WantMFA  bool     `json:"m,omitempty"`
	ACR      []string `json:"acr,omitempty"`
}

// isBrowser tells a browser from an API client: no Authorization header
// and an Accept header naming text/html.
func isBrowser(r *http.Request) bool {
	return r.Header.Get("Authorization") == "" && strings.Contains(strings.ToLower(r.Header.Get("Accept")), "text/html")
}

// origin is the scheme and host the request was made to.
func origin(r *http.Request) string { return authn.Origin(r) }

// callbackPath is the path the sign-in cookies are scoped to, so they only
// travel with the callback request.
func (p *Provider) callbackPath() string {
	if p.cfg.RedirectURL != "" {
		if u, err := url.Parse(p.cfg.RedirectURL); err == nil && u.Path != "" {
			return u.Path
		}
	}
	return p.cfg.CallbackPath
}

func (p *Provider) redirectURL(r *http.Request) string {
	if p.cfg.RedirectURL != "" {
		return p.cfg.RedirectURL
	}
	return origin(r) + p.cfg.CallbackPath
}

// Challenge implements authn.Provider. Browsers are redirected to the
// provider (with acr_values, max_age and prompt=login as the need says);
// API clients get 401 with a WWW-Authenticate challenge. Challenge always
// writes an answer (503 when the provider cannot be reached) and returns
// nil.
func (p *Provider) Challenge(w http.ResponseWriter, r *http.Request, need authn.Need) error {
	if !isBrowser(r) {
		p.apiChallenge(w, r, need)
		return nil
	}
	ret := "/"
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		ret = safeReturn(r.URL.RequestURI())
	}
	stepUp := !need.SignIn && (need.StepUp.MFA || need.StepUp.MaxAge > 0)
	p.startSignIn(w, r, ret, need.StepUp, stepUp, 0)
	return nil
}

// apiChallenge answers an API client with authn.WriteChallenge. When the
// sign-in lacks MFA and the rule file names no acr values, the challenge
// names the Caddyfile's acr_values (else the MFA policy's).
func (p *Provider) apiChallenge(w http.ResponseWriter, r *http.Request, need authn.Need) {
	if !need.SignIn && need.StepUp.MFA && len(need.StepUp.ACR) == 0 {
		need.StepUp.ACR = p.cfg.ACRValues
		if len(need.StepUp.ACR) == 0 {
			need.StepUp.ACR = p.policy().ACR
		}
	}
	authn.WriteChallenge(w, r, need)
}

// login serves GET <LoginPath>?return=/path.
func (p *Provider) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writePage(w, http.StatusMethodNotAllowed, page{Title: "Method not allowed", Message: "Use a link to sign in."})
		return
	}
	ret := r.URL.Query().Get("return")
	if ret != "" && !isSafeReturn(ret) {
		p.audit.Warn("sign-in return URL refused (open redirect attempt)", zap.String("return", ret), zap.String("remote", r.RemoteAddr))
	}
	p.startSignIn(w, r, safeReturn(ret), rules.StepUpNeed{}, false, 0)
}

func (p *Provider) flowCookieName(state string) string {
	return p.sess.Config().CookieName + "_signin_" + state[:10]
}

// startSignIn sets a sign-in cookie and redirects to the authorization
// endpoint.
func (p *Provider) startSignIn(w http.ResponseWriter, r *http.Request, ret string, need rules.StepUpNeed, stepUp bool, tries int) {
	d, err := p.discovery(r.Context())
	if err != nil {
		p.unavailable(w, r)
		return
	}
	pol := p.policy()
	f := flow{
		State:    session.RandomID(24),
		Nonce:    session.RandomID(24),
		Verifier: oauth2.GenerateVerifier(),
		Return:   safeReturn(ret),
		Redirect: p.redirectURL(r),
		Created:  p.now().Unix(),
		Tries:    tries,
		MaxAge:   int64(need.MaxAge / time.Second),
		WantMFA:  need.MFA || pol.Required,
		ACR:      need.ACR,
	}
	if need.MaxAge > 0 && f.MaxAge == 0 {
		f.MaxAge = 1
	}
	opts := []oauth2.AuthCodeOption{
		oauth2.S256ChallengeOption(f.Verifier),
		gooidc.Nonce(f.Nonce),
		oauth2.SetAuthURLParam("redirect_uri", f.Redirect),
	}
	if f.WantMFA {
		acr := f.ACR
		if len(acr) == 0 {
			acr = p.cfg.ACRValues
		}
		if len(acr) > 0 {
			opts = append(opts, oauth2.SetAuthURLParam("acr_values", strings.Join(acr, " ")))
		}
	}
	if f.MaxAge > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("max_age", strconv.FormatInt(f.MaxAge, 10)))
	}
	if stepUp || tries > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "login"))
	}
	b, _ := json.Marshal(&f)
	name := p.flowCookieName(f.State)
	p.sess.SetCookiePath(w, r, name, p.flows.Seal(b, []byte(name)), p.callbackPath(), int(time.Duration(p.cfg.FlowTimeout)/time.Second))
	w.Header().Set("Cache-Control", "no-store")
	status := http.StatusFound
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		status = http.StatusSeeOther
	}
	http.Redirect(w, r, d.oauth.AuthCodeURL(f.State, opts...), status)
}

// refuse ends a sign-in attempt that must not succeed: it is audited and
// the browser gets a page with a link to start again.
func (p *Provider) refuse(w http.ResponseWriter, r *http.Request, status int, reason string, fields ...zap.Field) {
	p.audit.Warn("sign-in refused", append([]zap.Field{zap.String("reason", reason), zap.String("remote", r.RemoteAddr)}, fields...)...)
	writePage(w, status, page{
		Title:   "Sign-in failed",
		Message: "The sign-in could not be completed: " + reason + ".",
		Link:    p.cfg.LoginPath, LinkText: "Sign in again",
	})
}

// readFlow finds and opens the sign-in cookie for state.
func (p *Provider) readFlow(r *http.Request, state string) (*flow, string) {
	if len(state) < 16 || len(state) > 128 {
		return nil, ""
	}
	name := p.flowCookieName(state)
	c, err := r.Cookie(p.sess.CookieNameFor(r, name))
	if err != nil {
		return nil, name
	}
	b, err := p.flows.Open(c.Value, []byte(name))
	if err != nil {
		return nil, name
	}
	var f flow
	if json.Unmarshal(b, &f) != nil || subtle.ConstantTimeCompare([]byte(f.State), []byte(state)) != 1 {
		return nil, name
	}
	if p.now().Sub(time.Unix(f.Created, 0)) > time.Duration(p.cfg.FlowTimeout) {
		return nil, name
	}
	return &f, name
}

// callback finishes a sign-in.
func (p *Provider) callback(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writePage(w, http.StatusMethodNotAllowed, page{Title: "Method not allowed", Message: "The sign-in callback takes GET."})
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	f, name := p.readFlow(r, state)
	if name != "" {
		p.sess.SetCookiePath(w, r, name, "", p.callbackPath(), -1)
	}
	if f == nil {
		p.refuse(w, r, http.StatusBadRequest, "the sign-in state is unknown, expired or does not belong to this browser", zap.String("state", truncate(state)))
		return
	}
	first, err := p.sess.Store().Once(r.Context(), "state:"+f.State, time.Duration(p.cfg.FlowTimeout)+time.Minute)
	if err != nil {
		p.logger.Error("session store unavailable during sign-in", zap.Error(err))
		p.unavailable(w, r)
		return
	}
	if !first {
		p.refuse(w, r, http.StatusBadRequest, "this sign-in response was already used (replayed state)", zap.String("state", truncate(state)))
		return
	}
	if e := q.Get("error"); e != "" {
		p.refuse(w, r, http.StatusUnauthorized, "the identity provider answered "+truncate(e)+": "+truncate(q.Get("error_description")))
		return
	}
	d, err := p.discovery(r.Context())
	if err != nil {
		p.unavailable(w, r)
		return
	}
	if iss := q.Get("iss"); iss != "" || d.issParam {
		if iss != p.cfg.Issuer {
			p.refuse(w, r, http.StatusBadRequest, "the response names issuer "+strconv.Quote(truncate(iss))+", not the configured one (RFC 9207 mix-up defence)")
			return
		}
	}
	code := q.Get("code")
	if code == "" {
		p.refuse(w, r, http.StatusBadRequest, "the response carries no authorization code")
		return
	}
	ctx := p.oauthCtx(r.Context())
	tok, err := d.oauth.Exchange(ctx, code, oauth2.VerifierOption(f.Verifier), oauth2.SetAuthURLParam("redirect_uri", f.Redirect))
	if err != nil {
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.Response == nil || re.Response.StatusCode >= 500 {
			p.logger.Error("token endpoint unreachable or failing", zap.Error(err))
			p.unavailable(w, r)
			return
		}
		p.refuse(w, r, http.StatusUnauthorized, "the identity provider refused the authorization code (expired, used, or issued to another client)", zap.String("error", re.ErrorCode))
		return
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		p.refuse(w, r, http.StatusBadGateway, "the identity provider returned no ID token")
		return
	}
	idt, err := d.idTokens.Verify(r.Context(), rawID)
	if err != nil {
		p.refuse(w, r, http.StatusUnauthorized, "the ID token did not verify", zap.Error(err))
		return
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(f.Nonce)) != 1 {
		p.refuse(w, r, http.StatusUnauthorized, "the ID token's nonce does not match this sign-in", zap.String("sub", idt.Subject))
		return
	}
	skew := time.Duration(p.cfg.ClockSkew)
	now := p.now()
	if idt.IssuedAt.IsZero() || idt.IssuedAt.After(now.Add(skew)) || now.Sub(idt.IssuedAt) > time.Duration(p.cfg.FlowTimeout)+skew {
		p.refuse(w, r, http.StatusUnauthorized, "the ID token's issue time is missing or outside this sign-in", zap.Time("iat", idt.IssuedAt))
		return
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		p.refuse(w, r, http.StatusUnauthorized, "the ID token's claims cannot be read", zap.Error(err))
		return
	}
	amr, acr, authTime := authFacts(claims)
	pol := p.policy()

	if f.MaxAge > 0 && (authTime.IsZero() || now.Sub(authTime) > time.Duration(f.MaxAge)*time.Second+skew) {
		p.retryOrExplain(w, r, f, "fresh sign-in", zap.String("sub", idt.Subject), zap.Time("auth_time", authTime))
		return
	}
	if f.WantMFA && !pol.Satisfied(amr, acr) {
		p.retryOrExplain(w, r, f, "mfa", zap.String("sub", idt.Subject), zap.Strings("amr", amr), zap.String("acr", acr))
		return
	}
	p.mergeUserinfo(r, d, tok, idt.Subject, claims)

	sd := &session.Data{
		Subject: idt.Subject, Claims: claims, AMR: amr, ACR: acr, AuthTime: authTime,
		IDToken: rawID, AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenExpiry: tok.Expiry,
	}
	sd.SID, _ = claims["sid"].(string)
	// A new sign-in replaces the browser's previous session (fixation).
	if err := p.sess.Forget(r); err != nil {
		p.logger.Warn("could not end the previous session", zap.Error(err))
	}
	if err := p.sess.Start(w, r, sd); err != nil {
		p.logger.Error("session store unavailable; sign-in not completed", zap.Error(err))
		p.unavailable(w, r)
		return
	}
	p.audit.Info("signed in", zap.String("sub", sd.Subject), zap.Strings("amr", amr), zap.String("acr", acr),
		zap.Time("auth_time", authTime), zap.String("session", sessionRef(sd.ID)), zap.String("remote", r.RemoteAddr))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, safeReturn(f.Return), http.StatusSeeOther)
}

// retryOrExplain sends the browser back to the provider (prompt=login,
// acr_values / max_age) or, after MFARetries attempts, explains why the
// sign-in is not accepted.
func (p *Provider) retryOrExplain(w http.ResponseWriter, r *http.Request, f *flow, what string, fields ...zap.Field) {
	tries := f.Tries + 1
	p.audit.Warn("sign-in without the required "+what+" not accepted", append(fields, zap.Int("attempt", tries), zap.String("remote", r.RemoteAddr))...)
	if tries >= p.cfg.MFARetries {
		title := "Your account needs multi-factor authentication"
		msg := "Your account signed in without multi-factor authentication, and this application accepts only sign-ins with a second factor (for example a code from an authenticator app). Set up a second factor with your identity provider, or ask your administrator to enable it for your account, then sign in again."
		if what != "mfa" {
			title = "A fresh sign-in is needed"
			msg = "The identity provider did not perform the fresh sign-in this page needs. Sign out of the identity provider and sign in again, or ask your administrator."
		}
		writePage(w, http.StatusForbidden, page{Title: title, Message: msg, Link: p.cfg.LoginPath + "?return=" + url.QueryEscape(f.Return), LinkText: "Try again"})
		return
	}
	need := rules.StepUpNeed{MFA: f.WantMFA, MaxAge: time.Duration(f.MaxAge) * time.Second, ACR: f.ACR}
	p.startSignIn(w, r, f.Return, need, true, tries)
}

// mergeUserinfo adds userinfo claims the ID token lacks (same subject only).
func (p *Provider) mergeUserinfo(r *http.Request, d *discovered, tok *oauth2.Token, sub string, claims map[string]any) {
	if d.provider.UserInfoEndpoint() == "" || tok.AccessToken == "" {
		return
	}
	ui, err := d.provider.UserInfo(p.oauthCtx(r.Context()), oauth2.StaticTokenSource(tok))
	if err != nil {
		p.logger.Debug("userinfo not read", zap.Error(err))
		return
	}
	if ui.Subject != sub {
		p.logger.Warn("userinfo subject differs from the ID token's; ignored", zap.String("sub", sub))
		return
	}
	extra := map[string]any{}
	if ui.Claims(&extra) != nil {
		return
	}
	for k, v := range extra {
		if _, ok := claims[k]; !ok {
			claims[k] = v
		}
	}
}

// authFacts reads amr, acr and auth_time from verified claims.
func authFacts(claims map[string]any) (amr []string, acr string, authTime time.Time) {
	switch v := claims["amr"].(type) {
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				amr = append(amr, s)
			}
		}
	case string:
		amr = []string{v}
	}
	acr, _ = claims["acr"].(string)
	switch v := claims["auth_time"].(type) {
	case float64:
		authTime = time.Unix(int64(v), 0)
	case json.Number:
		if n, err := v.Int64(); err == nil {
			authTime = time.Unix(n, 0)
		}
	}
	return slices.Clip(amr), acr, authTime
}

func truncate(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return fmt.Sprintf("%q", s)[1 : len(fmt.Sprintf("%q", s))-1]
}
