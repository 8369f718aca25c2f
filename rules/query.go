package rules

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/rewrite"
)

// A route's `query` lists the query parameters it accepts; `forward_query`
// sets parameters on the request to the CRM (load_query.go compiles both).
// Both read the query string the way CRM frameworks do, and refuse what
// they would read differently from one another:
//
//   - names and values are percent-decoded once ("+" is a space); a name
//     that still holds "%" (encoded twice) or a control character cannot be
//     judged;
//   - a name is read as PHP reads it (leading spaces dropped, spaces and
//     dots before the first "[" become "_") and without case (ASP.NET and
//     many binders ignore it): "Owner.ID" is owner_id;
//   - brackets are keys (filter[name], where[0][attribute]); "[]" ends a
//     list. Anything after the last "]" that is not a bracket cannot be
//     judged (PHP drops it, others keep it);
//   - a parameter given twice with different values is ambiguous (PHP
//     takes the last, most others the first, some a list) unless its name
//     ends in []; so is a name that holds another ("a" and "a[b]": PHP
//     keeps the later). ";" separators are refused before (Decide).
//
// This reader is exact where the body guards' formGuard is lenient:
// formGuard finds a denied field however a name spells it (a tail of its
// keys is enough), which may over-match; an allowlist must know which
// parameter it admits.

// qparam is one parameter of a request's query, decoded and named.
type qparam struct {
	raw    string   // the name as sent (decoded)
	chain  []string // the canonical name
	values []string
}

// qpair is one name=value pair of the raw query and the parameter it sets.
type qpair struct {
	text  string // as sent, still encoded
	param int    // index in readQuery's params
}

// queryName reads a decoded query parameter name into its canonical keys:
// the base name as PHP reads it and each bracket key, in lower case.
func queryName(name string) ([]string, error) {
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '%':
			return nil, fmt.Errorf("the name still holds %% after decoding (encoded twice?)")
		case c < 0x20 || c == 0x7f:
			return nil, fmt.Errorf("the name holds a control character")
		}
	}
	n := phpFormName(name)
	base, rest := n, ""
	if i := strings.IndexByte(n, '['); i >= 0 {
		base, rest = n[:i], n[i:]
	}
	chain := []string{strings.ToLower(base)}
	for rest != "" {
		if rest[0] != '[' {
			return nil, fmt.Errorf("the name goes on after its last ] (%q), which servers read differently", rest)
		}
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return nil, fmt.Errorf("a [ is never closed")
		}
		k := rest[1:end]
		if strings.IndexByte(k, '[') >= 0 {
			return nil, fmt.Errorf("a bracket holds [")
		}
		chain = append(chain, strings.ToLower(k))
		rest = rest[end+1:]
	}
	return chain, nil
}

// readQuery splits a raw query into named parameters, in order of first
// appearance, with the values of each canonical name together, and keeps
// the raw pairs (scopeQuery writes the kept ones back as sent).
func readQuery(raw string) (params []qparam, pairs []qpair, err error) {
	if raw == "" {
		return nil, nil, nil
	}
	n := strings.Count(raw, "&") + 1
	params, pairs = make([]qparam, 0, n), make([]qpair, 0, n)
	// index finds a canonical name's parameter: a linear scan would make
	// a query of many names cost their square. Its keys join the chain
	// with NUL, which no name holds (queryName refuses control
	// characters).
	index := make(map[string]int, n)
	for rest := raw; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		if pair == "" {
			continue
		}
		if strings.IndexByte(pair, ';') >= 0 {
			return nil, nil, fmt.Errorf("the query uses ; as a separator, which servers read differently")
		}
		rn, rv, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(rn)
		if err != nil {
			return nil, nil, fmt.Errorf("the parameter name %q cannot be decoded: %w", rn, err)
		}
		val, err := url.QueryUnescape(rv)
		if err != nil {
			return nil, nil, fmt.Errorf("the value of %q cannot be decoded: %w", name, err)
		}
		chain, err := queryName(name)
		if err != nil {
			return nil, nil, fmt.Errorf("the parameter %q cannot be read with certainty: %w", name, err)
		}
		key := strings.Join(chain, "\x00")
		i, seen := index[key]
		if seen {
			p := &params[i]
			p.values = append(p.values, val)
			if p.raw != name {
				p.raw += ", " + name
			}
		} else {
			i = len(params)
			index[key] = i
			params = append(params, qparam{raw: name, chain: chain, values: []string{val}})
		}
		pairs = append(pairs, qpair{text: pair, param: i})
	}
	return params, pairs, nil
}

