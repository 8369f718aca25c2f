package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/crmguard/crmguard/internal/mediatype"
	"github.com/tidwall/gjson"
)

// maxBodyDepth bounds the nesting of a checked request body.
const maxBodyDepth = 512

// CheckBody checks a request body against the route's body guards that
// apply to this user. JSON (application/json and */*+json) and form
// (application/x-www-form-urlencoded) bodies are read; a guarded field
// anywhere in the body (see docs/rules.md for what a guard path matches)
// gives 403 naming the field; a body that cannot be read with certainty
// gives 400. An empty body passes. The result is added to the audit.
//
// On a route whose conditions read the values the body sets (`body`),
// the values are read first, strictly (bodyvalues.go: 400 for a body two
// readers could read differently), deny_unless conditions reading them
// are decided, and each field a guard's allow_if judges is checked: 403
// when the condition does not hold for the value set, unless a grant of
// the guard's approval policy is bound to exactly this write (503 when
// the grants cannot be read). An allow_if that reads record is evaluated
// by JudgeTarget on the stored record.
//
// On a POST whose body is JSON, a urlencoded or a multipart form, a top-level _method
// field naming another method (which Laravel, Symfony and Rails obey) gives
// 400 on every route, guarded or not: see ReadsBody.
//
// A GET or HEAD with a body, on a route that judges or scopes its query
// string (`query`, `forward_query`), gives 400: Laravel reads a GET's JSON
// body as its input and Express parses a body whatever the method, so
// parameters sent there would reach the CRM unjudged.
func (d *Decision) CheckBody(contentType string, body []byte) *BodyError {
	if d.Outcome != Allow {
		return nil
	}
	var be *BodyError
	if len(body) > 0 && d.queryOnlyRead() {
		be = &BodyError{Status: http.StatusBadRequest,
			Reason: fmt.Sprintf("route %s judges the query string of a %s and this one carries a body, whose parameters many frameworks read as input (Laravel for JSON, Express for any type) and the guard does not", d.RouteID, strings.ToUpper(d.req.Method))}
	}
	if be == nil && len(body) > 0 {
		be = d.bodyOverride(contentType, body)
	}
	if be == nil && d.route != nil && d.route.readsBody {
		be = d.readValues(contentType, body) // valueguard.go
	}
	if be == nil && len(body) > 0 && len(d.guards) > 0 {
		be = d.checkBody(contentType, body)
	}
	if be == nil && len(body) > 0 && len(d.valueGuards) > 0 {
		be = d.checkValues(contentType, body) // valueguard.go
	}
	if be != nil {
		d.Audit.Decision = "deny"
		if be.Status == http.StatusServiceUnavailable {
			d.Audit.Decision = "error"
		}
		d.Audit.Reason = be.Reason
		be.Message = d.bodyMessage(be) // message.go
		return be
	}
	d.bodyChecked = true
	d.noteBodyAudit(contentType, body) // audit_changes.go
	return nil
}

