package rules

import (
	"slices"
	"strings"
	"time"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/rewrite"
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
	// QueryGuarded is true when the route has `query`: a request whose
	// query holds a parameter not in Params is refused (no Params: the
	// route accepts none). False: the query is passed on unread.
	QueryGuarded bool
	// Params are the query parameters the route's `query` accepts, as
	// they apply to the role.
	Params []QueryParam
	// Forward are the parameters `forward_query` sets on the role's
	// requests to the CRM (whatever the client sent under those names).
	Forward []ForwardParam
	// Limits are the usage limits that count the role's requests on the
	// route.
	Limits []LimitAccess
}

// QueryParam is one parameter of a route's `query.params` as it applies
// to a role.
type QueryParam struct {
	// Name is the parameter's name as written (filter[{field}], ids[]).
	Name string
	// Refused is true when the role may never send it (its `deny` names
	// one of the role's roles, or its `deny_unless` never holds).
	Refused bool
	// Condition is when the role may send it (its `deny_unless`; Always
	// without one).
	Condition Words
	// Use is "filters" or "sorts" when the parameter filters or sorts on
	// record fields ("" when it does neither); Fields names them as
	// written, or is ["{value}"], ["{field}"] or ["{expr}"] when the
	// request names them.
	Use    string
	Fields []string
	// Hidden says, for each of Fields the role does not see unmasked,
	// what withholds it ("owner_id: removed", "name: masked"): a
	// request that filters or sorts on one is refused. A parameter whose
	// request names the fields is refused for each field withheld.
	Hidden []string
}

// ForwardParam is a parameter `forward_query` sets on a role's requests
// to the CRM.
type ForwardParam struct {
	// Name is the parameter sent.
	Name string
	// Value is the expression of its value, as written.
	Value string
	// When is the condition under which it is set (Always without one).
	When Words
}

// LimitAccess is a usage limit that counts a role's requests on a route.
type LimitAccess struct {
	// ID names the limit; Description says what it is for.
	ID, Description string
	// Count is what it counts, at most Max within Per, kept by Key.
	Count LimitCount
	Max   int64
	Per   time.Duration
	Key   LimitKey
	// Action is what a hit does.
	Action LimitAction
	// When is the limit's `when` for the role (Always without one).
	When Words
	// EveryRoute is true for a limit without `routes`, which counts every
	// request of the role.
	EveryRoute bool
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
				when := f.appliesTo(u, roles)
				if when.Never {
					continue
				}
				a.Fields = append(a.Fields, FieldAccess{Path: f.path, Action: f.action, Mask: f.mask, Answer: list.answer, When: when})
			}
		}
		a.QueryGuarded, a.Params = rt.qguard != nil, rt.queryAccess(u, roles)
		for _, fp := range rt.forward {
			if fp.forR != nil && !hasAny(u, fp.forR) || fp.except != nil && hasAny(u, fp.except) {
				continue
			}
			when := always
			if fp.when != nil {
				when = describe(fp.when, roles)
			}
			if !when.Never {
				a.Forward = append(a.Forward, ForwardParam{Name: fp.name, Value: fp.value.Source(), When: when})
			}
		}
		for _, lim := range rt.limits {
			if lim.For != nil && !hasAny(u, lim.For) || hasAny(u, lim.Except) {
				continue
			}
			when := always
			if lim.when != nil {
				when = describe(lim.when, roles)
			}
			if !when.Never {
				a.Limits = append(a.Limits, LimitAccess{ID: lim.ID, Description: lim.Description, Count: lim.Count, Max: lim.Max,
					Per: lim.Per, Key: lim.Key, Action: lim.Action, When: when, EveryRoute: lim.Routes == nil})
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

// appliesTo says when the field rule applies to a holder of roles (u
// their user): Never when its for/except leave them out or its
// conditions never hold.
func (f *fieldRule) appliesTo(u *User, roles []string) Words {
	if f.forR != nil && !hasAny(u, f.forR) || f.except != nil && hasAny(u, f.except) {
		return Words{Never: true}
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
	return when
}

// queryAccess lists the route's query parameters as they apply to a
// holder of roles.
func (rt *route) queryAccess(u *User, roles []string) []QueryParam {
	if rt.qguard == nil {
		return nil
	}
	out := make([]QueryParam, 0, len(rt.qguard.params))
	for _, p := range rt.qguard.params {
		q := QueryParam{Name: p.name, Condition: always, Use: p.use}
		if p.denyUnless != nil {
			q.Condition = describe(p.denyUnless, roles)
		}
		q.Refused = hasAny(u, p.deny) || q.Condition.Never
		switch p.from {
		case fieldsFromValue:
			q.Fields = []string{"{value}"}
		case fieldsFromName:
			q.Fields = []string{"{field}"}
		case fieldsFromExpr:
			q.Fields = []string{"{expr}"}
		}
		if p.use != "" && p.from == fieldsListed {
			for _, f := range p.fields {
				q.Fields = append(q.Fields, f.String())
				if why := rt.withheldFrom(f, u, roles); why != "" {
					q.Hidden = append(q.Hidden, f.String()+": "+why)
				}
			}
		}
		out = append(out, q)
	}
	return out
}

// withheldFrom says why holders of roles may not see field f of the
// route's records unmasked ("" when they may): the words of
// Decision.withheld, which judges one request, for every request of the
// role (a rule that applies under a condition withholds the field when
// the condition may hold).
func (rt *route) withheldFrom(f rewrite.Path, u *User, roles []string) string {
	if len(rt.expose) > 0 && !slices.ContainsFunc(rt.expose, func(e rewrite.Path) bool { return e.Covers(f) }) {
		return "it is not in the route's expose list"
	}
	for _, fr := range rt.fields {
		if !fr.p.Touches(f) {
			continue
		}
		when := fr.appliesTo(u, roles)
		if when.Never {
			continue
		}
		why := actionDone[fr.action]
		if fr.path != f.String() {
			why += " by the rule for " + fr.path
		}
		if !when.Always {
			why += " when " + when.String()
		}
		return why
	}
	return ""
}

// actionDone names what a field action does, as a participle.
var actionDone = map[string]string{"remove": "removed", "mask": "masked", "hash": "hashed", "null": "nulled", "replace": "replaced"}

// MethodsText is the route's methods joined with ",", "any" for none.
func (a Access) MethodsText() string {
	if len(a.Methods) == 0 {
		return "any"
	}
	return strings.Join(a.Methods, ",")
}
