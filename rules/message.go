package rules

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// This file writes the sentences a refused user reads (Decision.Message,
// BodyError.Message, Block.Message). They say in words why and what to do
// next, and never show a CEL expression: the technical reason stays in
// Reason (for the audit and the administrator). An operator's `message:`
// (on a route, its `when`, `mfa`, `export` or a body guard) wins over the
// generated default.

// refuse finishes a decision that is not an allow, with a message for the
// user (the generated default when message is empty).
func (d *Decision) refuse(o Outcome, status int, reason, message string) *Decision {
	d.Message = message
	return d.finish(o, status, reason)
}

// defaultMessage is the message of a refusal nothing more specific
// described.
func (d *Decision) defaultMessage() string {
	if d.route != nil && d.route.message != "" && d.Outcome == Deny && d.Status == http.StatusForbidden {
		return d.route.message
	}
	switch d.Outcome {
	case SignIn:
		return "Sign in to continue."
	case StepUp:
		return "Sign in again with your second factor to continue."
	}
	switch d.Status {
	case http.StatusBadRequest:
		return "This request cannot be checked by the access rules, so it is refused."
	case http.StatusServiceUnavailable:
		return "This cannot be checked right now. Try again in a few minutes."
	}
	if d.route == nil {
		return "This address is not covered by the CRM's access rules, so it is closed."
	}
	return "The CRM's access rules do not allow this."
}

// routeMessage is the route's own message, or def.
func routeMessage(rt *route, def string) string {
	if rt != nil && rt.message != "" {
		return rt.message
	}
	return def
}

// roleMessage says that the user's roles do not open the route.
func roleMessage(rt *route, u *User) string {
	return routeMessage(rt, fmt.Sprintf("%s may not use %s.", yourRoles(u), routeWhat(rt)))
}

// whenMessage says why the route's `when` does not hold: the schedules
// it names, described in words, or a general sentence.
func whenMessage(rt *route, s *Set) string {
	if rt.whenMessage != "" {
		return rt.whenMessage
	}
	if rt.message != "" {
		return rt.message
	}
	if names := rt.when.ScheduleNames(); len(names) > 0 {
		var open []string
		for _, n := range names {
			if sc, ok := s.schedules[n]; ok {
				open = append(open, sc.describe())
			}
		}
		if len(open) > 0 {
			return fmt.Sprintf("%s open %s.", routeOpenSubject(rt), strings.Join(open, ", or "))
		}
	}
	return fmt.Sprintf("The access rules do not allow %s for you at the moment.", routeWhat(rt))
}

// stepUpMessage asks for a new sign-in.
func stepUpMessage(rt *route, mfa bool, maxAge time.Duration) string {
	if rt != nil && rt.mfaMessage != "" {
		return rt.mfaMessage
	}
	what := "continue"
	if rt != nil && rt.description != "" {
		what = "open " + rt.description
	}
	switch {
	case maxAge > 0:
		return fmt.Sprintf("Sign in again with your second factor to %s (it needs a sign-in within the last %s).", what, words(maxAge))
	case mfa:
		return fmt.Sprintf("Sign in again with your second factor to %s.", what)
	}
	return "Sign in again to " + what + "."
}

// approvalMessage says that the route's export needs an approval and how
// to get one.
func (d *Decision) approvalMessage(rt *route) string {
	if rt == nil || rt.export == nil {
		return "This export needs approval."
	}
	if rt.export.message != "" {
		return rt.export.message
	}
	if rt.message != "" {
		return rt.message
	}
	p, ok := d.set.approvals[rt.export.policy]
	if !ok {
		return "This export needs an approval, and none can be requested for it here. Ask your CRM administrator."
	}
	return fmt.Sprintf("This export needs approval (policy %s: %s). Request it%s.", p.Name, p.Description, withPurpose(p))
}

// withPurpose ends "Request it" when the policy wants a purpose.
func withPurpose(p *ApprovalPolicy) string {
	if p.PurposeRequired {
		return " with a purpose"
	}
	return ""
}

// guardMessage says that a body field may not be changed.
func guardMessage(rt *route, g *bodyGuard) string {
	if g != nil && g.message != "" {
		return g.message
	}
	if rt != nil && rt.message != "" {
		return rt.message
	}
	field := "this field"
	if g != nil {
		field = "the field " + g.path
	}
	return fmt.Sprintf("You may not change %s here.", field)
}

// valueMessage says that a body field may not be set to the value sent,
// and, when the guard names an approval policy, how to get the change
// approved.
func (d *Decision) valueMessage(g *bodyGuard) string {
	if g.message != "" {
		return g.message
	}
	if d.route != nil && d.route.message != "" {
		return d.route.message
	}
	msg := fmt.Sprintf("You may not set the field %s to this value here.", g.path)
	if g.approval != "" {
		msg += " " + d.writeApprovalMessage(g.approval)
	}
	return msg
}

// writeApprovalMessage says which approval lets a write's values through.
func (d *Decision) writeApprovalMessage(policy string) string {
	p, ok := d.set.approvals[policy]
	if !ok {
		return "It needs an approval, and none can be requested for it here. Ask your CRM administrator."
	}
	return fmt.Sprintf("With an approval (policy %s: %s) for exactly this change you may: request it%s.", p.Name, p.Description, withPurpose(p))
}

