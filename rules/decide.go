package rules

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/internal/urlpath"
)

// Decision is the rules' verdict on one request. It is used by one request
// only and is not safe for concurrent use.
type Decision struct {
	// Outcome is the kind of decision.
	Outcome Outcome
	// Status is the HTTP status a client gets when Outcome is not Allow.
	Status int
	// RouteID is the id of the matched route ("" when none matched).
	RouteID string
	// Reason is a sentence a person can read: the technical reason, for
	// the audit and the administrator (it may quote a rule's condition).
	Reason string
	// Message says in words, for the user, why the request is refused and
	// what to do next ("" when allowed): the operator's `message:` or a
	// default generated from schedules, roles and approval policies. It
	// never shows a rule's condition (message.go).
	Message string
	// Approval names the approval policy whose grant the request needs
	// from this user ("" when it needs none, or on `approval: true`, which
	// has no policy to request a grant under): the matched export route's,
	// set once every check before the grant passed; or a body guard's
	// `approval`, set when its allow_if refused the value the body sets
	// (CheckBody, JudgeTarget). It is set whether a grant was found or
	// not.
	Approval string
	// Grant is the grant the request used, once UseGrant succeeded.
	Grant *Grant
	// Public is true on a route that needs no sign-in.
	Public bool
	// Shadow is true when the rule set only reports: the caller must not
	// block or rewrite.
	Shadow bool
	// StepUp says what is missing when Outcome is StepUp or SignIn.
	StepUp StepUpNeed
	// Path is the normalised request path.
	Path string
	// Params are the path parameters captured by the route.
	Params map[string]string
	// Audit collects what happened; CheckBody, InspectResponse and
	// Rewrite add to it.
	Audit Audit

	set    *Set
	route  *route
	user   *User
	req    *Request
	act    *cond.Activation
	guards []*bodyGuard // body guards that apply to this user
	// pending are the guards whose deny_unless reads the body's values;
	// valueGuards those with allow_if; recordGuards those of valueGuards
	// whose field the body sets and whose allow_if reads record
	// (valueguard.go).
	pending, valueGuards, recordGuards []*bodyGuard
	// values are the values the body sets, once CheckBody read them (on
	// a route whose conditions read them).
	values map[string]any
	// bodyChecked is true once CheckBody passed.
	bodyChecked bool
	// bulkIDs are the ids a bulk write names and fetches the GETs of
	// their records, once CheckBody or CheckTargetBody read them
	// (bulk.go).
	bulkIDs []string
	fetches []TargetFetch
	// queryGuard is the guard a query parameter hit (noteGuards).
	queryGuard *bodyGuard
	// exportOK is true when the route is an export this user may run.
	exportOK bool
	// grant is the export grant found and still to be used (grants.go).
	grant *grantNeed
	// askValues are the values a write's approval binds, once the write
	// was refused for want of a usable grant of its body guard's approval
	// policy, or WriteGrantQuery was asked (ApprovalValues).
	askValues map[string]any
	// target is the record fetch an allowed request needs (target.go).
	target *TargetFetch
	// upstreamQuery is the query the CRM gets when scoped (the route's
	// forward_query set parameters; query.go).
	upstreamQuery string
	scoped        bool
	// limits are the usage limits that apply (limits.go), computed once
	// limitsDone is set.
	limits     []*Limit
	limitsDone bool
	// celVars holds what act points to, in the same allocation.
	celVars struct {
		act  cond.Activation
		req  cond.Request
		user cond.User
	}
}

// outcomeName is the audit spelling of an outcome.
func outcomeName(o Outcome) string {
	switch o {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	case SignIn:
		return "sign_in"
	case StepUp:
		return "step_up"
	}
	return "unknown"
}

