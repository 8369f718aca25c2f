package rules

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"

	"github.com/tidwall/gjson"
)

// A bulk write names its records in the body (`target.ids`): each stored
// record is fetched (one GET per id with at most `concurrency` at once, or
// one `fetch_many` GET for all) and judged; one refusal refuses the whole
// write, naming the id, and nothing is forwarded. The ids are read from the
// body's values (bodyvalues.go), so a body that names them ambiguously is
// refused before anything is fetched.

// bulkSpec is a compiled bulk target.
type bulkSpec struct {
	idsSrc      string   // `ids` as written
	before      []string // keys from the body's root to the list
	after       []string // keys from each element to its id (none: the element is the id)
	idParam     string   // the fetch template's parameter each id takes ("" with fetch_many)
	many        *fetchMany
	maxIDs      int
	concurrency int
}

// fetchMany is a bulk target's `fetch_many`: one GET answering many
// records.
type fetchMany struct {
	src     string
	segs    []fetchSeg // literal or captured {param} segments of the path
	query   url.Values // the literal query
	idsKey  string     // the query key whose value is the ids, joined with ","
	recSrc  string     // `records` as written
	recKeys []string   // keys to the list of records in the answer (nil: the answer)
	idSrc   string     // `id` as written
	idKeys  []string   // keys from a record to its id
}

// readBulkIDs reads the ids a bulk write's body names and prepares one
// fetch per id (or one fetch_many): 400 when the body does not name them
// with certainty, 413 for more than max_ids.
func (d *Decision) readBulkIDs() *BodyError {
	rt := d.route
	b := rt.target.bulk
	bad := func(status int, format string, args ...any) *BodyError {
		return &BodyError{Status: status, Reason: fmt.Sprintf("route %s: the request body ", rt.id) + fmt.Sprintf(format, args...)}
	}
	v, ok := bodyValueAt(d.values, b.before)
	if !ok {
		return bad(http.StatusBadRequest, "names no records at %s (the route is a bulk write)", b.idsSrc)
	}
	list, ok := v.([]any)
	if !ok {
		return bad(http.StatusBadRequest, "has no list at %s (the route is a bulk write)", b.idsSrc)
	}
	if len(list) > b.maxIDs {
		return bad(http.StatusRequestEntityTooLarge, "names %d records at %s; at most %d are judged in one request (max_ids)", len(list), b.idsSrc, b.maxIDs)
	}
	var ids []string
	seen := map[string]bool{}
	for i, e := range list {
		iv, ok := e, true
		if len(b.after) > 0 {
			obj, isObj := e.(map[string]any)
			if !isObj {
				return bad(http.StatusBadRequest, "has no object at item %d of %s", i, b.idsSrc)
			}
			iv, ok = bodyValueAt(obj, b.after)
		}
		id, isID := idText(iv)
		if !ok || !isID {
			return bad(http.StatusBadRequest, "has no id (a string or a whole number) at item %d of %s", i, b.idsSrc)
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return bad(http.StatusBadRequest, "names no records at %s (an empty list); a CRM may read it as every record", b.idsSrc)
	}
	fetches, err := d.bulkFetches(ids)
	if err != nil {
		return bad(http.StatusBadRequest, "names a record that cannot be fetched unambiguously: %v", err)
	}
	d.bulkIDs, d.fetches = ids, fetches
	return nil
}

// idText is a body value as a record id: a non-empty string, or a whole
// number as written.
func idText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, v != ""
	case json.Number:
		s := string(v)
		return s, !strings.ContainsAny(s, ".eE")
	}
	return "", false
}

