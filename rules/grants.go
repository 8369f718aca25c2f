package rules

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// This file is the per-request side of export approvals: the grant source
// the guard's store implements, and how a decision finds a grant and uses
// it. The load-time side (the `approvals:` block) is in load_approvals.go,
// the read-only views of policies in approvals.go.
//
// A route with `export: {approval: NAME}` needs a grant of policy NAME for
// every user whose role is not in without_approval. Decide asks the
// request's GrantSource (FindGrant) once every earlier check has passed and
// refuses without a grant (403, naming the policy), or when the source
// fails (503). A grant found is only reserved: the guard calls
// Decision.UseGrant right before the request goes upstream, after every
// other check (body guards, the target record), and only then is one use
// consumed, atomically. An answer to a request whose grant was never used
// is blocked by InspectResponse, so a caller that forgets UseGrant fails
// closed.

// ErrGrantGone is wrapped by GrantSource.UseGrant when the grant exists no
// more as a usable grant: its uses ran out, it expired or was revoked
// between FindGrant and UseGrant. The request is refused with 403.
var ErrGrantGone = errors.New("rules: the export grant has no use left, has expired or was revoked")

// GrantSource finds and uses export grants. The guard's state store
// implements it; `crmguard rules test` runs cases with an in-memory one
// through the same interface. Implementations must be safe for concurrent
// use.
type GrantSource interface {
	// FindGrant returns a grant that q.Requester holds for exactly
	// q.Request on route q.Route under policy q.Policy, unexpired at q.Now
	// and with a use left; nil and no error when there is none. An error
	// means the source could not answer (the request is refused with 503,
	// never allowed).
	FindGrant(ctx context.Context, q GrantQuery) (*Grant, error)
	// UseGrant consumes one use of the grant with the given id,
	// atomically, after checking again that it is bound to q and usable
	// at q.Now. It returns the grant as used (UsesLeft after this use).
	// A grant no longer usable is an error wrapping ErrGrantGone (403);
	// any other error means the source failed (503).
	UseGrant(ctx context.Context, q GrantQuery, id string) (*Grant, error)
}

// GrantQuery says which grant a request needs. A grant is bound to the
// requester, the route and the exact request (CanonicalRequest): a grant
// for "export team east" never allows "export everything".
type GrantQuery struct {
	// Requester is the id of the user sending the request.
	Requester string
	// Route is the id of the matched route.
	Route string
	// Policy is the approval policy the route names.
	Policy string
	// Request is the request in canonical form (CanonicalRequest).
	Request string
	// Now is the request's clock.
	Now time.Time
}

// Grant is an approved export, as the audit needs it.
type Grant struct {
	// ID identifies the grant (the approval request's id).
	ID string
	// Policy is the approval policy it was granted under.
	Policy string
	// Purpose is what the requester said the export is for.
	Purpose string
	// Approvers are the ids of the users who approved, in step order.
	Approvers []string
	// UsesLeft is how many uses remain (after UseGrant: after this use).
	UsesLeft int
	// Expires is when the grant ends.
	Expires time.Time
}

// GrantAudit is the `grant` of an audit event: the grant an export used.
type GrantAudit struct {
	// ID identifies the grant.
	ID string `json:"id"`
	// Policy is the approval policy.
	Policy string `json:"policy"`
	// Purpose is the requester's stated purpose.
	Purpose string `json:"purpose,omitempty"`
	// Approvers are the ids of the approvers, in step order.
	Approvers []string `json:"approvers,omitempty"`
}

// grantNeed is what an allowed decision still has to do with its grant.
type grantNeed struct {
	src   GrantSource
	q     GrantQuery
	found *Grant
	used  bool
	// write is true for a grant of a body guard's approval (a value a
	// write sets, valueguard.go), false for an export's.
	write bool
	// values are the values a write's grant is bound to.
	values map[string]any
}

