package rules

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/crmguard/crmguard/internal/mediatype"
	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/internal/urlpath"
	"github.com/tidwall/gjson"
	"go.yaml.in/yaml/v3"
)

// A route's `target` judges a request against the stored record it
// changes: before the request is forwarded, the caller GETs the record from
// the upstream (TargetFetch), and JudgeTarget evaluates the route's
// `allow_if` over it. A PATCH names only an id; the record says who owns it.

// targetSpec is a route's compiled `target`.
type targetSpec struct {
	src     string     // the fetch template as written
	segs    []fetchSeg // literal or {param} segments of the fetch path
	query   string     // the template's literal query, encoded ("" none)
	recSrc  string     // `record` as written
	recKeys []string   // keys and indexes to the record; nil: the answer itself
	allowIf *cond.Expr // `allow_if`
	// allowCond is allow_if with its native predicate, evaluated on each
	// stored record (State.EvalJSON).
	allowCond *cond.Condition
	visible   *cond.Expr // `visible` (hidden.go); nil: every record is visible
	// idKeys maps a request key (body field, form field, query
	// parameter), lowercased, to the fetch parameter whose value it must
	// equal. Keys match in any case: ASP.NET and Jackson (with
	// case-insensitive properties) bind "ID" and "Id" to id.
	idKeys  map[string]string
	ifMatch bool // `if_match`
	node    *yaml.Node
	// bulk is set on a bulk write (`ids`): the records are named in the
	// body (bulk.go).
	bulk *bulkSpec
}

// TargetFetch is the stored record a request must be judged against before
// it is forwarded (the route's `target`).
type TargetFetch struct {
	// Path is the escaped path, with the template's query if any, to GET
	// from the upstream as the same user.
	Path string
	// IfMatch (the route's `if_match`) asks the caller to make the write
	// conditional on the version judged: the fetch answer's strong ETag is
	// sent as the write's If-Match, so a CRM that supports conditional
	// requests refuses the write (412) when the record changed between
	// the fetch and the write. An answer without a strong ETag is refused.
	IfMatch bool
	// Bulk is true on a bulk write (the route's target names its records
	// in the body: `ids`). Target then has no Path: the fetches are
	// TargetFetches, once the body's ids are read.
	Bulk bool
	// IDs are the ids of the records a bulk write's fetch answers for: one
	// for a fetch per id, all of them for a fetch_many.
	IDs []string
}

// TargetAnswer is the upstream's answer to a TargetFetch.
type TargetAnswer struct {
	// Status is the upstream's HTTP status (0 when there was no answer).
	Status int
	// Header holds the answer's headers.
	Header http.Header
	// Body is the answer's body, decoded (no content coding left).
	Body []byte
	// Err says why there is no usable answer (the upstream is down, the
	// answer is over the size cap or cannot be decoded); nil otherwise.
	Err error
}

// TargetAudit is what the target fetch found, for the audit event.
type TargetAudit struct {
	// Fetched is the path the record was fetched from.
	Fetched string `json:"fetched"`
	// Status is the upstream's status (0: no answer).
	Status int `json:"status"`
	// Allowed is true when the request may change the record.
	Allowed bool `json:"allowed"`
	// Reason says why the request was refused (empty when allowed).
	Reason string `json:"reason,omitempty"`
	// IDs are the records a bulk write names, in the body's order.
	IDs []string `json:"ids,omitempty"`
	// Fetches counts the GETs made for a bulk write.
	Fetches int `json:"fetches,omitempty"`
	// Refused is the id of the record that refused a bulk write.
	Refused string `json:"refused,omitempty"`
}

// fetchSeg is one segment of a fetch template: a literal or a {param}.
type fetchSeg struct {
	param bool   // {text}
	text  string // the literal, or the parameter's name
}