func (d *Decision) finish(o Outcome, status int, reason string) *Decision {
	d.Outcome, d.Status, d.Reason = o, status, reason
	if o == Allow {
		d.Status = 0
		d.Message = ""
	} else if d.Message == "" {
		d.Message = d.defaultMessage() // message.go
	}
	d.Audit.Route = d.RouteID
	d.Audit.Decision = outcomeName(o)
	d.Audit.Reason = reason
	d.Audit.Shadow = d.Shadow
	return d
}

// Decide judges a request. u is nil for an anonymous request.
func (s *Set) Decide(u *User, r *Request) *Decision {
	d := &Decision{set: s, user: u, req: r, Shadow: s.mode == Shadow}
	if r == nil || r.URL == nil {
		return d.finish(Deny, http.StatusBadRequest, "the request has no URL")
	}
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	method := strings.ToUpper(r.Method)
	if !validMethod(method) {
		return d.finish(Deny, http.StatusBadRequest, fmt.Sprintf("the method %q cannot be judged", r.Method))
	}
	if r.URL.Opaque != "" {
		return d.finish(Deny, http.StatusBadRequest, "an opaque request URL cannot be judged")
	}
	path, segs, err := urlpath.Normalize(r.URL.EscapedPath())
	if err != nil {
		return d.finish(Deny, http.StatusBadRequest, strings.TrimPrefix(err.Error(), "urlpath: "))
	}
	d.Path = path
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return d.finish(Deny, http.StatusBadRequest, fmt.Sprintf("the query string cannot be judged: %v", err))
	}
	header := r.Header
	if header == nil {
		header = http.Header{}
	}

	fq := foldKeys(phpQueryNames(query))
	if bad := methodOverride(method, fq, header); bad != "" {
		return d.finish(Deny, http.StatusBadRequest, bad)
	}

	var rt *route
	params := map[string]string{}
	// fh is the headers by lower-case name, built for the first route
	// that matches on a header (most rule files have none).
	var fh map[string][]string
	for _, cand := range s.routes {
		clear(params)
		if fh == nil && len(cand.headers) > 0 {
			fh = foldKeys(header)
		}
		ok, bad := cand.matches(method, segs, fq, fh, params)
		if bad != "" {
			d.RouteID = cand.id
			return d.finish(Deny, http.StatusBadRequest, bad)
		}
		if ok {
			rt = cand
			break
		}
	}
	v := &d.celVars
	v.user = celUserOf(u, now)
	v.req.Init(method, path, params, query, header)
	v.act = cond.Activation{User: &v.user, Request: &v.req, Now: now}
	d.act = &v.act

	if rt == nil {
		if !s.defAllow {
			return d.finish(Deny, http.StatusForbidden, fmt.Sprintf("no route matches %s %s and the rule file denies by default", method, path))
		}
		// default: allow lets any signed-in user through, with the file's
		// MFA default, and no body guards or rewriting.
		if u == nil {
			d.StepUp = StepUpNeed{MFA: s.mfa.Required, ACR: append([]string(nil), s.mfa.ACR...)}
			return d.finish(SignIn, http.StatusUnauthorized, fmt.Sprintf("%s %s needs a signed-in user", method, path))
		}
		if s.mfa.Required && !u.MFA {
			d.StepUp = StepUpNeed{MFA: true, ACR: append([]string(nil), s.mfa.ACR...)}
			return d.finish(StepUp, http.StatusUnauthorized, "this sign-in did not use multi-factor authentication")
		}
		return d.finish(Allow, 0, fmt.Sprintf("no route matches %s %s and the rule file allows by default", method, path))
	}
	d.route, d.RouteID = rt, rt.id
	if len(params) > 0 {
		d.Params = params
	}
	if rt.deny != "" {
		return d.refuse(Deny, http.StatusForbidden, fmt.Sprintf("route %s: %s", rt.id, rt.deny), routeMessage(rt, rt.deny))
	}
	if rt.public {
		d.Public = true
		if rt.when != nil {
			if ok, reason := d.holds(rt); !ok {
				return d.refuse(Deny, http.StatusForbidden, reason, whenMessage(rt, s))
			}
		}
		if refused := d.checkRequest(rt); refused != nil {
			return refused
		}
		return d.finish(Allow, 0, fmt.Sprintf("route %s is public", rt.id))
	}
	required := s.mfa.Required
	if rt.mfaReq != nil {
		required = *rt.mfaReq
	} else if rt.maxAge > 0 {
		required = true
	}
	if u == nil {
		// Say what the sign-in must provide, so that the first sign-in
		// can already satisfy the route.
		d.StepUp = StepUpNeed{MFA: required, MaxAge: rt.maxAge, ACR: append([]string(nil), s.mfa.ACR...)}
		return d.finish(SignIn, http.StatusUnauthorized, fmt.Sprintf("route %s needs a signed-in user", rt.id))
	}
	if !rt.anyUser && !hasAny(u, rt.allow) {
		return d.refuse(Deny, http.StatusForbidden, fmt.Sprintf("%s may not call %s; allowed: %s", rolesPhrase(u), rt.id, strings.Join(rt.allow, ", ")), roleMessage(rt, u))
	}
	if rt.when != nil {
		if ok, reason := d.holds(rt); !ok {
			return d.refuse(Deny, http.StatusForbidden, reason, whenMessage(rt, s))
		}
	}
	// MFA and step-up.
	need := StepUpNeed{MaxAge: rt.maxAge, ACR: append([]string(nil), s.mfa.ACR...)}
	var missing []string
	if required && !u.MFA {
		need.MFA = true
		missing = append(missing, "this sign-in did not use multi-factor authentication")
	}
	if rt.maxAge > 0 {
		switch {
		case u.AuthTime.IsZero():
			missing = append(missing, fmt.Sprintf("route %s needs a sign-in within %s and the sign-in time is unknown", rt.id, rt.maxAge))
		case now.Sub(u.AuthTime) > rt.maxAge:
			missing = append(missing, fmt.Sprintf("route %s needs a sign-in within %s; this one is %s old", rt.id, rt.maxAge, now.Sub(u.AuthTime).Round(time.Second)))
		}
	}
	if len(missing) > 0 {
		d.StepUp = need
		return d.refuse(StepUp, http.StatusUnauthorized, strings.Join(missing, "; "), stepUpMessage(rt, need.MFA, rt.maxAge))
	}
	// Exports. A grant is looked for once every check before it passed;
	// it is used (UseGrant) only once every later one has too.
	if rt.export != nil {
		d.Audit.Export.Route = true
		if rt.export.approval && !hasAny(u, rt.export.withoutApproval) {
			d.Approval = rt.export.policy
			if rt.export.policy == "" {
				d.Audit.Export.Blocked = true
				return d.refuse(Deny, http.StatusForbidden, fmt.Sprintf("export requires approval: route %s is an export, %s is not exempt and the route names no approval policy to grant one", rt.id, rolesPhrase(u)), d.approvalMessage(rt))
			}
			if refused := d.findGrant(rt, r, u, now); refused != nil { // grants.go
				return refused
			}
		}
		d.exportOK = true
		d.Audit.Export.Approved = true
	}
	if rt.target != nil {
		if reason := d.noteTarget(rt); reason != "" {
			return d.finish(Deny, http.StatusBadRequest, reason)
		}
	}
	if refused := d.checkRequest(rt); refused != nil {
		return refused
	}
	return d.finish(Allow, 0, rolesPhrase(u)+" may call "+rt.id)
}