// findGrant asks the request's grant source for a grant of policy on rt.
// It returns a finished refusal when there is none or the source fails.
func (d *Decision) findGrant(rt *route, r *Request, u *User, now time.Time) *Decision {
	policy := rt.export.policy
	d.Audit.Export.Blocked = true // until a grant is found
	canon, err := CanonicalRequest(r.Method, r.URL.RequestURI())
	if err != nil {
		return d.refuse(Deny, http.StatusBadRequest, fmt.Sprintf("route %s: the request cannot be put in canonical form to look for an export grant: %v", rt.id, err),
			"This request cannot be checked against export approvals.")
	}
	q := GrantQuery{Requester: u.ID, Route: rt.id, Policy: policy, Request: canon, Now: now}
	if r.Grants == nil {
		return d.refuse(Deny, http.StatusForbidden, fmt.Sprintf("export requires approval: route %s needs a grant of policy %s and %s holds none (no grant source is configured)", rt.id, policy, rolesPhrase(u)),
			d.approvalMessage(rt))
	}
	ctx := r.Context
	if ctx == nil {
		ctx = context.Background()
	}
	g, err := r.Grants.FindGrant(ctx, q)
	if err != nil {
		return d.refuse(Deny, http.StatusServiceUnavailable, fmt.Sprintf("route %s: the export grants could not be read, so the export is refused: %v", rt.id, err),
			"Export approvals cannot be checked right now. Try again in a few minutes.")
	}
	if g == nil {
		return d.refuse(Deny, http.StatusForbidden, fmt.Sprintf("export requires approval: route %s needs a grant of policy %s for %s and %s holds none", rt.id, policy, canon, rolesPhrase(u)),
			d.approvalMessage(rt))
	}
	d.grant = &grantNeed{src: r.Grants, q: q, found: g}
	d.Audit.Export.Blocked = false
	return nil
}

// GrantPending reports whether the decision found a grant (an export's, or
// one of a body guard's approval policy bound to the values a write sets)
// that UseGrant must consume before the request goes upstream.
func (d *Decision) GrantPending() bool {
	return d.grant != nil && !d.grant.used && d.Outcome == Allow && !d.Shadow
}

// UseGrant consumes one use of the grant the decision found (GrantPending),
// atomically, through the request's GrantSource. Call it once, right
// before the request goes upstream, after every other check has passed
// (body guards, the target record). Without a pending grant (or in shadow
// mode) it does nothing and returns nil.
//
// On failure the decision becomes a refusal: Outcome Deny, Status 403 when
// the grant was used up, expired or revoked meanwhile, 503 when the source
// failed; Reason, Message and Audit say so, and the error says what
// failed. On success Grant and Audit.Grant name the grant used.
func (d *Decision) UseGrant(ctx context.Context) error {
	if !d.GrantPending() {
		return nil
	}
	if ctx == nil {
		ctx = context.Background()
	}
	n := d.grant
	g, err := n.src.UseGrant(ctx, n.q, n.found.ID)
	if err == nil && g == nil {
		err = fmt.Errorf("rules: the grant source returned no grant for %s", n.found.ID)
	}
	if err != nil {
		what, again := "export grant", "Your export approval has been used up, has expired or was revoked. "+d.approvalMessage(d.route)
		refused, down := "the export", "Export approvals cannot be checked right now. Try again in a few minutes."
		if n.write {
			d.askValues = n.values
			what, again = "grant", "Your approval for this change has been used up, has expired or was revoked. "+d.writeApprovalMessage(n.q.Policy)
			refused, down = "the request", "Approvals cannot be checked right now. Try again in a few minutes."
		} else {
			d.exportOK = false
			d.Audit.Export.Approved = false
			d.Audit.Export.Blocked = true
		}
		if errors.Is(err, ErrGrantGone) {
			d.refuse(Deny, http.StatusForbidden, fmt.Sprintf("route %s: %s %s could not be used: %v", d.RouteID, what, n.found.ID, err), again)
			return fmt.Errorf("rules: using %s %s: %w", what, n.found.ID, err)
		}
		d.refuse(Deny, http.StatusServiceUnavailable, fmt.Sprintf("route %s: %s %s could not be used, so %s is refused: %v", d.RouteID, what, n.found.ID, refused, err), down)
		return fmt.Errorf("rules: using %s %s: %w", what, n.found.ID, err)
	}
	n.used = true
	d.Grant = g
	d.Audit.Grant = &GrantAudit{ID: g.ID, Policy: g.Policy, Purpose: g.Purpose, Approvers: append([]string(nil), g.Approvers...)}
	return nil
}
