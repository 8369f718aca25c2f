package auditcli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/crmguard/crmguard/rules"
)

// ReviewOptions is what `crmguard audit review` is asked for.
type ReviewOptions struct {
	// RulesFile is the rule file whose grants are reviewed.
	RulesFile string
	// HashKey is the key of the rules' hash action ("" loads with a
	// placeholder: the review does not hash).
	HashKey string
	// Since is the review window: "90d", a Go duration ("2160h"), or a
	// date (YYYY-MM-DD, in the machine's zone) or RFC 3339 time.
	Since string
	// Now ends the window (RFC 3339); empty: now.
	Now string
	// Format is text (default) or json.
	Format string
	// Progress receives progress lines on large inputs (nil: none).
	Progress io.Writer
}

// Review is an access review: what the rule file grants that the audit
// log shows nobody used, and what needs a reviewer's attention.
type Review struct {
	// From and To bound the window.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Rules is the rule file reviewed.
	Rules string `json:"rules"`
	// InWindow counts the events in the window (rule file reloads, which
	// are no requests, left out).
	InWindow int64 `json:"events_in_window"`
	// UnusedRoles are declared roles no request in the window carried.
	UnusedRoles []string `json:"unused_roles"`
	// UnusedRoutes are routes no request in the window was allowed on.
	UnusedRoutes []string `json:"unused_routes"`
	// UnusedGrants lists, per role, the routes the role may call and no
	// holder of the role was allowed on in the window.
	UnusedGrants []RoleRoutes `json:"unused_grants"`
	// UsersNotSeen are users of older events with no event in the window.
	UsersNotSeen []UserSeen `json:"users_not_seen"`
	// ElevationsNotReviewed are elevations used with no review recorded.
	ElevationsNotReviewed []ElevationUse `json:"elevations_not_reviewed"`
	// GrantsNeverUsed are approved grants no export or write used.
	GrantsNeverUsed []GrantApproved `json:"grants_never_used"`
}

// RoleRoutes is a role and routes.
type RoleRoutes struct {
	// Role is the role's name.
	Role string `json:"role"`
	// Routes are the routes' ids.
	Routes []string `json:"routes"`
}

// UserSeen is a user and when they were last seen.
type UserSeen struct {
	// User is the user's id.
	User string `json:"user"`
	// LastSeen is the time of the user's last request (RFC 3339).
	LastSeen string `json:"last_seen"`
}

// ElevationUse is one elevation as the events show it.
type ElevationUse struct {
	// ID is the elevation's id, Name the rule file's elevation, User who
	// was elevated and Reason the reason they gave.
	ID     string `json:"id"`
	Name   string `json:"name"`
	User   string `json:"user"`
	Reason string `json:"reason"`
	// First and Last are the first and last events that carry the
	// elevation; Requests counts them.
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
	Requests int       `json:"requests"`
	// ReviewBy are the roles that review it (from the rule file).
	ReviewBy []string `json:"review_by,omitempty"`
}

// GrantApproved is an approval that was granted.
type GrantApproved struct {
	// ID is the approval request's id.
	ID string `json:"id"`
	// Approved is the time of its last approval event.
	Approved time.Time `json:"approved"`
	// By are the users who approved it.
	By []string `json:"approved_by"`
}

// parseSince reads the start of the window.
func parseSince(s string, now time.Time) (time.Time, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n > 0 {
			return now.AddDate(0, 0, -n), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, time.Local); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want 90d, a duration (2160h), a date (YYYY-MM-DD) or an RFC 3339 time", s)
}

// reviewer adds the events up.
type reviewer struct {
	from, to time.Time
	interner
	used      map[[2]string]bool // role, route: a holder was allowed on it in the window
	routeUsed map[string]bool
	roleSeen  map[string]bool
	lastSeen  map[string]time.Time // user -> last event (any time)
	inWindow  map[string]bool      // user -> seen in the window
	elevs     map[string]*ElevationUse
	reviewed  map[string]bool
	approved  map[string]*GrantApproved
	granted   map[string]bool // approval ids whose last step was approved
	grantUsed map[string]bool
	events    int64
	ev        event
}