// prefixRelated reports whether one canonical name is the other or holds
// it (a and a[b]).
func prefixRelated(a, b []string) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// matches reports whether a canonical name fits the parameter's pattern,
// returning the key a [{field}] captured.
func (p *queryParam) matches(chain []string) (field string, ok bool) {
	if len(chain) != len(p.pattern) {
		return "", false
	}
	for i, s := range p.pattern {
		k := chain[i]
		switch s.kind {
		case nameLit:
			if k != s.text {
				return "", false
			}
		case nameEmpty:
			if k != "" {
				return "", false
			}
		case nameAny:
			if k == "" {
				return "", false
			}
		case nameField:
			if k == "" {
				return "", false
			}
			field = k
		}
	}
	return field, true
}

// queryRefusal is a refused query: its status, reason and message.
type queryRefusal struct {
	status  int
	reason  string
	message string
}

// checkQuery judges the request's query string against the route's
// `query` and computes its `forward_query`. nil when the request may go on.
func (d *Decision) checkQuery(rt *route) *queryRefusal {
	if rt.qguard == nil && len(rt.forward) == 0 {
		return nil
	}
	raw := ""
	if d.req != nil && d.req.URL != nil {
		raw = d.req.URL.RawQuery
	}
	params, pairs, err := readQuery(raw)
	if err != nil {
		return d.queryBad(rt, err.Error())
	}
	if rt.qguard != nil {
		if ref := d.judgeQuery(rt, params); ref != nil {
			return ref
		}
	}
	if len(rt.forward) > 0 {
		return d.scopeQuery(rt, params, pairs)
	}
	return nil
}

func (d *Decision) queryBad(rt *route, what string) *queryRefusal {
	return &queryRefusal{status: http.StatusBadRequest,
		reason:  fmt.Sprintf("route %s reads the query string and %s", rt.id, what),
		message: "This request's search or filter cannot be checked by the access rules, so it is refused."}
}

// maxJudgedParams is the most distinct query parameters a route with
// `query` judges: comparing every pair of 9,999 names (what url.ParseQuery
// allows) took 642 ms per request; 1,000 is far more than a CRM's search
// or list screen sends.
const maxJudgedParams = 1000

// judgeQuery applies `query.params` to the request's parameters.
func (d *Decision) judgeQuery(rt *route, params []qparam) *queryRefusal {
	q := rt.qguard
	refuse := func(p *queryParam, reason, words string) *queryRefusal {
		msg := words
		switch {
		case p != nil && p.message != "":
			msg = p.message
		case q.message != "":
			msg = q.message
		case rt.message != "":
			msg = rt.message
		}
		return &queryRefusal{status: http.StatusForbidden, reason: fmt.Sprintf("route %s: %s", rt.id, reason), message: msg}
	}
	// Ambiguity first: a name given with different values, or names that
	// hold one another. The pairwise check is quadratic, so a query with
	// more names than any CRM screen sends is refused before it.
	if len(params) > maxJudgedParams {
		return d.queryBad(rt, fmt.Sprintf("has %d parameters, more than the %d the guard judges", len(params), maxJudgedParams))
	}
	for i := range params {
		a := &params[i]
		for j := range params[:i] {
			b := &params[j]
			if prefixRelated(a.chain, b.chain) {
				return d.queryBad(rt, fmt.Sprintf("the parameters %q and %q name the same value (one holds the other), which servers read differently", b.raw, a.raw))
			}
		}
	}
	var matched []*queryParam
	for i := range params {
		qp := &params[i]
		matched = matched[:0]
		var captured string
		for _, p := range q.params {
			if f, ok := p.matches(qp.chain); ok {
				matched = append(matched, p)
				if f != "" {
					captured = f
				}
			}
		}
		if len(matched) == 0 {
			return refuse(nil, fmt.Sprintf("the query parameter %q is not one the route accepts (query.params: %s)", qp.raw, q.names()),
				fmt.Sprintf("This page does not accept the parameter %q.", qp.raw))
		}
		list := false
		for _, p := range matched {
			list = list || p.list
		}
		if !list && !sameValues(qp.values) {
			return d.queryBad(rt, fmt.Sprintf("the parameter %q is given several times with different values, which servers read differently (the first, the last or a list)", qp.raw))
		}
		for _, p := range matched {
			if hasAny(d.user, p.deny) {
				return refuse(p, fmt.Sprintf("%s may not send the query parameter %q (%s.deny)", rolesPhrase(d.user), qp.raw, p.key),
					fmt.Sprintf("You may not search or filter by %q here.", qp.raw))
			}
			if p.denyUnless != nil {
				ok, err := p.denyUnless.EvalBool(d.act)
				if err != nil {
					d.Audit.EvalErrors++
				}
				if err != nil || !ok {
					cause := "does not hold"
					if err != nil {
						cause = fmt.Sprintf("could not be evaluated (%v), so it counts as false", err)
					}
					return refuse(p, fmt.Sprintf("%s may not send the query parameter %q: the condition `%s` %s", rolesPhrase(d.user), qp.raw, p.denyUnless.Source(), cause),
						fmt.Sprintf("You may not search or filter by %q with this value here.", qp.raw))
				}
			}
			if p.use == "" {
				continue
			}
			fields, bad := p.namedFields(qp, captured)
			if bad != "" {
				return d.queryBad(rt, bad)
			}
			for _, f := range fields {
				if why := d.withheld(f.path, f.word); why != "" {
					verb := "filters on"
					if p.use == useSort {
						verb = "sorts by"
					}
					return refuse(p, fmt.Sprintf("the query parameter %q %s %s, which %s may not see unmasked: %s", qp.raw, verb, f.path.String(), rolesPhrase(d.user), why),
						fmt.Sprintf("You may not search, filter or sort by %s: it is hidden or masked for you.", f.path.String()))
				}
			}
		}
	}
	return nil
}

