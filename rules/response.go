package rules

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/crmguard/crmguard/internal/mediatype"
	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/rewrite"
)

// actions maps the rule file's action names to the rewriter's.
var actions = map[string]rewrite.Action{
	"remove": rewrite.Remove, "mask": rewrite.Mask, "hash": rewrite.Hash, "null": rewrite.Null, "replace": rewrite.Replace,
}

// rewriteField is the rule as the rewriter applies it; when is its
// per-record condition (nil: it always applies).
func (f *fieldRule) rewriteField(when rewrite.Predicate) rewrite.Field {
	return rewrite.Field{Path: f.p, Action: actions[f.action], Mask: f.maskFn, Replace: f.replace, When: when, Name: f.path}
}

// A rewrite plan depends on the request only through which field rules
// apply (roles, user-only conditions), whether `visible` is constant, and
// the request constants inside record conditions. Compiling a plan builds
// the rewriter's path automaton, so compiled plans are kept in pools, one
// per route and selection of field rules: a pooled plan's predicates call
// through slots that are set for the one request using it.

// planKey names a selection of a route's field rules.
type planKey struct {
	route   *route
	visible uint8  // 0: none or constant true, 1: per record or constant false
	fields  string // one byte per field rule, then per answer rule: 0 left out, 1 applies
}

// pooledPlan is a compiled plan whose predicates are set per request.
type pooledPlan struct {
	plan    *rewrite.Plan
	visible rewrite.Predicate
	whens   []rewrite.Predicate // by field rule index
}

// plan returns a compiled rewrite plan for this request and a function
// that gives it back once the rewrite is done.
func (d *Decision) plan() (*rewrite.Plan, func(), error) {
	rt := d.route
	key := planKey{route: rt}
	var visible rewrite.Predicate
	if rt.visible != nil {
		cs := rt.visible.Prepare(d.act)
		if !rt.visible.UsesRecord() {
			ok, err := cs.Eval(nil)
			if err != nil || !ok {
				// Hidden for every record; the rewriter counts the error
				// once per record.
				visible = func(*rewrite.Record) (bool, error) { return false, err }
			}
		} else {
			visible = cs.Eval
		}
	}
	if visible != nil {
		key.visible = 1
	}
	var selBuf [32]byte
	sel := selBuf[:0]
	if n := len(rt.fields) + len(rt.answer); n > len(selBuf) {
		sel = make([]byte, 0, n)
	}
	sel = sel[:len(rt.fields)]
	// whens is made only when a field rule reads the record.
	var whens []rewrite.Predicate
	for i, f := range rt.fields {
		if f.forR != nil && !hasAny(d.user, f.forR) {
			continue
		}
		if f.except != nil && hasAny(d.user, f.except) {
			continue
		}
		var when, unless *cond.State
		if f.when != nil {
			when = f.when.Prepare(d.act)
		}
		if f.unless != nil {
			unless = f.unless.Prepare(d.act)
		}
		if !f.perRecord() {
			applies, err := applyField(when, unless, nil)
			if err != nil {
				d.Audit.EvalErrors++
			}
			if applies {
				sel[i] = 1
			}
			continue
		}
		sel[i] = 1
		if whens == nil {
			whens = make([]rewrite.Predicate, len(rt.fields))
		}
		whens[i] = func(rec *rewrite.Record) (bool, error) { return applyField(when, unless, rec) }
	}
	// answer rules never read record: decided here, once
	for _, f := range rt.answer {
		applies := (f.forR == nil || hasAny(d.user, f.forR)) && (f.except == nil || !hasAny(d.user, f.except))
		if applies && (f.when != nil || f.unless != nil) {
			var when, unless *cond.State
			if f.when != nil {
				when = f.when.Prepare(d.act)
			}
			if f.unless != nil {
				unless = f.unless.Prepare(d.act)
			}
			var err error
			if applies, err = applyField(when, unless, nil); err != nil {
				d.Audit.EvalErrors++
			}
		}
		if applies {
			sel = append(sel, 1)
		} else {
			sel = append(sel, 0)
		}
	}
	key.fields = string(sel)
	pool := d.set.planPool(key)
	pp, _ := pool.Get().(*pooledPlan)
	if pp == nil {
		var err error
		if pp, err = d.set.newPooledPlan(key); err != nil {
			return nil, nil, err
		}
	}
	pp.visible = visible
	copy(pp.whens, whens)
	release := func() {
		pp.visible = nil
		clear(pp.whens)
		pool.Put(pp)
	}
	return pp.plan, release, nil
}

