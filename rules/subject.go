package rules

import (
	"fmt"
	"sort"
	"time"

	"github.com/crmguard/crmguard/rules/internal/cond"
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
	act := &cond.Activation{Claims: claims}
	idv, err := s.subject.id.Eval(act)
	if err != nil {
		return nil, fmt.Errorf("rules: subject.id (%s): %w", s.subject.id.Source(), err)
	}
	id, ok := idv.Native().(string)
	if !ok || id == "" {
		return nil, fmt.Errorf("rules: subject.id (%s) gave %v, not a non-empty string", s.subject.id.Source(), idv.Native())
	}
	var groups []string
	if rv, err := s.subject.roles.Eval(act); err == nil {
		groups, err = rv.Strings()
		if err != nil {
			return nil, fmt.Errorf("rules: subject.roles (%s): %w", s.subject.roles.Source(), err)
		}
	}
	attrs := make(map[string]any, len(s.subject.attrs))
	for _, a := range s.subject.attrs {
		if v, err := a.e.Eval(act); err == nil {
			attrs[a.name] = v.Native()
		}
	}
	return s.UserFromGroups(id, groups, attrs, mfa, authTime), nil
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