// names lists the accepted parameter names, for reasons.
func (q *querySpec) names() string {
	if len(q.params) == 0 {
		return "none"
	}
	out := make([]string, len(q.params))
	for i, p := range q.params {
		out[i] = p.name
	}
	return strings.Join(out, ", ")
}

func sameValues(vs []string) bool {
	for _, v := range vs[1:] {
		if v != vs[0] {
			return false
		}
	}
	return true
}

// namedFields lists the fields a parameter filters or sorts on in this
// request; bad says why a value naming fields cannot be read.
func (p *queryParam) namedFields(qp *qparam, captured string) (fields []exprField, bad string) {
	switch p.from {
	case fieldsListed:
		return p.listed, ""
	case fieldsFromName:
		f, err := rewrite.ParsePath(captured)
		if err != nil || captured == "" {
			return nil, fmt.Sprintf("the parameter %q names the field %q, which is not a field path", qp.raw, captured)
		}
		return []exprField{{path: f}}, ""
	case fieldsFromExpr:
		for _, v := range qp.values {
			fs, why := exprFields(v)
			if why != "" {
				return nil, fmt.Sprintf("the parameter %q holds an expression that %s", qp.raw, why)
			}
			fields = append(fields, fs...)
		}
		return fields, ""
	}
	for _, v := range qp.values {
		for _, item := range strings.Split(v, ",") {
			name := sortItemField(item)
			if name == "" {
				continue
			}
			if strings.IndexFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f || unicode.IsSpace(r) }) >= 0 {
				// PHP's trim drops a NUL at the end, and a CRM may
				// split on the space: the field it reads is uncertain.
				return nil, fmt.Sprintf("the parameter %q names the field %q, which holds a space or control character", qp.raw, name)
			}
			f, err := rewrite.ParsePath(name)
			if err != nil {
				return nil, fmt.Sprintf("the parameter %q names the field %q, which is not a field path", qp.raw, name)
			}
			fields = append(fields, exprField{path: f})
		}
	}
	return fields, ""
}

// sortItemField is the field an item of a field-naming value names:
// "-name" (JSON:API), "+name", "name desc", "name:asc" are all name.
func sortItemField(item string) string {
	item = strings.TrimSpace(item)
	item = strings.TrimLeft(item, "-+ ")
	lower := strings.ToLower(item)
	for _, suffix := range []string{" asc", " desc", ":asc", ":desc"} {
		if strings.HasSuffix(lower, suffix) {
			item = strings.TrimSpace(item[:len(item)-len(suffix)])
			break
		}
	}
	return item
}

// withheld says why this user does not see field f of the route's records
// unmasked ("" when they do): it lies outside `expose`, or a field rule
// that applies to the user (or may apply, per record) touches it. A word
// of a query language (rulesOnly) is judged against the field rules
// alone: it is no field unless a rule names it.
func (d *Decision) withheld(f rewrite.Path, rulesOnly bool) string {
	rt := d.route
	if len(rt.expose) > 0 && !rulesOnly {
		in := false
		for _, e := range rt.expose {
			in = in || e.Covers(f)
		}
		if !in {
			return "it is not in the route's expose list"
		}
	}
	for _, fr := range rt.fields {
		if !fr.p.Touches(f) {
			continue
		}
		if fr.forR != nil && !hasAny(d.user, fr.forR) || fr.except != nil && hasAny(d.user, fr.except) {
			continue
		}
		if !fr.perRecord() {
			applies, err := fr.appliesToRequest(d)
			if err != nil {
				d.Audit.EvalErrors++
			}
			if !applies {
				continue
			}
		}
		return fmt.Sprintf("%s (%s)", fr.key, fr.action)
	}
	return ""
}

