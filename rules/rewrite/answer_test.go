package rewrite

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/rules/mask"
)

func TestAnswerFields(t *testing.T) {
	cases := []struct {
		name    string
		records string
		answer  []Field
		fields  []Field
		in      string
		want    string
	}{
		{"a total before the records is removed with its comma", "list", []Field{rm("total")}, nil,
			`{"total":500,"list":[{"a":1}]}`, `{"list":[{"a":1}]}`},
		{"a total after the records is removed with the comma before it", "list", []Field{rm("total")}, nil,
			`{"list":[{"a":1}],"total":500}`, `{"list":[{"a":1}]}`},
		{"a total between other members keeps one comma on each side", "list", []Field{rm("total")}, nil,
			`{"a":1, "total": 500, "list":[]}`, `{"a":1, "list":[]}`},
		{"pretty-printed envelopes stay tidy", "list", []Field{rm("total")}, nil,
			"{\n  \"total\": 5,\n  \"list\": []\n}", "{\n  \"list\": []\n}"},
		{"several members in a row are removed", "data", []Field{rm("a"), rm("b"), rm("d")}, nil,
			`{"a":1,"b":{"x":[1,2]},"data":[],"c":3,"d":4}`, `{"data":[],"c":3}`},
		{"the only member left out leaves an empty object", "data", []Field{rm("meta.count")}, nil,
			`{"meta":{"count":2},"data":[]}`, `{"meta":{},"data":[]}`},
		{"a nested meta path with an escaped dot key is removed", "data", []Field{rm(`meta.total-pages`), rm(`@odata\.count`)}, nil,
			`{"@odata.count":7,"data":[{"id":1}],"meta":{"total-pages":3,"page":1}}`, `{"data":[{"id":1}],"meta":{"page":1}}`},
		{"every copy of a duplicate key is treated", "list", []Field{nl("total")}, nil,
			`{"total":5,"list":[],"total":6}`, `{"total":null,"list":[],"total":null}`},
		{"a key written with \\u escapes is matched decoded", "list", []Field{rm("total")}, nil,
			`{"tot\u0061l":5,"list":[]}`, `{"list":[]}`},
		{"a sibling of the records inside the same envelope is replaced", "data.list", []Field{rp("data.totalSize", "0")}, nil,
			`{"data":{"totalSize":42,"list":[{"a":1}],"done":true}}`, `{"data":{"totalSize":0,"list":[{"a":1}],"done":true}}`},
		{"an index path treats one array element", "data", []Field{rm("paging.1")}, nil,
			`{"paging":[1,2,3],"data":[]}`, `{"paging":[1,3],"data":[]}`},
		{"a mask shows a number's text masked", "list", []Field{mk("total", mask.All)}, nil,
			`{"total":123,"list":[]}`, `{"total":"***","list":[]}`},
		{"null stays null under a mask", "list", []Field{mk("total", mask.All)}, nil,
			`{"total":null,"list":[]}`, `{"total":null,"list":[]}`},
		{"an object value is removed whole", "results", []Field{rm("paging")}, nil,
			`{"results":[{"a":1}],"paging":{"next":{"after":"x","link":"y"}}}`, `{"results":[{"a":1}]}`},
		{"the strongest of two rules on one value wins", "list", []Field{rp("total", "0"), rm("total")}, nil,
			`{"total":3,"list":[]}`, `{"list":[]}`},
		{"answer and record rules apply in the same pass", "list", []Field{rm("total")}, []Field{rm("secret")},
			`{"total":2,"list":[{"id":1,"secret":"x"},{"id":2,"secret":"y"}]}`, `{"list":[{"id":1},{"id":2}]}`},
		{"a record key of the same name is not an answer field", "list", []Field{rm("total")}, nil,
			`{"list":[{"total":1}],"total":1}`, `{"list":[{"total":1}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &Plan{Records: MustParsePath(tc.records), Answer: tc.answer, Fields: tc.fields, HashKey: testKey}
			if err := p.Compile(); err != nil {
				t.Fatal(err)
			}
			var st Stats
			out, err := p.Rewrite(nil, []byte(tc.in), &st)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Fatalf("got  %s\nwant %s", out, tc.want)
			}
			if !json.Valid(out) {
				t.Fatalf("invalid output %s", out)
			}
			if st.Changed != (tc.in != tc.want) {
				t.Fatalf("Changed = %v", st.Changed)
			}
		})
	}
}

func TestAnswerFieldsWithOtherShapes(t *testing.T) {
	t.Run("a single record's envelope is treated beside the record", func(t *testing.T) {
		p := &Plan{Records: MustParsePath("data"), Single: true, Answer: []Field{rm("meta.total")}, Fields: []Field{rm("secret")}}
		out, err := p.Rewrite(nil, []byte(`{"data":{"id":1,"secret":"s"},"meta":{"total":1,"v":2}}`), nil)
		if err != nil || string(out) != `{"data":{"id":1},"meta":{"v":2}}` {
			t.Fatalf("got %s, %v", out, err)
		}
	})
	t.Run("hidden records and a removed total after them leave valid JSON", func(t *testing.T) {
		p := &Plan{Records: MustParsePath("list"), Keys: paths("owner"), Visible: ownerIs("u"), Answer: []Field{rm("total")}}
		var st Stats
		out, err := p.Rewrite(nil, []byte(`{"list":[{"owner":"u"},{"owner":"v"}], "total":2}`), &st)
		if err != nil || string(out) != `{"list":[{"owner":"u"}]}` || st.RecordsOut != 1 {
			t.Fatalf("got %s, %v, %+v", out, err, st)
		}
	})
	t.Run("records under an array index and an answer rule on another element", func(t *testing.T) {
		p := &Plan{Records: MustParsePath("results.0.items"), Answer: []Field{nl("results.1.count"), rm("results.0.count")}}
		out, err := p.Rewrite(nil, []byte(`{"results":[{"count":5,"items":[{"a":1}]},{"count":9}]}`), nil)
		if err != nil || string(out) != `{"results":[{"items":[{"a":1}]},{"count":null}]}` {
			t.Fatalf("got %s, %v", out, err)
		}
	})
	t.Run("invalid JSON inside a treated value is still an error", func(t *testing.T) {
		p := &Plan{Records: MustParsePath("list"), Answer: []Field{rm("paging")}}
		if out, err := p.Rewrite(nil, []byte(`{"paging":{"next":tru},"list":[]}`), nil); err == nil {
			t.Fatalf("accepted, gave %s", out)
		}
	})
}

func TestAnswerFieldsUnchangedIsByteForByte(t *testing.T) {
	docs := []string{
		"{ \"list\" : [ {\"a\":1} ] , \"count\" : 2 }",
		`{"meta":{"page":1},"list":null}`,
		`{"list":[],"totalx":1,"tota":2,"meta":[1,{"total":3}]}`,
	}
	p := &Plan{Records: MustParsePath("list"), Answer: []Field{rm("total"), rm("meta.total")}}
	for _, d := range docs {
		t.Run("an answer without the rules' keys is copied as is: "+d, func(t *testing.T) {
			var st Stats
			out, err := p.Rewrite(nil, []byte(d), &st)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != d || st.Changed {
				t.Fatalf("got %s (changed %v)", out, st.Changed)
			}
		})
	}
}

func TestAnswerFieldsStats(t *testing.T) {
	t.Run("answer rules are counted as action:answer.path", func(t *testing.T) {
		p := &Plan{Records: MustParsePath("list"), Answer: []Field{rm("total"), hs("meta.n")}, HashKey: testKey}
		var st Stats
		out, err := p.Rewrite(nil, []byte(`{"total":1,"meta":{"n":"7"},"list":[{"a":1}],"total":2}`), &st)
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"meta":{"n":"` + hmacHex("7") + `"},"list":[{"a":1}]}`; string(out) != want {
			t.Fatalf("got %s want %s", out, want)
		}
		if st.Fields["remove:answer.total"] != 2 || st.Fields["hash:answer.meta.n"] != 1 || len(st.Fields) != 2 {
			t.Fatalf("fields %v", st.Fields)
		}
	})
}