// bodyMessage is the message of a refused request body.
func (d *Decision) bodyMessage(be *BodyError) string {
	switch be.Status {
	case http.StatusForbidden:
		if d.route != nil {
			for _, g := range d.guards {
				if g.path == be.Field {
					return guardMessage(d.route, g)
				}
			}
			for _, g := range d.valueGuards {
				if g.path == be.Field {
					return d.valueMessage(g)
				}
			}
		}
		return guardMessage(d.route, nil)
	case http.StatusServiceUnavailable:
		return "Approvals cannot be checked right now. Try again in a few minutes."
	case http.StatusRequestEntityTooLarge:
		return "The request is too large to be checked."
	}
	return "This request's content cannot be checked by the access rules, so it is refused."
}

// blockMessage is the message of an answer the rules withhold.
func (d *Decision) blockMessage(status int) string {
	switch {
	case status == http.StatusForbidden && d.Audit.Export.TooMany:
		return "This answer holds more records than one page may show. Narrow the search, or ask for an export."
	case status == http.StatusForbidden && d.Audit.Export.Download:
		return "This answer is a download, and downloads are only allowed from export pages."
	case status == http.StatusForbidden && d.grant != nil && !d.grant.used:
		return "This export's approval was not used, so its answer is withheld."
	case status == http.StatusNotFound:
		return "Not found."
	case status >= 500:
		return "The CRM's answer could not be checked, so it is withheld."
	}
	return "The CRM's answer is withheld by the access rules."
}

// routeWhat names a route for a sentence: its description, or what kind
// of route it is.
func routeWhat(rt *route) string {
	switch {
	case rt == nil:
		return "this"
	case rt.description != "":
		return rt.description
	case rt.export != nil:
		return "this export"
	case rt.writes():
		return "this change"
	}
	return "this part of the CRM"
}

// routeOpenSubject starts "… open Monday to Friday".
func routeOpenSubject(rt *route) string {
	switch {
	case rt.export != nil:
		return "Exports are"
	case rt.writes():
		return "Changes here are"
	}
	return "This part of the CRM is"
}

// writes reports whether the route matches only methods that change data.
func (rt *route) writes() bool {
	if len(rt.methods) == 0 {
		return false
	}
	for _, m := range rt.methods {
		if m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions {
			return false
		}
	}
	return true
}

// yourRoles is "Your role (sales)" or "Your roles (sales, service)".
func yourRoles(u *User) string {
	switch {
	case u == nil:
		return "An anonymous user"
	case len(u.Roles) == 0:
		return "Your account (with no CRM role)"
	case len(u.Roles) == 1:
		return "Your role (" + u.Roles[0] + ")"
	}
	return "Your roles (" + strings.Join(u.Roles, ", ") + ")"
}

var dayWords = [7]string{"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"}

// describe says when a schedule is open: "Monday to Friday, 08:00-20:00
// (Asia/Shanghai)".
func (s *schedule) describe() string {
	days := describeDays(s.days)
	var hours []string
	for _, sp := range s.spans {
		if sp.start == 0 && sp.end == 1440 {
			continue
		}
		hours = append(hours, fmt.Sprintf("%s-%s", clock(sp.start), clock(sp.end%1440)))
	}
	out := days
	if len(hours) > 0 {
		out += ", " + strings.Join(hours, " and ")
	} else {
		out += ", all day"
	}
	return out + " (" + s.loc.String() + ")"
}

func clock(m int) string {
	if m == 1440 {
		return "24:00"
	}
	return fmt.Sprintf("%02d:%02d", m/60, m%60)
}

// describeDays says which days of the week are open, from Monday: runs of
// three or more days become "Monday to Friday".
func describeDays(days [7]bool) string {
	all := true
	for _, d := range days {
		all = all && d
	}
	if all {
		return "every day"
	}
	// Walk the week from Monday, or from the start of a run that goes
	// over Sunday into Monday (fri-mon reads "Friday to Monday").
	start := int(time.Monday)
	for days[time.Monday] && days[(start+6)%7] {
		start = (start + 6) % 7
	}
	var parts []string
	for i := 0; i < 7; {
		d := (start + i) % 7
		if !days[d] {
			i++
			continue
		}
		j := i
		for j+1 < 7 && days[(start+j+1)%7] {
			j++
		}
		first, last := dayWords[d], dayWords[(start+j)%7]
		switch j - i {
		case 0:
			parts = append(parts, first)
		case 1:
			parts = append(parts, first, last)
		default:
			parts = append(parts, first+" to "+last)
		}
		i = j + 1
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

// words writes a duration for people: "5 minutes", "24 hours", "1 hour 30
// minutes".
func words(d time.Duration) string {
	if d < time.Minute {
		return plural(int(d.Round(time.Second)/time.Second), "second")
	}
	var parts []string
	if days := int(d / (24 * time.Hour)); days > 0 && d%(24*time.Hour) == 0 {
		return plural(days, "day")
	}
	if h := int(d / time.Hour); h > 0 {
		parts = append(parts, plural(h, "hour"))
	}
	if m := int(d % time.Hour / time.Minute); m > 0 {
		parts = append(parts, plural(m, "minute"))
	}
	return strings.Join(parts, " ")
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