func (c *reviewer) add(raw []byte) {
	e := &c.ev
	parseEvent(raw, e, false)
	if e.badTime || e.time.After(c.to) || e.decision == "reload" {
		return // a rule file reload is not a request: nobody used anything
	}
	inWindow := !e.time.Before(c.from)
	// Reviews, approvals and grant uses count whenever they happened up
	// to the end of the window: a review after the window still reviews.
	action, id, status := e.workflow()
	switch {
	case action == "elevation reviewed":
		c.reviewed[c.intern(id)] = true
	case action == "approval approved":
		g := c.approved[id]
		if g == nil {
			g = &GrantApproved{ID: c.intern(id), Approved: e.time}
			c.approved[g.ID] = g
		}
		if e.user != "" && !slices.Contains(g.By, e.user) {
			g.By = append(g.By, c.intern(e.user))
		}
		if e.time.After(g.Approved) {
			g.Approved = e.time
		}
		// "pending" after an earlier step: granted only by the last one
		// (events written before `workflow` existed say nothing).
		if status == "" || status == "approved" {
			c.granted[g.ID] = true
		}
	}
	// A grant is used by the export it allowed, or by the write whose
	// value a body guard's approval let through (a handover).
	if gid := e.grant.Get("id").Str; gid != "" && (e.isExport() || e.decision == "allow") {
		c.grantUsed[c.intern(gid)] = true
	}
	if e.elevation.IsObject() {
		id := e.elevation.Get("id").Str
		el := c.elevs[id]
		if el == nil {
			el = &ElevationUse{ID: c.intern(id), Name: c.intern(e.elevation.Get("name").Str), User: c.intern(e.user),
				Reason: c.intern(e.elevation.Get("reason").Str), First: e.time}
			c.elevs[el.ID] = el
		}
		el.Requests++
		if e.time.Before(el.First) {
			el.First = e.time
		}
		if e.time.After(el.Last) {
			el.Last = e.time
		}
	}
	if e.user != "" {
		if t, ok := c.lastSeen[e.user]; !ok || e.time.After(t) {
			c.lastSeen[c.intern(e.user)] = e.time
		}
		if inWindow {
			c.inWindow[c.intern(e.user)] = true
		}
	}
	if !inWindow {
		return
	}
	c.events++
	eachString(e.roles, func(r string) { c.roleSeen[c.intern(r)] = true })
	if e.decision != "allow" || e.route == "" {
		return
	}
	c.routeUsed[c.intern(e.route)] = true
	eachString(e.roles, func(r string) { c.used[[2]string{c.intern(r), c.intern(e.route)}] = true })
}

// BuildReview reads files and reviews the rule file's grants against them.
func BuildReview(o ReviewOptions, files []string) (*Review, error) {
	key := o.HashKey
	if key == "" {
		key = "crmguard audit review: no hashing"
	}
	set, err := rules.LoadFile(o.RulesFile, rules.WithHashKey([]byte(key)))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if o.Now != "" {
		if now, err = time.Parse(time.RFC3339, o.Now); err != nil {
			return nil, fmt.Errorf("--now %q: %w", o.Now, err)
		}
	}
	from, err := parseSince(o.Since, now)
	if err != nil {
		return nil, err
	}
	c := &reviewer{from: from, to: now, interner: interner{}, used: map[[2]string]bool{}, routeUsed: map[string]bool{},
		roleSeen: map[string]bool{}, lastSeen: map[string]time.Time{}, inWindow: map[string]bool{}, elevs: map[string]*ElevationUse{},
		reviewed: map[string]bool{}, approved: map[string]*GrantApproved{}, granted: map[string]bool{}, grantUsed: map[string]bool{}}
	if _, err := scanFiles(files, o.Progress, c.add); err != nil {
		return nil, err
	}
	r := &Review{From: from, To: now, Rules: o.RulesFile, InWindow: c.events}
	for _, role := range set.Roles() {
		if !c.roleSeen[role] {
			r.UnusedRoles = append(r.UnusedRoles, role)
		}
		var unused []string
		for _, a := range set.Access(role) {
			if a.Allowed && !a.Public && !c.used[[2]string{role, a.Route}] {
				unused = append(unused, a.Route)
			}
		}
		if len(unused) > 0 {
			r.UnusedGrants = append(r.UnusedGrants, RoleRoutes{Role: role, Routes: unused})
		}
	}
	for _, ri := range set.Routes() {
		if !c.routeUsed[ri.ID] {
			r.UnusedRoutes = append(r.UnusedRoutes, ri.ID)
		}
	}
	for _, u := range sortedKeys(c.lastSeen) {
		if !c.inWindow[u] {
			r.UsersNotSeen = append(r.UsersNotSeen, UserSeen{User: u, LastSeen: c.lastSeen[u].Format(time.RFC3339)})
		}
	}
	for _, id := range sortedKeys(c.elevs) {
		if c.reviewed[id] {
			continue
		}
		el := *c.elevs[id]
		if def, ok := set.Elevation(el.Name); ok {
			el.ReviewBy = def.ReviewBy
		}
		r.ElevationsNotReviewed = append(r.ElevationsNotReviewed, el)
	}
	for _, id := range sortedKeys(c.approved) {
		if c.granted[id] && !c.grantUsed[id] {
			r.GrantsNeverUsed = append(r.GrantsNeverUsed, *c.approved[id])
		}
	}
	return r, nil
}

