package rewrite

import (
	"encoding/csv"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/rules/mask"
	"github.com/tidwall/gjson"
)

// TestJSONAndTablesReadPatternsAlike: one matcher for field paths, so a
// JSON record and a CSV row with the same names lose the same members.
func TestJSONAndTablesReadPatternsAlike(t *testing.T) {
	names := []string{"電話", "電話號碼", "a*é", "ab", "a*", "備註x", "備註", "a.b", "ax.b", "電", "id"}
	cases := []struct {
		name    string
		pattern string
		removed []string
	}{
		{"? matches one rune, not one byte", `電?`, []string{"電話"}},
		{"an escaped star is a star, followed by one rune", `a\*?`, []string{"a*é"}},
		{"an escaped multi-byte rune is that rune", `備\註*`, []string{"備註x", "備註"}},
		{"an escaped dot is part of the name", `a\.b`, []string{"a.b"}},
		{"a star before an escaped dot spans runes", `*\.b`, []string{"a.b", "ax.b"}},
		{"a leading ** still names a top-level name", `**.電*`, []string{"電話", "電話號碼", "電"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := &Plan{Fields: []Field{rm(c.pattern)}}
			if err := p.Compile(); err != nil {
				t.Fatal(err)
			}
			var js strings.Builder
			js.WriteString("[{")
			var header, row []string
			for i, n := range names {
				if i > 0 {
					js.WriteByte(',')
				}
				js.WriteString(string(appendJSONString(nil, n)) + `:"v` + n + `"`)
				header, row = append(header, n), append(row, "v"+n)
			}
			js.WriteString("}]")
			out, err := p.Rewrite(nil, []byte(js.String()), nil)
			if err != nil {
				t.Fatal(err)
			}
			var jsonLeft []string
			gjson.GetBytes(out, "0").ForEach(func(k, _ gjson.Result) bool {
				jsonLeft = append(jsonLeft, k.Str)
				return true
			})
			table := strings.Join(header, ",") + "\n" + strings.Join(row, ",") + "\n"
			tout, err := p.RewriteTable(nil, []byte(table), ',', nil)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := csv.NewReader(strings.NewReader(string(tout))).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			csvLeft := rows[0]
			var want []string
			for _, n := range names {
				if !slices.Contains(c.removed, n) {
					want = append(want, n)
				}
			}
			if !slices.Equal(jsonLeft, want) || !slices.Equal(csvLeft, want) {
				t.Fatalf("pattern %q left\n JSON %q\n CSV  %q\nwant %q", c.pattern, jsonLeft, csvLeft, want)
			}
		})
	}
}

func TestTableRewrite(t *testing.T) {
	phone, _ := mask.Builtin("phone")
	stageWon := func(r *Record) (bool, error) {
		s, ok := r.Str(1)
		if !ok {
			return false, errors.New("no stage")
		}
		return s == "won", nil
	}
	cases := []struct {
		name    string
		plan    Plan
		comma   byte
		in      string
		want    string
		records [2]int // in, out
		evalErr int
	}{
		{"rows a predicate hides are dropped", Plan{Keys: paths("owner_id"), Visible: ownerIs("zhang")}, ',',
			"id,owner_id\r\n1,zhang\r\n2,wu\r\n3,zhang\r\n", "id,owner_id\r\n1,zhang\r\n3,zhang\r\n", [2]int{3, 2}, 0},
		{"a missing column hides every row and counts", Plan{Keys: paths("owner_id"), Visible: ownerIs("zhang")}, ',',
			"id\n1\n", "id\n", [2]int{1, 0}, 1},
		{"a nested key names no column", Plan{Keys: paths("owner.id"), Visible: ownerIs("zhang")}, ',',
			"id,owner.id\n1,zhang\n", "id,owner.id\n", [2]int{1, 0}, 1},
		{"a key present twice with different values hides the row", Plan{Keys: paths("owner_id"), Visible: ownerIs("zhang")}, ',',
			"owner_id,owner_id\nzhang,wu\nzhang,zhang\n", "owner_id,owner_id\nzhang,zhang\n", [2]int{2, 1}, 1},
		{"a conditional null empties the cells where it holds", Plan{Keys: paths("id", "stage"), Fields: []Field{{Path: MustParsePath("notes"), Action: Null, When: stageWon}}}, ',',
			"id,stage,notes\n1,won,a\n2,lost,b\n", "id,stage,notes\n1,won,\n2,lost,b\n", [2]int{2, 2}, 0},
		{"a conditional remove empties the cell instead of the column", Plan{Keys: paths("id", "stage"), Fields: []Field{{Path: MustParsePath("notes"), Action: Remove, When: stageWon}}}, ',',
			"id,stage,notes\n1,won,a\n2,lost,b\n", "id,stage,notes\n1,won,\n2,lost,b\n", [2]int{2, 2}, 0},
		{"the strongest rule wins whatever the order", Plan{Fields: []Field{mk("phone", phone), rm("phone")}}, ',',
			"id,phone\n1,13812345678\n", "id\n1\n", [2]int{1, 1}, 0},
		{"a mask is quoted when it needs to be", Plan{Fields: []Field{{Path: MustParsePath("n"), Action: Mask, Mask: func(dst []byte, s string) []byte { return append(dst, " a,b"...) }}}}, ',',
			"id,n\n1,x\n", "id,n\n1,\" a,b\"\n", [2]int{1, 1}, 0},
		{"an empty cell stays empty under a mask", Plan{Fields: []Field{mk("phone", phone)}}, ',',
			"id,phone\n1,\n", "id,phone\n1,\n", [2]int{1, 1}, 0},
		{"a replacement string is written as text", Plan{Fields: []Field{rp("tier", `"hidden"`)}}, ',',
			"id,tier\n1,gold\n", "id,tier\n1,hidden\n", [2]int{1, 1}, 0},
		{"a JSON replacement that is not a string is written as JSON text", Plan{Fields: []Field{rp("tier", `{"a":1}`)}}, ',',
			"id,tier\n1,gold\n", "id,tier\n1,\"{\"\"a\"\":1}\"\n", [2]int{1, 1}, 0},
		{"a TSV keeps tabs and quotes cells holding one", Plan{Fields: []Field{rp("n", `"a\tb"`)}}, '\t',
			"id\tn\n1\tx\n", "id\tn\n1\t\"a\tb\"\n", [2]int{1, 1}, 0},
		{"expose keeps only the columns it names", Plan{Expose: paths("id", "na*")}, ',',
			"id,name,phone\n1,a,b\n", "id,name\n1,a\n", [2]int{1, 1}, 0},
		{"expose @this keeps every column", Plan{Expose: paths("@this")}, ',',
			"id,name\n1,a\n", "id,name\n1,a\n", [2]int{1, 1}, 0},
		{"a UTF-8 byte order mark is kept and not part of the first name", Plan{Fields: []Field{rm("id")}}, ',',
			"\ufeffid,name\r\n1,a\r\n", "\ufeffname\r\na\r\n", [2]int{1, 1}, 0},
		{"removing every column leaves nothing", Plan{Fields: []Field{rm("*")}}, ',',
			"a,b\n1,2\n", "", [2]int{1, 1}, 0},
		{"a lone empty cell is written quoted", Plan{Fields: []Field{rm("b")}}, ',',
			"a,b\n,2\n", "a\n\"\"\n", [2]int{1, 1}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var st Stats
			out, err := c.plan.RewriteTable([]byte("keep:"), []byte(c.in), c.comma, &st)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimPrefix(string(out), "keep:"); got != c.want || !strings.HasPrefix(string(out), "keep:") {
				t.Fatalf("got %q, want %q", out, c.want)
			}
			if st.RecordsIn != c.records[0] || st.RecordsOut != c.records[1] || st.EvalErrors != c.evalErr {
				t.Fatalf("stats %+v, want records %v and %d eval errors", st, c.records, c.evalErr)
			}
		})
	}
}

