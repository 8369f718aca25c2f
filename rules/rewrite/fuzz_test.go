package rewrite

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/crmguard/crmguard/rules/mask"
)

// The fuzz plans: every CRM records path, with rules of each kind, and a
// single record with an allow-list.
var fuzzRemove = []string{"**.secret", "Tax_ID__c", "Bank_Account__c", "a.#.b", "x*", `@odata\.etag`, "properties.phone", "attributes.phone_office"}

func fuzzListPlan(records string) *Plan {
	p := &Plan{
		Records: MustParsePath(records),
		Keys:    paths("hide"),
		Visible: func(r *Record) (bool, error) {
			k := r.Key(0)
			if k.Exists() && k.Type == 0 {
				return true, nil // "hide": null
			}
			return !k.Exists() || !k.Bool(), nil
		},
		Fields: []Field{
			mk("phone", mask.All), mk("**.Phone", mask.All), hs("email"), nl("n"), nl("tags.1"), rp("r", `"R"`),
		},
		HashKey: testKey,
		AuditID: MustParsePath("id"),
	}
	for _, r := range fuzzRemove {
		p.Fields = append(p.Fields, rm(r))
	}
	return p
}

var (
	fuzzRecords = []string{"records", "results", "list", "data", "value", "@this"}
	fuzzPlans   = func() []*Plan {
		var ps []*Plan
		for _, r := range fuzzRecords {
			ps = append(ps, mustCompile(fuzzListPlan(r)))
		}
		return ps
	}()
	fuzzSingle = mustCompile(&Plan{
		Records: MustParsePath("@this"), Single: true,
		Expose: paths("id", "name", "phone", "attributes.*", "**.keep", "list.#.id"),
		Fields: []Field{mk("phone", mask.All), rm("**.secret")},
	})
	fuzzIdentity = mustCompile(&Plan{Records: MustParsePath("@this")})
	fuzzSecret   = MustParsePath("**.secret").segs
)

func mustCompile(p *Plan) *Plan {
	if err := p.Compile(); err != nil {
		panic(err)
	}
	return p
}

// node is one value of a walked document.
type node struct {
	path []any // string keys and int indexes
	tok  json.Token
}

// maxWalkDepth bounds the paths walk lists, so the checks stay fast on the
// very deep documents the fuzzer makes (TestDeepNesting covers depth).
const maxWalkDepth = 64

// walk lists every value of doc with its path, using encoding/json's
// tokenizer (an independent decoder that also sees duplicate keys).
func walk(t *testing.T, doc []byte) []node {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	type level struct {
		arr  bool
		n    int
		key  string
		want bool // object: a key is expected next
	}
	var stack []level
	var path []any
	var out []node
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("walking the output: %v", err)
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 {
				path = path[:len(stack)-1]
			}
			continue
		}
		if len(stack) > 0 {
			top := &stack[len(stack)-1]
			if !top.arr && top.want {
				top.key, top.want = tok.(string), false
				continue
			}
		}
		// a value: its path is the stack's path plus its key or index
		var elem any
		if len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.arr {
				elem = top.n
				top.n++
			} else {
				elem = top.key
				top.want = true
			}
		}
		depth := len(stack)
		if depth <= maxWalkDepth {
			p := append([]any(nil), path...)
			if depth > 0 {
				p = append(p, elem)
			}
			out = append(out, node{p, tok})
		}
		if d, ok := tok.(json.Delim); ok {
			stack = append(stack, level{arr: d == '[', want: d == '{'})
			if depth > 0 {
				path = append(path, elem)
			}
		}
	}
}

// matchSegs is a plain recursive matcher, independent of the automaton.
func matchSegs(segs []seg, path []any) bool {
	if len(segs) == 0 {
		return len(path) == 0
	}
	if segs[0].kind == segAny {
		for k := 0; k <= len(path); k++ {
			if matchSegs(segs[1:], path[k:]) {
				return true
			}
		}
		return false
	}
	if len(path) == 0 {
		return false
	}
	ok := false
	switch e := path[0].(type) {
	case string:
		switch segs[0].kind {
		case segKey:
			ok = segs[0].key == e
		case segPattern:
			ok = matchPattern(segs[0].key, e)
		}
	case int:
		ok = segs[0].kind == segEach || (segs[0].kind == segKey && segs[0].idx == e)
	}
	return ok && matchSegs(segs[1:], path[1:])
}

// anyPrefix reports whether some prefix of path (or path itself) matches.
func anyPrefix(segs []seg, path []any) bool {
	for k := 0; k <= len(path); k++ {
		if matchSegs(segs, path[:k]) {
			return true
		}
	}
	return false
}

