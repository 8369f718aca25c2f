package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/rules"
)

// Paths of the API and pages.
const (
	// ApprovalsPath is the approvals API and pages.
	ApprovalsPath = "/.crmguard/approvals"
	// ElevationsPath is the elevations API and pages.
	ElevationsPath = "/.crmguard/elevations"
	// MaxBody caps a request body of the API.
	MaxBody = 64 << 10
)

// Handles reports whether path is one the workflow serves.
func Handles(path string) bool {
	for _, p := range []string{ApprovalsPath, ElevationsPath} {
		if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}

// HTTP is what the workflow API needs of the request besides its caller.
type HTTP struct {
	// HTML is true when the client prefers a page to JSON.
	HTML bool
	// Challenge asks the client for a (stronger) sign-in and writes the
	// answer: the guard's, through the provider (nil:
	// authn.WriteChallenge).
	Challenge func(w http.ResponseWriter, r *http.Request, need authn.Need)
	// Forms gives and checks the session's CSRF token (nil: state changes
	// with a session cookie need a same-origin Origin header).
	Forms authn.FormTokens
}

// Result is what a call of the API did, for the guard's audit event.
type Result struct {
	// Audit is the workflow step taken (nil when nothing changed).
	Audit *Audit
	// Reason says why the call was refused ("" when it was not).
	Reason string
}

// input is a request body of the API (JSON object or form).
type input struct {
	Method    string          `json:"method"`
	Path      string          `json:"path"`
	Purpose   string          `json:"purpose"`
	Note      string          `json:"note"`
	Elevation string          `json:"elevation"`
	Reason    string          `json:"reason"`
	Duration  json.RawMessage `json:"duration"`
	CSRF      string          `json:"csrf"`
	// Values and Body name a write to approve: the values its approval
	// binds (a JSON object; in a form, its JSON text), or its body (a
	// JSON object, or a string with ContentType; in a form, text).
	Values      json.RawMessage `json:"values"`
	Body        json.RawMessage `json:"body"`
	ContentType string          `json:"content_type"`

	form     bool
	duration string
	values   map[string]any
	body     []byte
}

// readWrite reads the values or body that name a write (Values, Body):
// values must be one JSON object, numbers kept as written; a JSON body
// is an object, or a string holding the body as sent.
func (in *input) readWrite() error {
	if v := bytes.TrimSpace(in.Values); len(v) > 0 && !bytes.Equal(v, []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(v))
		dec.UseNumber()
		if err := dec.Decode(&in.values); err != nil || dec.More() || in.values == nil {
			return &Error{Status: http.StatusBadRequest, Message: `The values are one JSON object of the fields the change sets, such as {"owner_id":"wang"}.`}
		}
	}
	b := bytes.TrimSpace(in.Body)
	switch {
	case len(b) == 0 || bytes.Equal(b, []byte("null")):
	case in.form:
		in.body = b
	case b[0] == '"':
		var raw string
		if err := json.Unmarshal(b, &raw); err != nil {
			return &Error{Status: http.StatusBadRequest, Message: "The body cannot be read."}
		}
		in.body = []byte(raw)
	case b[0] == '{':
		if in.ContentType != "" {
			return &Error{Status: http.StatusBadRequest, Message: "A body given as a JSON object is JSON; send a body of another type as a string."}
		}
		in.body = b
	default:
		return &Error{Status: http.StatusBadRequest, Message: "The body is a JSON object, or a string holding the body as sent."}
	}
	return nil
}

// ask is the request for approval the input names.
func (in *input) ask() Ask {
	return Ask{Method: in.Method, Path: in.Path, Purpose: in.Purpose, Values: in.values, Body: in.body, ContentType: in.ContentType}
}

// ServeHTTP serves r, a request for a path Handles accepts, for the
// signed-in caller c.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request, c *Caller, h HTTP) Result {
	x := &call{s: s, w: w, r: r, c: c, h: h}
	x.serve()
	return x.res
}

// call is one request of the API.
type call struct {
	s   *Service
	w   http.ResponseWriter
	r   *http.Request
	c   *Caller
	h   HTTP
	in  input
	res Result
}