// appliesToRequest decides a field rule whose conditions read no record.
func (f *fieldRule) appliesToRequest(d *Decision) (bool, error) {
	var when, unless *cond.State
	if f.when != nil {
		when = f.when.Prepare(d.act)
	}
	if f.unless != nil {
		unless = f.unless.Prepare(d.act)
	}
	return applyField(when, unless, nil)
}

// scopeQuery computes the query the CRM gets: the client's parameters
// without any the route's forward_query sets (in every spelling that names
// them), then the forwarded ones.
func (d *Decision) scopeQuery(rt *route, params []qparam, pairs []qpair) *queryRefusal {
	type forced struct {
		fp     *forwardParam
		values []string
	}
	var set []forced
	for _, fp := range rt.forward {
		if fp.forR != nil && !hasAny(d.user, fp.forR) || fp.except != nil && hasAny(d.user, fp.except) {
			continue
		}
		if fp.when != nil {
			ok, err := fp.when.EvalBool(d.act)
			if err != nil {
				d.Audit.EvalErrors++
				return d.scopeFailed(rt, fp, fmt.Sprintf("its condition `%s` could not be evaluated: %v", fp.when.Source(), err))
			}
			if !ok {
				continue
			}
		}
		v, err := fp.value.Eval(d.act)
		if err != nil {
			d.Audit.EvalErrors++
			return d.scopeFailed(rt, fp, fmt.Sprintf("`%s` could not be evaluated: %v", fp.value.Source(), err))
		}
		vals, err := forwardValues(v.Native())
		if err != nil {
			return d.scopeFailed(rt, fp, fmt.Sprintf("`%s` %v", fp.value.Source(), err))
		}
		set = append(set, forced{fp, vals})
	}
	if len(set) == 0 {
		return nil
	}
	var b strings.Builder
	b.Grow(len(d.req.URL.RawQuery) + 64)
	for _, pair := range pairs {
		drop := false
		for _, f := range set {
			drop = drop || prefixRelated(params[pair.param].chain, f.fp.chain)
		}
		if drop {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(pair.text)
	}
	for _, f := range set {
		for _, v := range f.values {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(url.QueryEscape(f.fp.name))
			b.WriteByte('=')
			b.WriteString(url.QueryEscape(v))
		}
	}
	d.upstreamQuery, d.scoped = b.String(), true
	return nil
}

func (d *Decision) scopeFailed(rt *route, fp *forwardParam, why string) *queryRefusal {
	return &queryRefusal{status: http.StatusForbidden,
		reason:  fmt.Sprintf("route %s: %s: %s, so the CRM's query cannot be scoped", rt.id, fp.key, why),
		message: routeMessage(rt, "The access rules cannot limit this search to what you may see, so it is refused.")}
}

// forwardValues turns a forwarded CEL value into the parameter's values:
// one for a string, number, bool or timestamp (RFC 3339), one per item of
// a list. An empty string or list is refused: many CRMs read an empty
// filter as no filter at all.
func forwardValues(v any) ([]string, error) {
	one := func(x any) (string, error) {
		switch x := x.(type) {
		case string:
			if x == "" {
				return "", fmt.Errorf("gave an empty string (which many CRMs read as no filter at all)")
			}
			return x, nil
		case int64:
			return strconv.FormatInt(x, 10), nil
		case uint64:
			return strconv.FormatUint(x, 10), nil
		case float64:
			return strconv.FormatFloat(x, 'f', -1, 64), nil
		case bool:
			return strconv.FormatBool(x), nil
		case time.Time:
			return x.UTC().Format(time.RFC3339Nano), nil
		}
		return "", fmt.Errorf("gave %T, not a string, number, bool or timestamp", x)
	}
	if list, ok := v.([]any); ok {
		if len(list) == 0 {
			return nil, fmt.Errorf("gave an empty list (which many CRMs read as no filter at all)")
		}
		out := make([]string, 0, len(list))
		for _, x := range list {
			s, err := one(x)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	s, err := one(v)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}

// UpstreamQuery returns the raw query string the request must carry to the
// CRM instead of the client's (ok true) when the route's forward_query set
// parameters: the client's own parameters of those names, in any
// spelling, are gone. ok is false when the query goes on unchanged, and
// always in shadow mode (which never changes a request).
func (d *Decision) UpstreamQuery() (rawQuery string, ok bool) {
	if d.Outcome != Allow || !d.scoped || d.Shadow {
		return "", false
	}
	return d.upstreamQuery, true
}