// checkRequest runs what a public route and a route the user may call
// both check of the request itself: the body and query guards noted, a
// HEAD on a route that hides records, the query guards. It returns the
// refusal, or nil when the request passes them.
func (d *Decision) checkRequest(rt *route) *Decision {
	if reason := d.noteGuards(rt); reason != "" {
		return d.refuse(Deny, http.StatusForbidden, reason, guardMessage(rt, d.queryGuard))
	}
	if q := d.headOnHiddenRecord(rt); q != nil { // hidden.go
		return d.refuse(Deny, q.status, q.reason, q.message)
	}
	if q := d.checkQuery(rt); q != nil { // query.go
		return d.refuse(Deny, q.status, q.reason, q.message)
	}
	return nil
}

// holds evaluates the route's `when`.
func (d *Decision) holds(rt *route) (bool, string) {
	ok, err := rt.when.EvalBool(d.act)
	if err != nil {
		d.Audit.EvalErrors++
		return false, fmt.Sprintf("route %s: the condition `%s` could not be evaluated (%v), so it counts as false", rt.id, rt.when.Source(), err)
	}
	if !ok {
		return false, fmt.Sprintf("route %s: the condition `%s` does not hold", rt.id, rt.when.Source())
	}
	return true, ""
}

// noteGuards keeps the route's body guards that apply to this user. A
// guarded field set through the query string instead of the body (PHP's
// $_REQUEST and Laravel's input() merge both) gives the reason to refuse.
func (d *Decision) noteGuards(rt *route) string {
	d.noteBodyGuards(rt) // valueguard.go
	if len(d.guards)+len(d.pending)+len(d.valueGuards) == 0 || d.req.URL.RawQuery == "" {
		return ""
	}
	// A field whose guard waits for the body's values is refused in the
	// query too: its value there would not be judged.
	all := append(append(append([]*bodyGuard(nil), d.guards...), d.pending...), d.valueGuards...)
	query, _ := url.ParseQuery(d.req.URL.RawQuery) // parsed strictly before
	for key := range query {
		g := formGuardIn(all, key)
		if g != nil {
			d.queryGuard = g
			return fmt.Sprintf("route %s: the query string sets %s (as %q), which %s may not change; many servers read query parameters as body fields", rt.id, g.path, key, rolesPhrase(d.user))
		}
	}
	return ""
}

