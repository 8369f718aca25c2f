package mediatype

import (
	"errors"
	"mime"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	cases := []struct {
		name    string
		ct      string
		kind    Kind
		essence string
		err     string // "" for none; "charset" for a *CharsetError
	}{
		{"plain application/json is JSON", "application/json", JSON, "application/json", ""},
		{"the type is read without regard to case", "Application/JSON", JSON, "application/json", ""},
		{"a UTF-8 charset is read", "application/json; charset=utf-8", JSON, "application/json", ""},
		{"a UTF-8 charset in capitals without a space is read", "application/json;charset=UTF-8", JSON, "application/json", ""},
		{"a quoted UTF-8 charset is read", `application/json; charset="utf-8"`, JSON, "application/json", ""},
		{"a US-ASCII charset is read", "text/csv; charset=US-ASCII", CSV, "text/csv", ""},
		{"spaces and tabs around the value are allowed", " \tapplication/json \t; \tcharset=utf-8 \t", JSON, "application/json", ""},
		{"a trailing semicolon is allowed", "application/json;", JSON, "application/json", ""},
		{"other parameters are allowed", "text/csv; header=present; charset=utf-8", CSV, "text/csv", ""},
		{"a +json suffix is JSON", "application/vnd.api+json", JSON, "application/vnd.api+json", ""},
		{"a JSON Patch is JSON", "application/json-patch+json", JSON, "application/json-patch+json", ""},
		{"a +json suffix outside application/ is not JSON", "text/foo+json", Unknown, "text/foo+json", ""},
		{"a longer subtype is not JSON", "application/jsonx", Unknown, "application/jsonx", ""},
		{"application/json-seq is not JSON", "application/json-seq", Unknown, "application/json-seq", ""},
		{"a form is a form", "application/x-www-form-urlencoded; charset=UTF-8", Form, "application/x-www-form-urlencoded", ""},
		{"a multipart form keeps its boundary", `multipart/form-data; boundary="--a b"`, Multipart, "multipart/form-data", ""},
		{"text/csv is CSV", "text/csv", CSV, "text/csv", ""},
		{"an older CSV name is CSV", "application/x-csv", CSV, "application/x-csv", ""},
		{"TSV is TSV", "text/tab-separated-values", TSV, "text/tab-separated-values", ""},
		{"the Excel type is a spreadsheet", "application/vnd.ms-excel", Sheet, "application/vnd.ms-excel", ""},
		{"OOXML is a spreadsheet", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", Sheet, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ""},
		{"octet-stream is binary", "application/octet-stream", Binary, "application/octet-stream", ""},
		{"text/html is unknown", "text/html; charset=utf-8", Unknown, "text/html", ""},

		{"a UTF-16 charset is refused", "application/json; charset=utf-16", JSON, "", "charset"},
		{"a quoted Latin-1 charset is refused", `text/csv;charset="latin1"`, CSV, "", "charset"},
		{"utf8 without the dash is refused", "application/json; charset=utf8", JSON, "", "charset"},
		{"GBK is refused", "text/csv; charset=gbk", CSV, "", "charset"},
		{"an escaped quoted charset is refused", `application/json; charset="utf\-8"`, JSON, "", "charset"},
		{"an RFC 2231 charset is refused", "application/json; charset*=utf-8''utf-16", JSON, "", "charset"},
		{"an RFC 2231 continued charset is refused", "application/json; charset*0=utf; charset*1=-16", JSON, "", "charset"},
		{"a charset given twice is refused", "application/json; charset=utf-8; charset=utf-8", JSON, "", "twice"},
		{"a charset given twice in two cases is refused", "application/json; charset=utf-8; CHARSET=latin1", JSON, "", "twice"},
		{"an empty value is refused", "", Unknown, "", "type/subtype"},
		{"blanks only are refused", " \t ", Unknown, "", "type/subtype"},
		{"a type without a subtype is refused", "json", Unknown, "", "type/subtype"},
		{"a type with an empty subtype is refused", "application/", Unknown, "", "subtype"},
		{"text after the subtype is refused", "application/json x", Unknown, "", "after its type"},
		{"a parameter without a value is refused", "application/json; charset", Unknown, "", "no \"=\""},
		{"a parameter with an empty value is refused", "application/json; charset=", Unknown, "", "no value"},
		{"spaces before = are refused", "application/json; charset =utf-8", Unknown, "", "no \"=\""},
		{"spaces after = are refused", "application/json; charset= utf-16", Unknown, "", "no value"},
		{"an unterminated quoted value is refused", `application/json; charset="utf-8`, Unknown, "", "unterminated"},
		{"a control character in a quoted value is refused", "multipart/form-data; boundary=\"a\x01b\"", Unknown, "", "unterminated"},
		{"an empty parameter between semicolons is refused", "application/json;; charset=utf-8", Unknown, "", "no name"},
		{"a comma instead of a semicolon is refused", "application/json, text/html", Unknown, "", "after its type"},
		{"a non-breaking space before the type is refused", "\u00a0application/json", Unknown, "", "type/subtype"},
		{"seventeen parameters are refused", "text/csv" + manyParams(17), Unknown, "", "more than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Read(c.ct)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("Read(%q): %v", c.ct, err)
			case c.err == "charset":
				if !errors.Is(err, ErrCharset) {
					t.Fatalf("Read(%q) = %+v, %v; want a charset error", c.ct, got, err)
				}
				return
			case c.err != "":
				if err == nil || !strings.Contains(err.Error(), c.err) || errors.Is(err, ErrCharset) {
					t.Fatalf("Read(%q) = %+v, %v; want an error saying %q", c.ct, got, err, c.err)
				}
				return
			}
			if got.Kind != c.kind || got.Essence != c.essence {
				t.Fatalf("Read(%q) = %s %q, want %s %q", c.ct, got.Kind, got.Essence, c.kind, c.essence)
			}
		})
	}
}