// expand builds the escaped fetch path for a request's path parameters.
// Each parameter is escaped as one segment (url.PathEscape), and the
// result must normalise back to exactly the template's segments: a value
// holding "/", "..", "?", "#" or "%" can never move the fetch to another
// path.
func (t *targetSpec) expand(params map[string]string) (string, error) {
	var b strings.Builder
	want := make([]string, 0, len(t.segs))
	for _, s := range t.segs {
		v := s.text
		if s.param {
			var ok bool
			v, ok = params[s.text]
			if !ok || v == "" {
				return "", fmt.Errorf("the request has no value for {%s}", s.text)
			}
		}
		want = append(want, v)
		b.WriteByte('/')
		b.WriteString(url.PathEscape(v))
	}
	escaped := b.String()
	if escaped == "" {
		escaped = "/"
	}
	_, got, err := urlpath.Normalize(escaped)
	if err != nil {
		return "", fmt.Errorf("the record path %q cannot be fetched unambiguously: %v", escaped, strings.TrimPrefix(err.Error(), "urlpath: "))
	}
	if len(got) != len(want) {
		return "", fmt.Errorf("the record path %q does not keep the shape of %q", escaped, t.src)
	}
	for i := range got {
		if got[i] != want[i] {
			return "", fmt.Errorf("the record path %q does not keep the shape of %q", escaped, t.src)
		}
	}
	if t.query != "" {
		escaped += "?" + t.query
	}
	return escaped, nil
}

// noteTarget prepares the record fetch of an allowed request; a reason is
// returned when the record cannot be named safely.
func (d *Decision) noteTarget(rt *route) string {
	var p string
	if b := rt.target.bulk; b != nil {
		// The ids are in the body; a CRM merging query and body
		// parameters (PHP's $_REQUEST) must not find other ones there.
		for k := range d.req.URL.Query() {
			if strings.EqualFold(formBase(k), b.before[0]) {
				return fmt.Sprintf("route %s: the query sets %q, where the body names the records (%s); a CRM may read either", rt.id, k, b.idsSrc)
			}
		}
	} else {
		var err error
		if p, err = rt.target.expand(d.Params); err != nil {
			return fmt.Sprintf("route %s: %v", rt.id, err)
		}
	}
	if d.req != nil && d.req.URL != nil {
		if bad := cleanForTarget(d.req.URL.EscapedPath()); bad != "" {
			return fmt.Sprintf("route %s: the request path %s; the record fetched (%s) must be the one the CRM changes, so write the path clean", rt.id, bad, p)
		}
		for k, vs := range d.req.URL.Query() {
			if bad := d.idMismatch(rt, formBase(k), vs); bad != "" {
				return fmt.Sprintf("route %s: the query %s", rt.id, bad)
			}
		}
	}
	d.target = &TargetFetch{Path: p, IfMatch: rt.target.ifMatch, Bulk: rt.target.bulk != nil}
	return ""
}

// cleanForTarget says how an escaped request path could name another
// record at the CRM than the one its clean form names ("" when it cannot):
// dot segments ("/api/customers/2/../1" is judged and fetched as 1, but a
// CRM taking the third segment changes 2), empty segments and a trailing
// slash.
func cleanForTarget(escaped string) string {
	if escaped == "" || escaped == "/" {
		return ""
	}
	for _, seg := range strings.Split(escaped[1:], "/") {
		switch dec, _ := url.PathUnescape(seg); {
		case seg == "":
			return fmt.Sprintf("%q has an empty segment or a trailing slash", escaped)
		case dec == "." || dec == "..":
			return fmt.Sprintf("%q has a dot segment", escaped)
		}
	}
	return ""
}

// formBase is the variable a PHP CRM stores a form or query key in:
// "id", "id[]" and "id[0]" all set $_REQUEST["id"].
func formBase(key string) string {
	k := phpFormName(key)
	if i := strings.IndexByte(k, '['); i > 0 {
		return k[:i]
	}
	return k
}

// idMismatch reports a request key that names the target record (a key of
// the route's id_fields) with values other than the path's ("" when none).
func (d *Decision) idMismatch(rt *route, key string, vals []string) string {
	p, ok := rt.target.idKeys[strings.ToLower(key)]
	if !ok {
		return ""
	}
	want := d.Params[p]
	for _, v := range vals {
		if v != want {
			return fmt.Sprintf("names record %q at %q, but the path names %q ({%s}); a CRM may change the record the body or query names, so both must agree", v, key, want, p)
		}
	}
	return ""
}