// ReviewCommand builds the review and prints it. It returns the exit
// code: 0, or 2 on a usage or read error.
func ReviewCommand(o ReviewOptions, files []string, out, errOut io.Writer) int {
	if len(files) == 0 {
		fmt.Fprintln(errOut, "error: no audit files given")
		return 2
	}
	if o.Format != "" && o.Format != "text" && o.Format != "json" {
		fmt.Fprintf(errOut, "error: --format %q: want text or json\n", o.Format)
		return 2
	}
	r, err := BuildReview(o, files)
	if err != nil {
		fmt.Fprintf(errOut, "error: %v\n", err)
		return 2
	}
	if o.Format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		err = enc.Encode(r)
	} else {
		err = r.text(out)
	}
	if err != nil {
		fmt.Fprintf(errOut, "error: writing the review: %v\n", err)
		return 2
	}
	return 0
}

func (r *Review) text(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	list := func(s []string) string { return cmpOr(strings.Join(s, ", "), "none") }
	p("Access review of %s, %s to %s: %d events in the window\n\n", r.Rules, r.From.Format(time.RFC3339), r.To.Format(time.RFC3339), r.InWindow)
	p("Roles no request carried:\t%s\n", list(r.UnusedRoles))
	p("Routes nobody was allowed on:\t%s\n", list(r.UnusedRoutes))
	p("\nGranted but not used (no holder of the role was allowed on the route):\n")
	if len(r.UnusedGrants) == 0 {
		p("  none\n")
	}
	for _, g := range r.UnusedGrants {
		p("  %s:\t%s\n", g.Role, strings.Join(g.Routes, ", "))
	}
	p("\nUsers not seen in the window (last seen):\n")
	if len(r.UsersNotSeen) == 0 {
		p("  none\n")
	}
	for _, u := range r.UsersNotSeen {
		p("  %s\t%s\n", u.User, u.LastSeen)
	}
	p("\nElevations not reviewed:\n")
	if len(r.ElevationsNotReviewed) == 0 {
		p("  none\n")
	}
	for _, e := range r.ElevationsNotReviewed {
		p("  %s\t%s by %s\t%q\t%d requests, %s to %s\treview by %s\n", e.ID, e.Name, e.User, e.Reason, e.Requests,
			e.First.Format(time.RFC3339), e.Last.Format(time.RFC3339), list(e.ReviewBy))
	}
	p("\nGrants approved and never used:\n")
	if len(r.GrantsNeverUsed) == 0 {
		p("  none\n")
	}
	for _, g := range r.GrantsNeverUsed {
		p("  %s\tapproved %s by %s\n", g.ID, g.Approved.Format(time.RFC3339), list(g.By))
	}
	return w.Flush()
}
