package rules

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/rewrite"
)

// lintHidden warns about rules that let users learn or change what decides
// visibility (issue "hidden means hidden"):
//
//   - a record field that a route's `visible`, a target's `allow_if` or
//     `visible`, or a field rule's condition reads, and that some role can
//     write through some route without a body guard for it: that role can
//     decide who sees (or may change) a record, e.g. put a customer into the
//     public pool by setting its last contact date;
//   - a route that reads (GET, or every method) with `visible`, `expose` or
//     `fields` but no `query`: the CRM searches, filters and sorts before
//     the proxy hides and masks;
//   - a `target` without `visible` whose fetch path is served by a GET
//     route with `visible`: a write to a hidden record answers 403, which
//     tells the user it exists;
//   - a query parameter that says nothing of what it filters (no
//     `filters` or `sorts`) and is named like a field a `fields` rule
//     treats (phone: {} beside phone: {mask: phone}), with no deny or
//     deny_unless: a CRM that filters by it answers a search on the
//     masked value.
func (l *loader) lintHidden() {
	l.lintSelfGrantedVisibility()
	for _, r := range l.set.routes {
		if r.deny != "" {
			continue
		}
		treats := r.visible != nil || len(r.expose) > 0 || len(r.fields) > 0
		if treats && r.qguard == nil && methodsRead(r.methods) {
			what := "treats fields"
			if r.visible != nil {
				what = "hides records (visible)"
			}
			l.warnf(r.node, r.key, "route %s %s but accepts any query parameter: the CRM searches, filters and sorts before the proxy hides and masks, so a search or filter on what the user may not see can tell it; list the parameters the route accepts under query (params: {} accepts none)", r.id, what)
		}
		l.lintUndeclaredFilters(r)
		if t := r.target; t != nil && t.visible == nil {
			if rd := l.readRouteOf(t); rd != nil && rd.visible != nil {
				l.warnf(t.node, joinKey(r.key, "target"), "route %s hides records the user may not see, but a write to such a record here answers 403, which tells the user it exists; add target.visible (the same condition as %s's visible) so that it answers like a missing record", rd.id, rd.id)
			}
		}
	}
}

// lintUndeclaredFilters warns about query parameters named like a field
// the route treats that do not declare what they filter.
func (l *loader) lintUndeclaredFilters(r *route) {
	if r.qguard == nil || len(r.fields) == 0 {
		return
	}
	for _, p := range r.qguard.params {
		if p.use != "" || len(p.deny) > 0 || p.denyUnless != nil {
			continue // the operator said what it does, or who may send it
		}
		for _, s := range p.pattern {
			if s.kind != nameLit {
				continue
			}
			f, err := rewrite.ParsePath(s.text)
			if err != nil {
				continue
			}
			i := slices.IndexFunc(r.fields, func(fr *fieldRule) bool { return fr.p.Touches(f) })
			if i < 0 {
				continue
			}
			l.warnf(p.node, p.key, "route %s accepts the query parameter %q without saying what it filters or sorts on, and %s treats the field %s: a CRM that filters by it answers a search on what the rule hides; say filters: %s (the guard then refuses it to the roles the rule treats), or deny it", r.id, p.name, r.fields[i].key, s.text, s.text)
			break
		}
	}
}

// readRouteOf finds the first route a GET of the target's fetch path
// would match (its {params} standing for any value).
func (l *loader) readRouteOf(t *targetSpec) *route {
	segs := make([]string, len(t.segs))
	for i, s := range t.segs {
		segs[i] = s.text
		if s.param {
			segs[i] = "{" + s.text + "}"
		}
	}
	params := map[string]string{}
	for _, r := range l.set.routes {
		clear(params)
		if r.methods != nil && !contains(r.methods, http.MethodGet) || r.pattern == nil || len(r.query) > 0 || len(r.headers) > 0 {
			continue
		}
		if r.pattern.Match(segs, params) {
			return r
		}
	}
	return nil
}

// decider is a record field a condition reads, and where.
type decider struct {
	keys  []string
	where string // "customers.list's visible"
	route *route // the route whose condition reads it
}