// bulkFetches prepares the fetches of ids: one per id, or one fetch_many.
func (d *Decision) bulkFetches(ids []string) ([]TargetFetch, error) {
	t := d.route.target
	b := t.bulk
	if b.many == nil {
		out := make([]TargetFetch, 0, len(ids))
		params := maps.Clone(d.Params)
		if params == nil {
			params = map[string]string{}
		}
		for _, id := range ids {
			params[b.idParam] = id
			p, err := t.expand(params)
			if err != nil {
				return nil, fmt.Errorf("record %q: %w", id, err)
			}
			out = append(out, TargetFetch{Path: p, IDs: []string{id}})
		}
		return out, nil
	}
	m := b.many
	for _, id := range ids {
		if strings.Contains(id, ",") {
			return nil, fmt.Errorf("record %q: an id holding \",\" cannot be listed in %s", id, m.src)
		}
	}
	spec := targetSpec{src: m.src, segs: m.segs}
	p, err := spec.expand(d.Params)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	for k, vs := range m.query {
		q[k] = append([]string(nil), vs...)
	}
	q.Set(m.idsKey, strings.Join(ids, ","))
	return []TargetFetch{{Path: p + "?" + q.Encode(), IDs: append([]string(nil), ids...)}}, nil
}

// records reads a fetch_many answer: the records at `records`, each by its
// id. An id given by two records is an error (which would the CRM change?).
func (m *fetchMany) records(body []byte) (map[string][]byte, error) {
	list, err := (&targetSpec{recSrc: m.recSrc, recKeys: m.recKeys}).place(body)
	if err != nil {
		return nil, err
	}
	if !list.IsArray() {
		return nil, fmt.Errorf("the value at %q is not a list of records", m.recSrc)
	}
	out := map[string][]byte{}
	var bad error
	i := 0
	list.ForEach(func(_, rec gjson.Result) bool {
		if !rec.IsObject() {
			bad = fmt.Errorf("item %d at %q is not a JSON object", i, m.recSrc)
			return false
		}
		id, ok := recordID(rec, m.idKeys)
		if !ok {
			bad = fmt.Errorf("item %d at %q has no id (a string or a whole number) at %q", i, m.recSrc, m.idSrc)
			return false
		}
		if _, dup := out[id]; dup {
			bad = fmt.Errorf("two records at %q have the id %q", m.recSrc, id)
			return false
		}
		out[id] = []byte(rec.Raw)
		i++
		return true
	})
	return out, bad
}

// recordID reads a stored record's id at keys: a string, or a whole number
// as written. A key present twice on the way with different values gives
// no id.
func recordID(rec gjson.Result, keys []string) (string, bool) {
	cur := rec
	for _, k := range keys {
		if !cur.IsObject() {
			return "", false
		}
		var next gjson.Result
		n := 0
		cur.ForEach(func(key, v gjson.Result) bool {
			if key.Str == k {
				if n > 0 && v.Raw != next.Raw {
					n = 2
					return false
				}
				next, n = v, 1
			}
			return true
		})
		if n != 1 {
			return "", false
		}
		cur = next
	}
	switch cur.Type {
	case gjson.String:
		return cur.Str, cur.Str != ""
	case gjson.Number:
		return cur.Raw, !strings.ContainsAny(cur.Raw, ".eE")
	}
	return "", false
}

// TargetFetches lists the GETs of the stored records the request must be
// judged against, in order: on a route whose path names the record, the
// one Target fetch; on a bulk write (target ids), one per id or one
// fetch_many, known once CheckBody or CheckTargetBody read the ids (nil
// before). The caller makes them all, as the same user, at most
// TargetConcurrency at once, and passes the answers in the same order to
// JudgeTargets.
func (d *Decision) TargetFetches() []TargetFetch {
	t := d.Target()
	if t == nil {
		return nil
	}
	if !t.Bulk {
		return []TargetFetch{*t}
	}
	return d.fetches
}

// TargetConcurrency is how many of TargetFetches may run at once (a bulk
// target's `concurrency`; 1 otherwise).
func (d *Decision) TargetConcurrency() int {
	if d.route == nil || d.route.target == nil || d.route.target.bulk == nil {
		return 1
	}
	return d.route.target.bulk.concurrency
}