func (f *fieldRule) perRecord() bool {
	return f.when != nil && f.when.UsesRecord() || f.unless != nil && f.unless.UsesRecord()
}

// planPool returns the pool of compiled plans for a selection.
func (s *Set) planPool(k planKey) *sync.Pool {
	if p, ok := s.plans.Load(k); ok {
		return p.(*sync.Pool)
	}
	p, _ := s.plans.LoadOrStore(k, &sync.Pool{})
	return p.(*sync.Pool)
}

// newPooledPlan compiles the plan of a selection, with predicates that
// call through the pooled plan's slots.
func (s *Set) newPooledPlan(k planKey) (*pooledPlan, error) {
	rt := k.route
	pp := &pooledPlan{whens: make([]rewrite.Predicate, len(rt.fields))}
	p := &rewrite.Plan{Records: rt.recPath, Single: rt.single, Keys: rt.keys, Expose: rt.expose, AuditID: rt.auditID, HashKey: s.hashKey}
	if k.visible == 1 {
		p.Visible = func(r *rewrite.Record) (bool, error) { return pp.visible(r) }
	}
	for i, f := range rt.fields {
		if k.fields[i] == 0 {
			continue
		}
		var when rewrite.Predicate
		if f.perRecord() {
			when = func(r *rewrite.Record) (bool, error) { return pp.whens[i](r) }
		}
		p.Fields = append(p.Fields, f.rewriteField(when))
	}
	for i, f := range rt.answer {
		if k.fields[len(rt.fields)+i] == 1 {
			p.Answer = append(p.Answer, f.rewriteField(nil))
		}
	}
	if err := p.Compile(); err != nil {
		return nil, err
	}
	pp.plan = p
	return pp, nil
}

// applyField decides whether a field rule applies: `when` holds and
// `unless` does not. An error applies the rule (fail closed).
func applyField(when, unless *cond.State, rec *rewrite.Record) (bool, error) {
	if when != nil {
		ok, err := when.Eval(rec)
		if err != nil {
			return true, err
		}
		if !ok {
			return false, nil
		}
	}
	if unless != nil {
		ok, err := unless.Eval(rec)
		if err != nil {
			return true, err
		}
		if ok {
			return false, nil
		}
	}
	return true, nil
}