func (d *Decision) checkBody(contentType string, body []byte) *BodyError {
	bad := func(format string, args ...any) *BodyError {
		return &BodyError{Status: http.StatusBadRequest, Reason: fmt.Sprintf("route %s checks request bodies and ", d.RouteID) + fmt.Sprintf(format, args...)}
	}
	if strings.TrimSpace(contentType) == "" {
		return bad("this body has no Content-Type")
	}
	t, why := readBodyType(contentType)
	if why != "" {
		return bad("%s", why)
	}
	var found *guardHit
	switch {
	case t.Kind == mediatype.JSON:
		if tooDeep(body, maxBodyDepth) {
			return bad("this body nests deeper than %d levels", maxBodyDepth)
		}
		if !gjson.ValidBytes(body) {
			return bad("this JSON body is not valid JSON")
		}
		var chain []string
		var walkErr error
		found, walkErr = d.walkJSON(gjson.ParseBytes(body), chain, "", 0)
		if walkErr != nil {
			return bad("%v", walkErr)
		}
		if found == nil {
			// JSON Patch (RFC 6902) names the changed field in "path", a
			// JSON Pointer, not as a key: [{"op":"replace","path":"/stage"}].
			found = d.patchTargets(gjson.ParseBytes(body))
		}
	case t.Kind == mediatype.Form:
		// Many legacy CRMs read the raw body as JSON whatever its label:
		// a form-labelled body that is JSON is checked as JSON too.
		if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
			if tooDeep(trimmed, maxBodyDepth) {
				return bad("this body nests deeper than %d levels", maxBodyDepth)
			}
		}
		if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') && gjson.ValidBytes(trimmed) {
			hit, walkErr := d.walkJSON(gjson.ParseBytes(trimmed), nil, "", 0)
			if walkErr != nil {
				return bad("%v", walkErr)
			}
			if hit != nil {
				found = hit
				break
			}
		}
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return bad("this form body cannot be read: %v", err)
		}
		for key := range vals {
			g := d.formGuard(key)
			if g != nil {
				found = &guardHit{guard: g, at: key}
				break
			}
		}
	case t.Kind == mediatype.Multipart:
		// Field names are read like urlencoded keys; values (and files)
		// are not: a guard names fields, whatever they hold.
		err := eachFormPart(t.Param("boundary"), body, func(p formPart) (bool, error) {
			g := d.formGuard(p.name)
			if g != nil {
				found = &guardHit{guard: g, at: p.name}
				return true, nil
			}
			return false, nil
		})
		if err != nil {
			return bad("%v", err)
		}
	default:
		return bad("cannot read %q bodies (JSON, urlencoded and multipart forms only)", t.Essence)
	}
	if found == nil {
		return nil
	}
	where := ""
	if found.at != found.guard.path {
		where = fmt.Sprintf(" (at %s)", found.at)
	}
	who := rolesPhrase(d.user)
	if found.guard.denyUnless != nil && !hasAny(d.user, found.guard.deny) {
		who = fmt.Sprintf("%s (the condition `%s` does not hold)", who, found.guard.denyUnless.Source())
	}
	return &BodyError{
		Status: http.StatusForbidden,
		Field:  found.guard.path,
		Reason: fmt.Sprintf("route %s: the request body sets %s%s, which %s may not change", d.RouteID, found.guard.path, where, who),
	}
}

type guardHit struct {
	guard *bodyGuard
	at    string
}

// walkJSON finds the first place of the body an applying guard names.
func (d *Decision) walkJSON(v gjson.Result, chain []string, at string, depth int) (*guardHit, error) {
	var hit *guardHit
	err := eachGuardHit(d.guards, v, chain, at, depth, true, func(g *bodyGuard, at string, _ bool) bool {
		hit = &guardHit{guard: g, at: at}
		return false
	})
	return hit, err
}

// eachGuardHit calls fn for every member of every object of v, however
// deep and however often a key repeats, whose chain of keys ends in the
// path of one of guards (the first that does); keys are compared decoded
// (\u escapes). top says the member is at the guard's path from the
// body's root, through object keys only (not in an array, not in a string
// holding JSON). fn returns false to stop the walk.
func eachGuardHit(guards []*bodyGuard, v gjson.Result, chain []string, at string, depth int, top bool, fn func(g *bodyGuard, at string, top bool) bool) error {
	var err error
	stopped := false
	walk := func(v gjson.Result, chain []string, at string, depth int, top bool) {
		err = eachGuardHit(guards, v, chain, at, depth, top, func(g *bodyGuard, at string, top bool) bool {
			if !fn(g, at, top) {
				stopped = true
				return false
			}
			return true
		})
	}
	if depth > maxBodyDepth {
		return fmt.Errorf("this body nests deeper than %d levels", maxBodyDepth)
	}
	switch {
	case v.Type == gjson.String:
		// A string that holds JSON (a "payload" or "data" field some CRMs
		// decode a second time) is checked like the body itself.
		if s := strings.TrimSpace(v.Str); len(s) > 1 && (s[0] == '{' || s[0] == '[') {
			if tooDeep([]byte(s), maxBodyDepth-depth) {
				return fmt.Errorf("this body nests deeper than %d levels", maxBodyDepth)
			}
			if gjson.Valid(s) {
				walk(gjson.Parse(s), chain, at, depth+1, false)
			}
		}
	case v.IsObject():
		v.ForEach(func(k, val gjson.Result) bool {
			c := append(chain, k.String())
			p := joinAt(at, k.String())
			if g := guardIn(guards, c); g != nil {
				if !fn(g, p, top && len(c) == len(g.segs)) {
					stopped = true
					return false
				}
			}
			walk(val, c, p, depth+1, top)
			return !stopped && err == nil
		})
	case v.IsArray():
		i := 0
		v.ForEach(func(_, val gjson.Result) bool {
			walk(val, chain, joinAt(at, fmt.Sprint(i)), depth+1, false)
			i++
			return !stopped && err == nil
		})
	}
	return err
}