// CheckTargetBody refuses (400) a request body that names another record
// than its path: on a route with a target, a key of `id_fields` (by
// default the fetch parameters' names, e.g. "id") present at the top of a
// JSON object, in each object of a top-level JSON array (a bulk update), as
// a JSON Patch operation's path ("/id"), or as a form field
// (urlencoded or multipart) must equal the path's value. A body of any
// other type (or none) that is valid JSON is read as JSON; other bodies
// (XML, text) are not read. nil when the body agrees or the route has no target.
//
// On a bulk write (target ids) it reads the ids the body names, unless
// CheckBody did already: 400 when the body does not name them with
// certainty (see readBodyValues), names none, or names one that cannot be
// fetched unambiguously; 413 for more than max_ids.
func (d *Decision) CheckTargetBody(contentType string, body []byte) *BodyError {
	if t := d.Target(); t != nil && t.Bulk {
		if d.fetches != nil {
			return nil
		}
		if d.values == nil {
			vals, err := readBodyValues(contentType, body)
			if err != nil {
				return &BodyError{Status: http.StatusBadRequest, Reason: fmt.Sprintf("route %s reads the records a bulk write names from its body and %v", d.RouteID, err)}
			}
			d.values = vals
		}
		return d.readBulkIDs() // bulk.go
	}
	if d.Target() == nil || len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	rt := d.route
	refuse := func(status int, what string) *BodyError {
		return &BodyError{Status: status, Reason: fmt.Sprintf("route %s: the request body %s", rt.id, what)}
	}
	var t mediatype.Type
	switch mediatype.KindOf(contentType) {
	case mediatype.JSON, mediatype.Form, mediatype.Multipart:
		// A body the proxy reads for ids must be read with certainty:
		// a form in UTF-16 would hide its id from the proxy, not from the CRM.
		var why string
		if t, why = readBodyType(contentType); why != "" {
			return refuse(http.StatusBadRequest, why)
		}
	}
	switch {
	case t.Kind == mediatype.JSON:
		if tooDeep(body, maxBodyDepth) || !gjson.ValidBytes(body) {
			return refuse(http.StatusBadRequest, "is not JSON the proxy can read for the record's id")
		}
		if bad := d.jsonIDMismatch(rt, gjson.ParseBytes(body)); bad != "" {
			return refuse(http.StatusBadRequest, bad)
		}
	case t.Kind == mediatype.Form:
		q, err := url.ParseQuery(string(body))
		if err != nil {
			return refuse(http.StatusBadRequest, fmt.Sprintf("is not a form the proxy can read: %v", err))
		}
		for k, vs := range q {
			if bad := d.idMismatch(rt, formBase(k), vs); bad != "" {
				return refuse(http.StatusBadRequest, bad)
			}
		}
	case t.Kind == mediatype.Multipart:
		var bad string
		err := eachFormPart(t.Param("boundary"), body, func(p formPart) (bool, error) {
			name := formBase(p.name)
			if _, ok := rt.target.idKeys[strings.ToLower(name)]; !ok {
				return false, nil
			}
			v, err := io.ReadAll(p.part)
			if err != nil {
				return false, fmt.Errorf("the multipart body cannot be read: %w", err)
			}
			bad = d.idMismatch(rt, name, []string{string(v)})
			return bad != "", nil
		})
		if err != nil {
			return refuse(http.StatusBadRequest, fmt.Sprintf("is not multipart the proxy can read: %v", err))
		}
		if bad != "" {
			return refuse(http.StatusBadRequest, bad)
		}
	default:
		// Many CRMs decode the raw body as JSON whatever its label (PHP's
		// json_decode(file_get_contents("php://input")), body parsers
		// configured for any type): a body that is JSON is read as JSON.
		if t := bytes.TrimSpace(body); (t[0] == '{' || t[0] == '[') && !tooDeep(t, maxBodyDepth) && gjson.ValidBytes(t) {
			if bad := d.jsonIDMismatch(rt, gjson.ParseBytes(t)); bad != "" {
				return refuse(http.StatusBadRequest, bad)
			}
		}
	}
	return nil
}

