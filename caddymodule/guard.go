package caddymodule

import (
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/notify"
	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/caddymodule/workflow"
	"github.com/crmguard/crmguard/rules"
)

// DefaultMaxBody is the default cap on buffered request and answer bodies.
const DefaultMaxBody = 16 << 20

// UserResolver is implemented by providers that turn their identity into
// a rules user themselves instead of through the rule file's `subject`
// block: the `crmguard rules test` runner's fixed identities (id and
// roles given directly). The OIDC provider does not implement it.
type UserResolver interface {
	// ResolveUser returns the rules user for id under set.
	ResolveUser(set *rules.Set, id *authn.Identity) (*rules.User, error)
}

// GuardOptions configure a Guard.
type GuardOptions struct {
	// Rules returns the running rule set; it is called once per request.
	Rules func() *rules.Set
	// Provider identifies requests and signs users in; nil means every
	// request is anonymous (only public routes succeed).
	Provider authn.Provider
	// Audit receives one event per request; nil drops events.
	Audit AuditSink
	// Logger is the handler's logger (audit write failures go here).
	Logger *zap.Logger
	// Metrics is the Prometheus registry the guard counts decisions,
	// treated fields, blocked exports and rewrite times on (Caddy's
	// registry for the running configuration; see docs/audit.md). Guards
	// given the same registry share the collectors. nil counts nothing.
	Metrics prometheus.Registerer
	// MaxBody caps buffered request bodies and answers (0: DefaultMaxBody).
	MaxBody int64
	// StripHeaders are extra request header names (a trailing * makes a
	// prefix) removed before the request goes upstream.
	StripHeaders []string
	// CookiePrefixes name the proxy's own cookies (by prefix); they never
	// reach the CRM. Default: DefaultCookiePrefix.
	CookiePrefixes []string
	// Mode, when it points to rules.Shadow, runs in shadow mode whatever
	// the rule file says.
	Mode *rules.Mode
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Grants finds and uses export grants (nil: Workflow's, or nobody
	// holds a grant).
	Grants rules.GrantSource
	// Workflow keeps approvals and elevations and serves their API and
	// pages (nil: /.crmguard/approvals and /.crmguard/elevations answer
	// 404 and nobody is elevated).
	Workflow *workflow.Service
	// Store is the guard's state store, the one of the handler's `store`
	// setting (see Guard.Store); usage limits are counted on it
	// (limits.go). nil: none (tests, `rules test` without limits), and a
	// request a usage limit covers is refused with 503.
	Store store.Store
	// Notifier receives the notifications of usage limit hits (nil:
	// nobody is notified).
	Notifier *notify.Notifier
}

// Guard enforces a rule set on HTTP exchanges. It is the handler logic of
// crm_guard without Caddy's module machinery, so that the `rules test`
// runner and tests drive exactly what the server runs.
type Guard struct {
	opt      GuardOptions
	scrubber *headerScrubber
	metrics  *guardMetrics // nil: opt.Metrics was nil
	routes   atomic.Pointer[routeIndex]
}

// routeIndex says which routes of a rule set rewrite answers.
type routeIndex struct {
	set      *rules.Set
	rewrites map[string]bool
}

// rewrites reports whether the route with id rewrites answers under set.
// The index is rebuilt once per rule set (after a reload).
func (g *Guard) rewrites(set *rules.Set, id string) bool {
	if id == "" {
		return false
	}
	idx := g.routes.Load()
	if idx == nil || idx.set != set {
		idx = &routeIndex{set: set, rewrites: map[string]bool{}}
		for _, ri := range set.Routes() {
			idx.rewrites[ri.ID] = ri.Rewrites
		}
		g.routes.Store(idx)
	}
	return idx.rewrites[id]
}

// NewGuard returns a Guard for opt.
func NewGuard(opt GuardOptions) (*Guard, error) {
	if opt.Rules == nil {
		return nil, errNoRules
	}
	if opt.MaxBody <= 0 {
		opt.MaxBody = DefaultMaxBody
	}
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if len(opt.CookiePrefixes) == 0 {
		opt.CookiePrefixes = []string{DefaultCookiePrefix}
	}
	if opt.Grants == nil && opt.Workflow != nil {
		opt.Grants = opt.Workflow
	}
	g := &Guard{opt: opt, scrubber: newHeaderScrubber(opt.StripHeaders, opt.CookiePrefixes)}
	if opt.Metrics != nil {
		m, err := newGuardMetrics(opt.Metrics)
		if err != nil {
			return nil, err
		}
		g.metrics = m
	}
	return g, nil
}

// exchange is the state of one request through the guard.
type exchange struct {
	g     *Guard
	r     *http.Request
	start time.Time
	ev    AuditEvent
	d     *rules.Decision
	// set is the rule set judging the request; user the signed-in user
	// (nil: anonymous).
	set  *rules.Set
	user *rules.User
	// shadow: decide and audit, never block or rewrite.
	shadow bool
	// rewrites: the matched route rewrites answers.
	rewrites bool
	// rewrote: the answer went through the rewriter, which took
	// rewriteTime (observed once the client has its answer).
	rewrote     bool
	rewriteTime time.Duration
	// withheld: the rewritten answer was refused before a byte of it was
	// written (a usage limit), so the client received none of its records.
	withheld bool
	// body is the request body once readBody has read it (bodyRead).
	body     []byte
	bodyRead bool
}

// ServeHTTP judges r, passes it to next when allowed and rewrites the
// answer as the rules say. It writes exactly one audit event.
func (g *Guard) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	x := &exchange{g: g, r: r, start: time.Now()}
	x.ev.Time = g.opt.Now().UTC()
	x.ev.Method = r.Method
	x.ev.Path = r.URL.EscapedPath()
	if _, inCaddy := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); !inCaddy {
		// Outside Caddy the id comes from a header the scrubber may
		// remove; Caddy's id is generated lazily, in finish, after the
		// client has its answer.
		x.ev.RequestID = requestID(r)
	}
	defer x.finish()
	return x.serve(w, next)
}