// lintSelfGrantedVisibility warns about fields that decide visibility and
// can be written without a body guard.
func (l *loader) lintSelfGrantedVisibility() {
	var deciders []decider
	seen := map[string]bool{}
	add := func(r *route, e *cond.Expr, where string) {
		if e == nil {
			return
		}
		for _, k := range e.RecordFields() {
			id := r.id + "\x00" + strings.Join(k, "\x00")
			if !seen[id] {
				seen[id] = true
				deciders = append(deciders, decider{keys: k, where: where, route: r})
			}
		}
	}
	for _, r := range l.set.routes {
		if r.visible != nil {
			add(r, r.visible.Expr(), r.id+"'s visible")
		}
		if r.target != nil {
			add(r, r.target.allowIf, r.id+"'s target.allow_if")
			add(r, r.target.visible, r.id+"'s target.visible")
		}
		for _, f := range r.fields {
			if f.when != nil {
				add(r, f.when.Expr(), fmt.Sprintf("%s's fields.%s.when", r.id, f.path))
			}
			if f.unless != nil {
				add(r, f.unless.Expr(), fmt.Sprintf("%s's fields.%s.unless", r.id, f.path))
			}
		}
	}
	if len(deciders) == 0 {
		return
	}
	roles := slices.Sorted(maps.Keys(l.set.roles))
	for _, r := range l.set.routes {
		if r.deny != "" || !mayWrite(r.methods) {
			continue
		}
		reported := map[string]bool{}
		for _, dc := range deciders {
			field := strings.Join(dc.keys, ".")
			if reported[field] || !writesRecordsOf(r, dc.route) {
				continue
			}
			var free []string
			switch {
			case r.public:
				if !r.guardsField(dc.keys, nil) {
					free = []string{"anyone"}
				}
			default:
				for _, role := range roles {
					eff := l.set.roles[role]
					if !r.anyUser && !intersects(eff, r.allow) {
						continue
					}
					if !r.guardsField(dc.keys, eff) {
						free = append(free, role)
					}
				}
				if r.anyUser && !r.guardsField(dc.keys, nil) {
					free = append(free, "any signed-in user")
				}
			}
			if len(free) == 0 {
				continue
			}
			reported[field] = true
			l.warnf(r.node, r.key, "route %s lets %s write %s without a body guard, and %s reads it: such a user can decide who sees or may change a record; guard it under body (e.g. %s: {deny_unless: CONDITION})", r.id, strings.Join(free, ", "), field, dc.where, field)
		}
	}
}

// writesRecordsOf reports whether write route w may change the records
// that route rd's condition reads: they are the same route, or the
// literal segments that start their paths (up to the first parameter or
// wildcard: the collection, e.g. /api/customers) are one a prefix of the
// other (/api/customers/{id}, /api/customers/bulk-update, /api/**, /**).
func writesRecordsOf(w, rd *route) bool {
	if w == rd {
		return true
	}
	if w.pattern == nil || rd.pattern == nil {
		return false
	}
	a, b := w.pattern.LiteralPrefix(), rd.pattern.LiteralPrefix()
	if len(a) > len(b) {
		a, b = b, a
	}
	for i := range a {
		if !strings.EqualFold(a[i], b[i]) {
			return false
		}
	}
	return true
}

// guardsField reports whether a body guard of the route covers a write of
// the field keys by a user with the effective roles eff: a guard naming
// the field or one of the objects holding it, that denies one of eff's
// roles or has a deny_unless or allow_if (the operator decided who may
// set it, and to what).
func (r *route) guardsField(keys []string, eff []string) bool {
	for _, g := range r.body {
		if g.denyUnless == nil && g.allowIf == nil && !intersects(eff, g.deny) {
			continue
		}
		for k := 1; k <= len(keys); k++ {
			if tailEqualFold(keys[:k], g.segs) {
				return true
			}
		}
	}
	return false
}

// tailEqualFold reports whether chain ends with tail, without case.
func tailEqualFold(chain, tail []string) bool {
	if len(tail) > len(chain) {
		return false
	}
	off := len(chain) - len(tail)
	for i, s := range tail {
		if !strings.EqualFold(chain[off+i], s) {
			return false
		}
	}
	return true
}

// mayWrite reports whether a route's methods include one that changes
// data (nil: every method does).
func mayWrite(methods []string) bool {
	if methods == nil {
		return true
	}
	for _, m := range methods {
		// A DELETE removes a record; it sets none of its fields.
		if m != http.MethodGet && m != http.MethodHead && m != http.MethodOptions && m != http.MethodDelete {
			return true
		}
	}
	return false
}

func intersects(a, b []string) bool {
	for _, x := range a {
		if contains(b, x) {
			return true
		}
	}
	return false
}
