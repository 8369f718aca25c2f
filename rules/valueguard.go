package rules

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/crmguard/crmguard/internal/mediatype"
	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/tidwall/gjson"
)

// This file judges writes by the values they set: the `body` variable of
// conditions, body guards with allow_if (and their approval), and
// deny_unless conditions that read the body. The body's values are read
// once, strictly (bodyvalues.go); a body guard's allow_if that reads the
// stored record is evaluated by JudgeTarget on each record (target.go).

// noteBodyGuards sorts the route's body guards for this user: a guard whose
// deny names one of the user's roles, or whose deny_unless (not reading the
// body) does not hold, applies to every request (d.guards); a deny_unless
// that reads the body waits for the body's values (d.pending); a guard with
// allow_if judges the value the body sets (d.valueGuards).
func (d *Decision) noteBodyGuards(rt *route) {
	for _, g := range rt.body {
		switch {
		case hasAny(d.user, g.deny):
			d.guards = append(d.guards, g)
			continue
		case g.denyUnless != nil && g.denyUnless.ReadsBody():
			d.pending = append(d.pending, g)
		case g.denyUnless != nil && d.denyUnlessFails(g):
			d.guards = append(d.guards, g)
			continue
		}
		if g.allowIf != nil {
			d.valueGuards = append(d.valueGuards, g)
		}
	}
}

// denyUnlessFails evaluates a guard's deny_unless; an error counts as
// false (the guard applies).
func (d *Decision) denyUnlessFails(g *bodyGuard) bool {
	ok, err := g.denyUnless.EvalBool(d.act)
	if err != nil {
		d.Audit.EvalErrors++
		return true
	}
	return !ok
}

// readValues reads the values the body sets into `body` and decides the
// pending deny_unless guards on them.
func (d *Decision) readValues(contentType string, body []byte) *BodyError {
	vals, err := readBodyValues(contentType, body)
	if err != nil {
		return &BodyError{Status: http.StatusBadRequest, Reason: fmt.Sprintf("route %s judges the values the request body sets and %v", d.RouteID, err)}
	}
	d.values = vals
	d.act.Body = cond.NewBody(vals)
	if t := d.route.target; t != nil && t.bulk != nil {
		if be := d.readBulkIDs(); be != nil { // bulk.go
			return be
		}
	}
	for _, g := range d.pending {
		if d.denyUnlessFails(g) {
			d.guards = append(d.guards, g)
		}
	}
	return nil
}

// checkValues judges the fields the body sets that allow_if guards name.
// Each such field must sit at its path from the body's root (not nested
// elsewhere, not in an array, not in a string holding JSON, not a file):
// only there does the condition read it. A condition that reads record
// waits for the stored record (JudgeTarget); the others are evaluated now.
func (d *Decision) checkValues(contentType string, body []byte) *BodyError {
	hits := map[*bodyGuard]bool{}
	var stray *guardHit
	note := func(g *bodyGuard, at string, top bool) bool {
		if !top {
			stray = &guardHit{guard: g, at: at}
			return false
		}
		hits[g] = true
		return true
	}
	t, _ := mediatype.Read(contentType) // read by readBodyValues already
	switch t.Kind {
	case mediatype.JSON:
		if err := eachGuardHit(d.valueGuards, gjson.ParseBytes(bytes.TrimSpace(body)), nil, "", 0, true, note); err != nil {
			return &BodyError{Status: http.StatusBadRequest, Reason: fmt.Sprintf("route %s checks request bodies and %v", d.RouteID, err)}
		}
	case mediatype.Form:
		vals, _ := url.ParseQuery(string(body))
		for name := range vals {
			if g := formGuardIn(d.valueGuards, name); g != nil && !note(g, name, len(g.segs) == 1) {
				break
			}
		}
	case mediatype.Multipart:
		_ = eachFormPart(t.Param("boundary"), body, func(p formPart) (bool, error) {
			if g := formGuardIn(d.valueGuards, p.name); g != nil {
				// A file is not a value a condition can read.
				return !note(g, p.name, len(g.segs) == 1 && p.part.FileName() == ""), nil
			}
			return false, nil
		})
	}
	if stray != nil {
		return &BodyError{Status: http.StatusForbidden, Field: stray.guard.path,
			Reason: fmt.Sprintf("route %s: the request body sets %s at %s, where the guard's condition cannot judge it (it reads body.%s)", d.RouteID, stray.guard.path, stray.at, stray.guard.path)}
	}
	for _, g := range d.valueGuards {
		if !hits[g] {
			continue
		}
		if g.allowIf.ReadsRecord() {
			d.recordGuards = append(d.recordGuards, g)
			continue
		}
		ok, err := g.allowIf.EvalBool(d.act)
		if err != nil {
			d.Audit.EvalErrors++
		}
		if err != nil || !ok {
			if status, reason := d.valueRefused(g, "", err); status != 0 {
				return &BodyError{Status: status, Field: g.path, Reason: reason}
			}
		}
	}
	return nil
}