func (x *call) serve() {
	path := x.r.URL.Path
	var kind, rest string
	switch {
	case path == ApprovalsPath || strings.HasPrefix(path, ApprovalsPath+"/"):
		kind, rest = "approvals", strings.TrimPrefix(path, ApprovalsPath)
	default:
		kind, rest = "elevations", strings.TrimPrefix(path, ElevationsPath)
	}
	rest = strings.Trim(rest, "/")
	id, action, _ := strings.Cut(rest, "/")
	if strings.Contains(action, "/") {
		x.fail(&Error{Status: http.StatusNotFound, Message: "There is no such page."})
		return
	}
	m := x.r.Method
	if m == http.MethodHead {
		m = http.MethodGet
	}
	route := kind + " " + m + " "
	switch {
	case id == "":
		route += "list"
	case id == "new" && action == "":
		route += "new"
	case action == "":
		route += "one"
	default:
		route += action
	}
	if m != http.MethodGet && !x.readInput() {
		return
	}
	ctx := x.r.Context()
	switch route {
	case "approvals GET list":
		l, err := x.s.ListApprovals(ctx, x.c)
		x.answer(http.StatusOK, l, err, func() { x.page(approvalsPage(x, l)) })
	case "approvals GET new":
		q := x.r.URL.Query()
		x.in = input{Method: q.Get("method"), Path: q.Get("path"), Values: json.RawMessage(q.Get("values")), form: true}
		msg := ""
		if err := x.in.readWrite(); err != nil {
			msg = messageOf(err)
		}
		x.page(newApprovalPage(x, msg))
	case "approvals POST list":
		var a *Approval
		var au *Audit
		err := x.in.readWrite()
		if err == nil {
			a, au, err = x.s.RequestApproval(ctx, x.c, x.in.ask())
		}
		x.res.Audit = au
		if err != nil && x.h.HTML && statusOf(err) == http.StatusBadRequest {
			x.res.Reason = err.Error()
			x.pageStatus(http.StatusBadRequest, newApprovalPage(x, messageOf(err)))
			return
		}
		x.changed(http.StatusCreated, a, err, approvalLink)
	case "approvals GET one":
		a, err := x.s.GetApproval(ctx, x.c, id)
		x.answer(http.StatusOK, a, err, func() { x.page(approvalPage(x, a)) })
	case "approvals POST approve", "approvals POST deny":
		a, au, err := x.s.Decide(ctx, x.c, id, action == "approve", x.in.Note)
		x.res.Audit = au
		x.changed(http.StatusOK, a, err, approvalLink)
	case "approvals POST revoke":
		a, au, err := x.s.Revoke(ctx, x.c, id, x.in.Note)
		x.res.Audit = au
		x.changed(http.StatusOK, a, err, approvalLink)
	case "elevations GET list":
		l, err := x.s.ListElevations(ctx, x.c)
		x.answer(http.StatusOK, l, err, func() { x.page(elevationsPage(x, l)) })
	case "elevations POST list":
		d, err := x.in.parseDuration()
		if err != nil {
			x.fail(err)
			return
		}
		e, au, err := x.s.StartElevation(ctx, x.c, x.in.Elevation, x.in.Reason, d)
		x.res.Audit = au
		x.changed(http.StatusCreated, e, err, elevationLink)
	case "elevations GET one":
		e, err := x.s.GetElevation(ctx, x.c, id)
		x.answer(http.StatusOK, e, err, func() { x.page(elevationPage(x, e)) })
	case "elevations DELETE one", "elevations POST end":
		e, au, err := x.s.EndElevation(ctx, x.c, id)
		x.res.Audit = au
		x.changed(http.StatusOK, e, err, elevationLink)
	case "elevations POST review":
		e, au, err := x.s.ReviewElevation(ctx, x.c, id, x.in.Note)
		x.res.Audit = au
		x.changed(http.StatusOK, e, err, elevationLink)
	default:
		x.notAllowed(kind, id, action)
	}
}

// notAllowed answers 405 (a known path, another method) or 404.
func (x *call) notAllowed(kind, id, action string) {
	allow := ""
	switch {
	case id == "":
		allow = "GET, HEAD, POST"
	case id == "new" && action == "" && kind == "approvals":
		allow = "GET, HEAD"
	case action == "":
		allow = "GET, HEAD"
		if kind == "elevations" {
			allow += ", DELETE"
		}
	case kind == "approvals" && (action == "approve" || action == "deny" || action == "revoke"),
		kind == "elevations" && (action == "end" || action == "review"):
		allow = "POST"
	}
	if allow == "" {
		x.fail(&Error{Status: http.StatusNotFound, Message: "There is no such page."})
		return
	}
	x.w.Header().Set("Allow", allow)
	x.fail(&Error{Status: http.StatusMethodNotAllowed, Message: "This page does not take a " + x.r.Method + " request."})
}