func TestAnswerFieldsRefused(t *testing.T) {
	cases := []struct {
		name    string
		records string
		answer  Field
		want    string
	}{
		{"a path into the records is refused", "list", rm("list.0.id"), "reaches into the records"},
		{"a path into nested records is refused", "data.list", rm("data.list.secret"), "reaches into the records"},
		{"the records themselves are refused", "data.list", rm("data.list"), "as a whole"},
		{"the envelope around the records is refused", "data.list", rm("data"), "as a whole"},
		{"any path is refused when the records are the whole answer", "", rm("total"), "reaches into the records"},
		{"a ** path is refused", "list", rm("**.total"), "only plain keys"},
		{"a wildcard path is refused", "list", rm("tot*"), "only plain keys"},
		{"a # path is refused", "list", rm("pages.#.n"), "only plain keys"},
		{"a condition is refused", "list", Field{Path: MustParsePath("total"), Action: Remove, When: func(*Record) (bool, error) { return true, nil }}, "condition"},
		{"a hash without a key is refused", "list", hs("total"), "hash key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &Plan{Records: MustParsePath(tc.records), Answer: []Field{tc.answer}}
			err := p.Compile()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// answerFuzzPlan removes the answer key "total" at the root and in "meta".
var answerFuzzPlan = &Plan{Records: MustParsePath("list"), Answer: []Field{rm("total"), rm("meta.total")}}

// checkAnswer says no "total" survives where answerFuzzPlan removes it.
func checkAnswer(t *testing.T, doc, out []byte) {
	var m map[string]json.RawMessage
	if json.Unmarshal(out, &m) != nil {
		return // not an object: nothing to check
	}
	if _, ok := m["total"]; ok {
		t.Fatalf("total survived in %s from %s", out, doc)
	}
	var meta map[string]json.RawMessage
	if json.Unmarshal(m["meta"], &meta) == nil {
		if _, ok := meta["total"]; ok {
			t.Fatalf("meta.total survived in %s from %s", out, doc)
		}
	}
}
