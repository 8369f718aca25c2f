// Package rules turns an operator's rule file, a verified user and an HTTP
// exchange into a decision and a rewritten response body.
//
// A rule file is loaded once with Load or LoadFile into an immutable *Set
// that is safe for concurrent use. Per request, Set.Decide returns a
// *Decision; the decision checks request bodies (CheckBody), says whether the
// response must be buffered (InspectResponse) and rewrites it in one pass
// (Rewrite). Everything that happened is collected in Decision.Audit.
//
// A refused decision has two texts: Reason, the technical one for the
// audit and the administrator (it may quote a condition), and Message, in
// words for the user (the operator's `message:` or a default generated
// from schedules, roles and approval policies; message.go). BodyError and
// Block carry both as well.
//
// # Approvals and elevations
//
// The rule file's `approvals:` and `elevations:` blocks are read at load;
// the guard's workflow pages use their read-only views: Set.ApprovalPolicy
// (steps, ApprovalStep.Permits, ApprovalPolicy.MayApprove and
// CheckPurpose), Set.Elevation (Elevation.MayStart) and Set.Elevate, the
// user as the rules see them while an elevation is active. Refusals of a
// workflow step are *WorkflowError (400, 401 with a step-up need, 403).
//
// An export route with `export: {approval: NAME}` needs a grant of policy
// NAME. Request.Grants (a GrantSource, which the guard's store implements)
// is asked by Decide once every earlier check passed: no grant is 403
// naming the policy (Decision.Approval), a failing source 503. A grant is
// bound to the requester, the route and CanonicalRequest, the one
// canonical form of a request used both when a grant is asked for and
// when it is checked. A found grant is used, atomically, by
// Decision.UseGrant right before the request goes upstream; an answer to a
// request whose grant was never used is withheld. Audit.Grant names the
// grant used. To check whether a described request needs approval (POST
// /.crmguard/approvals), run Decide for it as the requester without a
// grant source: Decision.Approval names the policy, or is empty.
//
// The package contains no HTTP server code: the Caddy handler in caddymodule
// calls it.
//
// Layout: the compiler of rule files is in the files named load_*.go (load
// time); Decide and the Decision's methods (request time) are in the
// others. Sub-packages own one concept each: internal/cond the conditions
// (CEL environment, the user, request and record values, native
// predicates), internal/urlpath path normalisation and path patterns,
// rewrite the one-pass JSON rewriter, mask the masks. Package rules imports
// them, the standard library, gjson and yaml; only cond imports cel-go, and
// nothing here imports Caddy or serves HTTP.
package rules

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// Mode says whether a rule set blocks and rewrites or only reports.
type Mode int

const (
	// Enforce blocks and rewrites as the rules say.
	Enforce Mode = iota
	// Shadow decides and audits everything but never blocks or rewrites.
	Shadow
)

// Position is a place in a rule file.
type Position struct {
	File   string // the file name given to Load
	Line   int    // 1-based
	Column int    // 1-based
	Key    string // the key path, e.g. "routes[3].visible"
}

// MFAPolicy is the rule file's `mfa` block: what counts as a multi-factor
// sign-in.
type MFAPolicy struct {
	// Required is the default for routes that do not say.
	Required bool
	// AMR lists `amr` values of which any one counts as MFA.
	AMR []string
	// ACR lists `acr` values of which any one counts as MFA.
	ACR []string
}

// defaultMFAAMR are the amr values that count as MFA when a rule file lists
// neither amr nor acr values: the RFC 8176 methods that are a second factor
// (docs/signin.md lists them; keep the two the same).
var defaultMFAAMR = [...]string{"mfa", "otp", "hwk", "swk", "sms", "fpt", "face", "iris", "retina", "sc"}

// WithDefaults returns p with the RFC 8176 second-factor methods (mfa, otp,
// hwk, swk, sms, fpt, face, iris, retina, sc) as its AMR list when it lists
// neither AMR nor ACR values, else p unchanged. A loaded Set's policy has
// them already.
func (p MFAPolicy) WithDefaults() MFAPolicy {
	if len(p.AMR) == 0 && len(p.ACR) == 0 {
		p.AMR = append([]string(nil), defaultMFAAMR[:]...)
	}
	return p
}

// Satisfied reports whether a verified token's amr and acr claims show MFA
// under this policy.
func (p MFAPolicy) Satisfied(amr []string, acr string) bool {
	for _, want := range p.AMR {
		for _, got := range amr {
			if got == want {
				return true
			}
		}
	}
	for _, want := range p.ACR {
		if acr != "" && acr == want {
			return true
		}
	}
	return false
}

// User is a verified subject as the rules see it. A nil *User is an
// anonymous request.
type User struct {
	// ID is the user's id (subject.id).
	ID string
	// Roles are the effective roles: role_map applied, inheritance expanded,
	// sorted, without duplicates.
	Roles []string
	// Attrs are the subject.attrs values.
	Attrs map[string]any
	// MFA is true when the sign-in used multi-factor authentication.
	MFA bool
	// AuthTime is when the user last signed in (zero when unknown).
	AuthTime time.Time
}

// HasRole reports whether u has the effective role r.
func (u *User) HasRole(r string) bool {
	if u == nil {
		return false
	}
	for _, have := range u.Roles {
		if have == r {
			return true
		}
	}
	return false
}

