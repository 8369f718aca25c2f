package rulescli

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/crmguard/crmguard/rules"
)

// CaseGrant is an approved grant a case's user holds (an export's, or a
// write's bound to the values it sets), so rule files with `export:
// {approval: NAME}` or a body guard's `approval: NAME` stay testable
// offline. The runner hands
// the case's grants to the guard through the same rules.GrantSource
// interface the server's store implements.
type CaseGrant struct {
	// ID names the grant in the audit event (default "grant-1", "grant-2"...).
	ID string `yaml:"id"`
	// User is the id of the user holding it (default: the case's user).
	User string `yaml:"user"`
	// Route is the id of the route it was asked for.
	Route string `yaml:"route"`
	// Method is the method of the approved request (default GET).
	Method string `yaml:"method"`
	// Path is the approved request target: path and query, as sent. It
	// is compared in canonical form (rules.CanonicalRequest).
	Path string `yaml:"path"`
	// Values are the body values a write's approval is bound to (a body
	// guard's `approval`): {owner_id: wang}, and "@ids" for a bulk
	// write's ids; compared in canonical form (rules.CanonicalWrite).
	Values map[string]any `yaml:"values"`
	// Policy is the approval policy it was granted under.
	Policy string `yaml:"policy"`
	// Purpose is the requester's stated purpose.
	Purpose string `yaml:"purpose"`
	// Approvers are the ids of the approvers, in step order.
	Approvers []string `yaml:"approvers"`
	// UsesLeft is how many uses remain (default 1; 0: used up).
	UsesLeft *int `yaml:"uses_left"`
	// Expires is when it ends (RFC 3339; default: after the case).
	Expires string `yaml:"expires"`
}

// CaseElevation is the active elevation of a case's user: `elevation:
// NAME` or `elevation: {name: NAME, reason: "..."}`.
type CaseElevation struct {
	// Name is the elevation's name under elevations.
	Name string `yaml:"name"`
	// Reason is the reason given when it started.
	Reason string `yaml:"reason"`
}

// UnmarshalYAML accepts a name alone or a mapping.
func (e *CaseElevation) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		e.Name = n.Value
		return nil
	}
	type plain CaseElevation
	return n.Decode((*plain)(e))
}

// caseGrants is the runner's in-memory grant source for one case.
type caseGrants struct {
	mu     sync.Mutex
	grants []*heldGrant
}

type heldGrant struct {
	rules.Grant
	user, route, request string
}

// newCaseGrants checks a case's grants and binds each to its canonical
// request.
func newCaseGrants(gs []CaseGrant, caseUser *User, now time.Time) (*caseGrants, error) {
	src := &caseGrants{}
	for i, g := range gs {
		h := &heldGrant{Grant: rules.Grant{ID: g.ID, Policy: g.Policy, Purpose: g.Purpose, Approvers: g.Approvers, UsesLeft: 1, Expires: now.Add(time.Hour)}, user: g.User, route: g.Route}
		if h.ID == "" {
			h.ID = fmt.Sprintf("grant-%d", i+1)
		}
		if h.user == "" && caseUser != nil {
			h.user = caseUser.ID
		}
		if g.UsesLeft != nil {
			h.UsesLeft = *g.UsesLeft
		}
		if g.Expires != "" {
			t, err := time.Parse(time.RFC3339, g.Expires)
			if err != nil {
				return nil, fmt.Errorf("grants[%d].expires %q is not RFC 3339: %w", i, g.Expires, err)
			}
			h.Expires = t
		}
		switch {
		case h.user == "":
			return nil, fmt.Errorf("grants[%d]: the case has no user; say whose grant it is (user)", i)
		case g.Route == "" || g.Policy == "" || g.Path == "":
			return nil, fmt.Errorf("grants[%d]: a grant needs route, path and policy", i)
		}
		method := g.Method
		if method == "" {
			method = "GET"
		}
		canon, err := rules.CanonicalWrite(method, g.Path, g.Values)
		if err != nil {
			return nil, fmt.Errorf("grants[%d]: %w", i, err)
		}
		h.request = canon
		src.grants = append(src.grants, h)
	}
	return src, nil
}

// FindGrant implements rules.GrantSource.
func (s *caseGrants) FindGrant(_ context.Context, q rules.GrantQuery) (*rules.Grant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.grants {
		if h.matches(q) {
			g := h.Grant
			return &g, nil
		}
	}
	return nil, nil
}

// UseGrant implements rules.GrantSource.
func (s *caseGrants) UseGrant(_ context.Context, q rules.GrantQuery, id string) (*rules.Grant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.grants {
		if h.ID == id && h.matches(q) {
			h.UsesLeft--
			g := h.Grant
			return &g, nil
		}
	}
	return nil, fmt.Errorf("rulescli: grant %s: %w", id, rules.ErrGrantGone)
}

func (h *heldGrant) matches(q rules.GrantQuery) bool {
	return h.user == q.Requester && h.route == q.Route && h.Policy == q.Policy && h.request == q.Request &&
		h.UsesLeft > 0 && q.Now.Before(h.Expires)
}

// elevate applies a case's active elevation to the resolved user, as the
// guard does for a session with an active elevation (rules.Set.Elevate).
func elevate(set *rules.Set, u *rules.User, e *CaseElevation) (*rules.User, error) {
	if e == nil {
		return u, nil
	}
	el, ok := set.Elevation(e.Name)
	if !ok {
		return nil, fmt.Errorf("rulescli: elevation %q is not in the rule file (elevations: %v)", e.Name, set.Elevations())
	}
	if u == nil {
		return nil, fmt.Errorf("rulescli: elevation %s needs a signed-in user", e.Name)
	}
	may := false
	for _, r := range el.For {
		may = may || u.HasRole(r)
	}
	if !may {
		return nil, fmt.Errorf("rulescli: the case's user (roles %v) may not start elevation %s (for %v)", u.Roles, e.Name, el.For)
	}
	return set.Elevate(u, el.Grant), nil
}
