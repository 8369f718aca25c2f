package rules

// This file is the temporary API contract between the packages; the rule
// engine's author replaces it with the real implementation.

import (
	"errors"
	"net/http"
	"time"
)

// Set is a compiled, immutable rule set, safe for concurrent use.
type Set struct{}

// Decision is the rules' verdict on one request. It is used by one request
// only and is not safe for concurrent use.
type Decision struct {
	// Outcome is the kind of decision.
	Outcome Outcome
	// Status is the HTTP status a client gets when Outcome is not Allow.
	Status int
	// RouteID is the id of the matched route ("" when none matched).
	RouteID string
	// Reason is a sentence a person can read.
	Reason string
	// Public is true on a route that needs no sign-in.
	Public bool
	// Shadow is true when the rule set only reports: the caller must not
	// block or rewrite.
	Shadow bool
	// StepUp says what is missing when Outcome is StepUp or SignIn.
	StepUp StepUpNeed
	// Path is the normalised request path.
	Path string
	// Params are the path parameters captured by the route.
	Params map[string]string
	// Audit collects what happened; CheckBody, InspectResponse and
	// Rewrite add to it.
	Audit Audit
}

// Load compiles a rule file. name is the file name used in messages.
func Load(name string, data []byte) (*Set, error) { return nil, errors.New("rules: not implemented") }

// LoadFile reads and compiles the rule file at path.
func LoadFile(path string) (*Set, error) { return nil, errors.New("rules: not implemented") }

// Warnings lists the lint warnings found when the set was loaded.
func (s *Set) Warnings() []Warning { return nil }

// Warning is a lint finding that does not stop the file from loading.
type Warning struct {
	Position
	Msg string
}

// Mode is the rule set's mode.
func (s *Set) Mode() Mode { return Enforce }

// MFA is the rule set's MFA policy.
func (s *Set) MFA() MFAPolicy { return MFAPolicy{} }

// UserFromClaims builds a user from verified claims through subject,
// role_map and inheritance.
func (s *Set) UserFromClaims(claims map[string]any, mfa bool, authTime time.Time) (*User, error) {
	return nil, errors.New("rules: not implemented")
}

// UserFromRoles builds a user from role names (inheritance is applied).
func (s *Set) UserFromRoles(id string, roles []string, attrs map[string]any, mfa bool, authTime time.Time) *User {
	return nil
}

// Decide judges a request. u is nil for an anonymous request.
func (s *Set) Decide(u *User, r *Request) *Decision { return &Decision{Outcome: Deny, Status: 403} }

// GuardsBody reports whether the request body must be read and checked.
func (d *Decision) GuardsBody() bool { return false }

// CheckBody checks a request body against the route's body guards.
func (d *Decision) CheckBody(contentType string, body []byte) *BodyError { return nil }

// InspectResponse looks at the upstream answer's status and headers. buffer
// is true when the body must be buffered and passed to Rewrite; a non-nil
// block means the answer must not reach the client.
func (d *Decision) InspectResponse(status int, h http.Header) (buffer bool, block *Block) {
	return false, nil
}

// Rewrite rewrites a buffered, decoded answer body in one pass, appending
// the result to dst. A non-nil block means the client gets block.Status
// instead (404 for a hidden single record, 403 for a blocked export). An
// error means the body cannot be rewritten (the caller answers 502).
func (d *Decision) Rewrite(dst []byte, status int, h http.Header, body []byte) (out []byte, block *Block, err error) {
	return nil, nil, errors.New("rules: not implemented")
}
