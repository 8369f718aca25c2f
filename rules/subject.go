package rules

import (
	"fmt"
	"sort"
	"time"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/interpreter"
)

// UserFromClaims builds a user from verified claims: subject.id,
// subject.roles and subject.attrs run over `claims`; the groups found go
// through role_map (or, without role_map, are taken as role names); the
// roles are expanded through inheritance. Only declared roles are kept.
//
// An id that cannot be computed (or is empty) is an error: the request
// cannot be attributed. A roles expression that fails (for example a
// missing claim) gives no roles, and an attribute that fails is left out:
// both can only take rights away.
func (s *Set) UserFromClaims(claims map[string]any, mfa bool, authTime time.Time) (*User, error) {
	act := &activation{claims: claims}
	idv, _, err := s.subject.id.prg.Eval(act)
	if err != nil {
		return nil, fmt.Errorf("rules: subject.id (%s): %w", s.subject.id.src, err)
	}
	id, ok := idv.(types.String)
	if !ok || id == "" {
		return nil, fmt.Errorf("rules: subject.id (%s) gave %v, not a non-empty string", s.subject.id.src, celToNative(idv))
	}
	var groups []string
	if rv, _, err := s.subject.roles.prg.Eval(act); err == nil {
		groups, err = stringList(rv)
		if err != nil {
			return nil, fmt.Errorf("rules: subject.roles (%s): %w", s.subject.roles.src, err)
		}
	}
	attrs := make(map[string]any, len(s.subject.attrs))
	for _, a := range s.subject.attrs {
		if v, _, err := a.e.prg.Eval(act); err == nil {
			attrs[a.name] = celToNative(v)
		}
	}
	return s.UserFromGroups(string(id), groups, attrs, mfa, authTime), nil
}

func stringList(v ref.Val) ([]string, error) {
	if s, ok := v.(types.String); ok {
		return []string{string(s)}, nil
	}
	l, ok := v.(traits.Lister)
	if !ok {
		return nil, fmt.Errorf("gave %s, not a list of strings", v.Type().TypeName())
	}
	n, _ := l.Size().(types.Int)
	out := make([]string, 0, int(n))
	for i := types.Int(0); i < n; i++ {
		s, ok := l.Get(i).(types.String)
		if !ok {
			return nil, fmt.Errorf("item %d is not a string", i)
		}
		out = append(out, string(s))
	}
	return out, nil
}

// UserFromGroups builds a user from identity-provider groups: they go
// through role_map (groups it does not list are ignored; without role_map,
// groups that name a declared role are that role), then inheritance.
func (s *Set) UserFromGroups(id string, groups []string, attrs map[string]any, mfa bool, authTime time.Time) *User {
	var roles []string
	for _, g := range groups {
		if s.roleMap == nil {
			roles = append(roles, g)
			continue
		}
		roles = append(roles, s.roleMap[g]...)
	}
	return s.UserFromRoles(id, roles, attrs, mfa, authTime)
}

// UserFromRoles builds a user from role names: inheritance is applied and
// names that are not declared roles are dropped.
func (s *Set) UserFromRoles(id string, roles []string, attrs map[string]any, mfa bool, authTime time.Time) *User {
	set := map[string]bool{}
	for _, r := range roles {
		for _, e := range s.roles[r] {
			set[e] = true
		}
	}
	eff := make([]string, 0, len(set))
	for r := range set {
		eff = append(eff, r)
	}
	sort.Strings(eff)
	if attrs == nil {
		attrs = map[string]any{}
	}
	return &User{ID: id, Roles: eff, Attrs: attrs, MFA: mfa, AuthTime: authTime}
}

// activation gives CEL its variables for one request (and, for record
// conditions, one record).
type activation struct {
	user    *celUser
	request *celRequest
	now     time.Time
	claims  map[string]any
	record  ref.Val
}

// ResolveName implements interpreter.Activation.
func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case varUser:
		return a.user, a.user != nil
	case varRequest:
		return a.request, a.request != nil
	case varNow:
		return a.now, !a.now.IsZero()
	case varClaims:
		return a.claims, a.claims != nil
	case varRecord:
		return a.record, a.record != nil
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (a *activation) Parent() interpreter.Activation { return nil }

// withRecord is a copy of a that also holds a record's raw JSON.
func (a *activation) withRecord(raw []byte) *activation {
	b := *a
	b.record = &jsonMap{raw: string(raw)}
	return &b
}
