package devidp

import (
	"context"
	"crypto/subtle"
	"html/template"
	"net/http"
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

const ssoCookie = "devidp_sso"

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Development sign-in</title>
<style>body{font-family:sans-serif;max-width:26em;margin:3em auto}label{display:block;margin:.6em 0}
.warn{background:#fee;padding:.4em}.err{color:#a00}</style></head><body>
<p class="warn">Development identity provider: for development and tests only.</p>
{{if .Error}}<p class="err" id="error">{{.Error}}</p>{{end}}
{{if .TOTP}}
<h1>Second factor</h1>
<form method="post" action="/login/totp" id="totp-form">
<input type="hidden" name="id" value="{{.ID}}">
<label>Code from your authenticator app <input name="code" id="code" autocomplete="one-time-code" inputmode="numeric" autofocus></label>
<button type="submit" id="submit">Verify</button>
</form>
{{else}}
<h1>Sign in</h1>
<form method="post" action="/login/password" id="login-form">
<input type="hidden" name="id" value="{{.ID}}">
<label>Username <input name="username" id="username" autofocus></label>
<label>Password <input name="password" id="password" type="password"></label>
<button type="submit" id="submit">Sign in</button>
</form>
{{end}}
</body></html>`))

type login struct {
	s        *Server
	callback func(context.Context, string) string
}

func (l *login) render(w http.ResponseWriter, status int, id string, totp bool, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = page.Execute(w, map[string]any{"ID": id, "TOTP": totp, "Error": msg})
}

// show is where the OP sends the browser: reuse the SSO session when the
// request allows it, else ask for the password.
func (l *login) show(w http.ResponseWriter, r *http.Request) {
	id := r.FormValue("authRequestID")
	a, err := l.s.store.request(id)
	if err != nil {
		l.render(w, http.StatusBadRequest, "", false, "This sign-in request is unknown or expired. Start again from the application.")
		return
	}
	if c, err := r.Cookie(ssoCookie); err == nil {
		if ss, ok := l.s.store.session(c.Value); ok && l.reusable(a, ss) {
			l.s.store.complete(a, &ss)
			http.Redirect(w, r, l.callback(r.Context(), a.id), http.StatusFound)
			return
		}
	}
	l.render(w, http.StatusOK, id, false, "")
}

// reusable reports whether an existing SSO session satisfies request a.
func (l *login) reusable(a *authRequest, ss ssoSession) bool {
	if slices.Contains(a.prompt, oidc.PromptLogin) {
		return false
	}
	if a.maxAge != nil && l.s.cfg.Now().Sub(ss.authTime) > time.Duration(*a.maxAge)*time.Second {
		return false
	}
	if a.wantsMFA() && ss.acr != ACRMFA {
		return false
	}
	u, ok := l.s.store.user(ss.user)
	return ok && !u.Disabled
}

func (l *login) password(w http.ResponseWriter, r *http.Request) {
	id := r.FormValue("id")
	a, err := l.s.store.request(id)
	if err != nil {
		l.render(w, http.StatusBadRequest, "", false, "This sign-in request is unknown or expired. Start again from the application.")
		return
	}
	u, ok := l.s.store.user(r.FormValue("username"))
	if !ok || subtle.ConstantTimeCompare([]byte(u.Password), []byte(r.FormValue("password"))) != 1 {
		l.render(w, http.StatusUnauthorized, id, false, "Wrong username or password.")
		return
	}
	if u.Disabled {
		l.render(w, http.StatusForbidden, id, false, "This account is disabled.")
		return
	}
	askTOTP := u.TOTPSecret != "" && (!l.s.cfg.ConditionalMFA || a.wantsMFA())
	if askTOTP {
		l.s.store.mu.Lock()
		a.pendingUser = u.Username
		l.s.store.mu.Unlock()
		l.render(w, http.StatusOK, id, true, "")
		return
	}
	l.finish(w, r, a, u.Username, []string{"pwd"}, ACRPassword)
}

func (l *login) totp(w http.ResponseWriter, r *http.Request) {
	id := r.FormValue("id")
	a, err := l.s.store.request(id)
	if err != nil {
		l.render(w, http.StatusBadRequest, "", false, "This sign-in request is unknown or expired. Start again from the application.")
		return
	}
	l.s.store.mu.Lock()
	name := a.pendingUser
	l.s.store.mu.Unlock()
	u, ok := l.s.store.user(name)
	if name == "" || !ok {
		l.render(w, http.StatusBadRequest, id, false, "Enter your username and password first.")
		return
	}
	step, ok := checkTOTP(u.TOTPSecret, r.FormValue("code"), time.Now())
	if ok {
		l.s.store.mu.Lock()
		if last, seen := l.s.store.lastTOTPSteps[name]; seen && step <= last {
			ok = false // a code may be used once
		} else {
			l.s.store.lastTOTPSteps[name] = step
		}
		l.s.store.mu.Unlock()
	}
	if !ok {
		l.render(w, http.StatusUnauthorized, id, true, "Wrong or already used code.")
		return
	}
	l.finish(w, r, a, name, []string{"pwd", "otp", "mfa"}, ACRMFA)
}

// finish starts a new SSO session, completes the request and returns the
// browser to the OP's callback.
func (l *login) finish(w http.ResponseWriter, r *http.Request, a *authRequest, user string, amr []string, acr string) {
	ss := l.s.store.startSession(user, amr, acr)
	l.s.store.complete(a, ss)
	http.SetCookie(w, &http.Cookie{Name: ssoCookie, Value: ss.sid, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil})
	l.s.cfg.Logger.Info("devidp: signed in", "user", user, "amr", amr, "client", a.clientID)
	http.Redirect(w, r, l.callback(op.ContextWithIssuer(r.Context(), l.s.cfg.Issuer), a.id), http.StatusFound)
}