// Request is what the rules see of an HTTP request.
type Request struct {
	// Method is the HTTP method.
	Method string
	// URL is the request URL as received; its escaped path is normalised
	// by Decide before matching.
	URL *url.URL
	// Header holds the request headers.
	Header http.Header
	// Now is the clock for this request; zero means time.Now().
	Now time.Time
	// Grants finds and uses export grants (grants.go); nil means nobody
	// holds a grant.
	Grants GrantSource
	// Context bounds the calls to Grants (nil: context.Background()).
	Context context.Context
}

// Outcome is the kind of a decision.
type Outcome int

const (
	// Allow lets the request through (subject to body checks and response
	// rewriting).
	Allow Outcome = iota
	// Deny refuses the request (403, or 400 for a request that cannot be
	// judged).
	Deny
	// SignIn means the route needs a signed-in user (401 / redirect).
	SignIn
	// StepUp means the user must sign in again with MFA or more recently
	// (401 / redirect); Decision.StepUp says what is missing.
	StepUp
)

// StepUpNeed says what a sign-in must provide to satisfy a route.
type StepUpNeed struct {
	// MFA is true when the current sign-in lacks MFA.
	MFA bool
	// MaxAge is the largest accepted age of the sign-in (0: any).
	MaxAge time.Duration
	// ACR lists acceptable acr values to ask the provider for.
	ACR []string
}

// BodyError is a refused request body.
type BodyError struct {
	// Status is 400 (cannot be parsed), 403 (a guarded field), or 413.
	Status int
	// Field is the guarded field found (403 only), as a path.
	Field string
	// Reason is a sentence a person can read.
	Reason string
	// Message says it in words for the user (no rule internals).
	Message string
}

// Error returns the reason.
func (e *BodyError) Error() string { return e.Reason }

// Block is an answer the rules refuse to pass to the client.
type Block struct {
	// Status is the status the client gets (403, 404, 502).
	Status int
	// Reason is a sentence a person can read.
	Reason string
	// Message says it in words for the user (no rule internals).
	Message string
}

// Audit is what happened to one request, for the audit event.
type Audit struct {
	// Route is the id of the matched route ("" when none matched).
	Route string `json:"route,omitempty"`
	// Decision is allow, deny, sign_in, step_up, block (an answer was
	// refused after the request was allowed), error (the answer could
	// not be rewritten) or cut (a streamed answer was cut short).
	Decision string `json:"decision"`
	// Reason is a sentence a person can read.
	Reason string `json:"reason,omitempty"`
	// Shadow is true when the rule set only reports.
	Shadow bool `json:"shadow,omitempty"`
	// RecordsIn counts the records the upstream answer held.
	RecordsIn int `json:"records_in"`
	// RecordsOut counts the records the client receives (after visible).
	RecordsOut int `json:"records_out"`
	// RecordIDs names the records the client receives (by audit_id); of a
	// streamed answer, the first MaxStreamedIDs.
	RecordIDs []string `json:"record_ids,omitempty"`
	// RecordIDsOmitted counts the ids of received records a streamed
	// answer's RecordIDs leaves out.
	RecordIDsOmitted int `json:"record_ids_omitted,omitempty"`
	// Streamed is true when the answer was rewritten while it streamed
	// (larger than the handler buffers; rules.Decision.RewriteStream).
	Streamed bool `json:"streamed,omitempty"`
	// EvalErrors counts conditions that failed to evaluate (each hid a
	// record, applied a field rule or denied).
	EvalErrors int `json:"eval_errors,omitempty"`
	// Fields counts treated values per "action:path".
	Fields map[string]int `json:"fields,omitempty"`
	// Export says why the exchange counted as an export and what became
	// of it.
	Export ExportFlags `json:"export"`
	// Target is what the fetch of the stored record found (routes with
	// a target only).
	Target *TargetAudit `json:"target,omitempty"`
	// Grant is the export grant the request used (grants.go).
	Grant *GrantAudit `json:"grant,omitempty"`
	// BodyFields are the top-level keys (form field names) the request
	// body set, sorted, on requests whose body the rules read
	// (audit_changes.go).
	BodyFields []string `json:"body_fields,omitempty"`
	// Changes are the old and new values of the route's audit_changes
	// fields that the request set, by field path.
	Changes map[string]Change `json:"changes,omitempty"`
}

// Change is a field's value before and after a write, as JSON: hashed
// (the hex HMAC-SHA256 of the value's text under the hash key, as the
// `hash` action writes it) unless the route lists the field as plain.
type Change struct {
	// Old is the stored record's value (null when it has none); absent
	// when no stored record was judged (no target, a bulk target, or a
	// refused write).
	Old json.RawMessage `json:"old,omitempty"`
	// New is the value the request sets.
	New json.RawMessage `json:"new"`
}

// ExportFlags says why an exchange counted as an export and what became of it.
type ExportFlags struct {
	Route    bool `json:"route,omitempty"`    // the route is marked export
	Download bool `json:"download,omitempty"` // the answer is a download
	TooMany  bool `json:"too_many,omitempty"` // more records than max_records
	Approved bool `json:"approved,omitempty"` // passed by grant or without_approval
	Blocked  bool `json:"blocked,omitempty"`  // refused
}
