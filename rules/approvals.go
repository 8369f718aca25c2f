package rules

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/crmguard/crmguard/rules/internal/cond"
)

// This file is the read-only view of the rule file's `approvals:` and
// `elevations:` blocks that the guard's workflow pages use
// (/.crmguard/approvals, /.crmguard/elevations): who may approve which
// step, who may start which elevation, and the roles a user has while an
// elevation is active. The blocks are read by load_approvals.go. Nothing
// here keeps state: requests, grants and elevations live in the guard's
// store.

// ApprovalPolicy is one named entry of `approvals:`. It is immutable.
type ApprovalPolicy struct {
	// Name is the policy's key under approvals.
	Name string
	// Description says in words who approves (for messages); generated
	// from the steps when the file gives none.
	Description string
	// PurposeRequired is true when the requester must say why (purpose:
	// required, the default).
	PurposeRequired bool
	// ValidFor is how long a grant lasts once approved (default 24h).
	ValidFor time.Duration
	// Uses is how many requests a grant allows (default 1).
	Uses int
	// Steps are the approvals needed, all of them, in order.
	Steps []*ApprovalStep
	// ApproverMFAMaxAge is the largest age of an approver's MFA sign-in
	// (approver_mfa.max_age; 0: any MFA sign-in).
	ApproverMFAMaxAge time.Duration

	mfaACR []string // the file's acr values, for step-up challenges
}

// ApprovalStep is one step of an approval policy.
type ApprovalStep struct {
	// Name names the step (unique in its policy).
	Name string
	// Description says in words who approves this step ("your manager").
	Description string
	// Approvers are the roles of which an approver must hold one, read
	// from the approver's current sign-in.
	Approvers []string
	// When is the step's condition over `approver` and `requester` (""
	// when none).
	When string

	when *cond.Expr
}

// ApprovalPolicy returns the approval policy with the given name.
func (s *Set) ApprovalPolicy(name string) (*ApprovalPolicy, bool) {
	p, ok := s.approvals[name]
	return p, ok
}

// ApprovalPolicies lists the names of the approval policies, sorted.
func (s *Set) ApprovalPolicies() []string { return slices.Sorted(maps.Keys(s.approvals)) }

// Permits reports whether approver may approve this step of a request by
// requester: approver holds one of the step's roles (as their current
// sign-in says) and the step's `when` holds. An error means the condition
// could not be evaluated; it counts as false. Permits does not check
// self-approval, other steps or the approver's MFA: MayApprove does all.
func (st *ApprovalStep) Permits(approver, requester *User, now time.Time) (bool, error) {
	if approver == nil || requester == nil || !hasAny(approver, st.Approvers) {
		return false, nil
	}
	if st.when == nil {
		return true, nil
	}
	a := cond.SignedInUser(approver.ID, approver.Roles, approver.Attrs, approver.MFA, approver.AuthTime, now)
	r := cond.SignedInUser(requester.ID, requester.Roles, requester.Attrs, requester.MFA, requester.AuthTime, now)
	ok, err := st.when.EvalBool(&cond.Activation{Approver: &a, Requester: &r, Now: now})
	if err != nil {
		return false, fmt.Errorf("rules: step %s: the condition %s could not be evaluated: %w", st.Name, st.When, err)
	}
	return ok, nil
}

// WorkflowError says why a user may not take a step of an approval or an
// elevation, in words for that user.
type WorkflowError struct {
	// Status is the HTTP status: 400 (the input is incomplete), 401 (sign
	// in again: StepUp says with what) or 403 (not allowed).
	Status int
	// StepUp says what a new sign-in must provide (Status 401 only).
	StepUp StepUpNeed
	// Message is a sentence for the user.
	Message string
}

// Error returns the message.
func (e *WorkflowError) Error() string { return e.Message }

// MayApprove checks every rule of "may approver approve step i of this
// request by requester": the step exists; the approver is not the
// requester; the approver approved no other step of this request (others
// are the ids of those who approved the other steps); the approver's
// current sign-in holds one of the step's roles and the step's condition
// holds (Permits); and the sign-in used MFA, no older than
// approver_mfa.max_age. The guard still checks that step i is the request's
// current step. A nil error means yes; otherwise a *WorkflowError.
func (p *ApprovalPolicy) MayApprove(i int, approver, requester *User, others []string, now time.Time) error {
	if i < 0 || i >= len(p.Steps) {
		return &WorkflowError{Status: http.StatusBadRequest, Message: fmt.Sprintf("The approval policy %s has no step %d.", p.Name, i+1)}
	}
	st := p.Steps[i]
	if approver == nil {
		return &WorkflowError{Status: http.StatusUnauthorized, Message: "Sign in to approve requests."}
	}
	if requester != nil && approver.ID == requester.ID {
		return &WorkflowError{Status: http.StatusForbidden, Message: "Nobody approves their own request."}
	}
	for _, o := range others {
		if o == approver.ID {
			return &WorkflowError{Status: http.StatusForbidden, Message: "You approved another step of this request; each step needs a different person."}
		}
	}
	ok, err := st.Permits(approver, requester, now)
	if err != nil || !ok {
		return &WorkflowError{Status: http.StatusForbidden, Message: fmt.Sprintf("You may not approve the step %q (%s).", st.Name, st.Description)}
	}
	need := StepUpNeed{MFA: true, MaxAge: p.ApproverMFAMaxAge, ACR: append([]string(nil), p.mfaACR...)}
	if !approver.MFA {
		return &WorkflowError{Status: http.StatusUnauthorized, StepUp: need, Message: "Sign in again with your second factor to approve requests."}
	}
	if p.ApproverMFAMaxAge > 0 && (approver.AuthTime.IsZero() || now.Sub(approver.AuthTime) > p.ApproverMFAMaxAge) {
		return &WorkflowError{Status: http.StatusUnauthorized, StepUp: need,
			Message: fmt.Sprintf("Sign in again with your second factor to approve requests (approving needs a sign-in within the last %s).", words(p.ApproverMFAMaxAge))}
	}
	return nil
}

