package rewrite

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/rules/mask"
	"github.com/tidwall/gjson"
)

// Field helpers for the tables.
func rm(p string) Field              { return Field{Path: MustParsePath(p), Action: Remove} }
func mk(p string, m mask.Func) Field { return Field{Path: MustParsePath(p), Action: Mask, Mask: m} }
func hs(p string) Field              { return Field{Path: MustParsePath(p), Action: Hash} }
func nl(p string) Field              { return Field{Path: MustParsePath(p), Action: Null} }
func rp(p, v string) Field           { return Field{Path: MustParsePath(p), Action: Replace, Replace: []byte(v)} }
func paths(ss ...string) []Path {
	var out []Path
	for _, s := range ss {
		out = append(out, MustParsePath(s))
	}
	return out
}

var testKey = []byte("test-key")

// hmacHex is the expected hash of s under testKey.
func hmacHex(s string) string {
	h := hmac.New(sha256.New, testKey)
	h.Write([]byte(s))
	return hex.EncodeToString(h.Sum(nil))
}

// ownerIs is a visible predicate on Keys[0].
func ownerIs(id string) Predicate {
	return func(r *Record) (bool, error) {
		k := r.Key(0)
		if !k.Exists() {
			return false, errors.New("no owner")
		}
		return k.String() == id, nil
	}
}