// readInput reads and checks the body of a state change: its type, its
// size and, when it comes with a session cookie, that it comes from this
// site (the session's form token, or a same-origin Origin header for
// JSON).
func (x *call) readInput() bool {
	r := x.r
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	body, err := io.ReadAll(http.MaxBytesReader(x.w, r.Body, MaxBody))
	if err != nil {
		x.fail(&Error{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("The request body is larger than %d bytes.", MaxBody)})
		return false
	}
	switch {
	case len(body) == 0 && r.Method == http.MethodDelete:
	case ct == "application/json":
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&x.in); err != nil || dec.More() {
			x.fail(&Error{Status: http.StatusBadRequest, Message: "The body is not one JSON object with the fields of this request."})
			return false
		}
		if len(x.in.Duration) > 0 {
			var n float64
			if err := json.Unmarshal(x.in.Duration, &x.in.duration); err != nil {
				if json.Unmarshal(x.in.Duration, &n) != nil {
					x.fail(&Error{Status: http.StatusBadRequest, Message: `The duration is a string such as "30m", or a number of seconds.`})
					return false
				}
				x.in.duration = strconv.FormatFloat(n, 'f', -1, 64) + "s"
			}
		}
	case ct == "application/x-www-form-urlencoded":
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			x.fail(&Error{Status: http.StatusBadRequest, Message: "The form cannot be read."})
			return false
		}
		x.in = input{form: true, Method: vals.Get("method"), Path: vals.Get("path"), Purpose: vals.Get("purpose"), Note: vals.Get("note"),
			Elevation: vals.Get("elevation"), Reason: vals.Get("reason"), duration: vals.Get("duration"), CSRF: vals.Get("csrf"),
			Values: json.RawMessage(vals.Get("values")), Body: json.RawMessage(vals.Get("body")), ContentType: vals.Get("content_type")}
	case len(body) == 0:
	default:
		x.fail(&Error{Status: http.StatusUnsupportedMediaType, Message: "Send the request as JSON (application/json) or as a form."})
		return false
	}
	return x.checkOrigin()
}

// checkOrigin refuses a state change that a session cookie carries and
// that another site could have sent.
func (x *call) checkOrigin() bool {
	id := x.c.Identity
	if id == nil || id.Bearer || id.SessionID == "" {
		return true // no ambient credential: nothing another site could ride on
	}
	tokenOK := x.h.Forms != nil && x.in.CSRF != "" && x.h.Forms.CheckFormToken(id, x.in.CSRF)
	switch {
	case authn.CrossOrigin(x.r):
	case tokenOK:
		return true
	case !x.in.form && authn.SameOrigin(x.r):
		return true
	}
	x.fail(&Error{Status: http.StatusForbidden, Message: "This change did not come from a page of this site; open the page and try again."})
	return false
}

// parseDuration reads the duration asked for ("" is 0: the longest).
func (in *input) parseDuration() (time.Duration, error) {
	if in.duration == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(in.duration)
	if err != nil {
		return 0, &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("The duration %q is not a duration such as 30m.", in.duration)}
	}
	return d, nil
}

// answer writes v (JSON) or the page render makes, or err.
func (x *call) answer(status int, v any, err error, render func()) {
	if err != nil {
		x.fail(err)
		return
	}
	if x.h.HTML {
		render()
		return
	}
	writeJSON(x.w, status, v)
}

// changed answers a state change: the new state as JSON, or for a
// browser a redirect to its page (post, redirect, get).
func (x *call) changed(status int, v any, err error, link func(string) string) {
	if err != nil {
		x.fail(err)
		return
	}
	if x.h.HTML {
		id := ""
		switch o := v.(type) {
		case *Approval:
			id = o.ID
		case *Elevation:
			id = o.ID
		}
		x.w.Header().Set("Cache-Control", "no-store")
		http.Redirect(x.w, x.r, link(id), http.StatusSeeOther)
		return
	}
	writeJSON(x.w, status, v)
}

// fail answers err: a step-up challenge for a sign-in that is too old,
// else its status with the message.
func (x *call) fail(err error) {
	status, msg := statusOf(err), messageOf(err)
	x.res.Reason = err.Error()
	var we *rules.WorkflowError
	if errors.As(err, &we) && we.Status == http.StatusUnauthorized {
		x.challenge(we)
		return
	}
	if x.h.HTML {
		x.pageStatus(status, messagePage(x, status, msg))
		return
	}
	code := strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_"))
	writeJSON(x.w, status, map[string]string{"error": code, "message": msg})
}

// challenge asks for a fresh sign-in. A browser comes back to the page of
// what it was doing (a GET), not to the form's POST.
func (x *call) challenge(we *rules.WorkflowError) {
	need := authn.Need{StepUp: we.StepUp, Reason: we.Message, Message: we.Message}
	r := x.r
	if x.h.HTML && r.Method != http.MethodGet {
		back := r.Clone(r.Context())
		back.Method = http.MethodGet
		back.Body = http.NoBody
		u := *r.URL
		if i := strings.LastIndexByte(u.Path, '/'); i > 0 {
			u.Path = u.Path[:i] // .../{id}/approve -> .../{id}
		}
		u.RawPath, u.RawQuery = "", ""
		back.URL = &u
		back.RequestURI = u.RequestURI()
		r = back
	}
	if x.h.Challenge != nil {
		x.h.Challenge(x.w, r, need)
		return
	}
	authn.WriteChallenge(x.w, r, need)
}

func statusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	var we *rules.WorkflowError
	if errors.As(err, &we) {
		return we.Status
	}
	return http.StatusInternalServerError
}

func messageOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	var we *rules.WorkflowError
	if errors.As(err, &we) {
		return we.Message
	}
	return "Something went wrong."
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	b, _ := json.Marshal(v)
	b = append(b, '\n')
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
