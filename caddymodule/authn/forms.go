package authn

import (
	"context"
	"net/http"
)

// FormTokens is implemented by providers that keep browser sessions: the
// CSRF token of a session's forms. It is one token per session, the one
// the provider's own logout form carries, so the proxy has one CSRF
// mechanism for every page it serves.
type FormTokens interface {
	// FormToken returns the token forms of id's session carry ("" when
	// id has no session).
	FormToken(id *Identity) string
	// CheckFormToken reports whether token is id's session's form token.
	CheckFormToken(id *Identity, token string) bool
}

// SessionEnd says which sessions ended: the proxy session (SessionID),
// every session of a provider session (SID), or every session of a
// subject (Subject); one or more of them is set.
type SessionEnd struct {
	// SessionID is the proxy's session reference (Identity.SessionID).
	SessionID string
	// SID is the identity provider's session id (the `sid` claim).
	SID string
	// Subject is the identity provider's subject.
	Subject string
	// Why says how, in words: "signed out", "session revoked".
	Why string
}

// SessionWatcher is implemented by providers that tell when sessions end
// (logout, back-channel logout, an administrator's revoke), so that what
// is bound to a session (a temporary elevation) ends with it.
type SessionWatcher interface {
	// OnSessionEnd registers fn; it is called after sessions ended, with
	// a context that is not cancelled with the request.
	OnSessionEnd(fn func(ctx context.Context, end SessionEnd))
}

// Origin is the scheme and host a request was made to.
func Origin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// SameOrigin reports whether the browser says the request comes from the
// proxy's own origin: the Origin header when it is sent, else
// Sec-Fetch-Site. A request that says neither is not same-origin.
func SameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		return o == Origin(r)
	}
	return r.Header.Get("Sec-Fetch-Site") == "same-origin"
}

// CrossOrigin reports whether the browser says the request comes from
// another origin (an Origin header naming another site, or
// Sec-Fetch-Site cross-site or same-site).
func CrossOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" {
		return o != Origin(r)
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return true
	}
	return false
}