func TestRewriteFields(t *testing.T) {
	cases := []struct {
		name   string
		fields []Field
		expose []string
		in     string
		want   string
	}{
		{"a removed key in the middle leaves valid commas", []Field{rm("b")}, nil,
			`[{"a":1,"b":2,"c":3}]`, `[{"a":1,"c":3}]`},
		{"a removed first key takes the comma after it", []Field{rm("a")}, nil,
			`[{"a":1,"b":2}]`, `[{"b":2}]`},
		{"a removed last key takes the comma before it", []Field{rm("b")}, nil,
			`[{"a":1,"b":2}]`, `[{"a":1}]`},
		{"removing every key leaves an empty object", []Field{rm("a"), rm("b"), rm("c")}, nil,
			`[{"a":1,"b":2,"c":3}]`, `[{}]`},
		{"removing the first two keys keeps the third without a comma", []Field{rm("a"), rm("b")}, nil,
			`[{"a":1,"b":2,"c":3}]`, `[{"c":3}]`},
		{"removing the last two keys keeps the first", []Field{rm("b"), rm("c")}, nil,
			`[{"a":1,"b":2,"c":3}]`, `[{"a":1}]`},
		{"removing alternate keys keeps the others", []Field{rm("a"), rm("c"), rm("e")}, nil,
			`[{"a":1,"b":2,"c":3,"d":4,"e":5}]`, `[{"b":2,"d":4}]`},
		{"whitespace around removed members stays valid", []Field{rm("a"), rm("c")}, nil,
			"[ { \"a\" : 1 ,\n \"b\" : 2 , \"c\" : [1, 2] } ]", "[ { \n \"b\" : 2  } ]"},
		{"a removed object value goes whole", []Field{rm("address")}, nil,
			`[{"id":1,"address":{"city":"c","street":"s"}}]`, `[{"id":1}]`},
		{"a nested key is removed", []Field{rm("address.street")}, nil,
			`[{"id":1,"address":{"street":"s","city":"c"}}]`, `[{"id":1,"address":{"city":"c"}}]`},
		{"a hash path treats every element", []Field{rm("contacts.#.mobile")}, nil,
			`[{"contacts":[{"n":"a","mobile":"1"},{"mobile":"2"},{"n":"c"}]}]`, `[{"contacts":[{"n":"a"},{},{"n":"c"}]}]`},
		{"a hash path does not match an object", []Field{rm("contacts.#.mobile")}, nil,
			`[{"contacts":{"x":{"mobile":"1"}}}]`, `[{"contacts":{"x":{"mobile":"1"}}}]`},
		{"an index removes one element", []Field{rm("tags.1")}, nil,
			`[{"tags":["a","b","c"]}]`, `[{"tags":["a","c"]}]`},
		{"removing the first element keeps the rest", []Field{rm("tags.0")}, nil,
			`[{"tags":["a","b"]}]`, `[{"tags":["b"]}]`},
		{"removing every element leaves an empty array", []Field{rm("tags.#")}, nil,
			`[{"tags":["a","b","c"]}]`, `[{"tags":[]}]`},
		{"a numeric key matches an object key too", []Field{rm("m.0")}, nil,
			`[{"m":{"0":"x","1":"y"}}]`, `[{"m":{"1":"y"}}]`},
		{"a star matches every key it fits", []Field{rm("bank_*")}, nil,
			`[{"bank_account":1,"bank_name":2,"bankrupt":3}]`, `[{"bankrupt":3}]`},
		{"a question mark matches one rune", []Field{rm("?d")}, nil,
			`[{"id":1,"码d":2,"add":3}]`, `[{"add":3}]`},
		{"a lone star matches every key", []Field{rm("secret.*")}, nil,
			`[{"secret":{"a":1,"b":{"c":2}},"x":1}]`, `[{"secret":{},"x":1}]`},
		{"a double star removes a key at any depth", []Field{rm("**.street")}, nil,
			`[{"street":1,"a":{"street":2,"b":[{"street":3},{"c":{"street":4}}]},"streets":5}]`,
			`[{"a":{"b":[{},{"c":{}}]},"streets":5}]`},
		{"a double star in the middle needs the key before it", []Field{rm("a.**.x")}, nil,
			`[{"x":1,"a":{"x":2,"b":{"x":3}},"c":{"x":4}}]`, `[{"x":1,"a":{"b":{}},"c":{"x":4}}]`},
		{"a key with a dot is matched through the escape", []Field{rm(`@odata\.etag`)}, nil,
			`[{"@odata.etag":"W/1","odata":{"etag":2}}]`, `[{"odata":{"etag":2}}]`},
		{"the unescaped path does not match the dotted key", []Field{rm(`odata.etag`)}, nil,
			`[{"@odata.etag":"W/1","odata":{"etag":2}}]`, `[{"@odata.etag":"W/1","odata":{}}]`},
		{"a duplicate key is treated in every copy", []Field{rm("phone")}, nil,
			`[{"phone":"1","name":"n","phone":"2"}]`, `[{"name":"n"}]`},
		{"a masked duplicate key is masked in every copy", []Field{mk("phone", mask.All)}, nil,
			`[{"phone":"12","phone":"345"}]`, `[{"phone":"**","phone":"***"}]`},
		{"a key written with \\u escapes is matched on its decoded form", []Field{rm("phone")}, nil,
			`[{"ph\u006fne":"1","name":"n"}]`, `[{"name":"n"}]`},
		{"a surrogate pair escape in a key is decoded", []Field{rm("😀")}, nil,
			`[{"\ud83d\ude00":1,"b":2}]`, `[{"b":2}]`},
		{"an escaped value is masked on its decoded form", []Field{mk("name", mask.Name)}, nil,
			`[{"name":"\u5f20\u4f1f"}]`, `[{"name":"张*"}]`},
		{"a mask output is escaped as JSON", []Field{mk("n", func(dst []byte, s string) []byte { return append(dst, "a\"b\\c\n"...) })}, nil,
			`[{"n":"x"}]`, `[{"n":"a\"b\\c\n"}]`},
		{"a number is masked on its text and becomes a string", []Field{mk("phone", mask.Phone)}, nil,
			`[{"phone":13812345678}]`, `[{"phone":"138****5678"}]`},
		{"a boolean is masked on its text", []Field{mk("b", mask.All)}, nil,
			`[{"b":true}]`, `[{"b":"****"}]`},
		{"null stays null under a mask", []Field{mk("phone", mask.Phone)}, nil,
			`[{"phone":null}]`, `[{"phone":null}]`},
		{"an object under a mask becomes null", []Field{mk("phone", mask.Phone)}, nil,
			`[{"phone":{"cc":"86","n":"13812345678"}}]`, `[{"phone":null}]`},
		{"an array under a mask becomes null", []Field{mk("phone", mask.Phone)}, nil,
			`[{"phone":["13812345678"]}]`, `[{"phone":null}]`},
		{"each element of an array can be masked", []Field{mk("phones.#", mask.Phone)}, nil,
			`[{"phones":["13812345678","13900001111"]}]`, `[{"phones":["138****5678","139****1111"]}]`},
		{"a string is hashed with the keyed HMAC in hex", []Field{hs("email")}, nil,
			`[{"email":"li@example.cn"}]`, `[{"email":"` + hmacHex("li@example.cn") + `"}]`},
		{"an escaped string is hashed on its decoded form", []Field{hs("email")}, nil,
			`[{"email":"li\u0040example.cn"}]`, `[{"email":"` + hmacHex("li@example.cn") + `"}]`},
		{"a number is hashed on its text", []Field{hs("n")}, nil,
			`[{"n":42}]`, `[{"n":"` + hmacHex("42") + `"}]`},
		{"an object under hash becomes null", []Field{hs("o")}, nil,
			`[{"o":{"a":1}}]`, `[{"o":null}]`},
		{"null stays null under hash", []Field{hs("o")}, nil,
			`[{"o":null}]`, `[{"o":null}]`},
		{"null replaces any value", []Field{nl("a"), nl("b")}, nil,
			`[{"a":"x","b":{"c":[1]}}]`, `[{"a":null,"b":null}]`},
		{"replace writes the raw JSON given", []Field{rp("a", `{"hidden":true}`)}, nil,
			`[{"a":"x"}]`, `[{"a":{"hidden":true}}]`},
		{"remove beats mask on the same value", []Field{mk("phone", mask.Phone), rm("**.phone")}, nil,
			`[{"phone":"13812345678","x":1}]`, `[{"x":1}]`},
		{"null beats hash on the same value", []Field{hs("a"), nl("a")}, nil,
			`[{"a":"x"}]`, `[{"a":null}]`},
		{"a rule on the parent wins over a rule inside it", []Field{rm("a.b"), nl("a")}, nil,
			`[{"a":{"b":1,"c":2}}]`, `[{"a":null}]`},
		{"rules on a parent and its child both apply when the parent is kept", []Field{rm("a.b"), mk("a.c", mask.All)}, nil,
			`[{"a":{"b":1,"c":"xy"}}]`, `[{"a":{"c":"**"}}]`},
		{"expose keeps only the listed keys", nil, []string{"id", "name"},
			`[{"id":1,"secret":2,"name":"n","other":{"x":1}}]`, `[{"id":1,"name":"n"}]`},
		{"expose of a nested path keeps its parents and drops siblings", nil, []string{"id", "address.city"},
			`[{"id":1,"address":{"street":"s","city":"c"},"x":2}]`, `[{"id":1,"address":{"city":"c"}}]`},
		{"expose through an array keeps the named key of each element", nil, []string{"contacts.#.name"},
			`[{"contacts":[{"name":"a","mobile":"1"},"loose",{"mobile":"2"}]}]`, `[{"contacts":[{"name":"a"},{}]}]`},
		{"expose drops a scalar where it expected an object", nil, []string{"address.city"},
			`[{"address":"flat text"}]`, `[{}]`},
		{"expose keeps a whole subtree it names", nil, []string{"address"},
			`[{"address":{"street":"s","city":"c"},"x":1}]`, `[{"address":{"street":"s","city":"c"}}]`},
		{"expose runs before fields", []Field{mk("phone", mask.Phone), rm("address.street")}, []string{"phone", "address"},
			`[{"phone":"13812345678","address":{"street":"s","city":"c"},"notes":"n"}]`, `[{"phone":"138****5678","address":{"city":"c"}}]`},
		{"expose treats every copy of a duplicate key", nil, []string{"id"},
			`[{"x":1,"id":1,"x":2,"id":2}]`, `[{"id":1,"id":2}]`},
		{"expose with a pattern keeps the keys it fits", nil, []string{"name_*"},
			`[{"name_first":"a","name_last":"b","nick":"c"}]`, `[{"name_first":"a","name_last":"b"}]`},
		{"expose with a double star keeps that key at any depth", nil, []string{"**.id"},
			`[{"id":1,"a":{"id":2,"x":3},"b":[{"id":4},5]}]`, `[{"id":1,"a":{"id":2},"b":[{"id":4}]}]`},
		{"a lone star matches the empty key too", []Field{rm("*")}, nil,
			`[{"":1,"a":2}]`, `[{}]`},
		{"an empty key is kept when no rule names it", []Field{rm("a")}, nil,
			`[{"":1,"a":2}]`, `[{"":1}]`},
		{"a key longer than 64 bytes is matched exactly", []Field{rm(strings.Repeat("k", 70))}, nil,
			`[{"` + strings.Repeat("k", 70) + `":1,"` + strings.Repeat("k", 69) + `":2,"` + strings.Repeat("k", 71) + `":3}]`,
			`[{"` + strings.Repeat("k", 69) + `":2,"` + strings.Repeat("k", 71) + `":3}]`},
		{"a key holding an escaped NUL is kept", []Field{rm("x")}, nil,
			`[{"x":1,"n\u0000":2}]`, `[{"n\u0000":2}]`},
		{"a rule that matches nothing changes nothing", []Field{rm("nothere")}, nil,
			"[ {\"a\" : 1} ]", "[ {\"a\" : 1} ]"},
		{"values outside the records are left alone", []Field{rm("a")}, nil,
			`[{"a":1}]`, `[{}]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := &Plan{Records: MustParsePath("@this"), Fields: c.fields, Expose: paths(c.expose...), HashKey: testKey}
			out, err := p.Rewrite(nil, []byte(c.in), nil)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != c.want {
				t.Fatalf("\n got %s\nwant %s", out, c.want)
			}
			if !json.Valid(out) {
				t.Fatalf("output is not valid JSON: %s", out)
			}
		})
	}
}

func TestRewriteRecords(t *testing.T) {
	owner := paths("owner")
	cases := []struct {
		name      string
		plan      Plan
		in        string
		want      string
		wantIn    int
		wantOut   int
		wantIDs   []string
		wantErrIs error
	}{
		{"hidden records are dropped from the list with their commas",
			Plan{Records: MustParsePath("list"), Keys: owner, Visible: ownerIs("me")},
			`{"list":[{"owner":"x"},{"owner":"me","n":1},{"owner":"y"},{"owner":"z"},{"owner":"me","n":2},{"owner":"w"}],"total":6}`,
			`{"list":[{"owner":"me","n":1},{"owner":"me","n":2}],"total":6}`, 6, 2, nil, nil},
		{"hiding every record leaves an empty array",
			Plan{Records: MustParsePath("list"), Keys: owner, Visible: ownerIs("me")},
			"{\"list\": [ {\"owner\":\"x\"} ,\n {\"owner\":\"y\"} ]}", "{\"list\": [  \n  ]}", 2, 0, nil, nil},
		{"only the first record visible",
			Plan{Records: MustParsePath("list"), Keys: owner, Visible: ownerIs("me")},
			`{"list":[{"owner":"me"},{"owner":"x"},{"owner":"y"}]}`, `{"list":[{"owner":"me"}]}`, 3, 1, nil, nil},
		{"only the last record visible",
			Plan{Records: MustParsePath("list"), Keys: owner, Visible: ownerIs("me")},
			`{"list":[{"owner":"x"},{"owner":"y"},{"owner":"me"}]}`, `{"list":[{"owner":"me"}]}`, 3, 1, nil, nil},
		{"a record whose predicate fails is hidden and counted",
			Plan{Records: MustParsePath("list"), Keys: owner, Visible: ownerIs("me")},
			`{"list":[{"id":1},{"owner":"me","id":2}]}`, `{"list":[{"owner":"me","id":2}]}`, 2, 1, nil, nil},
		{"a predicate key given twice with different values hides the record",
			Plan{Records: MustParsePath("list"), Keys: owner, Visible: ownerIs("me")},
			`{"list":[{"owner":"me","owner":"x"},{"owner":"me","owner":"me"}]}`, `{"list":[{"owner":"me","owner":"me"}]}`, 2, 1, nil, nil},
		{"a predicate key written with escapes is read decoded",
			Plan{Records: MustParsePath("list"), Keys: owner, Visible: ownerIs("me")},
			`{"list":[{"ow\u006eer":"m\u0065"}]}`, `{"list":[{"ow\u006eer":"m\u0065"}]}`, 1, 1, nil, nil},
		{"nested predicate keys are captured",
			Plan{Records: MustParsePath("data"), Keys: paths("attributes.assigned_user_id"), Visible: ownerIs("sally")},
			`{"data":[{"attributes":{"assigned_user_id":"sally"}},{"attributes":{"assigned_user_id":"bob"}}]}`,
			`{"data":[{"attributes":{"assigned_user_id":"sally"}}]}`, 2, 1, nil, nil},
		{"audit ids come from visible records only",
			Plan{Records: MustParsePath("value"), Keys: owner, Visible: ownerIs("me"), AuditID: MustParsePath("id")},
			`{"value":[{"id":"a","owner":"me"},{"id":"b","owner":"x"},{"id":7,"owner":"me"},{"owner":"me"}]}`,
			`{"value":[{"id":"a","owner":"me"},{"id":7,"owner":"me"},{"owner":"me"}]}`, 4, 3, []string{"a", "7"}, nil},
		{"predicates and audit ids read keys that expose drops",
			Plan{Records: MustParsePath("list"), Keys: owner, Visible: ownerIs("me"), Expose: paths("name"), AuditID: MustParsePath("id")},
			`{"list":[{"id":1,"owner":"me","name":"a"},{"id":2,"owner":"x","name":"b"}]}`,
			`{"list":[{"name":"a"}]}`, 2, 1, []string{"1"}, nil},
		{"a nested records path is followed",
			Plan{Records: MustParsePath("response.data.items"), Fields: []Field{rm("x")}},
			`{"response":{"data":{"items":[{"x":1,"y":2}]},"x":3},"x":4}`, `{"response":{"data":{"items":[{"y":2}]},"x":3},"x":4}`, 1, 1, nil, nil},
		{"a records path with an index is followed",
			Plan{Records: MustParsePath("pages.1"), Fields: []Field{rm("x")}},
			`{"pages":[[{"x":1}],[{"x":2,"y":3}]]}`, `{"pages":[[{"x":1}],[{"y":3}]]}`, 1, 1, nil, nil},
		{"records under a duplicate key are treated in every copy",
			Plan{Records: MustParsePath("list"), Fields: []Field{rm("x")}},
			`{"list":[{"x":1}],"list":[{"x":2,"y":1}]}`, `{"list":[{}],"list":[{"y":1}]}`, 2, 2, nil, nil},
		{"null records count as an empty list",
			Plan{Records: MustParsePath("list"), Fields: []Field{rm("x")}},
			`{"list":null}`, `{"list":null}`, 0, 0, nil, nil},
		{"a missing records path is an error",
			Plan{Records: MustParsePath("records"), Fields: []Field{rm("x")}},
			`{"list":[]}`, "", 0, 0, nil, ErrNoRecords},
		{"a single record that is visible is rewritten",
			Plan{Records: MustParsePath("@this"), Single: true, Keys: owner, Visible: ownerIs("me"), Fields: []Field{mk("phone", mask.Phone)}},
			`{"owner":"me","phone":"13812345678"}`, `{"owner":"me","phone":"138****5678"}`, 1, 1, nil, nil},
		{"a single record that is hidden is ErrNotVisible",
			Plan{Records: MustParsePath("@this"), Single: true, Keys: owner, Visible: ownerIs("me")},
			`{"owner":"you","phone":"13812345678"}`, "", 1, 0, nil, ErrNotVisible},
		{"a single JSON:API record under data is rewritten",
			Plan{Records: MustParsePath("data"), Single: true, Fields: []Field{rm("attributes.tax")}},
			`{"data":{"id":"1","attributes":{"tax":"x","name":"n"}},"meta":{}}`, `{"data":{"id":"1","attributes":{"name":"n"}},"meta":{}}`, 1, 1, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var st Stats
			out, err := c.plan.Rewrite([]byte("prefix:"), []byte(c.in), &st)
			if c.wantErrIs != nil {
				if !errors.Is(err, c.wantErrIs) {
					t.Fatalf("error %v, want %v", err, c.wantErrIs)
				}
				if string(out) != "prefix:" {
					t.Fatalf("on error the output must be dst unchanged, got %q", out)
				}
				if c.wantErrIs == ErrNotVisible && !st.NotVisible {
					t.Fatal("Stats.NotVisible is false")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimPrefix(string(out), "prefix:"); got != c.want {
				t.Fatalf("\n got %s\nwant %s", got, c.want)
			}
			if st.RecordsIn != c.wantIn || st.RecordsOut != c.wantOut {
				t.Fatalf("records in/out = %d/%d, want %d/%d", st.RecordsIn, st.RecordsOut, c.wantIn, c.wantOut)
			}
			if c.wantIDs != nil && strings.Join(st.IDs, ",") != strings.Join(c.wantIDs, ",") {
				t.Fatalf("ids = %q, want %q", st.IDs, c.wantIDs)
			}
			if st.Changed != (c.want != c.in) {
				t.Fatalf("Changed = %v for an output that differs: %v", st.Changed, c.want != c.in)
			}
		})
	}
}

func TestRewriteStats(t *testing.T) {
	t.Run("fields are counted per action and name, predicate errors are counted", func(t *testing.T) {
		p := &Plan{
			Records: MustParsePath("list"), Keys: paths("owner"), Visible: ownerIs("me"),
			Expose: paths("owner", "phone", "notes", "a"),
			Fields: []Field{mk("phone", mask.Phone), {Path: MustParsePath("notes"), Action: Remove, Name: "notes-for-finance"}},
		}
		var st Stats
		_, err := p.Rewrite(nil, []byte(`{"list":[{"owner":"me","phone":"1","notes":"n","x":1},{"owner":"me","phone":"2"},{"phone":"3"}]}`), &st)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int{"mask:phone": 2, "remove:notes-for-finance": 1, "expose:dropped": 1}
		if !maps.Equal(st.Fields, want) {
			t.Fatalf("Fields = %v, want %v", st.Fields, want)
		}
		if st.EvalErrors != 1 || st.RecordsIn != 3 || st.RecordsOut != 2 || !st.Changed {
			t.Fatalf("stats = %+v", st)
		}
	})
	t.Run("stats add up over several rewrites", func(t *testing.T) {
		p := &Plan{Records: MustParsePath("@this"), Fields: []Field{rm("a")}}
		var st Stats
		for range 3 {
			if _, err := p.Rewrite(nil, []byte(`[{"a":1},{"a":2}]`), &st); err != nil {
				t.Fatal(err)
			}
		}
		if st.RecordsIn != 6 || st.Fields["remove:a"] != 6 {
			t.Fatalf("stats = %+v", st)
		}
	})
}

func TestFieldConditions(t *testing.T) {
	isVIP := func(r *Record) (bool, error) {
		v := r.Get("vip")
		if !v.Exists() {
			return false, errors.New("no vip key")
		}
		return v.Bool(), nil
	}
	p := &Plan{Records: MustParsePath("@this"), HashKey: testKey, Fields: []Field{
		{Path: MustParsePath("phone"), Action: Remove, When: isVIP},
		mk("phone", mask.All),
		{Path: MustParsePath("a"), Action: Remove, When: isVIP},
		rm("a.b"),
	}}
	cases := []struct{ name, in, want string }{
		{"a conditional rule applies when its condition holds", `[{"vip":true,"phone":"12"}]`, `[{"vip":true}]`},
		{"a weaker rule applies when the stronger one's condition does not hold", `[{"vip":false,"phone":"12"}]`, `[{"vip":false,"phone":"**"}]`},
		{"a failing condition applies its rule (fail closed)", `[{"phone":"12"}]`, `[{}]`},
		{"rules inside a value apply when the rule on the value does not", `[{"vip":false,"a":{"b":1,"c":2}}]`, `[{"vip":false,"a":{"c":2}}]`},
		{"a rule on the value hides rules inside it when it applies", `[{"vip":true,"a":{"b":1,"c":2}}]`, `[{"vip":true}]`},
		{"a condition is decided per record", `[{"vip":true,"phone":"1"},{"vip":false,"phone":"2"}]`, `[{"vip":true},{"vip":false,"phone":"*"}]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := p.Rewrite(nil, []byte(c.in), nil)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != c.want {
				t.Fatalf("\n got %s\nwant %s", out, c.want)
			}
		})
	}
}

