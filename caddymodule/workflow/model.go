package workflow

import (
	"time"

	"github.com/crmguard/crmguard/rules"
)

// Statuses of an approval request (and of the grant it becomes).
const (
	// StatusPending: waiting for a step's approval.
	StatusPending = "pending"
	// StatusApproved: every step approved; the grant may be used.
	StatusApproved = "approved"
	// StatusDenied: an approver refused it.
	StatusDenied = "denied"
	// StatusExpired: not decided in time, or the grant's validity passed.
	StatusExpired = "expired"
	// StatusUsed: the grant's uses are used up.
	StatusUsed = "used"
	// StatusRevoked: the requester or someone responsible ended it.
	StatusRevoked = "revoked"
)

// Statuses of an elevation (pending, denied and expired as above).
const (
	// StatusActive: the elevation's roles apply to the session's requests.
	StatusActive = "active"
	// StatusEnded: it ended (EndReason says how).
	StatusEnded = "ended"
)

// Statuses of a step.
const (
	// StepWaiting: the step that waits for an approver now.
	StepWaiting = "waiting"
	// StepLater: a step after the waiting one.
	StepLater = "later"
	// StepApproved: approved (By, At, Note).
	StepApproved = "approved"
	// StepDenied: refused (By, At, Note).
	StepDenied = "denied"
)

// Kinds of approval requests.
const (
	// KindExport asks for an export grant.
	KindExport = "export"
	// KindWrite asks for a grant of a write whose body sets values a body
	// guard's `approval` policy covers (a handover: owner_id set to
	// another rep), bound to those values.
	KindWrite = "write"
	// KindElevation asks to start an elevation.
	KindElevation = "elevation"
)

// Timing defaults.
const (
	// PendingFor is how long a request waits for its decision.
	PendingFor = 7 * 24 * time.Hour
	// DefaultRetention is how long ended records stay readable.
	DefaultRetention = 90 * 24 * time.Hour
	// DefaultSweepEvery is how often expiries are looked for.
	DefaultSweepEvery = time.Minute
)

// Approval is an approval request and, once approved, the grant. This is
// its JSON form in the API.
type Approval struct {
	// ID identifies the request; it is the grant id once approved.
	ID string `json:"id"`
	// Kind is "export", "write" or "elevation".
	Kind string `json:"kind"`
	// Status is pending, approved, denied, expired, used or revoked.
	Status string `json:"status"`
	// Requester is the user id of who asked.
	Requester string `json:"requester"`
	// Policy is the approval policy's name.
	Policy string `json:"policy"`
	// Route is the route id of the export or write (not elevations).
	Route string `json:"route,omitempty"`
	// Method is the export's or write's HTTP method (not elevations).
	Method string `json:"method,omitempty"`
	// Path is the export's or write's request target as asked, path and
	// query (not elevations).
	Path string `json:"path,omitempty"`
	// Request is the canonical request the grant is bound to (not
	// elevations): rules.CanonicalRequest for an export,
	// rules.CanonicalWrite, with the values, for a write.
	Request string `json:"request,omitempty"`
	// Values are the values a write's grant is bound to: a body guard's
	// path ("owner_id") to the value the write sets, "@ids" to a bulk
	// write's ids (writes only; rules.Decision.ApprovalValues).
	Values map[string]any `json:"values,omitempty"`
	// Purpose is what the requester said it is for.
	Purpose string `json:"purpose,omitempty"`
	// Elevation is the id of the elevation it would start (elevations
	// only).
	Elevation string `json:"elevation,omitempty"`
	// Steps are the policy's steps with their state.
	Steps []Step `json:"steps"`
	// Uses is how many requests the grant allows.
	Uses int `json:"uses"`
	// UsesLeft is how many remain.
	UsesLeft int `json:"uses_left"`
	// Created is when it was asked for.
	Created time.Time `json:"created"`
	// Approved is when its last step was approved.
	Approved time.Time `json:"approved,omitzero"`
	// Expires is when a pending request, or the grant, expires.
	Expires time.Time `json:"expires"`
	// Ended is when it was denied, revoked, expired or used up.
	Ended time.Time `json:"ended,omitzero"`
	// EndedBy is who denied or revoked it.
	EndedBy string `json:"ended_by,omitempty"`
	// Note is the note of whoever denied or revoked it.
	Note string `json:"note,omitempty"`
	// LastUsed is when the grant was last used.
	LastUsed time.Time `json:"last_used,omitzero"`
}

// Step is one step of an approval request.
type Step struct {
	// Name names the step in its policy.
	Name string `json:"name"`
	// Description says who approves it, in words.
	Description string `json:"description,omitempty"`
	// Approvers are the roles of which an approver must hold one.
	Approvers []string `json:"approvers"`
	// Status is waiting, later, approved or denied.
	Status string `json:"status"`
	// By is who approved or denied it.
	By string `json:"by,omitempty"`
	// At is when.
	At time.Time `json:"at,omitzero"`
	// Note is the approver's note.
	Note string `json:"note,omitempty"`
}

