package rules

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"go.yaml.in/yaml/v3"
)

// This file reads the `approvals:` and `elevations:` blocks at load time
// and lints them; the read-only views are in approvals.go.

// Defaults of an approval policy.
const (
	defaultValidFor = 24 * time.Hour
	defaultUses     = 1
)

// workflowUse is a place where an approval policy is named.
type workflowUse struct {
	name string
	node *yaml.Node
	key  string
}

// approvals reads `approvals:`. It runs after roles and mfa, before routes
// and elevations (which name policies).
func (l *loader) approvals(n *yaml.Node) {
	l.set.approvals = map[string]*ApprovalPolicy{}
	if n == nil {
		return
	}
	es, _ := l.entries(n, "approvals")
	if len(es) == 0 {
		return
	}
	for _, e := range es {
		key := joinKey("approvals", e.name)
		if !validName(e.name) || e.name == "none" {
			l.errorf(e.key, key, "%q cannot be an approval policy name (letters, digits, _ - . only; none is reserved)", e.name)
			continue
		}
		p := &ApprovalPolicy{Name: e.name, PurposeRequired: true, ValidFor: defaultValidFor, Uses: defaultUses, mfaACR: l.set.mfa.ACR}
		fs, ok := l.entries(e.val, key, "description", "purpose", "valid_for", "uses", "steps", "approver_mfa")
		if !ok {
			continue
		}
		hasSteps := false
		for _, f := range fs {
			fk := joinKey(key, f.name)
			switch f.name {
			case "description":
				p.Description, _ = l.str(f.val, fk)
			case "purpose":
				p.PurposeRequired, _ = l.requiredOptional(f.val, fk)
			case "valid_for":
				if v, ok := l.duration(f.val, fk); ok {
					if v == 0 {
						l.errorf(f.val, fk, "a grant valid for 0 could never be used")
					}
					p.ValidFor = v
				}
			case "uses":
				p.Uses, _ = l.integer(f.val, fk, 1)
			case "approver_mfa":
				p.ApproverMFAMaxAge = l.mfaMaxAge(f.val, fk)
			case "steps":
				hasSteps = true
				p.Steps = l.approvalSteps(f.val, fk)
			}
		}
		if !hasSteps {
			l.errorf(e.val, joinKey(key, "steps"), "missing: a policy needs at least one step saying who approves")
		}
		if p.Description == "" {
			p.Description = describeSteps(p.Steps)
		}
		l.set.approvals[e.name] = p
		l.policyNodes = append(l.policyNodes, workflowUse{name: e.name, node: e.key, key: key})
	}
}

func (l *loader) approvalSteps(n *yaml.Node, key string) []*ApprovalStep {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		l.errorf(n, key, "want a list of steps (at least one), got %s", kindName(n))
		return nil
	}
	var steps []*ApprovalStep
	names := map[string]bool{}
	for i, sn := range n.Content {
		sk := indexKey(key, i)
		fs, ok := l.entries(sn, sk, "name", "description", "approvers", "when")
		if !ok {
			continue
		}
		st := &ApprovalStep{}
		var approversNode *yaml.Node
		for _, f := range fs {
			fk := joinKey(sk, f.name)
			switch f.name {
			case "name":
				st.Name, _ = l.str(f.val, fk)
			case "description":
				st.Description, _ = l.str(f.val, fk)
			case "approvers":
				approversNode = f.val
				st.Approvers, _ = l.strList(f.val, fk)
				if len(st.Approvers) == 0 {
					l.errorf(f.val, fk, "an empty approvers list: nobody could approve this step")
				}
				l.useRoles(f.val, fk, st.Approvers)
				l.approverUses = append(l.approverUses, approverUse{roles: st.Approvers, node: f.val, key: fk})
			case "when":
				if src, ok := l.str(f.val, fk); ok {
					if x := l.expr(f.val, fk, src, cond.ApprovalScope, true); x != nil {
						st.When, st.when = src, x
					}
				}
			}
		}
		if st.Name == "" {
			l.errorf(sn, joinKey(sk, "name"), "every step needs a name (it names the step in the request's history)")
		} else if names[st.Name] {
			l.errorf(sn, joinKey(sk, "name"), "duplicate step name %q", st.Name)
		}
		names[st.Name] = true
		if approversNode == nil {
			l.errorf(sn, joinKey(sk, "approvers"), "missing: say which roles approve this step")
		}
		if st.Description == "" {
			st.Description = strings.Join(st.Approvers, " or ")
		}
		steps = append(steps, st)
	}
	return steps
}

// describeSteps says in words who approves: "your manager, then IT
// security".
func describeSteps(steps []*ApprovalStep) string {
	parts := make([]string, len(steps))
	for i, st := range steps {
		parts[i] = st.Description
	}
	return strings.Join(parts, ", then ")
}

// mfaMaxAge reads a workflow's `{max_age: DURATION}` (approver_mfa, an
// elevation's mfa): how recent the MFA sign-in must be.
func (l *loader) mfaMaxAge(n *yaml.Node, key string) time.Duration {
	var d time.Duration
	ms, _ := l.entries(n, key, "max_age")
	for _, m := range ms {
		d, _ = l.duration(m.val, joinKey(key, "max_age"))
	}
	return d
}

// requiredOptional reads `required` or `optional`.
func (l *loader) requiredOptional(n *yaml.Node, key string) (bool, bool) {
	v, ok := l.str(n, key)
	if !ok {
		return false, false
	}
	switch v {
	case "required":
		return true, true
	case "optional":
		return false, true
	}
	l.errorf(n, key, "want required or optional, got %q", v)
	return false, false
}