// jsonIDMismatch checks the top level of a JSON body: an object's keys
// (every copy of a key present twice), each object of an array, and JSON
// Patch operations on "/<key>".
func (d *Decision) jsonIDMismatch(rt *route, v gjson.Result) string {
	scalar := func(r gjson.Result) string {
		switch r.Type {
		case gjson.String:
			return r.Str
		case gjson.Number:
			return r.Raw
		}
		return r.Raw // null, true, an object: never a path segment
	}
	var bad string
	object := func(o gjson.Result) {
		var op, path string
		o.ForEach(func(k, val gjson.Result) bool {
			switch k.Str {
			case "op":
				op = val.Str
			case "path":
				path = val.Str
			}
			bad = d.idMismatch(rt, k.Str, []string{scalar(val)})
			return bad == ""
		})
		if bad == "" && op != "" && strings.HasPrefix(path, "/") {
			key := strings.NewReplacer("~1", "/", "~0", "~").Replace(path[1:])
			if _, ok := rt.target.idKeys[strings.ToLower(key)]; ok {
				bad = d.idMismatch(rt, key, []string{scalar(o.Get("value"))})
				if bad == "" && op != "replace" && op != "add" && op != "test" {
					bad = fmt.Sprintf("operates (%s) on the record's id at %q", op, path)
				}
			}
		}
	}
	switch {
	case v.IsObject():
		object(v)
	case v.IsArray():
		v.ForEach(func(_, e gjson.Result) bool {
			if e.IsObject() {
				object(e)
			}
			return bad == ""
		})
	}
	return bad
}

// Target returns the stored record the request must be judged against
// before it is forwarded, or nil when the request is not allowed or its
// route has no target. The caller GETs it from the upstream, as the same
// user, and passes the answer to JudgeTarget; the request must not be
// forwarded before JudgeTarget returned nil. On a bulk write (Bulk) there
// are several records: use TargetFetches and JudgeTargets (JudgeTarget
// refuses a bulk write).
func (d *Decision) Target() *TargetFetch {
	if d.Outcome != Allow {
		return nil
	}
	return d.target
}

// JudgeTarget decides a request whose route's target names one record on
// the upstream's answer to its Target fetch: JudgeTargets with one answer.
func (d *Decision) JudgeTarget(a TargetAnswer) *Block {
	return d.JudgeTargets([]TargetAnswer{a})
}