func joinAt(at, k string) string {
	if at == "" {
		return k
	}
	return at + "." + k
}

// guardFor returns the applying guard whose path ends the chain of keys.
func (d *Decision) guardFor(chain []string) *bodyGuard { return guardIn(d.guards, chain) }

// guardIn returns the first of guards whose path ends the chain of keys.
// Keys compare without case (many servers bind JSON and form fields
// case-insensitively; strings.EqualFold is encoding/json's rule).
func guardIn(guards []*bodyGuard, chain []string) *bodyGuard {
	for _, g := range guards {
		if len(g.segs) > len(chain) {
			continue
		}
		tail := chain[len(chain)-len(g.segs):]
		ok := true
		for i, s := range g.segs {
			if !strings.EqualFold(s, tail[i]) {
				ok = false
				break
			}
		}
		if ok {
			return g
		}
	}
	return nil
}

// formGuard returns the applying guard a form field name (urlencoded,
// multipart or a query parameter) sets: read as written, and as PHP names
// it.
func (d *Decision) formGuard(key string) *bodyGuard { return formGuardIn(d.guards, key) }

// formGuardIn returns the first of guards a form field name sets (see
// formGuard).
func formGuardIn(guards []*bodyGuard, key string) *bodyGuard {
	if g := guardIn(guards, formKeyChain(key)); g != nil {
		return g
	}
	return guardIn(guards, formKeyChain(phpFormName(key)))
}

