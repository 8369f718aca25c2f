package rules

import (
	"fmt"
	"strings"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"go.yaml.in/yaml/v3"
)

// bodyGuards reads a route's `body`.
func (l *loader) bodyGuards(r *route, n *yaml.Node, key string) {
	es, _ := l.entries(n, key)
	for _, e := range es {
		gk := joinKey(key, e.name)
		segs, err := splitGuardPath(e.name)
		if err != nil {
			l.errorf(e.key, gk, "%v", err)
			continue
		}
		g := &bodyGuard{path: e.name, segs: segs, node: e.val}
		fs, ok := l.entries(e.val, gk, "deny", "deny_unless", "allow_if", "approval", "message")
		if !ok {
			continue
		}
		for _, f := range fs {
			fk := joinKey(gk, f.name)
			if l.denyRuleKey(&g.denyRule, f, fk, cond.BodyScope) {
				continue
			}
			switch f.name {
			case "allow_if":
				g.allowIf = l.guardCondition(f.val, fk, cond.WriteScope)
			case "approval":
				if name, ok := l.str(f.val, fk); ok {
					g.approval = name
					l.namePolicy(f.val, fk, name) // load_approvals.go
				}
			}
		}
		if g.deny == nil && g.denyUnless == nil && g.allowIf == nil {
			by := fieldsOf(fs)
			if _, ok := by["deny"]; !ok {
				if _, ok := by["deny_unless"]; !ok {
					if _, ok := by["allow_if"]; !ok {
						l.errorf(e.val, gk, "a body guard needs deny: [roles], deny_unless: CONDITION or allow_if: CONDITION")
					}
				}
			}
			continue
		}
		if g.approval != "" && g.allowIf == nil {
			l.errorf(e.val, joinKey(gk, "approval"), "an approval lets a value through that allow_if refuses; the guard has no allow_if")
			continue
		}
		r.body = append(r.body, g)
	}
}

// denyRuleKey reads f into d when it is deny, deny_unless (a condition
// in scope) or message, and reports whether it was one of them.
func (l *loader) denyRuleKey(d *denyRule, f entry, fk string, scope cond.Scope) bool {
	switch f.name {
	case "deny":
		d.deny, _ = l.strList(f.val, fk)
		l.useRoles(f.val, fk, d.deny)
	case "deny_unless":
		d.denyUnless = l.guardCondition(f.val, fk, scope)
	case "message":
		d.message, _ = l.message(f.val, fk)
	default:
		return false
	}
	return true
}

// fieldsOf indexes entries by name.
func fieldsOf(es []entry) map[string]entry {
	out := make(map[string]entry, len(es))
	for _, e := range es {
		out[e.name] = e
	}
	return out
}

// checkBodyReads checks, once the route's target is compiled, the body
// guards and target conditions that read the stored record or the body's
// values, and notes whether the route reads the body's values.
func (l *loader) checkBodyReads(r *route, key string) {
	for _, g := range r.body {
		if g.denyUnless != nil && g.denyUnless.ReadsBody() || g.allowIf != nil {
			r.readsBody = true
		}
		if g.allowIf != nil && g.allowIf.ReadsRecord() && r.target == nil {
			l.errorf(g.node, joinKey(joinKey(key, "body"), g.path), "allow_if reads record, the stored record the request changes, but the route has no target to fetch it; add target: {fetch: ..., allow_if: ...}")
		}
	}
	if t := r.target; t != nil && (t.allowIf.ReadsBody() || t.bulk != nil) {
		r.readsBody = true
	}
}

// splitGuardPath splits a body guard path on unescaped dots.
func splitGuardPath(p string) ([]string, error) {
	return splitKeyPath(p, "*?#@|[]{}()", "a body guard names a field by its keys (a.b)")
}

// splitKeyPath splits a path of plain keys on unescaped dots ("\" makes
// the next character part of a key). A character of refused, or an empty
// key, is an error; what says what the path may hold.
func splitKeyPath(p, refused, what string) ([]string, error) {
	var keys []string
	var cur strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\' && i+1 < len(p):
			i++
			cur.WriteByte(p[i])
		case c == '.':
			keys = append(keys, cur.String())
			cur.Reset()
		case strings.IndexByte(refused, c) >= 0:
			return nil, fmt.Errorf("%q: %s; %q is not allowed (escape it with \\ if it is part of a key)", p, what, c)
		default:
			cur.WriteByte(c)
		}
	}
	keys = append(keys, cur.String())
	for _, k := range keys {
		if k == "" {
			return nil, fmt.Errorf("%q: empty key in the path", p)
		}
	}
	return keys, nil
}