// CheckPurpose checks a requester's stated purpose against the policy.
func (p *ApprovalPolicy) CheckPurpose(purpose string) error {
	if p.PurposeRequired && strings.TrimSpace(purpose) == "" {
		return &WorkflowError{Status: http.StatusBadRequest, Message: fmt.Sprintf("Say what you need it for: the approval policy %s needs a purpose.", p.Name)}
	}
	return nil
}

// Elevation is one named entry of `elevations:` (break-glass access). It
// is immutable.
type Elevation struct {
	// Name is the elevation's key under elevations.
	Name string
	// Description says in words what it is for.
	Description string
	// For lists the roles of which a user must hold one to start it.
	For []string
	// Grant lists the roles added while it is active.
	Grant []string
	// Max is the longest it may last.
	Max time.Duration
	// ReasonRequired is true when the user must give a reason (reason:
	// required, the default).
	ReasonRequired bool
	// MFAMaxAge is the largest age of the MFA sign-in that starts it
	// (mfa.max_age; 0: any MFA sign-in).
	MFAMaxAge time.Duration
	// Approval names the approval policy that must approve it first (""
	// for approval: none).
	Approval string
	// ReviewBy lists the roles that review it afterwards.
	ReviewBy []string

	mfaACR []string
}

// Elevation returns the elevation with the given name.
func (s *Set) Elevation(name string) (*Elevation, bool) {
	e, ok := s.elevations[name]
	return e, ok
}

// Elevations lists the names of the elevations, sorted.
func (s *Set) Elevations() []string { return slices.Sorted(maps.Keys(s.elevations)) }

// MayStart checks whether u may start the elevation now with reason for
// duration (0: Max): u's current sign-in holds one of For's roles, used MFA
// no older than MFAMaxAge, the reason is given when required and the
// duration is at most Max. It returns the duration the elevation lasts. u
// must be the user as signed in, without an active elevation.
func (e *Elevation) MayStart(u *User, reason string, duration time.Duration, now time.Time) (time.Duration, error) {
	if u == nil {
		return 0, &WorkflowError{Status: http.StatusUnauthorized, Message: "Sign in to ask for temporary access."}
	}
	if !hasAny(u, e.For) {
		return 0, &WorkflowError{Status: http.StatusForbidden, Message: fmt.Sprintf("%s may not use the temporary access %s (for %s only).", yourRoles(u), e.Name, strings.Join(e.For, ", "))}
	}
	if e.ReasonRequired && strings.TrimSpace(reason) == "" {
		return 0, &WorkflowError{Status: http.StatusBadRequest, Message: fmt.Sprintf("Give a reason: the temporary access %s is reviewed afterwards.", e.Name)}
	}
	switch {
	case duration < 0:
		return 0, &WorkflowError{Status: http.StatusBadRequest, Message: "The duration cannot be negative."}
	case duration == 0:
		duration = e.Max
	case duration > e.Max:
		return 0, &WorkflowError{Status: http.StatusBadRequest, Message: fmt.Sprintf("The temporary access %s lasts at most %s.", e.Name, words(e.Max))}
	}
	need := StepUpNeed{MFA: true, MaxAge: e.MFAMaxAge, ACR: append([]string(nil), e.mfaACR...)}
	if !u.MFA {
		return 0, &WorkflowError{Status: http.StatusUnauthorized, StepUp: need, Message: "Sign in again with your second factor to start temporary access."}
	}
	if e.MFAMaxAge > 0 && (u.AuthTime.IsZero() || now.Sub(u.AuthTime) > e.MFAMaxAge) {
		return 0, &WorkflowError{Status: http.StatusUnauthorized, StepUp: need,
			Message: fmt.Sprintf("Sign in again with your second factor to start temporary access (it needs a sign-in within the last %s).", words(e.MFAMaxAge))}
	}
	return duration, nil
}

// Elevate returns the user as the rules see them while an elevation that
// grants the roles grant is active: u's roles plus grant, with inheritance
// applied, sorted, without duplicates. Names that are not declared roles
// (a rule file reloaded since the elevation started) are dropped. u is not
// changed; a nil u stays nil.
func (s *Set) Elevate(u *User, grant []string) *User {
	if u == nil {
		return nil
	}
	set := make(map[string]bool, len(u.Roles)+len(grant))
	for _, r := range u.Roles {
		set[r] = true
	}
	for _, g := range grant {
		for _, r := range s.roles[g] {
			set[r] = true
		}
	}
	e := *u
	e.Roles = make([]string, 0, len(set))
	for r := range set {
		e.Roles = append(e.Roles, r)
	}
	sort.Strings(e.Roles)
	return &e
}
