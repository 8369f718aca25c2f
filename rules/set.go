package rules

import (
	"maps"
	"slices"
	"sort"
	"sync"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/mask"
)

// Set is a compiled, immutable rule set, safe for concurrent use.
type Set struct {
	file      string
	defAllow  bool
	mode      Mode
	subject   subjectSpec
	roleMap   map[string][]string // IdP group -> roles; nil: groups are role names
	roles     map[string][]string // declared role -> effective roles (itself and every ancestor), sorted
	mfa       MFAPolicy
	schedules map[string]*schedule
	masks     map[string]mask.Func
	routes    []*route
	// approvals and elevations are the workflow blocks (approvals.go).
	approvals  map[string]*ApprovalPolicy
	elevations map[string]*Elevation
	// limits are the usage limits in file order; anyRouteLimits those
	// without routes, which also cover requests no route matches.
	limits         []*Limit
	anyRouteLimits []*Limit
	warnings       []Warning
	hashKey        []byte
	version        string // load_version.go
	env            *cond.Env
	plans          sync.Map // planKey -> *sync.Pool of *pooledPlan (see response.go)
}

// Warnings lists the lint warnings found when the set was loaded.
func (s *Set) Warnings() []Warning { return append([]Warning(nil), s.warnings...) }

// Warning is a lint finding that does not stop the file from loading.
type Warning struct {
	Position
	// Msg says what looks wrong.
	Msg string
}

// Version names the rule file's content (comments and layout aside): the
// audit log's rules_version. Two files with one version say the same.
func (s *Set) Version() string { return s.version }

// Mode is the rule set's mode.
func (s *Set) Mode() Mode { return s.mode }

// MFA is the rule set's MFA policy.
func (s *Set) MFA() MFAPolicy {
	p := s.mfa
	p.AMR = append([]string(nil), p.AMR...)
	p.ACR = append([]string(nil), p.ACR...)
	return p
}

// Roles lists the declared roles, sorted.
func (s *Set) Roles() []string { return slices.Sorted(maps.Keys(s.roles)) }

// Routes lists the routes in match order, for `crmguard rules explain`.
func (s *Set) Routes() []RouteInfo {
	out := make([]RouteInfo, len(s.routes))
	for i, r := range s.routes {
		ri := RouteInfo{ID: r.id, Methods: append([]string(nil), r.methods...), Public: r.public, Authenticated: r.anyUser,
			Allow: append([]string(nil), r.allow...), Deny: r.deny, Export: r.export != nil, Rewrites: r.rewrites}
		if r.export != nil && r.export.approval {
			ri.ApprovalNeeded, ri.Approval = true, r.export.policy
			ri.WithoutApproval = append([]string(nil), r.export.withoutApproval...)
		}
		if r.pattern != nil {
			ri.Path = r.pattern.String()
		}
		if r.when != nil {
			ri.When = r.when.Source()
		}
		for _, g := range r.body {
			ri.BodyGuards = append(ri.BodyGuards, g.path)
		}
		sort.Strings(ri.BodyGuards)
		out[i] = ri
	}
	return out
}

// RouteInfo describes one route for tools (`crmguard rules explain`).
type RouteInfo struct {
	// ID is the route id.
	ID string
	// Methods are the matched methods (empty: all).
	Methods []string
	// Path is the path pattern.
	Path string
	// Public is true for `allow: public`.
	Public bool
	// Authenticated is true when any signed-in user is allowed.
	Authenticated bool
	// Allow lists the allowed roles.
	Allow []string
	// Deny is the reason of a route that always denies.
	Deny string
	// When is the route's condition source.
	When string
	// Export is true for export routes.
	Export bool
	// ApprovalNeeded is true when the export needs a grant (unless the
	// role is in WithoutApproval).
	ApprovalNeeded bool
	// Approval names the approval policy that grants it ("" for
	// approval: true, which names none).
	Approval string
	// WithoutApproval lists the roles that export without a grant.
	WithoutApproval []string
	// Rewrites is true when answers are rewritten (records / record).
	Rewrites bool
	// BodyGuards lists the guarded request-body fields.
	BodyGuards []string
}
