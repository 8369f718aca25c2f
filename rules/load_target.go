package rules

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/internal/urlpath"
	"go.yaml.in/yaml/v3"
)

var targetKeys = []string{"fetch", "record", "allow_if", "visible", "id_fields", "if_match", "ids", "fetch_many", "max_ids", "concurrency"}

// target compiles a route's `target` block. The route's match must be
// compiled already: the fetch template may only use its {params}.
func (l *loader) target(r *route, n *yaml.Node, key string) {
	es, ok := l.entries(n, key, targetKeys...)
	if !ok {
		return
	}
	t := &targetSpec{node: n, recSrc: "@this"}
	by := map[string]entry{}
	for _, e := range es {
		by[e.name] = e
	}
	good := true
	if _, ok := by["ids"]; ok {
		good = l.bulkTarget(t, r, by, key) // load_bulk.go
	} else {
		for _, k := range []string{"fetch_many", "max_ids", "concurrency"} {
			if e, ok := by[k]; ok {
				l.errorf(e.key, joinKey(key, k), "%s is for a bulk write, whose ids the body names: add ids: (e.g. \"ids.#\")", k)
				good = false
			}
		}
		if e, ok := by["fetch"]; ok {
			fk := joinKey(key, "fetch")
			if src, ok := l.str(e.val, fk); ok {
				if err := t.parseFetch(src, r.pattern, ""); err != nil {
					l.errorf(e.val, fk, "%v", err)
					good = false
				}
			} else {
				good = false
			}
		} else {
			l.errorf(n, joinKey(key, "fetch"), "missing: the path to GET the stored record from, e.g. \"/api/customers/{id}\"")
			good = false
		}
	}
	if e, ok := by["record"]; ok {
		rk := joinKey(key, "record")
		if src, ok := l.str(e.val, rk); ok {
			keys, err := splitRecordPath(src)
			if err != nil {
				l.errorf(e.val, rk, "%v", err)
				good = false
			}
			t.recSrc, t.recKeys = src, keys
		} else {
			good = false
		}
	}
	if e, ok := by["allow_if"]; ok {
		ak := joinKey(key, "allow_if")
		if src, ok := l.str(e.val, ak); ok {
			c, issues := cond.CompileWriteCondition(l.set.env, src)
			l.exprIssues(e.val, ak, src, issues)
			if c != nil {
				t.allowCond, t.allowIf = c, c.Expr()
				l.lintRoleLiterals(e.val, ak, t.allowIf)
			}
		}
		if t.allowIf == nil {
			good = false
		}
	} else {
		l.errorf(n, joinKey(key, "allow_if"), "missing: the condition over record (and user, request, now) under which the request may change the record")
		good = false
	}
	if e, ok := by["visible"]; ok {
		t.visible = l.targetVisible(e.val, joinKey(key, "visible")) // hidden.go
		good = good && t.visible != nil
	}
	if good && t.bulk == nil {
		good = l.targetIDFields(t, by, key)
	}
	if e, ok := by["if_match"]; ok {
		if b, ok := l.boolean(e.val, joinKey(key, "if_match")); ok {
			t.ifMatch = b
		} else {
			good = false
		}
	}
	switch {
	case r.public:
		l.errorf(n, key, "a public route has no signed-in user to fetch the record as; a target needs allow: [roles] or authenticated")
		good = false
	case r.deny != "":
		l.errorf(n, key, "the route always denies, so a target would never be used")
		good = false
	}
	if methodsRead(r.methods) {
		l.warnf(n, key, "the route also matches reads (GET or HEAD, or every method): each read fetches the record first too; judge reads with record/visible instead")
	}
	if t.allowIf != nil && !t.allowIf.ReadsRecord() {
		l.warnf(by["allow_if"].val, joinKey(key, "allow_if"), "the condition does not read record, so the fetched record decides nothing; put it in the route's when instead, or compare a field of record")
	}
	if good {
		r.target = t
	}
}

