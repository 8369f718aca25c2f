package rules

import (
	"path"
	"strings"
	"time"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"go.yaml.in/yaml/v3"
)

// This file is the per-request side of usage limits: the compiled Limit,
// which limits apply to a request (Decision.Limits) and the key its counter
// is kept under (Limit.CounterKey). The load-time side is load_limits.go.
//
// The rules only say which limits apply and how they are keyed; the guard
// counts them on its state store (caddymodule/limits.go), because counting
// needs the store and, for records, the answer after rewriting.

// LimitCount says what a limit counts.
type LimitCount string

// What a limit can count.
const (
	// CountRecords counts the records sent to the client after rewriting
	// (answers on routes with records or record).
	CountRecords LimitCount = "records"
	// CountRequests counts the requests the rules allowed.
	CountRequests LimitCount = "requests"
	// CountExports counts the allowed requests on routes marked export.
	CountExports LimitCount = "exports"
	// CountDenials counts the requests the rules refused (decisions deny
	// and blocked).
	CountDenials LimitCount = "denials"
)

// LimitKey says whose usage a limit counts together.
type LimitKey string

// How a limit's counters are kept apart.
const (
	// LimitKeyUser: one window per user, over all the limit's routes.
	LimitKeyUser LimitKey = "user"
	// LimitKeyUserRoute: one window per user and route.
	LimitKeyUserRoute LimitKey = "user+route"
)

// LimitAction says what a limit does when it is hit.
type LimitAction string

// What a hit limit does.
const (
	// ActionAlert lets the request pass and raises an alert.
	ActionAlert LimitAction = "alert"
	// ActionStepUp refuses until the user signs in again with MFA, which
	// starts a fresh window.
	ActionStepUp LimitAction = "step_up"
	// ActionBlock refuses (429) until the window allows again.
	ActionBlock LimitAction = "block"
)

// Limit is one compiled entry of the rule file's `limits:`. It is
// read-only; the guard counts it on its state store.
type Limit struct {
	// ID names the limit (in refusals, the audit, metrics and counters).
	ID string
	// Description says what it is for, in words ("" when not given).
	Description string
	// Message is the operator's sentence for the user when the limit
	// refuses ("" when not given: a default is built).
	Message string
	// Routes are the route id globs it covers as written; nil: every
	// request, also those that match no route.
	Routes []string
	// Count is what it counts.
	Count LimitCount
	// Max is the most Count may reach within Per.
	Max int64
	// Per is the length of the sliding window.
	Per time.Duration
	// Key says whose usage is counted together.
	Key LimitKey
	// For lists the roles it applies to (nil: everyone signed in).
	For []string
	// Except lists roles it never applies to.
	Except []string
	// When is the source of its condition ("" when it has none).
	When string
	// Action is what a hit does.
	Action LimitAction
	// Notify lists roles whose holders are told of a hit (the user is
	// always named in the notification).
	Notify []string

	when       *cond.Expr
	node       *yaml.Node
	key        string
	routesNode *yaml.Node
}

// covers reports whether the limit covers the route with id.
func (lim *Limit) covers(id string) bool {
	if lim.Routes == nil {
		return true
	}
	for _, g := range lim.Routes {
		if ok, _ := path.Match(g, id); ok {
			return true
		}
	}
	return false
}

// Enforces reports whether a hit refuses the request (block and step_up).
func (lim *Limit) Enforces() bool { return lim.Action == ActionBlock || lim.Action == ActionStepUp }

// CounterKey is the key of the counter window that counts userID's usage
// under the limit on the route with routeID (routeID is used only by
// key: user+route). Every instance builds the same key for the same
// user, so a shared store counts them together. User and route ids are
// escaped (%XX for '%', ':', NUL and line breaks) so that no two users
// share a key; the count is part of the key, so changing what a limit
// counts starts a fresh window.
func (lim *Limit) CounterKey(userID, routeID string) string {
	var b strings.Builder
	b.Grow(16 + len(lim.ID) + len(lim.Count) + len(userID) + len(routeID))
	b.WriteString("limit:")
	b.WriteString(lim.ID)
	b.WriteByte(':')
	b.WriteString(string(lim.Count))
	b.WriteString(":u:")
	escapeKeyPart(&b, userID)
	if lim.Key == LimitKeyUserRoute {
		b.WriteString(":r:")
		escapeKeyPart(&b, routeID)
	}
	return b.String()
}

// escapeKeyPart writes s with '%', ':', NUL, CR and LF as %XX.
func escapeKeyPart(b *strings.Builder, s string) {
	const hex = "0123456789ABCDEF"
	start := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%', ':', 0, '\r', '\n':
			b.WriteString(s[start:i])
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
			start = i + 1
		}
	}
	b.WriteString(s[start:])
}

// Limits lists the rule file's limits in file order.
func (s *Set) Limits() []*Limit { return append([]*Limit(nil), s.limits...) }

// Limit returns the limit with the given id, or nil.
func (s *Set) Limit(id string) *Limit {
	for _, lim := range s.limits {
		if lim.ID == id {
			return lim
		}
	}
	return nil
}

// Limits returns the usage limits that apply to this request, in file
// order: those covering the matched route (or, for a request that matched
// none, those without routes), whose for/except roles admit the user and
// whose `when` holds. An anonymous request has none (limits count a
// user's usage), nor has a request that could not be judged. A `when`
// that fails to evaluate counts as holding (the limit applies: fail
// closed) and is counted in Audit.EvalErrors. The result is computed once
// per decision; callers must not change it.
func (d *Decision) Limits() []*Limit {
	if d.limitsDone {
		return d.limits
	}
	d.limitsDone = true
	if d.user == nil || d.act == nil {
		return nil
	}
	all := d.set.anyRouteLimits
	if d.route != nil {
		all = d.route.limits
	}
	for i, lim := range all {
		if lim.appliesTo(d) {
			if d.limits != nil {
				d.limits = append(d.limits, lim)
			}
			continue
		}
		if d.limits == nil {
			// The first one left out: copy those before it. While every
			// limit applies, the route's own slice is returned.
			d.limits = append(make([]*Limit, 0, len(all)-1), all[:i]...)
		}
	}
	if d.limits == nil {
		d.limits = all
	}
	if len(d.limits) == 0 {
		d.limits = nil
	}
	return d.limits
}

// appliesTo reports whether lim counts this request's user.
func (lim *Limit) appliesTo(d *Decision) bool {
	if lim.For != nil && !hasAny(d.user, lim.For) {
		return false
	}
	if hasAny(d.user, lim.Except) {
		return false
	}
	if lim.when == nil {
		return true
	}
	ok, err := lim.when.EvalBool(d.act)
	if err != nil {
		d.Audit.EvalErrors++
		return true
	}
	return ok
}

// IsExport reports whether the request is an export the rules allowed: an
// allowed request on a route marked export.
func (d *Decision) IsExport() bool {
	return d.Outcome == Allow && d.route != nil && d.route.export != nil
}
