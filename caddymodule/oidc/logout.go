package oidc

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/crmguard/crmguard/caddymodule/authn"
)

// csrfToken is the CSRF token of every form of a session (the logout
// form, the approval and elevation pages): an HMAC of the session's
// reference (sessionRef), so it needs no state and ends with the session.
func (p *Provider) csrfToken(ref string) string {
	return p.csrf.MAC([]byte("form " + ref))
}

// FormToken implements authn.FormTokens: the CSRF token of id's session
// ("" for a bearer token, which has no session).
func (p *Provider) FormToken(id *authn.Identity) string {
	if id == nil || id.Bearer || id.SessionID == "" {
		return ""
	}
	return p.csrfToken(id.SessionID)
}

// CheckFormToken implements authn.FormTokens.
func (p *Provider) CheckFormToken(id *authn.Identity, token string) bool {
	if id == nil || id.Bearer || id.SessionID == "" || token == "" {
		return false
	}
	return p.csrf.VerifyMAC([]byte("form "+id.SessionID), token)
}

// logout serves <LogoutPath>. GET shows a confirmation form (a GET never
// changes state, so a link or image elsewhere cannot sign a user out);
// POST needs the form's CSRF token or a same-origin Origin header, ends
// the session in the store and sends the browser to the provider's
// end_session_endpoint with id_token_hint and post_logout_redirect_uri.
func (p *Provider) logout(w http.ResponseWriter, r *http.Request) {
	d, err := p.sess.Load(r)
	if err != nil {
		p.logger.Error("session store unavailable during logout", zap.Error(err))
		p.unavailable(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if d == nil {
			writePage(w, http.StatusOK, page{Title: "Signed out", Message: "You are not signed in.", Link: "/", LinkText: "Continue"})
			return
		}
		writePage(w, http.StatusOK, page{
			Title: "Sign out?", Message: "Sign out of the CRM and of your identity provider session.",
			Form: p.cfg.LogoutPath, CSRF: p.csrfToken(sessionRef(d.ID)), Button: "Sign out",
		})
		return
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		writePage(w, http.StatusMethodNotAllowed, page{Title: "Method not allowed", Message: "Sign out with the form."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	_ = r.ParseForm()
	if d == nil {
		p.sess.SetCookie(w, r, p.sess.Config().CookieName, "", -1)
		http.Redirect(w, r, p.postLogoutURL(r), http.StatusSeeOther)
		return
	}
	if !p.csrf.VerifyMAC([]byte("form "+sessionRef(d.ID)), r.PostForm.Get("csrf")) && !authn.SameOrigin(r) {
		p.audit.Warn("logout refused: missing or wrong CSRF token from another origin",
			zap.String("sub", d.Subject), zap.String("origin", r.Header.Get("Origin")), zap.String("remote", r.RemoteAddr))
		writePage(w, http.StatusForbidden, page{Title: "Sign-out not confirmed", Message: "This sign-out request did not come from this site.", Link: p.cfg.LogoutPath, LinkText: "Sign out"})
		return
	}
	if err := p.sess.End(w, r); err != nil {
		p.logger.Error("session store unavailable during logout", zap.Error(err))
		p.unavailable(w, r)
		return
	}
	p.audit.Info("signed out", zap.String("sub", d.Subject), zap.String("session", sessionRef(d.ID)), zap.String("remote", r.RemoteAddr))
	p.sessionsEnded(r.Context(), authn.SessionEnd{SessionID: sessionRef(d.ID), Why: "signed out"})
	target := p.postLogoutURL(r)
	if disc, err := p.discovery(r.Context()); err == nil && disc.endSession != "" {
		if u, err := url.Parse(disc.endSession); err == nil {
			q := u.Query()
			q.Set("id_token_hint", d.IDToken)
			q.Set("post_logout_redirect_uri", target)
			q.Set("client_id", p.cfg.ClientID)
			u.RawQuery = q.Encode()
			target = u.String()
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusSeeOther)
}

func (p *Provider) postLogoutURL(r *http.Request) string {
	t := p.cfg.PostLogoutRedirect
	if strings.HasPrefix(t, "http://") || strings.HasPrefix(t, "https://") {
		return t
	}
	return origin(r) + safeReturn(t)
}

const backchannelEvent = "http://schemas.openid.net/event/backchannel-logout"

// backchannelLogout serves OIDC Back-Channel Logout 1.0: it verifies the
// logout token and ends the sessions of its sid (or, without sid, of its
// sub) in the store, so every instance sees it at the next request.
func (p *Provider) backchannelLogout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "invalid_request", "error_description": "POST a logout_token"})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		p.badLogoutToken(w, r, "the body is not a form")
		return
	}
	raw := r.PostForm.Get("logout_token")
	if raw == "" {
		p.badLogoutToken(w, r, "no logout_token")
		return
	}
	d, err := p.discovery(r.Context())
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
		return
	}
	t, err := d.logout.Verify(r.Context(), raw)
	if err != nil {
		p.badLogoutToken(w, r, "the logout token did not verify: "+err.Error())
		return
	}
	var c struct {
		Sub    string                    `json:"sub"`
		SID    string                    `json:"sid"`
		Nonce  *string                   `json:"nonce"`
		JTI    string                    `json:"jti"`
		Events map[string]map[string]any `json:"events"`
		IAT    *float64                  `json:"iat"`
	}
	if err := t.Claims(&c); err != nil {
		p.badLogoutToken(w, r, "the logout token's claims cannot be read")
		return
	}
	skew := time.Duration(p.cfg.ClockSkew)
	switch {
	case c.Events == nil || c.Events[backchannelEvent] == nil:
		p.badLogoutToken(w, r, "the logout token lacks the back-channel logout event")
		return
	case c.Nonce != nil:
		p.badLogoutToken(w, r, "a logout token must not carry a nonce")
		return
	case c.Sub == "" && c.SID == "":
		p.badLogoutToken(w, r, "the logout token names neither sid nor sub")
		return
	case c.IAT == nil:
		p.badLogoutToken(w, r, "the logout token has no iat")
		return
	}
	iat := time.Unix(int64(*c.IAT), 0)
	if now := p.now(); iat.After(now.Add(skew)) || iat.Before(now.Add(-time.Duration(p.cfg.FlowTimeout)-skew)) {
		p.badLogoutToken(w, r, "the logout token's iat is too far from now")
		return
	}
	if c.JTI != "" {
		first, err := p.sess.Store().Once(r.Context(), "jti:"+c.JTI, time.Duration(p.cfg.FlowTimeout)+2*skew)
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
			return
		}
		if !first {
			p.badLogoutToken(w, r, "the logout token was already used")
			return
		}
	}
	ctx := context.WithoutCancel(r.Context())
	var n int
	if c.SID != "" {
		n, err = p.Revoke(ctx, "", c.SID)
	} else {
		n, err = p.Revoke(ctx, c.Sub, "")
	}
	if err != nil {
		p.logger.Error("session store unavailable during back-channel logout", zap.Error(err))
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
		return
	}
	p.audit.Info("back-channel logout", zap.String("sub", c.Sub), zap.String("sid", c.SID), zap.Int("sessions_ended", n))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

func (p *Provider) badLogoutToken(w http.ResponseWriter, r *http.Request, why string) {
	p.audit.Warn("back-channel logout refused", zap.String("reason", why), zap.String("remote", r.RemoteAddr))
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": why})
}