// JudgeTargets decides the request on the upstream's answers to its
// TargetFetches, in the same order. A nil *Block lets the request go on.
// Otherwise the block says what the client gets: 403 when allow_if is
// false for a record (or cannot be evaluated, or the CRM refused the fetch
// with 401/403), or a body guard's allow_if refuses the value set on it;
// 404 when the CRM has no such record (404, 410, or a fetch_many answer
// without it); 502 for every other answer (an error, not JSON, no object
// at `record`, no answer at all, another number of answers than fetches).
// On a bulk write the first record refused refuses the whole write, and
// the reason names its id. In shadow mode the outcome is audited and nil
// returned. The result is recorded in Audit.Target.
func (d *Decision) JudgeTargets(answers []TargetAnswer) *Block {
	t := d.Target()
	if t == nil {
		return nil
	}
	rt := d.route
	fetches := d.TargetFetches()
	au := &TargetAudit{}
	if t.Bulk {
		au.IDs, au.Fetches = append([]string(nil), d.bulkIDs...), len(fetches)
	}
	if len(fetches) > 0 {
		au.Fetched = fetches[0].Path
	}
	d.Audit.Target = au
	refuseAs := func(status int, reason, message string) *Block {
		au.Reason = reason
		decision := "deny"
		if status == http.StatusBadGateway || status == http.StatusServiceUnavailable {
			decision = "error"
		}
		d.Audit.Decision = decision
		d.Audit.Reason = reason
		if d.Shadow {
			d.Audit.Reason = "shadow mode, not enforced: " + reason
			au.Reason = d.Audit.Reason
			return nil
		}
		d.Outcome, d.Status, d.Reason = Deny, status, reason
		return &Block{Status: status, Reason: reason, Message: message}
	}
	refuse := func(status int, reason string) *Block {
		return refuseAs(status, fmt.Sprintf("route %s: %s", rt.id, reason), "")
	}
	switch {
	case rt.readsBody && !d.bodyChecked:
		return refuse(http.StatusForbidden, "the values the request body sets were not checked (CheckBody) before the stored record, so the change cannot be judged")
	case len(fetches) == 0:
		return refuse(http.StatusForbidden, "the records the bulk write names were not read (CheckTargetBody), so the change cannot be judged")
	case len(answers) != len(fetches):
		return refuse(http.StatusBadGateway, fmt.Sprintf("%d answers were given for %d fetches of the stored records", len(answers), len(fetches)))
	}
	// allow_if's request constants (user, request, body) are evaluated
	// once; judge then decides each stored record, natively when it can.
	var allow *cond.State
	// judge decides one stored record; id names it on a bulk write.
	judge := func(raw []byte, id string) *Block {
		this := "this record"
		if id != "" {
			this = "record " + id
		}
		var act *cond.Activation // record conditions in CEL, built on first need
		if rt.target.visible != nil || len(d.recordGuards) > 0 {
			act = d.act.WithRecord(raw)
		}
		if reason := d.targetHidden(act); reason != "" { // hidden.go: answered like a missing record
			if id != "" {
				reason = strings.Replace(reason, "the record to change", "record "+id, 1)
			}
			au.Refused = id
			return refuseAs(http.StatusNotFound, fmt.Sprintf("route %s: %s", rt.id, reason), notFoundMessage)
		}
		if allow == nil {
			allow = rt.target.allowCond.Prepare(d.act)
		}
		ok, err := allow.EvalJSON(raw)
		if err != nil {
			d.Audit.EvalErrors++
			au.Refused = id
			return refuse(http.StatusForbidden, fmt.Sprintf("you may not change %s: the condition %q could not be evaluated on it (%v), so it counts as false", this, rt.target.allowIf.Source(), err))
		}
		if !ok {
			au.Refused = id
			return refuse(http.StatusForbidden, fmt.Sprintf("you may not change %s: the condition %q does not hold for it", this, rt.target.allowIf.Source()))
		}
		for _, g := range d.recordGuards {
			ok, err := g.allowIf.EvalBool(act)
			if err != nil {
				d.Audit.EvalErrors++
			}
			if err != nil || !ok {
				if status, reason := d.valueRefused(g, id, err); status != 0 { // valueguard.go
					au.Refused = id
					return refuseAs(status, reason, d.valueMessage(g))
				}
			}
		}
		return nil
	}
	var judged []byte // the one stored record of a single target
	for i, f := range fetches {
		a := answers[i]
		au.Status = a.Status
		what, this, id := "the record to change", "this record", ""
		if t.Bulk && len(f.IDs) == 1 {
			what, this, id = "record "+f.IDs[0], "record "+f.IDs[0], f.IDs[0]
		} else if t.Bulk {
			what, this = "the records to change", "these records"
		}
		fail := func(status int, reason string) *Block {
			au.Refused = id
			return refuse(status, reason)
		}
		switch {
		case a.Err != nil:
			return fail(http.StatusBadGateway, fmt.Sprintf("%s (GET %s) could not be fetched: %v", what, f.Path, a.Err))
		case a.Status == http.StatusNotFound || a.Status == http.StatusGone:
			au.Refused = id
			return refuseAs(http.StatusNotFound, fmt.Sprintf("route %s: %s does not exist (the CRM answered %d to GET %s)", rt.id, what, a.Status, f.Path), notFoundMessage) // hidden.go
		case a.Status == http.StatusUnauthorized || a.Status == http.StatusForbidden:
			return fail(http.StatusForbidden, fmt.Sprintf("you may not change %s: the CRM refused to show it (%d to GET %s)", this, a.Status, f.Path))
		case a.Status < 200 || a.Status > 299 || a.Status == http.StatusNoContent || a.Status == http.StatusPartialContent:
			return fail(http.StatusBadGateway, fmt.Sprintf("%s could not be read: the CRM answered %d to GET %s", what, a.Status, f.Path))
		}
		// The stored record is read like an answer: one charset policy.
		if _, err := mediatype.Lines(a.Header["Content-Type"]); err != nil {
			return fail(http.StatusBadGateway, fmt.Sprintf("%s (GET %s) could not be read: %s", what, f.Path, answerTypeError(err)))
		}
		if m := rt.target.bulk; m != nil && m.many != nil {
			recs, err := m.many.records(a.Body)
			if err != nil {
				return fail(http.StatusBadGateway, fmt.Sprintf("the stored records (GET %s) could not be read: %v", f.Path, err))
			}
			for _, id := range f.IDs {
				raw, ok := recs[id]
				if !ok {
					au.Refused = id
					return refuseAs(http.StatusNotFound, fmt.Sprintf("route %s: record %s to change does not exist (the CRM's answer to GET %s does not hold it)", rt.id, id, f.Path), notFoundMessage)
				}
				if b := judge(raw, id); b != nil || au.Reason != "" {
					return b
				}
			}
			continue
		}
		raw, err := rt.target.record(a.Body)
		if err != nil {
			return fail(http.StatusBadGateway, fmt.Sprintf("%s (GET %s) could not be read: %v", what, f.Path, err))
		}
		if b := judge(raw, id); b != nil || au.Reason != "" {
			return b
		}
		if !t.Bulk {
			judged = raw
		}
	}
	if t.IfMatch {
		if et := answers[0].Header.Get("ETag"); et == "" || strings.HasPrefix(et, "W/") || !strings.HasPrefix(et, `"`) {
			return refuse(http.StatusBadGateway, fmt.Sprintf("the route makes writes conditional (if_match) but the CRM's answer to GET %s has no strong ETag (%q)", t.Path, et))
		}
	}
	au.Allowed = true
	if judged != nil {
		d.noteOldValues(judged) // audit_changes.go
	}
	return nil
}