// InspectResponse looks at the upstream answer's status and headers. buffer
// is true when the body must be buffered and passed to Rewrite; a non-nil
// block means the answer must not reach the client.
//
// A download answer (Content-Disposition: attachment, CSV or spreadsheet
// types) on a route not marked export is blocked with 403. A 206 partial
// answer on a rewriting route is blocked with 502: part of a document
// cannot be rewritten. The body of any other non-2xx answer (except 304)
// on a rewriting route is withheld: the block keeps the CRM's status. In
// shadow mode nothing is blocked; the audit says what would have been.
func (d *Decision) InspectResponse(status int, h http.Header) (buffer bool, block *Block) {
	if d.Outcome != Allow {
		return false, nil
	}
	if h == nil {
		h = http.Header{}
	}
	d.dropAnswerHeaders(h)
	if d.GrantPending() {
		// The request went upstream without UseGrant: fail closed.
		return false, d.block(http.StatusForbidden, fmt.Sprintf("route %s: the export grant %s was found but never used before the request went upstream, so the answer is withheld", d.RouteID, d.grant.found.ID))
	}
	if mediatype.Download(h["Content-Disposition"], h["Content-Type"]) {
		d.Audit.Export.Download = true
		if !d.exportOK {
			where := "a request that matches no route"
			if d.route != nil {
				where = "route " + d.route.id + ", which is not marked export"
			}
			return false, d.block(http.StatusForbidden, "the answer is a download (a bulk export) on "+where)
		}
	}
	if d.route == nil || !d.route.rewrites || d.head() {
		return false, nil
	}
	switch {
	case status == http.StatusPartialContent:
		return false, d.block(http.StatusBadGateway, fmt.Sprintf("route %s rewrites answers and the upstream sent a partial (206) answer, which cannot be rewritten", d.route.id))
	case status < 200 || status == http.StatusNoContent || status == http.StatusNotModified:
		return false, nil
	case status == http.StatusNotFound && d.route.single:
		// Answered exactly like a record `visible` hides (hidden.go).
		return false, d.notFound(fmt.Sprintf("route %s: the CRM answered 404: the record does not exist", d.route.id))
	case status > 299:
		// An error page or a redirect body can echo the very records the
		// route filters (a 500 dumping the row, a 422 returning it), and its
		// shape is not the route's: it cannot be rewritten, so it is
		// withheld; the client keeps the CRM's status.
		return false, d.block(status, fmt.Sprintf("route %s rewrites answers and the CRM answered %d; the body of a non-2xx answer cannot be checked, so it is withheld", d.route.id, status))
	}
	if b := d.inspectType(h); b != nil { // spreadsheets and other charsets cannot be rewritten
		return false, b
	}
	return true, nil
}

// inspectType refuses, on a rewriting route, a 2xx answer whose type
// cannot be rewritten: a spreadsheet, a Content-Type that cannot be read or
// names a charset other than UTF-8, or Content-Type lines that disagree.
func (d *Decision) inspectType(h http.Header) *Block {
	t, err := mediatype.Lines(h["Content-Type"])
	switch {
	case err != nil:
		return d.block(http.StatusBadGateway, fmt.Sprintf("route %s rewrites answers and %s", d.route.id, answerTypeError(err)))
	case t.Kind == mediatype.Sheet:
		return d.block(http.StatusBadGateway, fmt.Sprintf("route %s rewrites answers and the CRM sent a spreadsheet (%s), which cannot be rewritten", d.route.id, t.Essence))
	}
	return nil
}

// answerTypeError words an error of mediatype.Lines for a refusal.
func answerTypeError(err error) string {
	var ce *mediatype.CharsetError
	if errors.As(err, &ce) {
		return fmt.Sprintf("the answer is in charset %q; only UTF-8 (or US-ASCII) answers can be rewritten", ce.Charset)
	}
	return "the answer's Content-Type cannot be read: " + strings.TrimPrefix(err.Error(), "mediatype: ")
}

// block records a refused answer; in shadow mode it returns nil (the
// audit keeps what would have happened).
func (d *Decision) block(status int, reason string) *Block {
	d.Audit.Decision = "block"
	d.Audit.Reason = reason
	if status == http.StatusForbidden && (d.Audit.Export.Download || d.Audit.Export.TooMany) {
		d.Audit.Export.Blocked = true
	}
	if d.Shadow {
		d.Audit.Reason = "shadow mode, not enforced: " + reason
		return nil
	}
	return &Block{Status: status, Reason: reason, Message: d.blockMessage(status)}
}