func manyParams(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("; p")
		b.WriteByte(byte('a' + i))
		b.WriteString("=1")
	}
	return b.String()
}

func TestParam(t *testing.T) {
	cases := []struct {
		name, ct, param, want string
	}{
		{"a token boundary is read", "multipart/form-data; boundary=abc", "boundary", "abc"},
		{"a quoted boundary is unquoted", `multipart/form-data; boundary="a b;c"`, "boundary", "a b;c"},
		{"an escaped quote is unescaped", `multipart/form-data; boundary="a\"b"`, "boundary", `a"b`},
		{"the name is read without regard to case", "multipart/form-data; BOUNDARY=x", "boundary", "x"},
		{"a missing parameter is empty", "multipart/form-data", "boundary", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ty, err := Read(c.ct)
			if err != nil {
				t.Fatal(err)
			}
			if got := ty.Param(c.param); got != c.want {
				t.Fatalf("Param(%q) of %q = %q, want %q", c.param, c.ct, got, c.want)
			}
		})
	}
}

func TestKindOf(t *testing.T) {
	cases := []struct {
		name string
		ct   string
		want Kind
	}{
		{"a malformed parameter does not hide a CSV", "text/csv; charset", CSV},
		{"a malformed parameter does not hide a form", "application/x-www-form-urlencoded; x", Form},
		{"the usual JSON label is JSON", "application/json", JSON},
		{"JSON in capitals with a parameter is JSON", "APPLICATION/JSON;charset=utf-16", JSON},
		{"a longer subtype is not JSON", "application/jsonx", Unknown},
		{"a spreadsheet with spaces is a spreadsheet", "  application/vnd.ms-excel ", Sheet},
		{"an empty value is unknown", "", Unknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := KindOf(c.ct); got != c.want {
				t.Fatalf("KindOf(%q) = %s, want %s", c.ct, got, c.want)
			}
		})
	}
}

func TestLines(t *testing.T) {
	cases := []struct {
		name string
		cts  []string
		want Kind
		err  bool
	}{
		{"no line is unknown", nil, Unknown, false},
		{"one empty line is unknown", []string{""}, Unknown, false},
		{"one JSON line is JSON", []string{"application/json"}, JSON, false},
		{"two CSV lines that agree are CSV", []string{"text/csv", "text/csv; charset=utf-8"}, CSV, false},
		{"CSV and a spreadsheet disagree", []string{"text/csv", "application/vnd.ms-excel"}, Sheet, true},
		{"JSON and HTML disagree", []string{"application/json", "text/html"}, Unknown, true},
		{"a second line in Latin-1 is refused", []string{"text/csv", "text/csv; charset=latin1"}, CSV, true},
		{"a JSON answer in UTF-16 is refused", []string{"application/json; charset=utf-16"}, JSON, true},
		{"an HTML answer in GBK is refused", []string{"text/html; charset=gbk"}, Unknown, true},
		{"a malformed JSON label is refused", []string{"application/json; charset"}, JSON, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Lines(c.cts)
			if (err != nil) != c.err {
				t.Fatalf("Lines(%q) error %v, want an error: %v", c.cts, err, c.err)
			}
			if err == nil && got.Kind != c.want {
				t.Fatalf("Lines(%q) = %s, want %s", c.cts, got.Kind, c.want)
			}
		})
	}
}