func (x *exchange) serve(w http.ResponseWriter, next caddyhttp.Handler) error {
	g, r := x.g, x.r
	set := g.opt.Rules()
	x.set = set
	if set == nil {
		return x.refuse(w, refusal{Status: http.StatusServiceUnavailable, Reason: "No rule set is loaded."}, "error")
	}
	x.ev.RulesVersion = set.Version()

	// The provider's own endpoints (callback, logout) come first.
	var user *rules.User
	var ident *authn.Identity
	if p := g.opt.Provider; p != nil {
		sw := &statusWriter{ResponseWriter: w}
		handled, err := p.Handle(sw, r)
		if handled {
			x.ev.Decision = "provider"
			x.ev.Status = sw.status
			if err != nil {
				x.ev.Reason = err.Error()
				x.ev.Decision = "error"
			}
			return nil
		}
		if err != nil {
			return x.unavailable(w, err)
		}
		id, err := p.Identify(r)
		if err != nil {
			return x.unavailable(w, err)
		}
		if id != nil {
			ident = id
			user, err = resolveUser(p, set, id)
			if err != nil {
				x.ev.User = id.Subject
				return x.refuse(w, refusal{Status: http.StatusForbidden, Reason: "Your sign-in could not be mapped to a CRM user: " + err.Error()}, "deny")
			}
		}
	}
	signedIn := user
	user, err := x.elevate(set, user, ident) // workflow.go
	if err != nil {
		return x.refuse(w, refusal{Status: http.StatusServiceUnavailable, Reason: "Your temporary access cannot be checked right now; try again shortly."}, "error", zap.Error(err))
	}
	if user != nil {
		x.ev.User = user.ID
		x.ev.Roles = user.Roles
	}
	x.user = user
	if workflow.Handles(r.URL.Path) {
		return x.serveWorkflow(w, set, signedIn, user, ident)
	}

	d := set.Decide(user, &rules.Request{Method: r.Method, URL: r.URL, Header: r.Header, Now: g.opt.Now(), Grants: g.opt.Grants, Context: r.Context()})
	x.d = d
	x.shadow = d.Shadow || (g.opt.Mode != nil && *g.opt.Mode == rules.Shadow)
	if x.shadow && !d.Shadow {
		// `mode shadow` in the Caddyfile: the decision must report, not
		// act, exactly as under a rule file in shadow mode (answer
		// headers kept, blocks only audited).
		d.Shadow, d.Audit.Shadow = true, true
	}
	x.ev.Shadow = x.shadow
	if d.Path != "" {
		x.ev.Path = d.Path
	}
	x.ev.Route = d.RouteID
	x.ev.Reason = d.Reason
	x.rewrites = g.rewrites(set, d.RouteID)
	if done, err := x.limitsBefore(w); done { // limits.go
		return err
	}

	switch d.Outcome {
	case rules.Deny:
		x.ev.Decision = "deny"
		if !x.shadow {
			status := d.Status
			if status == 0 {
				status = http.StatusForbidden
			}
			return x.refuse(w, x.approvalRefusal(d, refusal{Status: status, Rule: d.RouteID, Reason: d.Reason, Message: d.Message}), "deny")
		}
	case rules.SignIn, rules.StepUp:
		x.ev.Decision = "sign_in"
		if d.Outcome == rules.StepUp {
			x.ev.Decision = "step_up"
		}
		if !x.shadow {
			return x.challenge(w, d)
		}
	default:
		x.ev.Decision = "allow"
	}

	if x.rewrites && !x.shadow && (asksUpgrade(r) || r.Method == http.MethodConnect) {
		// A tunnel (websocket, h2c, extended CONNECT) carries bytes the
		// rewriter never sees: on a rewriting route it would pass raw.
		return x.refuse(w, refusal{Status: http.StatusBadRequest, Rule: d.RouteID,
			Reason: "Route " + d.RouteID + " rewrites answers; a protocol upgrade or tunnel cannot be checked on it."}, "deny")
	}
	if err := x.checkBody(w); err != nil || x.ev.Status != 0 {
		return err
	}
	x.prepareUpstream(user, ident)
	if done, err := x.judgeTarget(w, next); done { // target.go
		return err
	}
	// Every check has passed: the export grant, if any, is used now,
	// once, right before the request goes upstream.
	if err := d.UseGrant(r.Context()); err != nil {
		decision := "deny"
		if d.Status == http.StatusServiceUnavailable {
			decision = "error"
		}
		x.ev.Reason = d.Reason
		return x.refuse(w, x.approvalRefusal(d, refusal{Status: d.Status, Rule: d.RouteID, Reason: d.Reason, Message: d.Message}), decision, zap.Error(err))
	}
	return x.proxy(w, next)
}

