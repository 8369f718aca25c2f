package rules

import (
	"fmt"
	"slices"
	"strings"
)

// RoleChange is what a new version of a rule file changes for one role,
// as the permission matrix (Access) sees it.
type RoleChange struct {
	// Role is the role.
	Role string `json:"role"`
	// Status is "added" or "removed" for a role declared in one version
	// only; empty otherwise.
	Status string `json:"status,omitempty"`
	// Added and Removed are the routes the role may now call, and may call
	// no more.
	Added   []string `json:"added,omitempty"`
	Removed []string `json:"removed,omitempty"`
	// Changed are the routes the role may still call on other terms.
	Changed []RouteChange `json:"changed,omitempty"`
}

// RouteChange says what changed on a route for a role.
type RouteChange struct {
	// Route is the route's id.
	Route string `json:"route"`
	// What lists the terms that changed: methods, path, when, records,
	// sign-in, export, changes, fields, body, query (the parameters that
	// pass), forward_query, limits.
	What []string `json:"what"`
}

// String says the change in one line.
func (c RoleChange) String() string {
	var parts []string
	if c.Status != "" {
		parts = append(parts, "role "+c.Status)
	}
	if len(c.Added) > 0 {
		parts = append(parts, "may now call "+strings.Join(c.Added, ", "))
	}
	if len(c.Removed) > 0 {
		parts = append(parts, "may no longer call "+strings.Join(c.Removed, ", "))
	}
	for _, r := range c.Changed {
		parts = append(parts, fmt.Sprintf("%s: %s changed", r.Route, strings.Join(r.What, ", ")))
	}
	return c.Role + ": " + strings.Join(parts, "; ")
}

// DiffAccess lists, per role, what changes from old to new in what the
// role may do (routes by id); roles without a change are left out.
func DiffAccess(old, new *Set) []RoleChange {
	roles := append(old.Roles(), new.Roles()...)
	slices.Sort(roles)
	roles = slices.Compact(roles)
	var out []RoleChange
	for _, role := range roles {
		_, inOld := old.roles[role]
		_, inNew := new.roles[role]
		c := RoleChange{Role: role}
		switch {
		case !inOld:
			c.Status = "added"
		case !inNew:
			c.Status = "removed"
		}
		before, after := allowedByRoute(old, role, inOld), allowedByRoute(new, role, inNew)
		for _, ri := range new.routes {
			a, ok := after[ri.id]
			if !ok {
				continue
			}
			b, had := before[ri.id]
			if !had {
				c.Added = append(c.Added, ri.id)
				continue
			}
			if what := accessDiff(b, a); len(what) > 0 {
				c.Changed = append(c.Changed, RouteChange{Route: ri.id, What: what})
			}
		}
		for _, ri := range old.routes {
			if _, ok := before[ri.id]; ok {
				if _, still := after[ri.id]; !still {
					c.Removed = append(c.Removed, ri.id)
				}
			}
		}
		if c.Status != "" || len(c.Added)+len(c.Removed)+len(c.Changed) > 0 {
			out = append(out, c)
		}
	}
	return out
}

// allowedByRoute maps the routes role may call in s to their Access.
func allowedByRoute(s *Set, role string, declared bool) map[string]Access {
	out := map[string]Access{}
	if !declared {
		return out
	}
	for _, a := range s.Access(role) {
		if a.Allowed {
			out[a.Route] = a
		}
	}
	return out
}

// accessDiff names the terms on which a and b differ.
func accessDiff(a, b Access) []string {
	var what []string
	add := func(name string, differ bool) {
		if differ {
			what = append(what, name)
		}
	}
	add("methods", !slices.Equal(a.Methods, b.Methods))
	add("path", a.Path != b.Path)
	add("when", a.When.String() != b.When.String())
	add("records", a.Records.String() != b.Records.String())
	add("sign-in", a.MFA != b.MFA || a.MaxAge != b.MaxAge || a.Public != b.Public)
	add("export", a.Export != b.Export || a.ApprovalNeeded != b.ApprovalNeeded || a.Approval != b.Approval)
	add("changes", a.Changes.String() != b.Changes.String())
	add("fields", fmt.Sprint(a.Fields) != fmt.Sprint(b.Fields))
	add("body", !slices.Equal(a.Body, b.Body))
	add("query", a.QueryGuarded != b.QueryGuarded || fmt.Sprint(a.Params) != fmt.Sprint(b.Params))
	add("forward_query", fmt.Sprint(a.Forward) != fmt.Sprint(b.Forward))
	add("limits", fmt.Sprint(a.Limits) != fmt.Sprint(b.Limits))
	return what
}
