package rules

import (
	"fmt"
	"strings"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/rewrite"
	"go.yaml.in/yaml/v3"
)

// This file compiles a route's `query` (the query parameters it accepts and
// what each may do) and `forward_query` (parameters the proxy sets on the
// request to the CRM). query.go applies them per request.

// querySpec is a route's compiled `query`.
type querySpec struct {
	params  []*queryParam
	message string // the operator's words for a refused parameter
}

// queryParam is one entry of `query.params`.
type queryParam struct {
	name     string     // as written
	key      string     // "query.params[name]", for reasons
	node     *yaml.Node // the entry's name, for lint warnings
	pattern  []nameSeg  // the canonical name: base, then bracket keys
	list     bool       // the name ends in []: the parameter may repeat
	denyRule            // denyUnless is over user, request, now (cond.RequestScope)
	// use is what the parameter does with fields: useFilter or useSort
	// ("" neither); from says where the fields are named.
	use    string
	from   fieldSource
	fields []rewrite.Path // from == fieldsListed
	listed []exprField    // fields, as a request's judgment reads them
}

// What a parameter does with the fields it names.
const (
	useFilter = "filters"
	useSort   = "sorts"
)

// fieldSource says where a parameter names the fields it filters or sorts.
type fieldSource uint8

const (
	fieldsListed    fieldSource = iota // the rule file lists them
	fieldsFromValue                    // "{value}": the parameter's value names them
	fieldsFromName                     // "{field}": a bracket of the parameter's name names it
	fieldsFromExpr                     // "{expr}": the value is an expression (OData, SOQL) whose words name them
)

// nameSeg is one part of a canonical query parameter name or pattern.
type nameSeg struct {
	kind nameKind
	text string // nameLit: the key, lower case
}

type nameKind uint8

const (
	nameLit   nameKind = iota // a key
	nameAny                   // [*]: any non-empty key
	nameEmpty                 // []: a list append
	nameField                 // [{field}]: any non-empty key, naming a field
)

// forwardParam is one entry of `forward_query`.
type forwardParam struct {
	name   string   // as written: sent under this name
	key    string   // "forward_query[name]", for reasons
	chain  []string // the canonical name (client variants are removed)
	value  *cond.Expr
	forR   []string
	except []string
	when   *cond.Expr
}

var queryKeys = []string{"params", "message"}
var queryParamKeys = []string{"deny", "deny_unless", "filters", "sorts", "message"}

// query compiles a route's `query`.
func (l *loader) query(r *route, n *yaml.Node, key string) {
	es, ok := l.entries(n, key, queryKeys...)
	if !ok {
		return
	}
	q := &querySpec{}
	hasParams := false
	for _, e := range es {
		ek := joinKey(key, e.name)
		switch e.name {
		case "message":
			q.message, _ = l.message(e.val, ek)
		case "params":
			hasParams = true
			ps, _ := l.entries(e.val, ek)
			for _, p := range ps {
				if qp := l.queryParam(r, p, joinKey(ek, p.name)); qp != nil {
					q.params = append(q.params, qp)
				}
			}
		}
	}
	if !hasParams {
		l.errorf(n, joinKey(key, "params"), "missing: list the query parameters the route accepts (params: {} accepts none)")
		return
	}
	r.qguard = q
}

func (l *loader) queryParam(r *route, e entry, key string) *queryParam {
	pat, err := parseParamPattern(e.name)
	if err != nil {
		l.errorf(e.key, key, "%v", err)
		return nil
	}
	p := &queryParam{name: e.name, key: key, pattern: pat, node: e.key}
	p.list = pat[len(pat)-1].kind == nameEmpty
	fs, ok := l.entries(e.val, key, queryParamKeys...)
	if !ok {
		return nil
	}
	good := true
	for _, f := range fs {
		fk := joinKey(key, f.name)
		if l.denyRuleKey(&p.denyRule, f, fk, cond.RequestScope) {
			continue
		}
		switch f.name {
		case useFilter, useSort:
			if p.use != "" {
				l.errorf(f.key, fk, "a parameter either filters or sorts, not both")
				good = false
				continue
			}
			p.use = f.name
			good = l.paramFields(r, p, f.val, fk) && good
		}
	}
	captures := false
	for _, s := range pat {
		captures = captures || s.kind == nameField
	}
	switch {
	case captures && p.from != fieldsFromName:
		l.errorf(e.key, key, "the name captures {field}: say what the parameter does with it (filters: \"{field}\" or sorts: \"{field}\")")
		good = false
	case !captures && p.from == fieldsFromName:
		l.errorf(e.key, key, "\"{field}\" names the field a bracket of the parameter's name captures, and this name has no [{field}]")
		good = false
	}
	if !good {
		return nil
	}
	return p
}