// exportApproval reads a route's export.approval: true (a grant is needed
// but there is no policy to request one), false, or a policy name.
func (l *loader) exportApproval(spec *exportSpec, n *yaml.Node, key string) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		spec.approval, _ = l.boolean(n, key)
		return
	}
	name, ok := l.str(n, key)
	if !ok {
		return
	}
	spec.approval, spec.policy = true, name
	l.namePolicy(n, key, name)
}

// namePolicy checks a reference to an approval policy: an unknown name is
// a load error.
func (l *loader) namePolicy(n *yaml.Node, key, name string) {
	if _, ok := l.set.approvals[name]; !ok {
		known := strings.Join(slices.Sorted(maps.Keys(l.set.approvals)), ", ")
		if known == "" {
			known = "none declared"
		}
		l.errorf(n, key, "unknown approval policy %q (approvals: %s)", name, known)
		return
	}
	l.policyUses[name] = true
}

// elevations reads `elevations:`. It runs after approvals.
func (l *loader) elevations(n *yaml.Node) {
	l.set.elevations = map[string]*Elevation{}
	if n == nil {
		return
	}
	es, _ := l.entries(n, "elevations")
	for _, e := range es {
		key := joinKey("elevations", e.name)
		if !validName(e.name) {
			l.errorf(e.key, key, "%q cannot be an elevation name (letters, digits, _ - . only)", e.name)
			continue
		}
		el := &Elevation{Name: e.name, ReasonRequired: true, mfaACR: l.set.mfa.ACR}
		fs, ok := l.entries(e.val, key, "description", "for", "grant", "max", "reason", "mfa", "approval", "review_by")
		if !ok {
			continue
		}
		seen := map[string]bool{}
		for _, f := range fs {
			fk := joinKey(key, f.name)
			seen[f.name] = true
			switch f.name {
			case "description":
				el.Description, _ = l.str(f.val, fk)
			case "for":
				el.For, _ = l.strList(f.val, fk)
				l.useRoles(f.val, fk, el.For)
				if len(el.For) == 0 {
					l.errorf(f.val, fk, "an empty list: nobody could start this elevation")
				}
			case "grant":
				el.Grant, _ = l.strList(f.val, fk)
				for _, r := range el.Grant {
					if _, ok := l.declared[r]; !ok {
						l.errorf(f.val, fk, "grants the undeclared role %q: declare it under roles", r)
					}
				}
				l.useRoles(f.val, fk, el.Grant)
				if len(el.Grant) == 0 {
					l.errorf(f.val, fk, "an empty list: the elevation would add no role")
				}
			case "max":
				if v, ok := l.duration(f.val, fk); ok {
					if v == 0 {
						l.errorf(f.val, fk, "an elevation of 0 could never be used")
					}
					el.Max = v
				}
			case "reason":
				el.ReasonRequired, _ = l.requiredOptional(f.val, fk)
			case "mfa":
				el.MFAMaxAge = l.mfaMaxAge(f.val, fk)
			case "approval":
				if v, ok := l.str(f.val, fk); ok && v != "none" {
					el.Approval = v
					l.namePolicy(f.val, fk, v)
				}
			case "review_by":
				el.ReviewBy, _ = l.strList(f.val, fk)
				l.useRoles(f.val, fk, el.ReviewBy)
			}
		}
		for _, need := range []string{"for", "grant", "max"} {
			if !seen[need] {
				l.errorf(e.val, joinKey(key, need), "missing: an elevation needs for (who may ask), grant (roles added) and max (how long at most)")
			}
		}
		if !seen["review_by"] {
			l.warnf(e.key, key, "elevation %s has no review_by: nobody reviews it afterwards", e.name)
		}
		l.set.elevations[e.name] = el
		l.elevationGrants = append(l.elevationGrants, el.Grant...)
	}
}

// approverUse is one step's approvers list, for lint.
type approverUse struct {
	roles []string
	node  *yaml.Node
	key   string
}

// workflowState is what the loader keeps about approvals and elevations
// for the checks that need the whole file.
type workflowState struct {
	policyNodes     []workflowUse   // every policy, in file order
	policyUses      map[string]bool // policies a route or an elevation names
	approverUses    []approverUse
	elevationGrants []string
}

// lintWorkflows warns about approval policies nobody names and steps
// nobody can approve.
//
// A role is obtainable when a signed-in user can hold it: without role_map
// every declared role is (groups are role names); with role_map, a role is
// obtainable when some role_map entry maps to it or to a role inheriting
// it; a role an elevation grants (or one it inherits) is obtainable too.
// A step none of whose approver roles is obtainable can never be approved.
func (l *loader) lintWorkflows() {
	for _, p := range l.policyNodes {
		if !l.policyUses[p.name] {
			l.warnf(p.node, p.key, "approval policy %s is not used: no route's export.approval and no elevation's approval names it", p.name)
		}
	}
	if len(l.approverUses) == 0 {
		return
	}
	obtainable := map[string]bool{}
	add := func(r string) {
		for _, a := range l.set.roles[r] {
			obtainable[a] = true
		}
	}
	if l.set.roleMap == nil {
		for r := range l.set.roles {
			obtainable[r] = true
		}
	}
	for _, rs := range l.set.roleMap {
		for _, r := range rs {
			add(r)
		}
	}
	for _, r := range l.elevationGrants {
		add(r)
	}
	for _, u := range l.approverUses {
		ok := false
		for _, r := range u.roles {
			ok = ok || obtainable[r]
		}
		if !ok && len(u.roles) > 0 {
			l.warnf(u.node, u.key, "nobody can approve this step: no role_map entry gives %s (or a role inheriting it), and no elevation grants it", orList(u.roles))
		}
	}
}

func orList(roles []string) string {
	q := make([]string, len(roles))
	for i, r := range roles {
		q[i] = fmt.Sprintf("%q", r)
	}
	return strings.Join(q, " or ")
}
