package caddymodule

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/klauspost/compress/zstd"
	"go.uber.org/zap"

	"github.com/crmguard/crmguard/caddymodule/authn"
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
	// Metrics counts decisions; nil counts nothing.
	Metrics *guardMetrics
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
	// Grants approves exports (nil: no export is approved).
	Grants rules.ExportGrants
}

// Guard enforces a rule set on HTTP exchanges. It is the handler logic of
// crm_guard without Caddy's module machinery, so that the `rules test`
// runner and tests drive exactly what the server runs.
type Guard struct {
	opt      GuardOptions
	scrubber *headerScrubber
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
	return &Guard{opt: opt, scrubber: newHeaderScrubber(opt.StripHeaders, opt.CookiePrefixes)}, nil
}

// bufPool holds answer buffers; outPool holds rewrite outputs.
var (
	bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	outPool = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}
)

// exchange is the state of one request through the guard.
type exchange struct {
	g     *Guard
	r     *http.Request
	start time.Time
	ev    AuditEvent
	d     *rules.Decision
	// shadow: decide and audit, never block or rewrite.
	shadow bool
	// rewrites: the matched route rewrites answers.
	rewrites bool
	// rewrote: the answer went through the rewriter, which took
	// rewriteTime (observed once the client has its answer).
	rewrote     bool
	rewriteTime time.Duration
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
	if set == nil {
		return x.refuse(w, refusal{Status: http.StatusServiceUnavailable, Reason: "No rule set is loaded."}, "error")
	}

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
			return x.refuse(w, refusal{Status: http.StatusServiceUnavailable, Reason: "The sign-in service could not be reached; try again shortly."}, "error", zap.Error(err))
		}
		id, err := p.Identify(r)
		if err != nil {
			x.ev.Reason = err.Error()
			return x.refuse(w, refusal{Status: http.StatusServiceUnavailable, Reason: "The sign-in service could not be reached; try again shortly."}, "error", zap.Error(err))
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
	if user != nil {
		x.ev.User = user.ID
		x.ev.Roles = user.Roles
	}

	d := set.Decide(user, &rules.Request{Method: r.Method, URL: r.URL, Header: r.Header, Now: g.opt.Now(), Grants: g.opt.Grants})
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

	switch d.Outcome {
	case rules.Deny:
		x.ev.Decision = "deny"
		if !x.shadow {
			status := d.Status
			if status == 0 {
				status = http.StatusForbidden
			}
			return x.refuse(w, refusal{Status: status, Rule: d.RouteID, Reason: d.Reason}, "deny")
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
	need := authn.Need{SignIn: d.Outcome == rules.SignIn, StepUp: d.StepUp, Reason: d.Reason}
	if p := x.g.opt.Provider; p != nil {
		sw := &statusWriter{ResponseWriter: w}
		if err := p.Challenge(sw, x.r, need); err != nil {
			if sw.status != 0 {
				x.ev.Status = sw.status
				x.ev.Reason = err.Error()
				return nil
			}
			return x.refuse(w, refusal{Status: http.StatusServiceUnavailable, Reason: "The sign-in service could not be reached; try again shortly."}, "error", zap.Error(err))
		}
		x.ev.Status = sw.status
		if x.ev.Status == 0 {
			x.ev.Status = http.StatusUnauthorized
		}
		return nil
	}
	x.ev.Status = http.StatusUnauthorized
	BearerChallenge(w, x.r, need, d.RouteID)
	return nil
}

// BearerChallenge answers an API client whose sign-in is missing or too
// weak: 401 with a WWW-Authenticate challenge (RFC 6750, with RFC 9470's
// insufficient_user_authentication, max_age and acr_values for step-up)
// and the usual refusal body naming the rule.
func BearerChallenge(w http.ResponseWriter, r *http.Request, need authn.Need, rule string) {
	challenge := `Bearer realm="crmguard"`
	if !need.SignIn {
		challenge += `, error="insufficient_user_authentication"`
		if need.StepUp.MaxAge > 0 {
			challenge += fmt.Sprintf(`, max_age=%d`, int(need.StepUp.MaxAge.Seconds()))
		}
		if len(need.StepUp.ACR) > 0 {
			challenge += fmt.Sprintf(`, acr_values="%s"`, strings.Join(need.StepUp.ACR, " "))
		}
	}
	w.Header().Set("WWW-Authenticate", challenge)
	reason := need.Reason
	if reason == "" {
		reason = "This route needs a signed-in user."
	}
	writeRefusal(w, r, refusal{Status: http.StatusUnauthorized, Rule: rule, Reason: reason})
}

// checkBody reads and checks the request body on routes with body guards
// and on POSTs that could carry a _method override. It sets x.ev.Status
// when it answered.
func (x *exchange) checkBody(w http.ResponseWriter) error {
	d, r := x.d, x.r
	if !d.ReadsBody(r.Header.Get("Content-Type")) {
		return nil
	}
	body, checked, done, err := x.readBody(w, "on this route")
	if !checked || done {
		return err
	}
	if be := d.CheckBody(r.Header.Get("Content-Type"), body); be != nil {
		x.ev.Reason = be.Reason
		if x.shadow {
			x.ev.Decision = "deny"
			return nil
		}
		status := be.Status
		if status == 0 {
			status = http.StatusForbidden
		}
		return x.refuse(w, refusal{Status: status, Rule: d.RouteID, Reason: be.Reason}, "deny")
	}
	return nil
}

// readBody reads the request body once, at most max_body bytes, and puts it
// back for the upstream; a second call returns the same bytes. A body that
// cannot be checked (several Content-Type lines, a Content-Encoding, over
// max_body, unreadable) is refused: the client has its answer and done is
// true. In shadow mode nothing is refused: checked is false and the body
// goes on unchecked. where ends the refusal's sentence ("on this route").
func (x *exchange) readBody(w http.ResponseWriter, where string) (body []byte, checked, done bool, err error) {
	r, d := x.r, x.d
	if x.bodyRead {
		return x.body, true, false, nil
	}
	if r.Body == nil || r.Body == http.NoBody {
		x.bodyRead = true
		return nil, true, false, nil
	}
	refuse := func(status int, reason, decision string, fields ...zap.Field) ([]byte, bool, bool, error) {
		if x.shadow && status != http.StatusBadRequest {
			x.ev.Reason = "shadow: would be refused: " + reason
			return nil, false, false, nil
		}
		return nil, false, true, x.refuse(w, refusal{Status: status, Rule: d.RouteID, Reason: reason}, decision, fields...)
	}
	if cts := r.Header.Values("Content-Type"); len(cts) > 1 {
		// The guard would read one and the CRM perhaps the other.
		if x.shadow {
			x.ev.Reason = "shadow: would be refused: a request body with several Content-Type headers"
			return nil, false, false, nil
		}
		return refuse(http.StatusBadRequest, "Request bodies with more than one Content-Type header cannot be checked "+where+".", "deny")
	}
	if ce := contentCoding(r.Header); ce != "" {
		return refuse(http.StatusUnsupportedMediaType, "Request bodies with Content-Encoding "+ce+" cannot be checked "+where+"; send them uncompressed.", "deny")
	}
	limit := x.g.opt.MaxBody
	b, rerr := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if rerr != nil {
		return refuse(http.StatusBadRequest, "The request body could not be read.", "error", zap.Error(rerr))
	}
	if int64(len(b)) > limit {
		if x.shadow {
			// Never block: pass the whole body on, unchecked.
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
			x.ev.Reason = fmt.Sprintf("shadow: would be refused: a request body over %d bytes", limit)
			return nil, false, false, nil
		}
		return refuse(http.StatusRequestEntityTooLarge, fmt.Sprintf("The request body is larger than %d bytes.", limit), "deny")
	}
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	r.ContentLength = int64(len(b))
	r.Header.Set("Content-Length", strconv.Itoa(len(b)))
	r.Header.Del("Transfer-Encoding")
	r.TransferEncoding = nil
	x.body, x.bodyRead = b, true
	return b, true, false, nil
}

// prepareUpstream removes forged identity headers, the proxy's cookies
// and a bearer token the proxy consumed, states the verified identity, and makes the CRM answer in a
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

// contentCoding returns the request's Content-Encoding when any of its
// lines names a coding other than identity ("" otherwise): a first line
// "identity" must not hide a second "gzip".
func contentCoding(h http.Header) string {
	for _, line := range h["Content-Encoding"] {
		for _, c := range strings.Split(line, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return strings.Join(h["Content-Encoding"], ", ")
			}
		}
	}
	return ""
}

// asksUpgrade reports any sign of a protocol switch: an Upgrade header, or
// an upgrade token on any Connection line.
func asksUpgrade(r *http.Request) bool {
	if len(r.Header.Values("Upgrade")) > 0 {
		return true
	}
	for _, line := range r.Header.Values("Connection") {
		for _, tok := range strings.Split(line, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

// proxy passes the request on and treats the answer.
func (x *exchange) proxy(w http.ResponseWriter, next caddyhttp.Handler) (err error) {
	before := w.Header().Clone()
	var block *rules.Block
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if int64(buf.Cap()) <= 4*x.g.opt.MaxBody && buf.Cap() <= 64<<20 {
			bufPool.Put(buf)
		}
	}()
	rec := newRecorder(w, buf, x.g.opt.MaxBody, func(status int, h http.Header) bool {
		x.g.scrubber.scrubSetCookies(h, before["Set-Cookie"])
		if !x.d.Public && !x.shadow {
			privatise(h)
		}
		if x.rewrites && !x.shadow && x.r.Method == http.MethodHead {
			// A HEAD answer on a rewriting route describes the CRM's
			// bytes, not what a GET would return: no length, no
			// validators, no caching.
			delete(h, "Content-Length")
			dropValidators(h)
			h["Cache-Control"] = []string{"private, no-store"}
		}
		buffer, b := x.d.InspectResponse(status, h)
		if b != nil {
			block = b
			return true // hold the answer back: it must not reach the client
		}
		if buffer && x.r.Method != http.MethodHead && status != http.StatusNoContent && status != http.StatusNotModified {
			presize(buf, h.Get("Content-Length"), x.g.opt.MaxBody)
		}
		return buffer
	})
	rec.passOnOverflow = x.shadow

	err = x.callNext(rec, next)
	switch {
	case rec.overflow && !x.shadow:
		x.restore(w, before)
		return x.refuse(w, refusal{Status: http.StatusBadGateway, Rule: x.d.RouteID,
			Reason: fmt.Sprintf("The CRM's answer is larger than %d bytes and cannot be checked.", x.g.opt.MaxBody)}, "blocked")
	case err != nil:
		if rec.buffering {
			x.restore(w, before)
			var he caddyhttp.HandlerError
			if !errors.As(err, &he) || he.StatusCode == 0 {
				return x.refuse(w, refusal{Status: http.StatusBadGateway, Rule: x.d.RouteID, Reason: "The CRM's answer could not be read in full."}, "error", zap.Error(err))
			}
		}
		x.ev.Status = statusFromError(err)
		x.ev.Reason = err.Error()
		if x.ev.Decision == "allow" {
			x.ev.Decision = "error" // the upstream failed (docs/audit.md)
		}
		return err
	}
	if !rec.buffering {
		x.ev.Status = rec.status
		if x.ev.Status == 0 {
			x.ev.Status = http.StatusOK
		}
		return nil
	}
	if block != nil {
		if x.shadow {
			x.ev.Reason = "shadow: " + block.Reason
			return x.sendRaw(w, rec)
		}
		loc := w.Header().Get("Location")
		x.restore(w, before)
		if rec.status >= 300 && rec.status < 400 && loc != "" {
			// A withheld redirect still says where to go.
			w.Header().Set("Location", loc)
		}
		return x.refuse(w, refusal{Status: block.Status, Rule: x.d.RouteID, Reason: block.Reason}, "blocked")
	}
	return x.rewrite(w, rec, before)
}

// maxPresize bounds the room reserved ahead from a Content-Length: a CRM
// announcing more than it sends must not make the proxy hold memory for it.
const maxPresize = 1 << 20

// presize makes room in buf for an answer of the announced length (up to
// maxPresize, never over limit), so that buffering it copies it once
// instead of growing the buffer by doubling.
func presize(buf *bytes.Buffer, contentLength string, limit int64) {
	n, err := strconv.ParseInt(contentLength, 10, 64)
	if err != nil || n <= 0 || n > limit || n > maxPresize {
		return
	}
	buf.Grow(int(n))
}

// callNext runs the next handler, turning the reverse proxy's abort of a
// buffered copy (answer too large, upstream died mid-answer) into an error:
// nothing reached the client yet, so the guard can still answer.
func (x *exchange) callNext(rec *recorder, next caddyhttp.Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler && rec.buffering {
				err = errors.New("caddymodule: the upstream answer was cut short")
				return
			}
			panic(p)
		}
	}()
	return next.ServeHTTP(rec, x.r)
}

// restore puts the client's headers back to their state before the
// upstream answered (refusals must not carry the CRM's headers).
func (x *exchange) restore(w http.ResponseWriter, before http.Header) {
	h := w.Header()
	for k := range h {
		delete(h, k)
	}
	for k, v := range before {
		h[k] = v
	}
}

// sendRaw writes a buffered answer unchanged (shadow mode).
func (x *exchange) sendRaw(w http.ResponseWriter, rec *recorder) error {
	x.ev.Status = rec.status
	w.WriteHeader(rec.status)
	if _, err := w.Write(rec.buf.Bytes()); err != nil {
		return nil // the client went away; nothing left to do
	}
	return nil
}

// rewrite decodes a buffered answer, rewrites it and writes the result.
func (x *exchange) rewrite(w http.ResponseWriter, rec *recorder, before http.Header) error {
	d, r := x.d, x.r
	h := w.Header()
	status := rec.status
	fail := func(reason string) error {
		if x.shadow {
			x.ev.Reason = "shadow: " + reason
			return x.sendRaw(w, rec)
		}
		x.restore(w, before)
		return x.refuse(w, refusal{Status: http.StatusBadGateway, Rule: d.RouteID, Reason: reason}, "blocked")
	}
	if status == http.StatusPartialContent || h.Get("Content-Range") != "" {
		return fail("The CRM sent a partial answer, which cannot be checked.")
	}
	bodyless := r.Method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified ||
		(status >= 100 && status < 200)
	if bodyless {
		if !x.shadow {
			dropValidators(h)
			delete(h, "Content-Length")
		}
		x.ev.Status = status
		w.WriteHeader(status)
		return nil
	}
	started := time.Now()
	body, err := decode(strings.Join(h["Content-Encoding"], ","), rec.buf.Bytes(), x.g.opt.MaxBody)
	if err != nil {
		return fail(err.Error())
	}
	if len(bytes.TrimSpace(body)) == 0 {
		// Nothing to rewrite and nothing to leak (a PATCH answered with
		// an empty 200, say): pass the status on without a body.
		if x.shadow {
			return x.sendRaw(w, rec)
		}
		delete(h, "Content-Encoding")
		dropValidators(h)
		h["Content-Length"] = []string{"0"}
		x.ev.Status = status
		w.WriteHeader(status)
		return nil
	}
	out := outPool.Get().(*[]byte)
	res, block, err := d.Rewrite((*out)[:0], status, h, body)
	defer func() {
		if cap(res) <= 64<<20 {
			*out = res[:0]
		}
		outPool.Put(out)
	}()
	x.rewrote, x.rewriteTime = true, time.Since(started)
	if err != nil {
		return fail("The CRM's answer could not be checked: " + err.Error())
	}
	if block != nil {
		if x.shadow {
			x.ev.Reason = "shadow: " + block.Reason
			return x.sendRaw(w, rec)
		}
		x.restore(w, before)
		return x.refuse(w, refusal{Status: block.Status, Rule: d.RouteID, Reason: block.Reason}, "blocked")
	}
	if x.shadow {
		return x.sendRaw(w, rec)
	}
	x.ev.Rewritten = true
	delete(h, "Content-Encoding")
	dropValidators(h)
	// The rewritten body is UTF-8 JSON, or a UTF-8 CSV/TSV the rules read
	// as a table, whatever else the CRM called it: a JSON answer labelled
	// text/html would run a script held in a record.
	if cts := h["Content-Type"]; !jsonLabel(cts) && !rules.CSVLabel(cts) {
		h["Content-Type"] = []string{"application/json"}
	}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	// The answer is now this user's view: no cache may keep or share it.
	h["Cache-Control"] = []string{"private, no-store"}
	h["Content-Length"] = []string{strconv.Itoa(len(res))}
	x.ev.Status = status
	w.WriteHeader(status)
	if _, err := w.Write(res); err == nil {
		// Send the tail now: the audit line and the metrics that follow
		// need not hold the client's answer back.
		_ = http.NewResponseController(w).Flush()
	}
	return nil
}

// jsonLabel reports one Content-Type naming JSON (application/json or
// application/*+json) in UTF-8 (or without a charset).
func jsonLabel(cts []string) bool {
	if len(cts) != 1 {
		return false
	}
	if strings.EqualFold(cts[0], "application/json") || strings.EqualFold(cts[0], "application/json; charset=utf-8") {
		return true // the usual labels, without parsing
	}
	mt, params, err := mime.ParseMediaType(cts[0])
	if err != nil || mt != "application/json" && !(strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8")
}

// privatise keeps shared caches (a CDN in front of the proxy) from storing
// an answer that depends on who asked (the CRM saw X-CRM-User): "public"
// and s-maxage are dropped and "private" is added unless the answer is
// already private or no-store. An answer without Cache-Control gets
// "private" too: a request cookie does not stop a shared cache, and
// Expires or Last-Modified (heuristic freshness) would let it store.
func privatise(h http.Header) {
	var kept []string
	private, noStore, shared := false, false, false
	for _, line := range h["Cache-Control"] {
		for _, d := range strings.Split(line, ",") {
			d = strings.TrimSpace(d)
			l := strings.ToLower(d)
			switch {
			case d == "":
				continue
			case l == "public" || strings.HasPrefix(l, "s-maxage"):
				shared = true
				continue
			case l == "private":
				private = true
				continue
			case strings.HasPrefix(l, "private="):
				// private="Set-Cookie" keeps only those fields private.
				continue
			case l == "no-store":
				noStore = true
			}
			kept = append(kept, d)
		}
	}
	if !shared && (noStore || private) {
		return
	}
	h["Cache-Control"] = []string{strings.Join(append([]string{"private"}, kept...), ", ")}
}

// dropValidators removes headers that describe the CRM's bytes, not the
// rewritten ones.
func dropValidators(h http.Header) {
	for _, k := range []string{"ETag", "Last-Modified", "Accept-Ranges", "Content-MD5", "Digest", "Repr-Digest", "Content-Digest"} {
		h.Del(k)
	}
}

// errUnsupportedEncoding is returned for a content coding the guard cannot
// decode; the answer is refused (fail closed).
var errUnsupportedEncoding = errors.New("caddymodule: unsupported Content-Encoding")

// decode undoes the content codings of an answer (gzip, deflate, br, zstd,
// in the reverse of the order listed), capping the decoded size at limit.
// Any other coding is an error: the answer is refused, never passed raw.
func decode(encoding string, body []byte, limit int64) ([]byte, error) {
	if encoding == "" {
		return body, nil
	}
	codings := strings.Split(encoding, ",")
	for i := len(codings) - 1; i >= 0; i-- {
		c := strings.ToLower(strings.TrimSpace(codings[i]))
		var rd io.Reader
		switch c {
		case "identity", "":
			continue
		case "gzip", "x-gzip":
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				return nil, fmt.Errorf("The CRM's gzip answer is corrupt: %v", err)
			}
			rd = zr
		case "deflate":
			// HTTP deflate is zlib-wrapped; some servers send raw deflate.
			if zr, err := zlib.NewReader(bytes.NewReader(body)); err == nil {
				rd = zr
			} else {
				rd = flate.NewReader(bytes.NewReader(body))
			}
		case "br":
			rd = brotli.NewReader(bytes.NewReader(body))
		case "zstd":
			zr, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(limit)+1))
			if err != nil {
				return nil, fmt.Errorf("The CRM's zstd answer is corrupt: %v", err)
			}
			defer zr.Close()
			rd = zr
		default:
			return nil, fmt.Errorf("The CRM answered with Content-Encoding %q, which the proxy cannot decode (%w).", c, errUnsupportedEncoding)
		}
		decoded, err := io.ReadAll(io.LimitReader(rd, limit+1))
		if err != nil {
			return nil, fmt.Errorf("The CRM's %s answer is corrupt: %v", c, err)
		}
		if int64(len(decoded)) > limit {
			return nil, fmt.Errorf("The CRM's answer decodes to more than %d bytes and cannot be checked.", limit)
		}
		body = decoded
	}
	return body, nil
}

// audit copies what the rules collected into the event.
func (x *exchange) audit(d *rules.Decision) {
	a := d.Audit
	x.ev.RecordsIn = a.RecordsIn
	x.ev.RecordsOut = a.RecordsOut
	x.ev.RecordIDs = a.RecordIDs
	x.ev.Fields = a.Fields
	x.ev.EvalErrors = a.EvalErrors
	x.ev.Export = a.Export
	if a.Reason != "" && x.ev.Reason == "" {
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
	if x.ev.RequestID == "" {
		x.ev.RequestID = requestID(x.r)
	}
	x.ev.DurationMS = float64(time.Since(x.start).Microseconds()) / 1000
	x.g.opt.Metrics.observe(&x.ev, x.rewrote, x.rewriteTime)
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

// statusFromError is the status Caddy will answer for err.
func statusFromError(err error) int {
	var he caddyhttp.HandlerError
	if errors.As(err, &he) && he.StatusCode != 0 {
		return he.StatusCode
	}
	return http.StatusInternalServerError
}