func TestRecordAccessor(t *testing.T) {
	t.Run("Key, Get, Raw and Index show the record to predicates", func(t *testing.T) {
		var seen []string
		p := &Plan{Records: MustParsePath("list"), Keys: paths("n", "s", "o", "b", "z", "missing"), Visible: func(r *Record) (bool, error) {
			seen = append(seen, strings.Join([]string{
				r.Key(0).Raw, r.Key(1).Str, r.Key(2).Get("x").Raw, r.Key(3).String(), r.Key(4).Type.String(),
				boolStr(r.Key(5).Exists()), r.Get("o.x").Raw, string(r.Raw()), string(rune('0' + r.Index())),
				boolStr(r.Key(-1).Exists()), boolStr(r.Key(99).Exists()),
			}, "|"))
			return true, nil
		}}
		in := `{"list":[{"n":1.5,"s":"a\"b","o":{"x":[1]},"b":true,"z":null},{"n":-2}]}`
		if _, err := p.Rewrite(nil, []byte(in), nil); err != nil {
			t.Fatal(err)
		}
		want := []string{
			`1.5|a"b|[1]|true|Null|false|[1]|{"n":1.5,"s":"a\"b","o":{"x":[1]},"b":true,"z":null}|0|false|false`,
			`-2||||Null|false||{"n":-2}|1|false|false`,
		}
		if strings.Join(seen, "\n") != strings.Join(want, "\n") {
			t.Fatalf("\n got %s\nwant %s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("Str gives the text of exactly the keys Key shows as strings", func(t *testing.T) {
		var seen []string
		p := &Plan{Records: MustParsePath("list"), Keys: paths("s", "e", "n", "same", "missing"), Visible: func(r *Record) (bool, error) {
			for i := -1; i <= 5; i++ {
				s, ok := r.Str(i)
				k := r.Key(i)
				if ok != (k.Type == gjson.String) || s != k.Str {
					return false, fmt.Errorf("key %d: Str = %q, %v; Key = %v %q", i, s, ok, k.Type, k.Str)
				}
				seen = append(seen, s+"|"+boolStr(ok))
			}
			return true, nil
		}}
		in := `{"list":[{"s":"plain","e":"a\"b\u00e9","n":1,"same":"z","same":"z"},{"s":null,"e":["x"]}]}`
		if _, err := p.Rewrite(nil, []byte(in), nil); err != nil {
			t.Fatal(err)
		}
		want := "|false,plain|true,a\"bé|true,|false,z|true,|false,|false," +
			"|false,|false,|false,|false,|false,|false,|false"
		if got := strings.Join(seen, ","); got != want {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	})
	t.Run("a number key has its value", func(t *testing.T) {
		var got float64
		p := &Plan{Records: MustParsePath("@this"), Keys: paths("n"), Visible: func(r *Record) (bool, error) {
			got = r.Key(0).Num
			return true, nil
		}}
		if _, err := p.Rewrite(nil, []byte(`[{"n":12e3}]`), nil); err != nil || got != 12000 {
			t.Fatalf("Num = %v, err %v", got, err)
		}
	})
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func TestUnchangedIsByteForByte(t *testing.T) {
	docs := []string{
		"{\n  \"list\" : [ { \"a\" : 1.0e+2 , \"b\" : \"\\u00e9\\/\" } ,{\"c\":[ ]}\t] ,\"z\":{}}\r\n",
		`{"list":[]}`,
		`{"list":[{"phone":null}]}`,
		// valid UTF-8 of every length, at the edges of the ranges
		"{\"list\":[{\"s\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xe0\xa0\x80\xef\xbf\xbf\xee\x80\x80\xed\x9f\xbf\xf4\x8f\xbf\xbf张伟a\"}]}",
	}
	plans := map[string]*Plan{
		"no rules":                   {Records: MustParsePath("list")},
		"rules that match nothing":   {Records: MustParsePath("list"), Fields: []Field{rm("nothere"), mk("**.zz", mask.All)}},
		"a visible that keeps all":   {Records: MustParsePath("list"), Visible: func(*Record) (bool, error) { return true, nil }},
		"a mask on null values only": {Records: MustParsePath("list"), Fields: []Field{mk("phone", mask.Phone)}},
	}
	for name, p := range plans {
		t.Run(name+" returns the input byte for byte", func(t *testing.T) {
			for _, d := range docs {
				var st Stats
				out, err := p.Rewrite(nil, []byte(d), &st)
				if err != nil {
					t.Fatal(err)
				}
				if string(out) != d {
					t.Fatalf("\n got %q\nwant %q", out, d)
				}
				if st.Changed {
					t.Fatal("Changed is true")
				}
			}
		})
	}
}

func TestInvalidJSON(t *testing.T) {
	p := &Plan{Records: MustParsePath("list"), Fields: []Field{rm("a")}}
	cases := []struct{ name, in string }{
		{"an empty body", ``},
		{"only whitespace", "  \n"},
		{"trailing garbage after the document", `{"list":[]} x`},
		{"a second document", `{"list":[]}{}`},
		{"an unterminated string in a part not rewritten", `{"other":"abc,"list":[]}`},
		{"a bad escape", `{"list":[],"x":"\q"}`},
		{"a short unicode escape", `{"list":[],"x":"\u12"}`},
		{"a raw control character in a string", "{\"list\":[],\"x\":\"a\nb\"}"},
		{"invalid UTF-8 in a string", "{\"list\":[],\"x\":\"\xff\"}"},
		{"an overlong UTF-8 form", "{\"list\":[],\"x\":\"\xc0\xaf\"}"},
		{"a UTF-8 encoded surrogate", "{\"list\":[],\"x\":\"\xed\xa0\x80\"}"},
		{"a truncated UTF-8 sequence", "{\"list\":[],\"x\":\"\xe5\xbc\"}"},
		{"a truncated UTF-8 sequence after CJK text", "{\"list\":[],\"x\":\"张伟\xe5\"}"},
		{"an overlong three-byte form after CJK text", "{\"list\":[],\"x\":\"张伟\xe0\x80\xaf张\"}"},
		{"a surrogate after CJK text", "{\"list\":[],\"x\":\"张伟\xed\xbf\xbf张\"}"},
		{"a surrogate as the second of two CJK runes", "{\"list\":[],\"x\":\"张\xed\xa0\x80张张\"}"},
		{"a code point above U+10FFFF", "{\"list\":[],\"x\":\"\xf4\x90\x80\x80\"}"},
		{"a stray continuation byte", "{\"list\":[],\"x\":\"a\x80\"}"},
		{"a trailing comma in an object", `{"list":[],}`},
		{"a trailing comma in an array", `{"list":[{"a":1},]}`},
		{"a missing colon", `{"list" []}`},
		{"a missing comma", `{"list":[] "x":1}`},
		{"a single-quoted string", `{'list':[]}`},
		{"a number with a leading zero", `{"list":[],"n":012}`},
		{"a number with a bare point", `{"list":[],"n":1.}`},
		{"a number with a bare exponent", `{"list":[],"n":1e}`},
		{"a lone minus", `{"list":[],"n":-}`},
		{"a misspelt literal", `{"list":[],"n":tru}`},
		{"NaN", `{"list":[],"n":NaN}`},
		{"a mismatched bracket", `{"list":[}`},
		{"an unclosed object", `{"list":[]`},
		{"an unclosed record", `{"list":[{"a":1`},
		{"a key that is not a string", `{"list":[{a:1}]}`},
		{"a byte order mark", "\xef\xbb\xbf{\"list\":[]}"},
		{"records that are not an array", `{"list":{"a":1}}`},
		{"a record that is not an object", `{"list":[1]}`},
		{"invalid JSON inside a hidden record", `{"list":[{"a":1,"b":[1 2]}]}`},
	}
	for _, c := range cases {
		t.Run(c.name+" is an error", func(t *testing.T) {
			out, err := p.Rewrite([]byte("keep"), []byte(c.in), nil)
			if err == nil {
				t.Fatalf("no error, output %s", out)
			}
			if !strings.HasPrefix(err.Error(), "rewrite: ") {
				t.Fatalf("error %q does not start with the package name", err)
			}
			if string(out) != "keep" {
				t.Fatalf("dst changed on error: %q", out)
			}
		})
	}
	t.Run("a lone surrogate escape is valid JSON and decodes to U+FFFD", func(t *testing.T) {
		p := &Plan{Records: MustParsePath("@this"), Fields: []Field{mk("a", func(dst []byte, s string) []byte { return append(dst, s...) })}}
		out, err := p.Rewrite(nil, []byte(`[{"a":"x\ud800y"}]`), nil)
		if err != nil || string(out) != "[{\"a\":\"x\uFFFDy\"}]" {
			t.Fatalf("got %s, %v", out, err)
		}
	})
}

func TestDeepNesting(t *testing.T) {
	deep := func(n int, inner string) []byte {
		return []byte(`{"list":[{"a":` + strings.Repeat("[", n) + inner + strings.Repeat("]", n) + `,"secret":1}]}`)
	}
	p := &Plan{Records: MustParsePath("list"), Fields: []Field{rm("**.secret")}}
	t.Run("ten thousand levels are rewritten", func(t *testing.T) {
		p := &Plan{Records: MustParsePath("list"), Fields: []Field{rm("**.secret")}, MaxDepth: 10010}
		out, err := p.Rewrite(nil, deep(10000, `{"secret":2,"k":3}`), nil)
		if err != nil {
			t.Fatal(err)
		}
		want := `{"list":[{"a":` + strings.Repeat("[", 10000) + `{"k":3}` + strings.Repeat("]", 10000) + `}]}`
		if string(out) != want {
			t.Fatal("output differs from the expected rewrite")
		}
	})
	t.Run("nesting beyond the default limit is an error, not a crash", func(t *testing.T) {
		_, err := p.Rewrite(nil, deep(DefaultMaxDepth+5, "1"), nil)
		if err == nil || !strings.Contains(err.Error(), "nesting deeper than") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("a million levels are an error, not a crash", func(t *testing.T) {
		_, err := p.Rewrite(nil, deep(1_000_000, "1"), nil)
		if err == nil || !strings.Contains(err.Error(), "nesting deeper than") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("a million levels are rewritten when MaxDepth allows them, without recursion", func(t *testing.T) {
		p := &Plan{Records: MustParsePath("list"), Fields: []Field{rm("**.secret")}, MaxDepth: 2_000_000}
		_, err := p.Rewrite(nil, deep(1_000_000, "1"), nil)
		if err != nil {
			t.Fatalf("a deep but valid document failed: %v", err)
		}
	})
}

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name string
		plan Plan
		says string
	}{
		{"a records path with a wildcard is refused", Plan{Records: MustParsePath("li*")}, "records path"},
		{"a key path with a hash is refused", Plan{Keys: paths("a.#.b")}, "plain keys"},
		{"an audit id with a double star is refused", Plan{AuditID: MustParsePath("**.id")}, "audit id"},
		{"a field on the record itself is refused", Plan{Fields: []Field{rm("@this")}}, "must name a key"},
		{"a mask without a function is refused", Plan{Fields: []Field{{Path: MustParsePath("a"), Action: Mask}}}, "without a mask function"},
		{"a replacement that is not JSON is refused", Plan{Fields: []Field{rp("a", "{bad")}}, "not valid JSON"},
		{"a hash without a key is refused", Plan{Fields: []Field{hs("a")}}, "hash key"},
		{"an unknown action is refused", Plan{Fields: []Field{{Path: MustParsePath("a"), Action: 99}}}, "unknown action"},
		{"too many wildcards at one level are refused", Plan{Fields: []Field{rm("a*"), rm("b*"), rm("c*"), rm("d*"), rm("e*"), rm("f*"), rm("g*"), rm("h*"), rm("i*")}}, "wildcard"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.plan.Compile()
			if err == nil || !strings.Contains(err.Error(), c.says) || !strings.HasPrefix(err.Error(), "rewrite: ") {
				t.Fatalf("Compile() = %v, want an error saying %q", err, c.says)
			}
			if _, rerr := c.plan.Rewrite(nil, []byte(`[]`), nil); rerr == nil {
				t.Fatal("Rewrite worked with a plan that does not compile")
			}
		})
	}
}

func TestConcurrentRewrite(t *testing.T) {
	t.Run("one compiled plan serves many goroutines with the same result", func(t *testing.T) {
		p := benchPlan()
		if err := p.Compile(); err != nil {
			t.Fatal(err)
		}
		doc := benchDoc[:0:0]
		doc = append(doc, benchDoc...)
		want, err := p.Rewrite(nil, doc, nil)
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan string, 8)
		for range 8 {
			go func() {
				var st Stats
				out, err := p.Rewrite(nil, doc, &st)
				switch {
				case err != nil:
					errs <- err.Error()
				case string(out) != string(want):
					errs <- "a concurrent rewrite differs"
				default:
					errs <- ""
				}
			}()
		}
		for range 8 {
			if e := <-errs; e != "" {
				t.Fatal(e)
			}
		}
	})
	t.Run("plans built separately with the same paths share an automaton and keep their own actions", func(t *testing.T) {
		a := &Plan{Records: MustParsePath("@this"), Fields: []Field{mk("x", mask.All)}}
		b := &Plan{Records: MustParsePath("@this"), Fields: []Field{mk("x", func(dst []byte, s string) []byte { return append(dst, "other"...) })}}
		for _, p := range []*Plan{a, b} {
			if err := p.Compile(); err != nil {
				t.Fatal(err)
			}
		}
		if &a.c.dfa[0] != &b.c.dfa[0] {
			t.Fatal("the automaton was built twice")
		}
		oa, _ := a.Rewrite(nil, []byte(`[{"x":"ab"}]`), nil)
		ob, _ := b.Rewrite(nil, []byte(`[{"x":"ab"}]`), nil)
		if string(oa) != `[{"x":"**"}]` || string(ob) != `[{"x":"other"}]` {
			t.Fatalf("got %s and %s", oa, ob)
		}
	})
}

func TestManyLiteralKeysAtOneLevel(t *testing.T) {
	t.Run("each of 200 literal keys (many sharing a hash bucket) finds its own rule", func(t *testing.T) {
		var fields []Field
		var in, want strings.Builder
		in.WriteString(`{"list":[{`)
		want.WriteString(`{"list":[{`)
		for i := range 200 {
			k := fmt.Sprintf("k%d", i)
			if i%2 == 1 {
				fields = append(fields, Field{Path: MustParsePath(k), Action: Remove})
			}
			if i > 0 {
				in.WriteByte(',')
			}
			fmt.Fprintf(&in, `"%s":%d,"x%s":0`, k, i, k)
			if i%2 == 0 {
				if i > 0 {
					want.WriteByte(',')
				}
				fmt.Fprintf(&want, `"%s":%d`, k, i)
			}
			fmt.Fprintf(&want, `,"x%s":0`, k)
		}
		in.WriteString(`}]}`)
		want.WriteString(`}]}`)
		p := &Plan{Records: MustParsePath("list"), Fields: fields}
		out, err := p.Rewrite(nil, []byte(in.String()), nil)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != want.String() {
			t.Fatalf("\n got %s\nwant %s", out, want.String())
		}
	})
}

func TestKeysRepeatedAcrossRecords(t *testing.T) {
	long := strings.Repeat("k", 20)
	p := &Plan{Records: MustParsePath("list"), Fields: []Field{rm("phone"), rm(long), rm("a.phone"), rm("contact_phone")}}
	cases := []struct{ name, in, want string }{
		{"the same key in every record is found each time",
			`{"list":[{"phone":"1","x":1},{"phone":"2","x":2},{"phone":"3","x":3}]}`,
			`{"list":[{"x":1},{"x":2},{"x":3}]}`},
		{"a key one byte away at the same place is another key",
			`{"list":[{"phone":"1"},{"phonf":"2"},{"phon":"3"},{"phone_":"4"},{"Phone":"5"},{"phone":"6"}]}`,
			`{"list":[{},{"phonf":"2"},{"phon":"3"},{"phone_":"4"},{"Phone":"5"},{}]}`},
		{"a longer key differing after its eighth byte is another key",
			`{"list":[{"contact_phone":"1","x":1},{"contact_phonf":"2","x":2},{"contact_phone":"3","x":3},{"x":4}]}`,
			`{"list":[{"x":1},{"contact_phonf":"2","x":2},{"x":3},{"x":4}]}`},
		{"an escaped spelling of a key seen before is still that key",
			`{"list":[{"phone":"1"},{"ph\u006fne":"2"},{"phone":"3"}]}`,
			`{"list":[{},{},{}]}`},
		{"keys change places between records",
			`{"list":[{"phone":"1","x":1},{"x":2,"phone":"2"},{"phone":"3","x":3}]}`,
			`{"list":[{"x":1},{"x":2},{"x":3}]}`},
		{"keys longer than 16 bytes and a prefix of them",
			`{"list":[{"` + long + `":1},{"` + long + `":2},{"` + long[:15] + `":3},{"` + long + `k":4}]}`,
			`{"list":[{},{},{"` + long[:15] + `":3},{"` + long + `k":4}]}`},
		{"the same key in a nested object is another place",
			`{"list":[{"a":{"phone":"1"},"phone":"2"},{"a":{"phone":"3"},"phone":"4"}]}`,
			`{"list":[{"a":{}},{"a":{}}]}`},
		{"a key at the very end of the input",
			`{"list":[{"phone":"1"},{"phone":"2"}]}`,
			`{"list":[{},{}]}`},
		{"spacing around the colon changes between records",
			`{"list":[{"phone":"1","x":1},{"phone" :"2","x" : 2},{"phone": "3","x":3},{"phone":"4" , "x":4}]}`,
			`{"list":[{"x":1},{"x" : 2},{"x":3},{ "x":4}]}`},
		{"a value after a key seen before is a container, then a scalar again",
			`{"list":[{"phone":"1","x":1},{"phone":{"a":[1]},"x":{"b":2}},{"phone":[],"x":3},{"phone":"4","x":4}]}`,
			`{"list":[{"x":1},{"x":{"b":2}},{"x":3},{"x":4}]}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := p.Rewrite(nil, []byte(c.in), nil)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != c.want {
				t.Fatalf("\n got %s\nwant %s", out, c.want)
			}
		})
	}
	t.Run("a broken key at a place seen before is still an error", func(t *testing.T) {
		for _, in := range []string{`{"list":[{"phone":"1"},{"phone`, `{"list":[{"phone":"1"},{"phone"`, `{"list":[{"phone":"1"},{"phone"}]}`, `{"list":[{"phone":"1"},{"phone` + "\x01" + `":1}]}`,
			`{"list":[{"phone":"1"},{"phone":`, `{"list":[{"phone":"1"},{"phone": `, `{"list":[{"phone":"1"},{"phone"::1}]}`, `{"list":[{"phone":"1"},{"phone":}]}`,
			`{"list":[{"phone":"1","x":1},{"phone":"2",}]}`, `{"list":[{"phone":"1","x":1},{"phone":"2" "x":1}]}`, `{"list":[{"phone":"1"},{"phone":"2`} {
			if _, err := p.Rewrite(nil, []byte(in), nil); err == nil {
				t.Errorf("%q: no error", in)
			}
		}
	})
	t.Run("a record is rewritten the same whatever records came before it", func(t *testing.T) {
		// Keys read before are predicted: each record of a list must come
		// out as it does alone, with any record before it.
		p := &Plan{Records: MustParsePath("list"), Keys: paths("owner"), AuditID: MustParsePath("id"),
			Fields: []Field{mk("phone", mask.All), rm("notes"), hs("email"), nl(long), rp("tags.1", `"R"`),
				{Path: MustParsePath("x"), Action: Remove, When: func(r *Record) (bool, error) { return r.Key(0).Str == "a", nil }}},
			HashKey: testKey}
		recs := []string{
			`{"id":1,"owner":"a","phone":"13800000001","notes":"n","email":"e@x","x":1,"tags":["t","u"],"` + long + `":5}`,
			`{"id" : 2,"owner" :"b","phone": "1","notes":null,"email":"f@x" ,"x":{"y":1},"tags":[],"` + long + `" :6}`,
			`{"id":3,"ph\u006fne":"2","owner":"a","owner":"b","x":2,"email":7,"tags":{"1":2}}`,
			`{"id":"4","owner":"a","phone":{"n":1},"notes":"m","email":null,"x":true,"tags":["a","b","c"]}`,
			`{ "id":5 , "owner" : "a" , "phone" : "3" , "notes" : [1] }`,
			`{}`,
			`{"phone":"\"q\"","notes":"","id":6,"owner":"c"}`,
		}
		alone := make([]string, len(recs))
		for k, r := range recs {
			out, err := p.Rewrite(nil, []byte(`{"list":[`+r+`]}`), nil)
			if err != nil {
				t.Fatalf("%s: %v", r, err)
			}
			alone[k] = strings.TrimSuffix(strings.TrimPrefix(string(out), `{"list":[`), `]}`)
		}
		for a := range recs {
			for b := range recs {
				order := []int{a, b, a, b, b, a}
				var in, want []string
				for _, k := range order {
					in, want = append(in, recs[k]), append(want, alone[k])
				}
				var st Stats
				out, err := p.Rewrite(nil, []byte(`{"list":[`+strings.Join(in, ",")+`]}`), &st)
				if err != nil {
					t.Fatal(err)
				}
				if w := `{"list":[` + strings.Join(want, ",") + `]}`; string(out) != w {
					t.Fatalf("records %d and %d:\n got %s\nwant %s", a, b, out, w)
				}
				if st.RecordsOut != len(order) || len(st.IDs) != len(order)-strings.Count(strings.Join(in, ""), "{}") {
					t.Fatalf("records %d and %d: %d out, ids %q", a, b, st.RecordsOut, st.IDs)
				}
			}
		}
	})
}