// GuardsBody reports whether the request body must be read and checked:
// the request is allowed and a body guard applies to this user, or a
// condition of the route reads the values the body sets.
func (d *Decision) GuardsBody() bool {
	return d.Outcome == Allow && (len(d.guards)+len(d.pending)+len(d.valueGuards) > 0 || d.route != nil && d.route.readsBody)
}

func hasAny(u *User, roles []string) bool {
	for _, r := range roles {
		if u.HasRole(r) {
			return true
		}
	}
	return false
}

// validMethod reports a method name of upper-case letters.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

// contains reports whether list holds s.
func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func rolesPhrase(u *User) string {
	if u == nil {
		return "an anonymous user"
	}
	switch len(u.Roles) {
	case 0:
		return fmt.Sprintf("user %s (no roles)", u.ID)
	case 1:
		return "role " + u.Roles[0]
	}
	return "roles " + strings.Join(u.Roles, ", ")
}

// celUserOf is `user` for conditions; an anonymous request gets an empty
// user.
func celUserOf(u *User, now time.Time) cond.User {
	if u == nil {
		return cond.AnonymousUser()
	}
	return cond.SignedInUser(u.ID, u.Roles, u.Attrs, u.MFA, u.AuthTime, now)
}

// matches tries the route on a request; q and h are the query parameters
// and headers by lower-case name (foldKeys). bad is a reason to refuse the
// request as unjudgeable (a matched-on query parameter given twice with
// different values).
func (rt *route) matches(method string, segs []string, q, h map[string][]string, params map[string]string) (ok bool, bad string) {
	if rt.methods != nil && !contains(rt.methods, method) {
		return false, ""
	}
	if rt.pattern == nil || !rt.pattern.Match(segs, params) {
		return false, ""
	}
	if ok, bad := rt.valuesMatch(rt.query, q, "query parameter"); !ok {
		return false, bad
	}
	return rt.valuesMatch(rt.headers, h, "header")
}