// targetIDFields reads `id_fields` (fetch parameter -> request keys that
// name the same record); by default each fetch parameter's own name is
// such a key ({id}: a body or query "id").
func (l *loader) targetIDFields(t *targetSpec, by map[string]entry, key string) bool {
	t.idKeys = map[string]string{}
	params := map[string]bool{}
	for _, s := range t.segs {
		if s.param {
			params[s.text] = true
			t.idKeys[strings.ToLower(s.text)] = s.text
		}
	}
	e, ok := by["id_fields"]
	if !ok {
		return true
	}
	ik := joinKey(key, "id_fields")
	es, ok := l.entries(e.val, ik)
	if !ok {
		return false
	}
	good := true
	for _, f := range es {
		fk := joinKey(ik, f.name)
		if !params[f.name] {
			l.errorf(f.val, fk, "{%s} is not a parameter of the fetch path %q", f.name, t.src)
			good = false
			continue
		}
		names, ok := l.strList(f.val, fk)
		if !ok {
			good = false
			continue
		}
		for k, p := range t.idKeys {
			if p == f.name {
				delete(t.idKeys, k) // the list replaces the default
			}
		}
		for _, k := range names {
			k = strings.ToLower(k)
			if p, dup := t.idKeys[k]; dup && p != f.name {
				l.errorf(f.val, fk, "%q already names {%s}", k, p)
				good = false
			}
			t.idKeys[k] = f.name
		}
	}
	return good
}

// methodsRead reports whether a route's methods include a read (nil: every
// method does).
func methodsRead(methods []string) bool {
	if methods == nil {
		return true
	}
	return contains(methods, http.MethodGet) || contains(methods, http.MethodHead)
}

// parseFetch reads a fetch template: "/api/customers/{id}", optionally with
// a literal query ("/sobjects/Account/{id}?fields=OwnerId"). Every {name}
// must be captured by the route's path pattern, but idParam ("" none): on
// a bulk write, the parameter each id of the body takes.
func (t *targetSpec) parseFetch(src string, pat *urlpath.Pattern, idParam string) error {
	t.src = src
	path, query, hasQuery := strings.Cut(src, "?")
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("the fetch path starts with /, got %q", src)
	}
	if strings.ContainsAny(src, "#") {
		return fmt.Errorf("%q: a fetch path has no fragment (#)", src)
	}
	if hasQuery {
		if strings.ContainsAny(query, "{}") {
			return fmt.Errorf("%q: {params} may only stand for path segments, not in the query", src)
		}
		q, err := url.ParseQuery(query)
		if err != nil {
			return fmt.Errorf("%q: the query cannot be read: %w", src, err)
		}
		t.query = q.Encode()
	}
	captured := map[string]bool{}
	if pat != nil {
		for _, name := range pat.Params() {
			captured[name] = true
		}
	}
	for _, s := range strings.Split(path[1:], "/") {
		switch {
		case s == "":
			return fmt.Errorf("%q: empty segment (write the path clean, without // or a trailing /)", src)
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
			name := s[1 : len(s)-1]
			if !urlpath.ValidParamName(name) {
				return fmt.Errorf("%q: path parameter %q: want a name of letters, digits and _", src, s)
			}
			if !captured[name] && name != idParam {
				have := slices.Sorted(maps.Keys(captured))
				if len(have) == 0 {
					have = []string{"none"}
				}
				return fmt.Errorf("%q: {%s} is not captured by the route's match.path (captured: %s); a target names the record the request path names, or, with ids:, the records the body names", src, name, strings.Join(have, ", "))
			}
			t.segs = append(t.segs, fetchSeg{param: true, text: name})
		case strings.ContainsAny(s, "{}*"):
			return fmt.Errorf("%q: segment %q: a fetch path holds literal segments and whole {name} segments only", src, s)
		default:
			dec, _, err := urlpath.Normalize("/" + s)
			if err != nil || dec != "/"+s {
				return fmt.Errorf("%q: segment %q: write fetch paths decoded and clean (no %%, ;, \\, dot segments or trailing dots)", src, s)
			}
			t.segs = append(t.segs, fetchSeg{text: s})
		}
	}
	return nil
}

// splitRecordPath reads `record`: "@this", or keys and array indexes
// separated by dots ("data", "data.attributes", "result.0"), with "\"
// escaping a character that is part of a key. Wildcards, modifiers and
// queries are refused: the record must be one place.
func splitRecordPath(p string) ([]string, error) {
	if p == "@this" {
		return nil, nil
	}
	return splitKeyPath(p, `*?#@|[]{}()!\`, "a target's record is one place: keys and indexes (data.attributes, result.0) or @this")
}