// paramFields reads `filters` or `sorts`: a field path or a list of them
// (relative to each record, like `fields`), or "{value}" (the parameter's
// value names the fields), "{field}" (its name does) or "{expr}" (the
// value is an expression whose words name them, query_expr.go).
func (l *loader) paramFields(r *route, p *queryParam, n *yaml.Node, key string) bool {
	if r.records == "" && r.record == "" {
		l.errorf(n, key, "needs records or record on the route: the fields a parameter %s are those of the route's records", p.use)
		return false
	}
	list, ok := l.strList(n, key)
	if !ok {
		return false
	}
	if len(list) == 0 {
		l.errorf(n, key, "an empty list: name the fields the parameter %s, or remove the key", p.use)
		return false
	}
	if len(list) == 1 && isFieldSource(list[0]) {
		switch list[0] {
		case "{value}":
			p.from = fieldsFromValue
		case "{field}":
			p.from = fieldsFromName
		case "{expr}":
			p.from = fieldsFromExpr
		}
		return true
	}
	good := true
	for i, s := range list {
		if isFieldSource(s) {
			l.errorf(resolve(n), indexKey(key, i), "%s stands alone: the value or name names the fields, not a list", s)
			good = false
			continue
		}
		if path, ok := l.path(resolve(n), indexKey(key, i), s); ok {
			p.fields = append(p.fields, path)
			p.listed = append(p.listed, exprField{path: path})
		} else {
			good = false
		}
	}
	return good
}

func isFieldSource(s string) bool {
	return s == "{value}" || s == "{field}" || s == "{expr}"
}

// parseParamPattern reads a parameter name of `query.params`: a base name
// and bracket keys (filter[name], page[size], where[*][attribute],
// filter[{field}], status[]), read the way the request's names are
// (queryName): case is ignored and the base is PHP's (spaces and dots
// become _).
func parseParamPattern(s string) ([]nameSeg, error) {
	chain, err := queryName(s)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	if chain[0] == "" {
		return nil, fmt.Errorf("%q: a parameter name starts with a name before any [", s)
	}
	if strings.ContainsAny(chain[0], "*{}") {
		return nil, fmt.Errorf("%q: the base name is literal (* and {field} may only stand in brackets)", s)
	}
	out := []nameSeg{{kind: nameLit, text: chain[0]}}
	fields := 0
	for i, k := range chain[1:] {
		switch {
		case k == "":
			if i != len(chain)-2 {
				return nil, fmt.Errorf("%q: [] (a list) may only end the name", s)
			}
			out = append(out, nameSeg{kind: nameEmpty})
		case k == "*":
			out = append(out, nameSeg{kind: nameAny})
		case k == "{field}":
			fields++
			out = append(out, nameSeg{kind: nameField})
		case strings.ContainsAny(k, "*{}"):
			return nil, fmt.Errorf("%q: [%s]: a bracket holds a key, *, {field} or nothing", s, k)
		default:
			out = append(out, nameSeg{kind: nameLit, text: k})
		}
	}
	if fields > 1 {
		return nil, fmt.Errorf("%q: {field} may appear once", s)
	}
	return out, nil
}

var forwardKeys = []string{"value", "for", "except", "when"}

// forwardQuery compiles a route's `forward_query`: parameter name -> a CEL
// value, or {value: CEL, for: [roles], except: [roles], when: CEL}.
func (l *loader) forwardQuery(r *route, n *yaml.Node, key string) {
	es, _ := l.entries(n, key)
	for _, e := range es {
		fk := joinKey(key, e.name)
		chain, err := queryName(e.name)
		if err == nil && chain[0] == "" {
			err = fmt.Errorf("a parameter name starts with a name before any [")
		}
		if err == nil {
			for _, k := range chain {
				if strings.ContainsAny(k, "*{}") {
					err = fmt.Errorf("a forwarded parameter has a literal name (no *, {field})")
				}
			}
		}
		if err != nil {
			l.errorf(e.key, fk, "%q: %v", e.name, err)
			continue
		}
		fp := &forwardParam{name: e.name, key: fk, chain: chain}
		v := resolve(e.val)
		valNode, valKey := v, fk
		if v.Kind == yaml.MappingNode {
			valNode = nil
			fs, _ := l.entries(v, fk, forwardKeys...)
			for _, f := range fs {
				ak := joinKey(fk, f.name)
				switch f.name {
				case "value":
					valNode, valKey = f.val, ak
				case "for":
					fp.forR, _ = l.strList(f.val, ak)
					l.useRoles(f.val, ak, fp.forR)
				case "except":
					fp.except, _ = l.strList(f.val, ak)
					l.useRoles(f.val, ak, fp.except)
				case "when":
					if src, ok := l.str(f.val, ak); ok {
						fp.when = l.expr(f.val, ak, src, cond.RequestScope, true)
					}
				}
			}
			if fp.forR != nil && fp.except != nil {
				l.errorf(v, fk, "use for or except, not both")
				continue
			}
			if valNode == nil {
				l.errorf(v, joinKey(fk, "value"), "missing: the CEL value to send, e.g. user.id")
				continue
			}
		}
		src, ok := l.str(valNode, valKey)
		if !ok {
			continue
		}
		fp.value = l.expr(valNode, valKey, src, cond.RequestScope, false)
		if fp.value == nil {
			continue
		}
		if t := fp.value.OutputType(); !forwardableType(t) {
			l.errorf(valNode, valKey, "gives %s; a forwarded value is a string, number, bool, timestamp or a list of them", t)
			continue
		}
		for _, other := range r.forward {
			if prefixRelated(other.chain, chain) {
				l.errorf(e.key, fk, "%q and %q name the same parameter (or one holds the other): a CRM would read only one", other.name, e.name)
				ok = false
			}
		}
		if ok {
			r.forward = append(r.forward, fp)
		}
	}
}

// forwardableType reports a CEL type a forwarded value may have.
func forwardableType(t string) bool {
	switch t {
	case "string", "int", "uint", "double", "bool", "google.protobuf.Timestamp", "dyn",
		"list(string)", "list(int)", "list(uint)", "list(double)", "list(bool)", "list(dyn)":
		return true
	}
	return false
}