// formKeyChain splits a form key into its keys: "deal[stage]",
// "deal.stage", "items[0][stage]" and "deal[stage][]" all end in "stage";
// indexes and empty brackets are dropped like array positions in JSON.
func formKeyChain(key string) []string {
	var out []string
	for _, part := range strings.FieldsFunc(key, func(r rune) bool { return r == '[' || r == ']' || r == '.' }) {
		// PHP drops leading spaces of a field name and others trim both
		// ends: " stage" is stage.
		part = strings.TrimSpace(part)
		if part == "" || isDigits(part) {
			continue
		}
		out = append(out, part)
	}
	return out
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// phpFormName is the name PHP gives a form key: in the name before its
// first "[", spaces and dots become "_", and a "[" that is never closed
// becomes "_" too, so "contract.amount", "contract amount" and
// "contract[amount" all reach a CRM written in PHP as contract_amount.
func phpFormName(key string) string {
	if !strings.ContainsAny(key, " .[") {
		return key
	}
	key = strings.TrimLeft(key, " ")
	base, rest := key, ""
	if i := strings.IndexByte(key, '['); i >= 0 {
		if strings.IndexByte(key[i:], ']') < 0 {
			base, rest = key[:i]+"_"+key[i+1:], ""
		} else {
			base, rest = key[:i], key[i:]
		}
	}
	base = phpNameReplacer.Replace(base)
	return base + rest
}

var phpNameReplacer = strings.NewReplacer(" ", "_", ".", "_")

// readBodyType reads a request body's Content-Type (mediatype.Read: one
// charset policy for every body the proxy reads). why is "" when it can be
// read, else the end of a sentence about the body saying why not.
func readBodyType(contentType string) (t mediatype.Type, why string) {
	t, err := mediatype.Read(contentType)
	var ce *mediatype.CharsetError
	switch {
	case err == nil:
		return t, ""
	case errors.As(err, &ce):
		return t, fmt.Sprintf("is in charset %q: only UTF-8 (or US-ASCII) bodies are read", ce.Charset)
	}
	return t, fmt.Sprintf("has a Content-Type that cannot be read (%v)", strings.TrimPrefix(err.Error(), "mediatype: "))
}

// ReadsBody reports whether CheckBody must see this request's body: the
// route has body guards, the request is a POST with a JSON or form body
// that could carry a _method override, or a GET or HEAD on a route that
// judges its query string (which must have no body).
func (d *Decision) ReadsBody(contentType string) bool {
	return d.GuardsBody() || d.Outcome == Allow && (d.overridable(contentType) || d.queryOnlyRead())
}

// queryOnlyRead reports a GET or HEAD on a route with `query` or
// `forward_query`: its parameters must all be in the query string.
func (d *Decision) queryOnlyRead() bool {
	if d.route == nil || d.req == nil || d.route.qguard == nil && len(d.route.forward) == 0 {
		return false
	}
	return strings.EqualFold(d.req.Method, http.MethodGet) || strings.EqualFold(d.req.Method, http.MethodHead)
}

// overridable reports a POST with a body type frameworks read _method from.
func (d *Decision) overridable(contentType string) bool {
	if d.req == nil || !strings.EqualFold(d.req.Method, http.MethodPost) {
		return false
	}
	// The type alone: a form whose parameters cannot be read is still
	// a form to the CRM (bodyOverride then refuses it).
	switch mediatype.KindOf(contentType) {
	case mediatype.Form, mediatype.Multipart, mediatype.JSON:
		return true
	}
	return false
}

// bodyOverride refuses a POST body whose top-level _method field asks the
// CRM to treat the request as another method than the one judged.
func (d *Decision) bodyOverride(contentType string, body []byte) *BodyError {
	if !d.overridable(contentType) {
		return nil
	}
	t, why := readBodyType(contentType)
	if why != "" {
		// The CRM may read a _method the proxy cannot.
		return &BodyError{Status: http.StatusBadRequest, Field: "_method",
			Reason: fmt.Sprintf("route %s reads POST bodies for a _method override and this body %s", d.RouteID, why)}
	}
	var asked []string
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '{' {
		if tooDeep(trimmed, maxBodyDepth) {
			return &BodyError{Status: http.StatusBadRequest, Reason: fmt.Sprintf("route %s reads POST bodies for a _method override and this body nests deeper than %d levels", d.RouteID, maxBodyDepth)}
		}
		gjson.ParseBytes(trimmed).ForEach(func(k, v gjson.Result) bool {
			if strings.EqualFold(strings.TrimSpace(k.String()), "_method") {
				asked = append(asked, v.String())
			}
			return true
		})
	}
	switch t.Kind {
	case mediatype.Form:
		vals, _ := url.ParseQuery(string(body))
		for k, vs := range vals {
			if isMethodField(k) {
				asked = append(asked, vs...)
			}
		}
	case mediatype.Multipart:
		// Rails, Laravel and Symfony read _method from multipart forms
		// too. A body that cannot be read for it is refused: the CRM
		// might read a _method the proxy did not see.
		err := eachFormPart(t.Param("boundary"), body, func(p formPart) (bool, error) {
			if !isMethodField(p.name) {
				return false, nil
			}
			v, err := io.ReadAll(p.part)
			if err != nil {
				return false, fmt.Errorf("the multipart body cannot be read: %w", err)
			}
			asked = append(asked, string(v))
			return false, nil
		})
		if err != nil {
			return &BodyError{Status: http.StatusBadRequest, Field: "_method",
				Reason: fmt.Sprintf("route %s reads POST bodies for a _method override and %v", d.RouteID, err)}
		}
	}
	for _, v := range asked {
		if !strings.EqualFold(strings.TrimSpace(v), d.req.Method) {
			return &BodyError{Status: http.StatusBadRequest, Field: "_method",
				Reason: fmt.Sprintf("the request body asks to be treated as %q through the _method field; the proxy judges the real method %s only", v, strings.ToUpper(d.req.Method))}
		}
	}
	return nil
}

// patchTargets checks the JSON Pointers of a JSON Patch document (an array
// of operations): the "path" of every operation but "test", and "from" of
// "move" (which removes it). Numeric and "-" array steps are dropped, like
// array positions in a JSON body.
func (d *Decision) patchTargets(doc gjson.Result) *guardHit {
	if !doc.IsArray() {
		return nil
	}
	var hit *guardHit
	doc.ForEach(func(_, op gjson.Result) bool {
		if !op.IsObject() {
			return true
		}
		kind := strings.ToLower(op.Get("op").String())
		var pointers []string
		if kind != "test" {
			pointers = append(pointers, op.Get("path").String())
		}
		if kind == "move" {
			pointers = append(pointers, op.Get("from").String())
		}
		for _, ptr := range pointers {
			var chain []string
			for _, step := range strings.Split(ptr, "/") {
				step = strings.NewReplacer("~1", "/", "~0", "~").Replace(step)
				if step == "" || step == "-" || isDigits(step) {
					continue
				}
				chain = append(chain, step)
			}
			if g := d.guardFor(chain); g != nil {
				hit = &guardHit{guard: g, at: ptr}
				return false
			}
		}
		return true
	})
	return hit
}

// tooDeep reports JSON text nesting deeper than max. It scans without
// recursion, so that a body of millions of "[" is refused before a
// recursive validator could exhaust the goroutine stack (a fatal error
// that would stop the whole server).
func tooDeep(b []byte, max int) bool {
	depth, inString := 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > max {
				return true
			}
		case '}', ']':
			depth--
		}
	}
	return false
}