func TestLabel(t *testing.T) {
	cases := []struct {
		name string
		cts  []string
		want bool
	}{
		{"plain application/json is kept", []string{"application/json"}, true},
		{"the label is read without regard to case", []string{"Application/JSON"}, true},
		{"a UTF-8 charset is kept", []string{"application/json; charset=utf-8"}, true},
		{"a UTF-8 charset without a space and in capitals is kept", []string{"application/json;charset=UTF-8"}, true},
		{"a US-ASCII charset is kept", []string{"application/json; charset=us-ascii"}, true},
		{"a +json media type is kept", []string{"application/vnd.api+json"}, true},
		{"a CSV is kept", []string{"text/csv; charset=utf-8"}, true},
		{"a TSV is kept", []string{"text/tab-separated-values"}, true},
		{"a UTF-16 charset is not kept", []string{"application/json; charset=utf-16"}, false},
		{"a Latin-1 charset is not kept", []string{"application/json; charset=iso-8859-1"}, false},
		{"a GBK CSV is not kept", []string{"text/csv; charset=gbk"}, false},
		{"text/html is not kept", []string{"text/html"}, false},
		{"a spreadsheet is not kept", []string{"application/vnd.ms-excel"}, false},
		{"a longer subtype is not kept", []string{"application/jsonx"}, false},
		{"two Content-Type lines are not kept", []string{"application/json", "application/json"}, false},
		{"no Content-Type is not kept", nil, false},
		{"an unparsable label is not kept", []string{"application/json; charset"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Label(c.cts); got != c.want {
				t.Errorf("Label(%q) = %v, want %v", c.cts, got, c.want)
			}
		})
	}
}

func TestDownload(t *testing.T) {
	cases := []struct {
		name string
		cds  []string
		cts  []string
		want bool
	}{
		{"a JSON answer is not a download", nil, []string{"application/json"}, false},
		{"an inline disposition is not a download", []string{"inline"}, []string{"text/html"}, false},
		{"an inline disposition with a file name is not a download", []string{`Inline; filename="a.json"`}, nil, false},
		{"an attachment is a download", []string{"attachment; filename=a.json"}, []string{"application/json"}, true},
		{"an unknown disposition is a download", []string{"x-save"}, nil, true},
		{"an inline disposition that cannot be read is a download", []string{"inline; filename=a b"}, nil, true},
		{"an inline disposition with a name given twice is a download", []string{"inline; filename=a; filename=b"}, nil, true},
		{"one attachment line among inline ones is a download", []string{"inline", "attachment"}, nil, true},
		{"an empty disposition is a download", []string{""}, nil, true},
		{"a CSV is a download", nil, []string{"text/csv"}, true},
		{"a CSV with a broken parameter is a download", nil, []string{"text/csv; charset"}, true},
		{"a TSV is a download", nil, []string{"text/tab-separated-values"}, true},
		{"the Excel type is a download", nil, []string{"application/vnd.ms-excel"}, true},
		{"octet-stream is a download", nil, []string{"application/octet-stream"}, true},
		{"a CSV on a second line is a download", nil, []string{"application/json", "text/csv"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Download(c.cds, c.cts); got != c.want {
				t.Errorf("Download(%q, %q) = %v, want %v", c.cds, c.cts, got, c.want)
			}
		})
	}
}

// TestReadIsNoLooserThanMime: whatever Read accepts, Go's mime package
// accepts too, with the same type and charset.
func TestReadIsNoLooserThanMime(t *testing.T) {
	for _, ct := range readSeeds {
		t.Run("the value "+ct+" is read as mime reads it", func(t *testing.T) { checkAgainstMime(t, ct) })
	}
}

func FuzzRead(f *testing.F) {
	for _, s := range readSeeds {
		f.Add(s)
	}
	f.Fuzz(checkAgainstMime)
}

var readSeeds = []string{
	"application/json", "application/json; charset=utf-8", `text/csv;charset="latin1"`,
	"application/json; charset*=utf-8''x", `multipart/form-data; boundary="a\"b"`, "a/b;;", "a/b; c=d;",
	"application/json;charset=UTF-8;charset=utf-8", "text/csv ; charset = utf-8", "x/y; q=\"\\\"\"",
}

func checkAgainstMime(t *testing.T, ct string) {
	got, err := Read(ct)
	if err != nil {
		return
	}
	mt, params, merr := mime.ParseMediaType(ct)
	if merr != nil {
		t.Fatalf("Read(%q) = %+v, but mime refuses it: %v", ct, got, merr)
	}
	if mt != got.Essence {
		t.Fatalf("Read(%q) essence %q, mime %q", ct, got.Essence, mt)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "us-ascii") {
		t.Fatalf("Read(%q) accepted charset %q", ct, cs)
	}
	if got.Kind != KindOf(ct) {
		t.Fatalf("Read(%q) kind %s, KindOf %s", ct, got.Kind, KindOf(ct))
	}
}

func TestUsualLabelsAllocateNothing(t *testing.T) {
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8", "application/vnd.api+json"} {
		t.Run("reading "+ct+" allocates nothing", func(t *testing.T) {
			lines := []string{ct}
			if n := testing.AllocsPerRun(100, func() {
				if _, err := Lines(lines); err != nil {
					t.Fatal(err)
				}
				if !Label(lines) || Download(nil, lines) {
					t.Fatal("not read as a JSON label")
				}
			}); n != 0 {
				t.Fatalf("%v allocations per read", n)
			}
		})
	}
}

func BenchmarkLines(b *testing.B) {
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "text/csv; header=present; charset=\"utf-8\""} {
		lines := []string{ct}
		b.Run(ct, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Lines(lines); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
