package rules

import (
	"strings"
	"time"

	"github.com/crmguard/crmguard/rules/internal/cond"
)

// Access is what the holders of one role may do on one route, worked out
// from the rule file (not by running requests: `crmguard rules explain`
// runs them), for the permission matrix (`crmguard rules matrix`).
// Conditions are said in words for that role: its role tests
// (`"admin" in user.roles`) are decided, the shapes the rule format
// favours are named (own, team, pool, schedule), others keep their text.
type Access struct {
	// Role is the role (its inherited roles count too).
	Role string
	// Route is the route id; Methods (nil: any) and Path say what it matches.
	Route   string
	Methods []string
	Path    string
	// Query lists, as name=value, a query that meets the route's
	// match.query (a parameter it matches on present with its first
	// value; one that must be absent left out).
	Query []string
	// Allowed is true when the role may call the route, subject to When,
	// the sign-in (MFA, MaxAge) and an export's approval.
	Allowed bool
	// Public is true for a public route (anyone, signed in or not).
	Public bool
	// Denied is the reason of a route that refuses everyone.
	Denied string
	// When is the route's `when` for this role (Always without one).
	When Words
	// MFA is true when the route needs a sign-in with MFA; MaxAge, when
	// set, how recent it must be.
	MFA    bool
	MaxAge time.Duration
	// Records says which records of an answer the role sees (`visible`;
	// Always without one).
	Records Words
	// Export is true for an export route; Approval then names the policy
	// whose grant the role needs ("" when the role is exempt or the route
	// needs none), ApprovalNeeded says whether it needs one at all.
	Export         bool
	ApprovalNeeded bool
	Approval       string
	// Changes says which stored records a write may change (a `target`'s
	// visible and allow_if); the zero Words when the route has no target.
	Changes Words
	// Fields are the field rules that apply to the role.
	Fields []FieldAccess
	// Body are the request body fields the role may not set, or sets
	// only under a condition, in words ("stage", "owner_id only if ...").
	Body []string
}

// FieldAccess is one field rule that applies to a role.
type FieldAccess struct {
	// Path is the field's path as written in the rule file.
	Path string
	// Action is remove, mask, hash, null or replace; Mask names the mask.
	Action string
	Mask   string
	// Answer is true for a rule of the route's `answer` (outside the
	// records).
	Answer bool
	// When is the condition under which the rule applies (Always: every
	// record).
	When Words
}

// Words is a condition in words for one role.
type Words struct {
	// Always and Never are set when the role decides the condition.
	Always, Never bool
	// Any lists alternatives of which any one is enough.
	Any []string
}

// String says the condition: "always", "never" or the alternatives
// joined with "or" ("" for the zero Words: no condition at all).
func (w Words) String() string { return cond.Words(w).String() }

var always = Words{Always: true}

func describe(e *cond.Expr, roles []string) Words {
	if e == nil {
		return always
	}
	return Words(e.Describe(roles))
}

// both is the words of a and b together.
func both(a, b Words) Words {
	switch {
	case a.Never || b.Never:
		return Words{Never: true}
	case a.Always:
		return b
	case b.Always:
		return a
	}
	return Words{Any: []string{"(" + a.String() + ") and (" + b.String() + ")"}}
}

// Access lists what holders of role may do on each route, in route order.
func (s *Set) Access(role string) []Access {
	u := s.UserFromRoles("", []string{role}, nil, true, time.Time{})
	roles := u.Roles
	out := make([]Access, 0, len(s.routes))
	for _, rt := range s.routes {
		a := Access{Role: role, Route: rt.id, Methods: append([]string(nil), rt.methods...), Public: rt.public, Denied: rt.deny,
			When: describe(rt.when, roles), Records: always}
		if rt.pattern != nil {
			a.Path = rt.pattern.String()
		}
		for _, m := range rt.query {
			switch {
			case len(m.values) > 0:
				a.Query = append(a.Query, m.name+"="+m.values[0])
			case m.present:
				a.Query = append(a.Query, m.name+"=1")
			}
		}
		a.Allowed = rt.deny == "" && (rt.public || rt.anyUser || hasAny(u, rt.allow)) && !a.When.Never
		a.MFA = s.mfa.Required
		if rt.mfaReq != nil {
			a.MFA = *rt.mfaReq
		} else if rt.maxAge > 0 {
			a.MFA = true
		}
		if rt.public {
			a.MFA = false
		}
		a.MaxAge = rt.maxAge
		if rt.visible != nil {
			a.Records = describe(rt.visible.Expr(), roles)
		}
		if rt.export != nil {
			a.Export = true
			if rt.export.approval && !hasAny(u, rt.export.withoutApproval) {
				a.ApprovalNeeded, a.Approval = true, rt.export.policy
			}
		}
		if rt.target != nil {
			a.Changes = both(describe(rt.target.visible, roles), describe(rt.target.allowIf, roles))
		}
		for _, list := range []struct {
			rules  []*fieldRule
			answer bool
		}{{rt.fields, false}, {rt.answer, true}} {
			for _, f := range list.rules {
				if f.forR != nil && !hasAny(u, f.forR) || f.except != nil && hasAny(u, f.except) {
					continue
				}
				when := always
				if f.when != nil {
					when = describe(f.when.Expr(), roles)
				}
				if f.unless != nil {
					un := describe(f.unless.Expr(), roles)
					switch {
					case un.Always:
						when = Words{Never: true}
					case un.Never:
					case when.Always:
						when = Words{Any: []string{"not (" + un.String() + ")"}}
					default:
						when = Words{Any: []string{"(" + when.String() + ") and not (" + un.String() + ")"}}
					}
				}
				if when.Never {
					continue
				}
				a.Fields = append(a.Fields, FieldAccess{Path: f.path, Action: f.action, Mask: f.mask, Answer: list.answer, When: when})
			}
		}
		for _, g := range rt.body {
			switch {
			case hasAny(u, g.deny):
				a.Body = append(a.Body, g.path)
			case g.denyUnless != nil:
				switch w := describe(g.denyUnless, roles); {
				case w.Never:
					a.Body = append(a.Body, g.path)
				case !w.Always:
					a.Body = append(a.Body, g.path+" only if "+w.String())
				}
			}
			if g.allowIf != nil {
				if w := describe(g.allowIf, roles); !w.Always {
					a.Body = append(a.Body, g.path+" only to a value for which "+w.String())
				}
			}
		}
		out = append(out, a)
	}
	return out
}

// MethodsText is the route's methods joined with ",", "any" for none.
func (a Access) MethodsText() string {
	if len(a.Methods) == 0 {
		return "any"
	}
	return strings.Join(a.Methods, ",")
}