func TestTableHashIsTheJSONHash(t *testing.T) {
	p := &Plan{Fields: []Field{hs("email")}, HashKey: testKey, AuditID: MustParsePath("id")}
	if err := p.Compile(); err != nil {
		t.Fatal(err)
	}
	jout, err := p.Rewrite(nil, []byte(`[{"id":"7","email":"a@b.cn"}]`), nil)
	if err != nil {
		t.Fatal(err)
	}
	var st Stats
	tout, err := p.RewriteTable(nil, []byte("id,email\n7,\"a@b.cn\"\n"), ',', &st)
	if err != nil {
		t.Fatal(err)
	}
	want := hmacHex("a@b.cn")
	if gjson.GetBytes(jout, "0.email").Str != want || string(tout) != "id,email\n7,"+want+"\n" {
		t.Fatalf("JSON %s, table %q; want %s in both", jout, tout, want)
	}
	if !slices.Equal(st.IDs, []string{"7"}) || st.Fields["hash:email"] != 1 || !st.Changed {
		t.Fatalf("stats %+v", st)
	}
}

func TestTableRowAsARecord(t *testing.T) {
	var seen []string
	p := &Plan{Keys: paths("owner_id", "n"), Visible: func(r *Record) (bool, error) {
		s, _ := r.Str(1)
		seen = append(seen, strings.Join([]string{string(r.Raw()), r.Get("owner_id").Str, r.Key(1).Str, s, string(rune('0' + r.Index()))}, "|"))
		return true, nil
	}}
	in := "owner_id,n\nzhang,\"say \"\"hi\"\"\"\nwu,2\n"
	out, err := p.RewriteTable(nil, []byte(in), ',', nil)
	if err != nil || string(out) != in {
		t.Fatalf("out %q, err %v", out, err)
	}
	want := []string{
		`{"owner_id":"zhang","n":"say \"hi\""}|zhang|say "hi"|say "hi"|0`,
		`{"owner_id":"wu","n":"2"}|wu|2|2|1`,
	}
	if !slices.Equal(seen, want) {
		t.Fatalf("seen\n%q\nwant\n%q", seen, want)
	}
}

func TestTablesThatCannotBeReadAreErrors(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"a row with more fields than the header", "id,phone\n1,138,extra\n", "2 has 3 fields; the header has 2"},
		{"a quote inside an unquoted field", "id,phone\n1,13\"8\n", "a quote inside an unquoted field"},
		{"a quoted field that is never closed", "id,phone\n1,\"138\n", "never closed"},
		{"text after a closing quote", "id,phone\n1,\"138\"x\n", "text after a closing quote"},
		{"a carriage return alone as a line end", "id,phone\r1,13812345678\r", "carriage return"},
		{"bytes that are not UTF-8 (GBK)", "id,name\n1,\xd5\xc5\xce\xb0\n", "not valid UTF-8"},
		{"a UTF-16 byte order mark", "\xff\xfei\x00d\x00", "not valid UTF-8"},
	}
	p := &Plan{Fields: []Field{rm("phone")}}
	for _, c := range cases {
		t.Run(c.name+" is an error", func(t *testing.T) {
			out, err := p.RewriteTable([]byte("keep"), []byte(c.in), ',', nil)
			if err == nil || !strings.Contains(err.Error(), c.want) || string(out) != "keep" {
				t.Fatalf("out %q, err %v; want an error saying %q and dst unchanged", out, err, c.want)
			}
		})
	}
}
