// Package authn is the seam between the crm_guard handler and the sign-in
// machinery: the handler asks a Provider who a request comes from and asks
// it to challenge the client when the rules need a (stronger) sign-in.
// WriteChallenge is the one writer of the 401 an API client gets then.
package authn

import (
	"net/http"
	"time"

	"github.com/crmguard/crmguard/rules"
)

// Identity is a verified caller. Every field comes from a signature-verified
// token (or the session created from one), never from request headers.
type Identity struct {
	// Subject is the token's `sub`.
	Subject string
	// Claims are the verified ID token (or access token) claims merged with
	// userinfo; the rule file's `subject` block reads them.
	Claims map[string]any
	// AMR is the verified `amr` claim.
	AMR []string
	// ACR is the verified `acr` claim.
	ACR string
	// AuthTime is the verified `auth_time` (zero when absent).
	AuthTime time.Time
	// SessionID is the proxy's session id ("" for bearer tokens).
	SessionID string
	// Bearer is true when the identity came from an Authorization header.
	Bearer bool
}

// Need says what the rules require that the request does not have.
type Need struct {
	// SignIn is true when the request carries no (valid) identity.
	SignIn bool
	// StepUp is what the sign-in lacks (MFA, a recent enough sign-in).
	StepUp rules.StepUpNeed
	// Reason is a sentence a person can read.
	Reason string
	// Message says it in words for the user (rules.Decision.Message).
	Message string
}

// Provider identifies requests and signs users in.
type Provider interface {
	// Identify returns the identity carried by r, or nil when r carries
	// none or an invalid, expired, revoked or tampered one. An error means
	// the provider could not be asked (the caller answers 503).
	Identify(r *http.Request) (*Identity, error)
	// Challenge answers a request whose identity is missing or too weak:
	// browsers are redirected to the provider, API clients get 401 with a
	// WWW-Authenticate challenge.
	Challenge(w http.ResponseWriter, r *http.Request, need Need) error
	// Handle serves the provider's own endpoints (callback, logout,
	// back-channel logout). handled is false when r is not for one of them.
	Handle(w http.ResponseWriter, r *http.Request) (handled bool, err error)
}