// resolveUser maps a verified identity to a rules user.
func resolveUser(p authn.Provider, set *rules.Set, id *authn.Identity) (*rules.User, error) {
	if ur, ok := p.(UserResolver); ok {
		return ur.ResolveUser(set, id)
	}
	mfa := set.MFA().Satisfied(id.AMR, id.ACR)
	claims := id.Claims
	if claims == nil {
		claims = map[string]any{"sub": id.Subject}
	}
	u, err := set.UserFromClaims(claims, mfa, id.AuthTime)
	if err != nil {
		return nil, err
	}
	if u == nil {
		return nil, errors.New("caddymodule: the rule file's subject block produced no user")
	}
	return u, nil
}

// challenge asks the provider for a (stronger) sign-in, or answers 401
// when there is no provider.
func (x *exchange) challenge(w http.ResponseWriter, d *rules.Decision) error {
	need := authn.Need{SignIn: d.Outcome == rules.SignIn, StepUp: d.StepUp, Reason: d.Reason, Message: d.Message}
	return x.ask(w, x.r, need, d.RouteID)
}

// ask asks the client of r for the sign-in need names, through the
// provider, or answers 401 when there is no provider. r is x.r, or the
// page a browser should come back to after signing in. rule names the
// rule that asked ("" for none).
func (x *exchange) ask(w http.ResponseWriter, r *http.Request, need authn.Need, rule string) error {
	if p := x.g.opt.Provider; p != nil {
		sw := &statusWriter{ResponseWriter: w}
		if err := p.Challenge(sw, r, need); err != nil {
			if sw.status != 0 {
				x.ev.Status = sw.status
				x.ev.Reason = err.Error()
				return nil
			}
			return x.unavailable(w, err)
		}
		x.ev.Status = sw.status
		if x.ev.Status == 0 {
			x.ev.Status = http.StatusUnauthorized
		}
		return nil
	}
	x.ev.Status = http.StatusUnauthorized
	if wantsHTML(r) {
		// No provider to send a browser to: the refusal page, with the
		// challenge an API client gets.
		w.Header().Set("WWW-Authenticate", authn.ChallengeHeader(r, need))
		writeRefusal(w, r, refusal{Status: http.StatusUnauthorized, Rule: rule, Reason: need.Reason})
		return nil
	}
	authn.WriteChallenge(w, r, need)
	return nil
}