// approvalRecord is an Approval as stored: with the requester as the
// step conditions see them.
type approvalRecord struct {
	Approval
	// RequesterRoles and RequesterAttrs are the requester's roles and
	// attributes when they asked (the steps' `requester`).
	RequesterRoles []string       `json:"requester_roles,omitempty"`
	RequesterAttrs map[string]any `json:"requester_attrs,omitempty"`
}

// requester returns the requester as a rules user.
func (a *approvalRecord) requester() *rules.User {
	return &rules.User{ID: a.Requester, Roles: a.RequesterRoles, Attrs: a.RequesterAttrs}
}

// current returns the index of the waiting step, or -1.
func (a *Approval) current() int {
	for i, s := range a.Steps {
		if s.Status == StepWaiting {
			return i
		}
	}
	return -1
}

// approvers returns the ids of those who approved steps, in step order.
func (a *Approval) approvers() []string {
	var out []string
	for _, s := range a.Steps {
		if s.Status == StepApproved {
			out = append(out, s.By)
		}
	}
	return out
}

// open reports whether the request may still change by itself (expire).
func (a *Approval) open() bool { return a.Status == StatusPending || a.Status == StatusApproved }

// Elevation is a break-glass elevation. This is its JSON form in the API.
type Elevation struct {
	// ID identifies it.
	ID string `json:"id"`
	// Name is the rule file's elevation (its key under elevations).
	Name string `json:"elevation"`
	// User is the user id of who started it.
	User string `json:"user"`
	// Roles are the roles it adds.
	Roles []string `json:"roles"`
	// Reason is why it was started.
	Reason string `json:"reason"`
	// Status is pending, active, ended, denied or expired.
	Status string `json:"status"`
	// Duration is how long it lasts once started ("30m0s").
	Duration string `json:"duration"`
	// Requested is when it was asked for.
	Requested time.Time `json:"requested"`
	// Started is when it became active.
	Started time.Time `json:"started,omitzero"`
	// Expires is when an active elevation ends by itself (a pending one:
	// when its request expires).
	Expires time.Time `json:"expires,omitzero"`
	// Ended is when it ended.
	Ended time.Time `json:"ended,omitzero"`
	// EndReason says how it ended: expired, ended by the user, signed
	// out, session ended, denied.
	EndReason string `json:"end_reason,omitempty"`
	// Approval is the id of the approval request it waits for (when its
	// policy needs approval).
	Approval string `json:"approval,omitempty"`
	// ReviewBy are the roles that review it afterwards.
	ReviewBy []string `json:"review_by,omitempty"`
	// Review is the review, once done.
	Review *Review `json:"review,omitempty"`
}

// Review is a reviewer's note on a finished elevation.
type Review struct {
	// By is the reviewer's user id.
	By string `json:"by"`
	// At is when.
	At time.Time `json:"at"`
	// Note is what the reviewer found.
	Note string `json:"note"`
}

// elevationRecord is an Elevation as stored: with the session it is
// bound to.
type elevationRecord struct {
	Elevation
	// Session is the proxy's session reference (authn.Identity.SessionID).
	Session string `json:"session"`
	// Subject is the identity provider's subject of the user.
	Subject string `json:"subject,omitempty"`
	// SID is the identity provider's session id (the `sid` claim).
	SID string `json:"sid,omitempty"`
	// DurationNS is Duration as a number.
	DurationNS time.Duration `json:"duration_ns"`
}

// needsReview reports whether a reviewer still has to look at it.
func (e *Elevation) needsReview() bool {
	return e.Review == nil && len(e.ReviewBy) > 0 && (e.Status == StatusEnded)
}

// Active is an elevation as a request sees it.
type Active struct {
	// ID identifies the elevation.
	ID string `json:"id"`
	// Name is the rule file's elevation.
	Name string `json:"name"`
	// Reason is why it was started.
	Reason string `json:"reason"`
	// User is the user it belongs to.
	User string `json:"user"`
	// Roles are the roles it adds.
	Roles []string `json:"roles"`
	// Expires is when it ends.
	Expires time.Time `json:"expires"`
}

// Audit is one step of a workflow, for the audit trail (the audit event's
// `workflow` member).
type Audit struct {
	// Kind is "approval" or "elevation".
	Kind string `json:"kind"`
	// ID is the approval request's or elevation's id.
	ID string `json:"id"`
	// Action is what happened: requested, approved, denied, expired,
	// revoked (approvals); requested, started, ended, reviewed, denied,
	// expired (elevations).
	Action string `json:"action"`
	// Status is the status after the action.
	Status string `json:"status"`
	// Policy is the approval policy or the elevation's name.
	Policy string `json:"policy,omitempty"`
	// Step is the step approved or denied.
	Step string `json:"step,omitempty"`
	// Requester is who asked (the user of an elevation).
	Requester string `json:"requester,omitempty"`
	// By is who acted ("" when the clock did).
	By string `json:"by,omitempty"`
	// Route and Request are the export's or write's route and canonical
	// request.
	Route   string `json:"route,omitempty"`
	Request string `json:"request,omitempty"`
	// Purpose is the export's or write's purpose; Reason an elevation's.
	Purpose string `json:"purpose,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Note is the approver's, reviewer's or revoker's note; for an ended
	// elevation, how it ended.
	Note string `json:"note,omitempty"`
}