// record finds the record in a fetch answer: it must be valid JSON with an
// object at `record`. A key present twice on the way is refused (a CRM may
// read either copy).
func (t *targetSpec) record(body []byte) ([]byte, error) {
	cur, err := t.place(body)
	if err != nil {
		return nil, err
	}
	if !cur.IsObject() {
		return nil, fmt.Errorf("the value at %q is not a JSON object", t.recSrc)
	}
	return []byte(cur.Raw), nil
}

// place finds the value at `record` (recKeys) in a fetch answer, which
// must be valid JSON; a key present twice on the way is refused.
func (t *targetSpec) place(body []byte) (gjson.Result, error) {
	if !gjson.ValidBytes(body) {
		return gjson.Result{}, fmt.Errorf("the answer is not valid JSON")
	}
	cur := gjson.ParseBytes(body)
	for i, k := range t.recKeys {
		var next gjson.Result
		n := 0
		switch {
		case cur.IsObject():
			cur.ForEach(func(key, v gjson.Result) bool {
				if key.Str == k {
					next = v
					n++
				}
				return true
			})
		case cur.IsArray() && isDigits(k):
			if idx, err := strconv.Atoi(k); err == nil {
				if arr := cur.Array(); idx < len(arr) {
					next, n = arr[idx], 1
				}
			}
		}
		if n == 0 {
			return gjson.Result{}, fmt.Errorf("nothing at %q (key %q of %q)", t.recSrc, k, strings.Join(t.recKeys[:i+1], "."))
		}
		if n > 1 {
			return gjson.Result{}, fmt.Errorf("the key %q appears %d times on the way to %q", k, n, t.recSrc)
		}
		cur = next
	}
	return cur, nil
}