// valuesMatch tests the route's query or header matchers ms on the
// request's values vals (what names them in bad).
func (rt *route) valuesMatch(ms []matcher, vals map[string][]string, what string) (ok bool, bad string) {
	for _, m := range ms {
		vs := vals[m.name]
		if _, same := oneValueFold(vs); len(vs) > 1 && !same {
			return false, fmt.Sprintf("the %s %q is given several times with different values, so route %s cannot be judged", what, m.name, rt.id)
		}
		if !m.test(vs) {
			return false, ""
		}
	}
	return true, ""
}

// phpQueryNames adds, for each query parameter whose name PHP (and Rails,
// qs) reads as another parameter, its values under that name as well:
// "format[]=csv", "format[x]=csv", " format=csv" and "for.mat=csv" are
// format (for_mat) to such a CRM, so a route matching format=csv must see
// them. The map is returned unchanged when no name needs it.
func phpQueryNames(q map[string][]string) map[string][]string {
	var out map[string][]string
	for k, vs := range q {
		name := phpFormName(k)
		if i := strings.IndexByte(name, '['); i > 0 {
			name = name[:i]
		}
		if name == k || name == "" {
			continue
		}
		if out == nil {
			out = make(map[string][]string, len(q)+1)
			for k2, v2 := range q {
				out[k2] = v2
			}
		}
		out[name] = append(append([]string(nil), out[name]...), vs...)
	}
	if out == nil {
		return q
	}
	return out
}

// foldKeys indexes query parameters or headers by their lower-case
// (ASCII) name, merging the values of names that differ only in case:
// many servers read them case-insensitively, so FORMAT=csv must not slip
// past a format matcher.
func foldKeys(m map[string][]string) map[string][]string {
	out := make(map[string][]string, len(m))
	for k, vs := range m {
		lk := lowerASCII(k)
		out[lk] = append(out[lk], vs...)
	}
	return out
}

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func oneValueFold(vs []string) (string, bool) {
	if len(vs) == 0 {
		return "", false
	}
	for _, v := range vs[1:] {
		if !urlpath.EqualFoldASCII(v, vs[0]) {
			return "", false
		}
	}
	return vs[0], true
}

// test matches the values found for the matcher's key; values compare
// without regard to ASCII case.
func (m matcher) test(vs []string) bool {
	if len(m.values) == 0 {
		return (len(vs) > 0) == m.present
	}
	if len(vs) == 0 {
		return false
	}
	for _, want := range m.values {
		if urlpath.EqualFoldASCII(want, vs[0]) {
			return true
		}
	}
	return false
}

// overrideHeaders are the headers with which many frameworks (Rails,
// Laravel, ASP.NET, Express method-override) let a POST act as another
// method.
var overrideHeaders = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// methodOverride refuses a request that asks the server, through a header
// or the _method query parameter, to treat it as another method than the
// one the routes are matched on.
func methodOverride(method string, q, h map[string][]string) string {
	for key, vs := range h {
		// X_HTTP_Method_Override reaches a PHP or CGI CRM (Caddy's
		// php_fastcgi, for one) as HTTP_X_HTTP_METHOD_OVERRIDE too.
		name := strings.ReplaceAll(key, "_", "-")
		for _, over := range overrideHeaders {
			if !urlpath.EqualFoldASCII(name, over) {
				continue
			}
			for _, v := range vs {
				if !strings.EqualFold(strings.TrimSpace(v), method) {
					return fmt.Sprintf("the request asks to be treated as %q through %s; the proxy judges the real method %s only", v, over, method)
				}
			}
		}
	}
	for _, v := range q["_method"] {
		if !strings.EqualFold(strings.TrimSpace(v), method) {
			return fmt.Sprintf("the request asks to be treated as %q through the _method parameter; the proxy judges the real method %s only", v, method)
		}
	}
	return ""
}