// prepareUpstream removes forged identity headers, the proxy's cookies
// and a bearer token the proxy consumed, states the verified identity,
// sets the query the rules scoped (forward_query), and makes the CRM answer in a
// form the rewriter can read whole: uncompressed and never partial.
func (x *exchange) prepareUpstream(user *rules.User, id *authn.Identity) {
	h := x.r.Header
	x.g.scrubber.scrub(h)
	// Request trailers arrive after the rules judged the headers; a server
	// that merges them into headers would trust a forged X-CRM-User or
	// method override there. They never go upstream.
	x.r.Trailer = nil
	delete(h, "Trailer")
	if id != nil && id.Bearer {
		// The token was issued for the proxy; the CRM must not be able to
		// replay it.
		delete(h, "Authorization")
	}
	if user != nil {
		h[userHeaderKey] = []string{user.ID}
		h[rolesHeaderKey] = []string{strings.Join(user.Roles, ",")}
	}
	if q, ok := x.d.UpstreamQuery(); ok {
		// The route's forward_query scopes the CRM's own query (the
		// client's parameters of those names are gone), as Caddy's
		// rewrite handler changes a URI.
		x.r.URL.RawQuery = q
		x.r.RequestURI = x.r.URL.RequestURI()
	}
	if !x.rewrites || isUpgrade(x.r) {
		return
	}
	// On a rewriting route the CRM must answer with a document the
	// rewriter can read whole: uncompressed (Caddy's `encode` can
	// compress towards the client; a CRM that compresses anyway is
	// decoded, or refused when the coding is unknown) and never partial.
	h["Accept-Encoding"] = []string{"identity"}
	delete(h, "Range")
	delete(h, "If-Range")
}

// audit copies what the rules collected into the event.
func (x *exchange) audit(d *rules.Decision) {
	a := d.Audit
	x.ev.RecordsIn = a.RecordsIn
	x.ev.RecordsOut = a.RecordsOut
	x.ev.RecordIDs = a.RecordIDs
	x.ev.RecordIDsOmitted = a.RecordIDsOmitted
	x.ev.Streamed = a.Streamed
	if x.withheld {
		// records_out and record_ids say what the client received.
		x.ev.RecordsOut, x.ev.RecordIDs = 0, nil
	}
	x.ev.Fields = a.Fields
	x.ev.EvalErrors = a.EvalErrors
	x.ev.Export = a.Export
	x.ev.Grant = a.Grant
	x.ev.BodyFields = a.BodyFields
	x.ev.Changes = a.Changes
	// The rules' audit reason replaces the decision's when they refused
	// (or, in shadow mode, would have refused) the answer later on, unless
	// the handler already wrote a reason of its own.
	if a.Reason != "" && (x.ev.Reason == "" || x.ev.Reason == d.Reason) {
		x.ev.Reason = a.Reason
	}
}

// refuse writes a refusal and records it.
func (x *exchange) refuse(w http.ResponseWriter, f refusal, decision string, logFields ...zap.Field) error {
	x.ev.Decision = decision
	x.ev.Status = f.Status
	if f.Reason != "" {
		x.ev.Reason = f.Reason
	}
	if len(logFields) > 0 {
		x.g.opt.Logger.Warn("request refused", append(logFields, zap.Int("status", f.Status), zap.String("path", x.ev.Path))...)
	}
	writeRefusal(w, x.r, f)
	return nil
}

// finish writes the audit event and counts it.
func (x *exchange) finish() {
	if x.d != nil {
		x.audit(x.d)
	}
	if x.ev.Decision == "" {
		x.ev.Decision = "error"
	}
	x.countDenial() // limits.go
	if x.ev.RequestID == "" {
		x.ev.RequestID = requestID(x.r)
	}
	x.ev.DurationMS = float64(time.Since(x.start).Microseconds()) / 1000
	x.g.metrics.observe(&x.ev, x.rewrote, x.rewriteTime)
	if x.g.opt.Audit == nil {
		return
	}
	if err := x.g.opt.Audit.Write(&x.ev); err != nil {
		x.g.opt.Logger.Error("AUDIT EVENT LOST: could not write the audit event",
			zap.Error(err), zap.String("request_id", x.ev.RequestID), zap.String("user", x.ev.User),
			zap.String("method", x.ev.Method), zap.String("path", x.ev.Path), zap.String("decision", x.ev.Decision))
	}
}

// requestID returns Caddy's request id when the request runs in Caddy.
func requestID(r *http.Request) string {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok || repl == nil {
		return r.Header.Get("X-Request-Id")
	}
	if v, ok := repl.GetString("http.request.uuid"); ok {
		return v
	}
	return ""
}

// statusWriter records the status a provider wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader records the first status.
func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