func checkList(t *testing.T, p *Plan, out []byte, st *Stats) {
	rs := p.Records.segs
	records := 0
	for _, nd := range walk(t, out) {
		if len(nd.path) < len(rs)+1 || !matchSegs(rs, nd.path[:len(rs)]) {
			continue
		}
		rel := nd.path[len(rs)+1:]
		if len(rel) == 0 {
			records++
		}
		if len(rel) == 1 && rel[0] == "hide" && nd.tok == true {
			t.Fatalf("a record with hide:true survived: %s", out)
		}
		// a value inside a removed one cannot survive without its parent,
		// which is checked itself
		for _, f := range p.Fields {
			if f.Action == Remove && matchSegs(f.Path.segs, rel) {
				t.Fatalf("a value at removed path %s survived at %v: %s", f.Path, nd.path, out)
			}
		}
		removed := func() bool {
			for _, f := range p.Fields {
				if f.Action == Remove && matchSegs(f.Path.segs, rel) {
					return true
				}
			}
			return false
		}
		for _, f := range p.Fields {
			if !matchSegs(f.Path.segs, rel) || removed() {
				continue
			}
			switch f.Action {
			case Mask:
				if s, ok := nd.tok.(string); ok && strings.Trim(s, "*") != "" {
					t.Fatalf("value %q at %v escaped its mask: %s", s, nd.path, out)
				} else if !ok && nd.tok != nil {
					t.Fatalf("value %v at %v is neither a masked string nor null", nd.tok, nd.path)
				}
			case Null:
				if nd.tok != nil {
					t.Fatalf("value %v at %v is not null", nd.tok, nd.path)
				}
			}
		}
	}
	if records != st.RecordsOut {
		t.Fatalf("the output holds %d records, Stats says %d: %s", records, st.RecordsOut, out)
	}
}

func checkSingle(t *testing.T, p *Plan, out []byte) {
	for _, nd := range walk(t, out) {
		if len(nd.path) == 0 {
			continue
		}
		if matchSegs(fuzzSecret, nd.path) {
			t.Fatalf("a secret survived at %v: %s", nd.path, out)
		}
		if _, ok := nd.tok.(json.Delim); ok {
			continue
		}
		allowed := false
		for _, e := range p.Expose {
			allowed = allowed || anyPrefix(e.segs, nd.path)
		}
		if !allowed {
			t.Fatalf("a value at %v is not exposed: %s", nd.path, out)
		}
	}
}

// arrayOfObjects reports whether doc is valid JSON and UTF-8 whose top level
// is an array of objects (what the identity plan accepts).
func arrayOfObjects(doc []byte) bool {
	var list []json.RawMessage
	if !utf8.Valid(doc) || json.Unmarshal(doc, &list) != nil {
		return false
	}
	for _, r := range list {
		if r[0] != '{' {
			return false
		}
	}
	return true
}

func FuzzRewrite(f *testing.F) {
	f.Add([]byte(`[{"phone":"1","secret":{"a":1},"hide":false,"id":1}]`))
	f.Add([]byte(`{"total":3,"meta":{"total":1,"p":2},"list":[{"total":1}],"tot\u0061l":4}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		for _, p := range fuzzPlans {
			var st Stats
			out, err := p.Rewrite(nil, doc, &st)
			if err != nil {
				continue
			}
			if !json.Valid(out) {
				t.Fatalf("records %s: output is not valid JSON: %q from %q", p.Records, out, doc)
			}
			if !json.Valid(doc) || !utf8.Valid(doc) {
				t.Fatalf("records %s: invalid input accepted: %q", p.Records, doc)
			}
			checkList(t, p, out, &st)
		}
		var st Stats
		out, err := fuzzSingle.Rewrite(nil, doc, &st)
		if err == nil {
			if !json.Valid(out) {
				t.Fatalf("single: output is not valid JSON: %q from %q", out, doc)
			}
			checkSingle(t, fuzzSingle, out)
		}
		if out, err := answerFuzzPlan.Rewrite(nil, doc, nil); err == nil {
			if !json.Valid(out) {
				t.Fatalf("answer: output is not valid JSON: %q from %q", out, doc)
			}
			checkAnswer(t, doc, out)
		}
		out, err = fuzzIdentity.Rewrite(nil, doc, nil)
		switch {
		case err == nil && !bytes.Equal(out, doc):
			t.Fatalf("a plan without rules changed %q into %q", doc, out)
		case err == nil && !arrayOfObjects(doc):
			t.Fatalf("a plan without rules accepted %q", doc)
		case err != nil && arrayOfObjects(doc) && !errors.Is(err, ErrNoRecords) && !strings.Contains(err.Error(), "nesting"):
			t.Fatalf("valid input %q refused: %v", doc, err)
		}
	})
}