// Rewrite rewrites a buffered, decoded answer body in one pass, appending
// the result to dst. A non-nil block means the client gets block.Status
// instead (404 for a hidden single record, 403 for a blocked export). An
// error means the body cannot be rewritten (the caller answers 502). In
// shadow mode the rewrite runs for the audit and body is returned as it is.
func (d *Decision) Rewrite(dst []byte, status int, h http.Header, body []byte) (out []byte, block *Block, err error) {
	if d.Outcome != Allow || d.route == nil || !d.route.rewrites || d.head() || status < 200 || status > 299 || status == http.StatusNoContent {
		return append(dst, body...), nil, nil
	}
	var st rewrite.Stats
	orig := len(dst)
	t, err := mediatype.Lines(h["Content-Type"])
	switch {
	case err != nil: // InspectResponse refused it, unless in shadow mode
		out, err = dst, errors.New(answerTypeError(err))
	case t.Kind == mediatype.Sheet:
		out, err = dst, fmt.Errorf("a spreadsheet (%s) cannot be rewritten", t.Essence)
	default:
		// CSV and TSV by column name, anything else as JSON: one plan.
		p, release, perr := d.plan()
		if perr != nil {
			return dst, nil, fmt.Errorf("rules: route %s: building the rewrite plan: %w", d.route.id, perr)
		}
		switch t.Kind {
		case mediatype.CSV:
			out, err = p.RewriteTable(dst, body, ',', &st)
		case mediatype.TSV:
			out, err = p.RewriteTable(dst, body, '\t', &st)
		default:
			out, err = p.Rewrite(dst, body, &st)
		}
		release()
	}
	d.Audit.RecordsIn += st.RecordsIn
	d.Audit.RecordsOut += st.RecordsOut
	d.Audit.EvalErrors += st.EvalErrors
	// st's slice and map are this call's own: the first rewrite of the
	// decision keeps them instead of copying them.
	if d.Audit.RecordIDs == nil {
		d.Audit.RecordIDs = st.IDs
	} else {
		d.Audit.RecordIDs = append(d.Audit.RecordIDs, st.IDs...)
	}
	if d.Audit.Fields == nil && len(st.Fields) > 0 {
		d.Audit.Fields = st.Fields
	} else {
		for k, v := range st.Fields {
			if d.Audit.Fields == nil {
				d.Audit.Fields = map[string]int{}
			}
			d.Audit.Fields[k] += v
		}
	}
	if errors.Is(err, rewrite.ErrNotVisible) {
		b := d.notFound(fmt.Sprintf("route %s: the record is not visible to %s; answered as not found", d.route.id, rolesPhrase(d.user))) // hidden.go
		return d.shadowed(dst[:orig], body), b, nil
	}
	if err != nil {
		d.Audit.Decision = "error"
		d.Audit.Reason = fmt.Sprintf("route %s: the answer cannot be rewritten: %v", d.route.id, err)
		return dst[:orig], nil, fmt.Errorf("rules: route %s: the answer cannot be rewritten: %w", d.route.id, err)
	}
	if d.route.maxRec > 0 && !d.route.single && st.RecordsOut > d.route.maxRec {
		d.Audit.Export.TooMany = true
		if !d.exportOK {
			b := d.block(http.StatusForbidden, fmt.Sprintf("route %s: the answer holds %d records, more than max_records (%d): a bulk export", d.route.id, st.RecordsOut, d.route.maxRec))
			return d.shadowed(out[:orig], body), b, nil
		}
	}
	if d.Shadow {
		return append(out[:orig], body...), nil, nil
	}
	return out, nil, nil
}

// shadowed is the body a blocked answer leaves behind: nothing when
// enforcing, the original in shadow mode.
func (d *Decision) shadowed(dst, body []byte) []byte {
	if d.Shadow {
		return append(dst, body...)
	}
	return dst
}

// head reports a HEAD request: its answer has no body to rewrite.
func (d *Decision) head() bool {
	return d.req != nil && strings.EqualFold(d.req.Method, http.MethodHead)
}

// dropAnswerHeaders removes the route's answer_headers from an answer,
// counting each in the audit as "remove:answer_header.<Name>". In shadow
// mode they are only counted.
func (d *Decision) dropAnswerHeaders(h http.Header) {
	if d.route == nil {
		return
	}
	for _, name := range d.route.answerHeaders {
		for k := range h { // also a name set without canonical spelling
			if !strings.EqualFold(k, name) {
				continue
			}
			if d.Audit.Fields == nil {
				d.Audit.Fields = map[string]int{}
			}
			d.Audit.Fields["remove:answer_header."+name]++
			if !d.Shadow {
				delete(h, k)
			}
		}
	}
}