// valueRefused is called when a guard's allow_if does not hold (or failed
// with evalErr) for the value the body sets; id names the record on a bulk
// write. A grant of the guard's approval policy bound to this write lets
// the value through: status 0. Otherwise status is 403 (503 when the grant
// source failed) and reason says why.
func (d *Decision) valueRefused(g *bodyGuard, id string, evalErr error) (status int, reason string) {
	v, _ := bodyValueAt(d.values, g.segs)
	on := ""
	if id != "" {
		on = fmt.Sprintf(" on record %s", id)
	}
	why := fmt.Sprintf("the condition `%s` does not hold", g.allowIf.Source())
	if evalErr != nil {
		why = fmt.Sprintf("the condition `%s` could not be evaluated (%v), so it counts as false", g.allowIf.Source(), evalErr)
	}
	reason = fmt.Sprintf("route %s: the request body sets %s to %s%s, which %s may not: %s", d.RouteID, g.path, shortJSON(v), on, rolesPhrase(d.user), why)
	if g.approval == "" {
		return http.StatusForbidden, reason
	}
	return d.writeGrant(g.approval, reason)
}

// writeGrant looks for a grant of policy bound to this write (requester,
// route and the canonical request with the values it sets: CanonicalWrite).
// A grant found is reserved like an export's: UseGrant consumes it right
// before the request goes upstream. status 0 means found.
func (d *Decision) writeGrant(policy, refused string) (status int, reason string) {
	d.Approval = policy
	if n := d.grant; n != nil {
		if n.q.Policy == policy {
			return 0, ""
		}
		return http.StatusForbidden, fmt.Sprintf("%s; a grant of approval policy %s would be needed, and this request already uses one of policy %s", refused, policy, n.q.Policy)
	}
	q, bound, err := d.writeGrantQuery(policy)
	if err != nil {
		return http.StatusBadRequest, fmt.Sprintf("%s; the request cannot be put in canonical form to look for a grant of approval policy %s: %v", refused, policy, err)
	}
	if d.req.Grants == nil {
		d.askValues = bound
		return http.StatusForbidden, fmt.Sprintf("%s, and no grant source is configured to hold a grant of approval policy %s", refused, policy)
	}
	ctx := d.req.Context
	if ctx == nil {
		ctx = context.Background()
	}
	gr, err := d.req.Grants.FindGrant(ctx, q)
	if err != nil {
		return http.StatusServiceUnavailable, fmt.Sprintf("%s, and the grants of approval policy %s could not be read: %v", refused, policy, err)
	}
	if gr == nil {
		d.askValues = bound
		return http.StatusForbidden, fmt.Sprintf("%s, and %s holds no grant of approval policy %s for %s", refused, rolesPhrase(d.user), policy, q.Request)
	}
	d.grant = &grantNeed{src: d.req.Grants, q: q, found: gr, write: true, values: bound}
	return 0, ""
}

// writeGrantQuery is the grant query of a write under policy, and the
// values it binds: those of every guard with this approval policy that
// the body sets, and a bulk write's ids (under "@ids").
func (d *Decision) writeGrantQuery(policy string) (GrantQuery, map[string]any, error) {
	bound := map[string]any{}
	for _, g := range d.route.body {
		if g.approval != policy {
			continue
		}
		if v, ok := bodyValueAt(d.values, g.segs); ok {
			bound[g.path] = v
		}
	}
	if len(d.bulkIDs) > 0 {
		bound[boundIDsKey] = d.bulkIDs
	}
	canon, err := CanonicalWrite(d.req.Method, d.req.URL.RequestURI(), bound)
	if err != nil {
		return GrantQuery{}, nil, err
	}
	return GrantQuery{Requester: d.user.ID, Route: d.RouteID, Policy: policy, Request: canon, Now: d.act.Now}, bound, nil
}

// shortJSON writes a body value for a reason, cut at 80 bytes.
func shortJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "(a value)"
	}
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}

// WriteGrantQuery is the grant query an approval of this write would be
// bound to, for the approval workflow to ask for one (POST
// /.crmguard/approvals with the request's body): requester, route, policy
// and CanonicalWrite of the request with the values it sets. The policy is
// that of the first body guard with `approval` whose field the body sets;
// nil when there is none. It reads the body as CheckBody does (an error
// when it cannot be read with certainty) and does not evaluate allow_if:
// whether the write needs the grant may depend on the stored record.
func (d *Decision) WriteGrantQuery(contentType string, body []byte) (*GrantQuery, error) {
	if d.Outcome != Allow || d.route == nil {
		return nil, fmt.Errorf("rules: route %s does not allow this request (%s)", d.RouteID, d.Reason)
	}
	if d.values == nil {
		vals, err := readBodyValues(contentType, body)
		if err != nil {
			return nil, fmt.Errorf("rules: the request body's values cannot be read: %s", err)
		}
		d.values = vals
		if t := d.route.target; t != nil && t.bulk != nil {
			if be := d.readBulkIDs(); be != nil {
				return nil, fmt.Errorf("rules: %s", be.Reason)
			}
		}
	}
	for _, g := range d.route.body {
		if g.approval == "" {
			continue
		}
		if _, ok := bodyValueAt(d.values, g.segs); !ok {
			continue
		}
		q, bound, err := d.writeGrantQuery(g.approval)
		if err != nil {
			return nil, err
		}
		d.askValues = bound
		return &q, nil
	}
	return nil, nil
}

