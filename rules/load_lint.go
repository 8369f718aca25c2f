package rules

import (
	"fmt"
	"sort"
	"strings"
)

// lint finds what loads but looks wrong: routes that can never match,
// roles used but not declared, roles declared but never used.
func (l *loader) lint() {
	routes := l.set.routes
	for j, b := range routes {
		for _, a := range routes[:j] {
			if a.shadows(b) {
				l.warnf(b.node, b.key, "route %s can never match: the earlier route %s (%s) matches every request it would", b.id, a.id, a.describe())
				break
			}
		}
	}
	reported := map[string]bool{}
	for _, u := range l.usedAt {
		if _, ok := l.declared[u.role]; ok || reported[u.role+"\x00"+u.key] {
			continue
		}
		reported[u.role+"\x00"+u.key] = true
		l.warnf(u.node, u.key, "role %q is used but not declared under roles, so nobody has it", u.role)
	}
	names := make([]string, 0, len(l.declared))
	for r := range l.declared {
		names = append(names, r)
	}
	sort.Strings(names)
	// A role is useful when a rule names it or one of the roles it
	// inherits; a role only role_map or inherits mentions grants nothing.
	for _, r := range names {
		useful := false
		for _, a := range l.set.roles[r] {
			useful = useful || l.used[a]
		}
		if !useful {
			l.warnf(l.declared[r], joinKey("roles", r), "role %q is declared but no rule names it or a role it inherits, so it grants nothing", r)
		}
	}
	l.lintWorkflows() // load_approvals.go
	l.lintHidden()    // load_lint_hidden.go
	l.lintLimits()    // load_limits.go
	sort.SliceStable(l.warns, func(i, j int) bool { return l.warns[i].Line < l.warns[j].Line })
}

// shadows reports whether route a, tried first, matches every request b
// would match. Only query and header conditions let a request pass a by;
// `when` does not (a route whose `when` fails denies, it does not fall
// through).
func (a *route) shadows(b *route) bool {
	if a.pattern == nil || b.pattern == nil || len(a.query) > 0 || len(a.headers) > 0 {
		return false
	}
	if a.methods != nil {
		if b.methods == nil {
			return false
		}
		for _, m := range b.methods {
			if !contains(a.methods, m) {
				return false
			}
		}
	}
	return a.pattern.Covers(b.pattern)
}

func (r *route) describe() string {
	m := "any method"
	if r.methods != nil {
		m = strings.Join(r.methods, ", ")
	}
	return fmt.Sprintf("%s %s", m, r.pattern.String())
}
