package rules

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"go.yaml.in/yaml/v3"
)

// One answer for hidden and missing records. On a route that serves one
// record (`record`), a record `visible` hides and a record the CRM does
// not have (404) get the same answer, byte for byte: status 404 and the
// same message (the client never reads a Block's Reason). On a route with
// a `target`, a write to a record the user may not see (the target's
// `visible`) answers exactly like a write to a record the CRM does not
// have; a write to a record the user sees but may not change (`allow_if`)
// is 403. Only the audit says which it was (the reasons, Audit.Target):
// the audit is for the operator. docs/security.md says what this does and does not hide.

// notFoundMessage is what the client reads for a missing or hidden record
// (the reason, which says which it was, goes to the audit only).
const notFoundMessage = "This record does not exist, or you may not see it."

// notFound blocks a record route's answer as not found; reason says which
// it was (hidden or missing), for the audit. In shadow mode it returns nil
// and the audit says what would have happened.
func (d *Decision) notFound(reason string) *Block {
	b := d.block(http.StatusNotFound, reason)
	if b != nil {
		b.Message = notFoundMessage
	}
	return b
}

// targetHidden applies the target's `visible` to the fetched record: it
// says why a record the user may not see (or whose condition fails) is
// refused like a missing one, or "" when it is visible.
func (d *Decision) targetHidden(act *cond.Activation) string {
	v := d.route.target.visible
	if v == nil {
		return ""
	}
	ok, err := v.EvalBool(act)
	switch {
	case err != nil:
		d.Audit.EvalErrors++
		return fmt.Sprintf("the record to change is hidden: its visible condition `%s` could not be evaluated on it (%v), so it counts as false; answered as not found", v.Source(), err)
	case !ok:
		return fmt.Sprintf("the record to change is not visible to %s (the condition `%s` does not hold for it); answered as not found", rolesPhrase(d.user), v.Source())
	}
	return ""
}

// targetVisible compiles a target's `visible`: a condition over the
// fetched record (and user, request, now).
func (l *loader) targetVisible(n *yaml.Node, key string) *cond.Expr {
	return l.guardCondition(n, key, cond.RecordScope)
}

// headOnHiddenRecord refuses a HEAD on a route that hides single records:
// a HEAD answer carries no record to judge, so the CRM's status (200 or
// 404) would tell a hidden record from a missing one.
func (d *Decision) headOnHiddenRecord(rt *route) *queryRefusal {
	if !rt.single || rt.visible == nil || d.req == nil || !strings.EqualFold(d.req.Method, http.MethodHead) {
		return nil
	}
	return &queryRefusal{status: http.StatusBadRequest,
		reason:  fmt.Sprintf("route %s hides records and a HEAD answer carries no record to judge (its status would tell a hidden record from a missing one); use GET", rt.id),
		message: "This request cannot be checked by the access rules, so it is refused."}
}