// ApprovalValues returns the values an approval of this write binds (a
// body guard's path, such as "owner_id", to the value the body sets;
// "@ids" to a bulk write's ids), in the form WriteGrantQueryValues takes:
// after a write was refused because it holds no usable grant of
// Decision.Approval (none found, or it was used up or revoked before
// UseGrant), and after WriteGrantQuery found a policy. Otherwise nil. The
// guard puts them in the link to the approval request form.
func (d *Decision) ApprovalValues() map[string]any { return d.askValues }

// WriteGrantQueryValues is WriteGrantQuery for a write named by the values
// its approval binds instead of its body: values maps a body guard's path
// ("owner_id", "deal.stage") to the value set, and "@ids" to the list of
// ids of a bulk write (the `values` of a test case's grant, the
// `values` of POST /.crmguard/approvals). They are written into a JSON
// body at the guards' paths (the ids at the route's `ids`) and read back
// as CheckBody reads a body, so the query is the one the guard looks for
// when the write sets those values. A key that names no body guard with
// an approval, the ids of a route that is no bulk write, values of two
// policies or values that overlap are errors.
func (d *Decision) WriteGrantQueryValues(values map[string]any) (*GrantQuery, error) {
	if d.Outcome != Allow || d.route == nil {
		return nil, fmt.Errorf("rules: route %s does not allow this request (%s)", d.RouteID, d.Reason)
	}
	if len(values) == 0 {
		return nil, fmt.Errorf("rules: route %s: no values are named", d.RouteID)
	}
	body := map[string]any{}
	for _, k := range slices.Sorted(maps.Keys(values)) {
		v := values[k]
		if k == boundIDsKey {
			t := d.route.target
			if t == nil || t.bulk == nil {
				return nil, fmt.Errorf("rules: route %s is not a bulk write: it takes no %s", d.RouteID, boundIDsKey)
			}
			list, ok := v.([]any)
			if !ok {
				return nil, fmt.Errorf("rules: route %s: %s is a list of record ids", d.RouteID, boundIDsKey)
			}
			if len(t.bulk.after) > 0 {
				items := make([]any, len(list))
				for i, id := range list {
					item := map[string]any{}
					if err := setBodyValue(item, t.bulk.after, id); err != nil {
						return nil, err
					}
					items[i] = item
				}
				list = items
			}
			if err := setBodyValue(body, t.bulk.before, list); err != nil {
				return nil, fmt.Errorf("rules: route %s: %s: %w", d.RouteID, boundIDsKey, err)
			}
			continue
		}
		i := slices.IndexFunc(d.route.body, func(g *bodyGuard) bool { return g.path == k && g.approval != "" })
		if i < 0 {
			return nil, fmt.Errorf("rules: route %s has no body guard with an approval at %q", d.RouteID, k)
		}
		if err := setBodyValue(body, d.route.body[i].segs, v); err != nil {
			return nil, fmt.Errorf("rules: route %s: %s: %w", d.RouteID, k, err)
		}
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("rules: route %s: the values cannot be written as JSON: %w", d.RouteID, err)
	}
	d.values = nil
	q, err := d.WriteGrantQuery("application/json", raw)
	if err != nil {
		return nil, err
	}
	if q == nil {
		return nil, fmt.Errorf("rules: route %s: the values set nothing that needs approval", d.RouteID)
	}
	for k := range values {
		if _, ok := d.askValues[k]; !ok {
			return nil, fmt.Errorf("rules: route %s: %q is not bound by the approval policy %s (one approval binds the values of one policy)", d.RouteID, k, q.Policy)
		}
	}
	return q, nil
}

// setBodyValue sets v at the keys' path in m, making the objects on the
// way; a path through a value that is not an object, or onto one already
// set, is an error.
func setBodyValue(m map[string]any, keys []string, v any) error {
	for i, k := range keys {
		if i == len(keys)-1 {
			if _, ok := m[k]; ok {
				return fmt.Errorf("the value at %s is named twice", strings.Join(keys, "."))
			}
			m[k] = v
			return nil
		}
		next, ok := m[k]
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		if m, ok = next.(map[string]any); !ok {
			return fmt.Errorf("the values at %s and below it overlap", strings.Join(keys[:i+1], "."))
		}
	}
	return nil
}
