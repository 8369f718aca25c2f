package rules

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/crmguard/crmguard/rules/internal/urlpath"
	"go.yaml.in/yaml/v3"
)

// Limits of a bulk target (`ids`).
const (
	defaultMaxIDs      = 100
	maxMaxIDs          = 1000
	defaultConcurrency = 4
	maxConcurrency     = 16
)

// bulkTarget reads the keys of a bulk target: `ids` (where the body names
// the records), `fetch` (one GET per id: a template with one parameter the
// route's path does not capture, which takes each id) or `fetch_many` (one
// GET for all ids), `max_ids` and `concurrency`.
func (l *loader) bulkTarget(t *targetSpec, r *route, by map[string]entry, key string) bool {
	b := &bulkSpec{maxIDs: defaultMaxIDs, concurrency: defaultConcurrency}
	good := true
	ik := joinKey(key, "ids")
	if src, ok := l.str(by["ids"].val, ik); ok {
		before, after, err := splitIDsPath(src)
		if err != nil {
			l.errorf(by["ids"].val, ik, "%v", err)
			good = false
		}
		b.idsSrc, b.before, b.after = src, before, after
	} else {
		good = false
	}
	for _, k := range []string{"id_fields", "if_match"} {
		if e, ok := by[k]; ok {
			l.errorf(e.key, joinKey(key, k), "%s is for a target whose path names the record; a bulk write names its records in the body (ids)", k)
			good = false
		}
	}
	fetch, hasFetch := by["fetch"]
	many, hasMany := by["fetch_many"]
	switch {
	case hasFetch && hasMany:
		l.errorf(many.key, joinKey(key, "fetch_many"), "give fetch (one GET per id) or fetch_many (one GET for all ids), not both")
		good = false
	case hasFetch:
		fk := joinKey(key, "fetch")
		if src, ok := l.str(fetch.val, fk); ok {
			if err := b.parseFetchEach(t, src, r.pattern); err != nil {
				l.errorf(fetch.val, fk, "%v", err)
				good = false
			}
		} else {
			good = false
		}
	case hasMany:
		if e, ok := by["record"]; ok {
			l.errorf(e.key, joinKey(key, "record"), "with fetch_many, say where the records sit in its answer with fetch_many.records")
			good = false
		}
		good = l.fetchMany(b, r, many, joinKey(key, "fetch_many")) && good
	default:
		l.errorf(by["ids"].key, key, "a bulk write needs fetch (one GET per id, e.g. \"/api/customers/{id}\") or fetch_many (one GET for all, e.g. {path: \"/api/customers?ids={ids}\", records: list})")
		good = false
	}
	if e, ok := by["max_ids"]; ok {
		b.maxIDs, good = l.boundedInt(e.val, joinKey(key, "max_ids"), maxMaxIDs, "ids can be judged in one request", good)
	}
	if e, ok := by["concurrency"]; ok {
		b.concurrency, good = l.boundedInt(e.val, joinKey(key, "concurrency"), maxConcurrency, "fetches can run at once", good)
	}
	t.bulk = b
	return good
}

// boundedInt reads a whole number from 1 to most; what ends "at most N
// ...". good is returned false on a problem, unchanged otherwise.
func (l *loader) boundedInt(n *yaml.Node, key string, most int, what string, good bool) (int, bool) {
	v, ok := l.integer(n, key, 1)
	if !ok {
		return v, false
	}
	if v > most {
		l.errorf(n, key, "at most %d %s, got %d", most, what, v)
		return v, false
	}
	return v, good
}

// parseFetchEach reads the fetch template of a bulk write: exactly one of
// its parameters is not captured by the route's path, and takes each id.
func (b *bulkSpec) parseFetchEach(t *targetSpec, src string, pat *urlpath.Pattern) error {
	captured := map[string]bool{}
	if pat != nil {
		for _, name := range pat.Params() {
			captured[name] = true
		}
	}
	var free []string
	for _, s := range strings.Split(strings.SplitN(src, "?", 2)[0], "/") {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") && !captured[s[1:len(s)-1]] {
			free = append(free, s)
		}
	}
	if len(free) != 1 {
		return fmt.Errorf("%q: a bulk write's fetch has exactly one {parameter} the route's path does not capture, which takes each id (found %d: %s)", src, len(free), strings.Join(free, ", "))
	}
	b.idParam = free[0][1 : len(free[0])-1]
	return t.parseFetch(src, pat, b.idParam)
}

// fetchMany reads `fetch_many: {path, records, id}`.
func (l *loader) fetchMany(b *bulkSpec, r *route, e entry, key string) bool {
	es, ok := l.entries(e.val, key, "path", "records", "id")
	if !ok {
		return false
	}
	m := &fetchMany{recSrc: "@this", idSrc: "id", idKeys: []string{"id"}}
	good := true
	by := fieldsOf(es)
	if p, ok := by["path"]; ok {
		pk := joinKey(key, "path")
		if src, ok := l.str(p.val, pk); ok {
			if err := m.parsePath(src, r.pattern); err != nil {
				l.errorf(p.val, pk, "%v", err)
				good = false
			}
		} else {
			good = false
		}
	} else {
		l.errorf(e.val, joinKey(key, "path"), "missing: the path that answers many records, with {ids} as a query value, e.g. \"/api/customers?ids={ids}\"")
		good = false
	}
	if p, ok := by["records"]; ok {
		rk := joinKey(key, "records")
		if src, ok := l.str(p.val, rk); ok {
			keys, err := splitRecordPath(src)
			if err != nil {
				l.errorf(p.val, rk, "%v", err)
				good = false
			}
			m.recSrc, m.recKeys = src, keys
		} else {
			good = false
		}
	}
	if p, ok := by["id"]; ok {
		ik := joinKey(key, "id")
		if src, ok := l.str(p.val, ik); ok {
			keys, err := splitKeyPath(src, `*?#@|[]{}()!\`, "a record's id is one place in it: keys (id, attributes.id)")
			if err != nil {
				l.errorf(p.val, ik, "%v", err)
				good = false
			}
			m.idSrc, m.idKeys = src, keys
		} else {
			good = false
		}
	}
	b.many = m
	return good
}

// parsePath reads fetch_many's path: literal segments and captured
// {params}, and a query in which one value is {ids} (the ids joined with
// ","); the rest of the query is literal.
func (m *fetchMany) parsePath(src string, pat *urlpath.Pattern) error {
	path, query, _ := strings.Cut(src, "?")
	var t targetSpec
	if err := t.parseFetch(path, pat, ""); err != nil {
		return err
	}
	m.src, m.segs = src, t.segs
	parts := strings.Split(query, "&")
	m.query = url.Values{}
	for _, part := range parts {
		k, v, _ := strings.Cut(part, "=")
		if v == "{ids}" {
			if m.idsKey != "" {
				return fmt.Errorf("%q: {ids} may stand for one query value only", src)
			}
			dk, err := url.QueryUnescape(k)
			if err != nil || dk == "" {
				return fmt.Errorf("%q: the query key before {ids} cannot be read", src)
			}
			m.idsKey = dk
			continue
		}
		if strings.ContainsAny(part, "{}") {
			return fmt.Errorf("%q: only a whole query value may be {ids}; other {params} stand for path segments", src)
		}
		if part == "" {
			continue
		}
		q, err := url.ParseQuery(part)
		if err != nil {
			return fmt.Errorf("%q: the query cannot be read: %w", src, err)
		}
		for qk, vs := range q {
			m.query[qk] = append(m.query[qk], vs...)
		}
	}
	if m.idsKey == "" {
		return fmt.Errorf("%q: fetch_many's path names the ids as a query value: ...?ids={ids}", src)
	}
	return nil
}

// splitIDsPath reads `ids`: keys to a list, "#", and optionally keys from
// each element of the list to its id ("ids.#", "items.#.id", "#.id" for a
// body that is a list... which the body reader refuses, so a top-level list
// is not accepted).
func splitIDsPath(src string) (before, after []string, err error) {
	const what = "ids names where the body lists the records: keys to a list, #, and the key of the id in each element (ids.#, items.#.id)"
	keys, err := splitKeyPath(strings.ReplaceAll(src, "#", "\x00"), `*?@|[]{}()!`, what)
	if err != nil {
		return nil, nil, err
	}
	hash := -1
	for i, k := range keys {
		switch {
		case k == "\x00" && hash >= 0:
			return nil, nil, fmt.Errorf("%q: %s; one # only", src, what)
		case k == "\x00":
			hash = i
		case strings.ContainsRune(k, 0):
			return nil, nil, fmt.Errorf("%q: %s; # is a whole step", src, what)
		}
	}
	switch {
	case hash < 0:
		return nil, nil, fmt.Errorf("%q: %s; the list's place needs a #", src, what)
	case hash == 0:
		return nil, nil, fmt.Errorf("%q: %s; the body is read as an object, so the list sits under a key", src, what)
	}
	return keys[:hash], keys[hash+1:], nil
}
