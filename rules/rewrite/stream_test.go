package rewrite

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/crmguard/crmguard/internal/listgen"
	"github.com/crmguard/crmguard/rules/mask"
)

// streamPlan hides the records of owner "u9", removes secret, masks phone
// (the sensitive value is "13800138000") and keeps id for the audit.
func streamPlan(t testing.TB, records string) *Plan {
	t.Helper()
	p := &Plan{Records: MustParsePath(records), Keys: paths("owner"), Visible: ownerIs("u1"),
		Fields: []Field{rm("secret"), mk("phone", mask.Phone), rm("**.ssn")}, AuditID: MustParsePath("id")}
	if records == "" {
		p.Records = Path{}
	}
	if err := p.Compile(); err != nil {
		t.Fatal(err)
	}
	return p
}

// streamed runs a JSON (comma 0) or table stream over r and returns what
// it handed on, the records it said each piece held, and its error.
func streamed(p *Plan, s Stream, r io.Reader, comma byte, st *Stats) (string, int, error) {
	var out bytes.Buffer
	n := 0
	s.Write = func(b []byte, records int) error {
		out.Write(b)
		n += records
		return nil
	}
	var err error
	if comma == 0 {
		err = p.RewriteStream(&s, r, st)
	} else {
		err = p.RewriteTableStream(&s, r, comma, st)
	}
	return out.String(), n, err
}

// compact is doc without insignificant spacing (doc must be valid JSON).
func compact(t *testing.T, doc []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, doc)
	}
	return b.String()
}

// tricky are records whose strings and nested arrays hold the bytes a
// splitter could take for the end of a record.
const tricky = `{"data":[
 {"id":"a1","owner":"u1","name":"close ] brace } quote \" comma , colon :","phone":"13800138000","secret":"s-1"},
 {"id":"a2","owner":"u9","phone":"13800138000","secret":"s-2"},
 {"id":"a3","owner":"u1","tags":[["]",",",[]],{"x":"]}"}],"phone":"13800138000","deep":{"ssn":"999-99-9999","k":[1,{"ssn":"1"}]}},
 {"id":"a\u0034","owner":"u\u0031","phone":"1380013\u00380000","note":"\\\"]","secret":{"a":["s-4"]}},
 {"id":"a5","owner":"u1","phone":null}
], "total": 5, "meta": {"next": "]]", "list": [1, "x,y", {"z": [true, false, null]}]}}`

func TestStreamAgreesWithTheBufferedRewrite(t *testing.T) {
	docs := []struct {
		name, records, doc string
	}{
		{"records under a key, with strings and nested arrays holding ] , and quotes", "data", tricky},
		{"records at the root", "", `[{"id":"1","owner":"u1","phone":"13800138000"} , {"id":"2","owner":"u1","secret":"s"}]`},
		{"an empty list", "data", `{"data":[],"total":0}`},
		{"null for the records", "data", `{"data":null}`},
		{"the records path under an index", "0.rows", `[{"rows":[{"id":"1","owner":"u1","phone":"13800138000"}]},{"other":[{"id":"2","owner":"u1","phone":"1"}]}]`},
		{"the records key twice: both lists are treated", "data", `{"data":[{"id":"1","owner":"u1","phone":"13800138000"}],"data":[{"id":"2","owner":"u1","phone":"13800138000"}]}`},
		{"every record hidden", "data", `{"data":[{"id":"1","owner":"u9"},{"id":"2","owner":"u8"}]}`},
		{"an escaped records key", "data", `{"d\u0061ta":[{"id":"1","owner":"u1","phone":"13800138000"}]}`},
	}
	for _, d := range docs {
		for _, batch := range []int{1, 40, 1 << 20} {
			t.Run(fmt.Sprintf("%s, in batches of %d bytes", d.name, batch), func(t *testing.T) {
				p := streamPlan(t, d.records)
				var want Stats
				buffered, err := p.Rewrite(nil, []byte(d.doc), &want)
				if err != nil {
					t.Fatal(err)
				}
				var got Stats
				out, n, err := streamed(p, Stream{Batch: batch}, iotest.OneByteReader(strings.NewReader(d.doc)), 0, &got)
				if err != nil {
					t.Fatalf("stream: %v", err)
				}
				if c, w := compact(t, []byte(out)), compact(t, buffered); c != w {
					t.Errorf("the stream gave\n%s\nthe buffered rewrite\n%s", c, w)
				}
				if n != want.RecordsOut || got.RecordsOut != want.RecordsOut || got.RecordsIn != want.RecordsIn {
					t.Errorf("records: handed on %d, stats %d in %d out; buffered %d in %d out", n, got.RecordsIn, got.RecordsOut, want.RecordsIn, want.RecordsOut)
				}
				if strings.Join(got.IDs, ",") != strings.Join(want.IDs, ",") {
					t.Errorf("ids %v, buffered %v", got.IDs, want.IDs)
				}
				for _, raw := range []string{"13800138000", "s-1", "s-4", "999-99-9999"} {
					if strings.Contains(out, raw) {
						t.Errorf("the raw value %q was handed on: %s", raw, out)
					}
				}
			})
		}
	}
}

// splitReader gives doc in two reads, split at at.
type splitReader struct {
	doc []byte
	at  int
	n   int
}

func (r *splitReader) Read(b []byte) (int, error) {
	if len(r.doc) == 0 {
		return 0, io.EOF
	}
	k := len(r.doc)
	if r.n == 0 {
		k = r.at
	}
	r.n++
	k = min(k, len(b))
	copy(b, r.doc[:k])
	r.doc = r.doc[k:]
	return k, nil
}

func TestStreamAtEverySplitPoint(t *testing.T) {
	doc := []byte(tricky)
	csvDoc := []byte("\xef\xbb\xbfid,owner,phone,note\r\n\r\na1,u1,13800138000,\"a \"\"quoted\"\",\nline\"\r\na2,u9,13800138000,x\na3,u1,13800138000,\"\"\n")
	p := streamPlan(t, "data")
	want, err := p.Rewrite(nil, doc, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantCSV, err := p.RewriteTable(nil, csvDoc, ',', nil)
	if err != nil {
		t.Fatal(err)
	}
	for at := 0; at <= len(doc); at++ {
		out, _, err := streamed(p, Stream{Batch: 1}, &splitReader{doc: doc, at: at}, 0, nil)
		if err != nil {
			t.Fatalf("a JSON answer split at byte %d: %v", at, err)
		}
		if compact(t, []byte(out)) != compact(t, want) || strings.Contains(out, "13800138000") {
			t.Fatalf("a JSON answer split at byte %d gave\n%s", at, out)
		}
	}
	for at := 0; at <= len(csvDoc); at++ {
		out, _, err := streamed(p, Stream{Batch: 1}, &splitReader{doc: csvDoc, at: at}, ',', nil)
		if err != nil {
			t.Fatalf("a CSV answer split at byte %d: %v", at, err)
		}
		if out != string(wantCSV) {
			t.Fatalf("a CSV answer split at byte %d gave\n%q\nbuffered\n%q", at, out, wantCSV)
		}
	}
}

// failingReader gives doc, then fails.
type failingReader struct {
	doc []byte
	err error
}

func (r *failingReader) Read(b []byte) (int, error) {
	if len(r.doc) == 0 {
		return 0, r.err
	}
	n := copy(b, r.doc)
	r.doc = r.doc[n:]
	return n, nil
}

func TestStreamFailsClosed(t *testing.T) {
	good := `{"id":"g1","owner":"u1","phone":"13800138000","secret":"s-g1"},{"id":"g2","owner":"u1","phone":"13800138000"},`
	reset := errors.New("connection reset by peer")
	cases := []struct {
		name     string
		r        io.Reader
		comma    byte
		maxRec   int
		wantErr  string
		wantSent int // records handed on before the error
	}{
		{"broken JSON in the third record", strings.NewReader(`{"data":[` + good + `{"id":"b","owner":"u1","phone":"13800138000" "secret":1}]}`), 0, 0, "invalid JSON", 2},
		{"a record cut by the end of the answer", strings.NewReader(`{"data":[` + good + `{"id":"b","owner":"u1","phone":"1380013`), 0, 0, "unexpected end of input", 2},
		{"an upstream reset mid-answer", &failingReader{doc: []byte(`{"data":[` + good + `{"id":"b","owner":"u1","phone":"1380`), err: reset}, 0, 0, "connection reset by peer", 2},
		{"a record over the cap", strings.NewReader(`{"data":[` + good + `{"id":"big","owner":"u1","phone":"13800138000","pad":"` + strings.Repeat("x", 300) + `"}]}`), 0, 200, "larger than the stream's limit", 2},
		{"a record that is not an object", strings.NewReader(`{"data":[` + good + `"13800138000"]}`), 0, 0, "not an object", 2},
		{"a value beside the records that never ends", strings.NewReader(`{"data":[` + good[:len(good)-1] + `],"meta":"` + strings.Repeat("y", 300)), 0, 200, "larger than the stream's limit", 2},
		{"data after the document", strings.NewReader(`{"data":[` + good[:len(good)-1] + `]} {"phone":"13800138000"}`), 0, 0, "data after the end", 2},
		{"invalid UTF-8 in a record", strings.NewReader(`{"data":[` + good + "{\"id\":\"b\",\"owner\":\"u1\",\"name\":\"\xff\"}]}"), 0, 0, "UTF-8", 2},
		{"a CSV row with an unterminated quote", strings.NewReader("id,owner,phone\ng1,u1,13800138000\ng2,u1,13800138000\ng3,u1,\"13800138000\n"), ',', 0, "never closed", 2},
		{"a CSV row with an unterminated quote that runs past the cap", strings.NewReader("id,owner,phone\ng1,u1,13800138000\ng2,u1,13800138000\ng3,u1,\"13800138000\n" + strings.Repeat("13800138000,\n", 40)), ',', 200, "larger than the stream's limit", 2},
		{"a CSV row with a quote inside an unquoted field", strings.NewReader("id,owner,phone\ng1,u1,13800138000\ng2,u1,13800138000\ng3,u1,138\"00138000\n"), ',', 0, "a quote inside an unquoted field", 2},
		{"a CSV answer reset mid-row", &failingReader{doc: []byte("id,owner,phone\ng1,u1,13800138000\ng2,u1,13800138000\ng3,u1,1380"), err: reset}, ',', 0, "connection reset by peer", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := streamPlan(t, "data")
			var st Stats
			// batches of one record: the good records are handed on
			// before the bad one is met
			out, n, err := streamed(p, Stream{Batch: 1, MaxRecord: c.maxRec}, c.r, c.comma, &st)
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, c.wantErr)
			}
			if n != c.wantSent || st.RecordsOut != c.wantSent {
				t.Errorf("%d records handed on (stats: %d), want %d", n, st.RecordsOut, c.wantSent)
			}
			for _, raw := range []string{"13800138000", "s-g1"} {
				if strings.Contains(out, raw) {
					t.Errorf("the raw value %q was handed on: %s", raw, out)
				}
			}
		})
	}
	t.Run("a read error is returned as it is, wrapped", func(t *testing.T) {
		p := streamPlan(t, "data")
		_, _, err := streamed(p, Stream{}, &failingReader{doc: []byte(`{"data":[`), err: reset}, 0, nil)
		if !errors.Is(err, reset) {
			t.Fatalf("error %v does not wrap the read error", err)
		}
	})
}

func TestStreamBoundsTheIDsAndStopsWhenWriteFails(t *testing.T) {
	var doc strings.Builder
	doc.WriteString(`[`)
	for i := range 5000 {
		if i > 0 {
			doc.WriteByte(',')
		}
		fmt.Fprintf(&doc, `{"id":"r%d","owner":"u1","phone":"13800138000"}`, i)
	}
	doc.WriteString(`]`)
	p := streamPlan(t, "")
	t.Run("the ids kept are the first MaxIDs, the others counted", func(t *testing.T) {
		var st Stats
		_, n, err := streamed(p, Stream{MaxIDs: 100, Batch: 1000}, strings.NewReader(doc.String()), 0, &st)
		if err != nil {
			t.Fatal(err)
		}
		if n != 5000 || len(st.IDs) != 100 || st.IDsOmitted != 4900 || st.IDs[99] != "r99" {
			t.Fatalf("records %d, ids %d (last %q), omitted %d", n, len(st.IDs), st.IDs[len(st.IDs)-1], st.IDsOmitted)
		}
	})
	t.Run("an error from Write stops the stream and is returned", func(t *testing.T) {
		stop := errors.New("limit reached")
		calls := 0
		s := &Stream{Batch: 1000, Write: func(b []byte, records int) error {
			calls++
			if calls == 3 {
				return stop
			}
			return nil
		}}
		if err := p.RewriteStream(s, strings.NewReader(doc.String()), nil); !errors.Is(err, stop) || calls != 3 {
			t.Fatalf("error %v after %d writes", err, calls)
		}
	})
	t.Run("record indexes count across batches", func(t *testing.T) {
		var last int
		q := &Plan{Visible: func(r *Record) (bool, error) { last = r.Index(); return r.Index()%2 == 0, nil }}
		var st Stats
		if _, _, err := streamed(q, Stream{Batch: 100}, strings.NewReader(doc.String()), 0, &st); err != nil {
			t.Fatal(err)
		}
		if last != 4999 || st.RecordsOut != 2500 {
			t.Fatalf("last index %d, %d records out", last, st.RecordsOut)
		}
	})
	t.Run("a plan that must see the whole answer does not stream", func(t *testing.T) {
		for _, q := range []*Plan{{Single: true}, {Records: MustParsePath("data"), Answer: []Field{mk("total", mask.All)}}} {
			if err := q.RewriteStream(&Stream{Write: func([]byte, int) error { return nil }}, strings.NewReader(`{}`), nil); !errors.Is(err, ErrNotStreamable) {
				t.Errorf("error %v, want ErrNotStreamable", err)
			}
		}
	})
}

// TestStreamMemoryIsBoundedByTheRecord streams a generated 64 MiB answer
// and checks that the live heap stays far below it: what the stream holds
// is bounded by its records and batches, not by the answer.
func TestStreamMemoryIsBoundedByTheRecord(t *testing.T) {
	p := streamPlan(t, "list")
	for _, f := range []listgen.Format{listgen.JSON, listgen.CSV} {
		t.Run(fmt.Sprintf("format %d", f), func(t *testing.T) {
			const size = 64 << 20
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			base, peak := ms.HeapAlloc, ms.HeapAlloc
			var total int64
			writes := 0
			s := Stream{Write: func(b []byte, records int) error {
				total += int64(len(b))
				if bytes.Contains(b, []byte(listgen.Phone)) || bytes.Contains(b, []byte(listgen.Secret)) {
					return errors.New("a raw value was handed on")
				}
				if writes++; writes%50 == 0 {
					runtime.ReadMemStats(&ms)
					peak = max(peak, ms.HeapAlloc)
				}
				return nil
			}}
			var err error
			if f == listgen.CSV {
				err = p.RewriteTableStream(&s, listgen.New(f, size), ',', nil)
			} else {
				err = p.RewriteStream(&s, listgen.New(f, size), nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			// Half the records are visible; the heap may hold garbage
			// of a few batches between collections, never the answer.
			if total < size/4 || peak-base > 24<<20 {
				t.Fatalf("handed on %d bytes; the heap grew by %d bytes", total, peak-base)
			}
			t.Logf("%d MiB streamed, %d MiB handed on, heap grew by at most %.1f MiB (sampled)", size>>20, total>>20, float64(peak-base)/(1<<20))
		})
	}
}

func TestStreamRemovesAnswerFields(t *testing.T) {
	docs := []struct{ name, doc string }{
		{"the total after the list", `{"list":[{"id":"1","owner":"u1","phone":"13800138000"}],"total":2}`},
		{"the total before the list", `{"total":2,"list":[{"id":"1","owner":"u1","phone":"13800138000"}]}`},
		{"the total alone between others", `{"a":1, "total" : 2 ,"list":[{"id":"1","owner":"u1"}], "b":[1]}`},
		{"every removed member first, in a row", `{"total":2,"meta":{"next":"x","count":3},"list":[{"id":"1","owner":"u1"}]}`},
		{"a nested and an indexed path", `{"list":[{"id":"1","owner":"u1"}],"meta":{"keep":true,"next":"/p?page=2","count":9},"pages":[7,8]}`},
		{"a removed value holding brackets and quotes", `{"list":[],"total":{"x":"]}\",","y":[[]]},"z":0}`},
		{"the records key twice and the total twice", `{"total":1,"list":[{"id":"1","owner":"u1"}],"total":2,"list":[{"id":"2","owner":"u1"}]}`},
	}
	p := &Plan{Records: MustParsePath("list"), Keys: paths("owner"), Visible: ownerIs("u1"),
		Fields: []Field{mk("phone", mask.Phone)}, AuditID: MustParsePath("id"),
		Answer: []Field{rm("total"), rm("meta.next"), rm("meta.count"), rm("pages.0")}}
	if err := p.Compile(); err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		t.Run(d.name, func(t *testing.T) {
			var want Stats
			buffered, err := p.Rewrite(nil, []byte(d.doc), &want)
			if err != nil {
				t.Fatal(err)
			}
			for at := 0; at <= len(d.doc); at++ {
				var got Stats
				out, _, err := streamed(p, Stream{Batch: 1}, &splitReader{doc: []byte(d.doc), at: at}, 0, &got)
				if err != nil {
					t.Fatalf("split at %d: %v", at, err)
				}
				if c, w := compact(t, []byte(out)), compact(t, buffered); c != w {
					t.Fatalf("split at %d, the stream gave\n%s\nthe buffered rewrite\n%s", at, c, w)
				}
				for k, n := range want.Fields {
					if got.Fields[k] != n {
						t.Fatalf("split at %d: fields %v, buffered %v", at, got.Fields, want.Fields)
					}
				}
			}
		})
	}
}

func TestStreamedTableErrorsNameTheLineInTheWholeFile(t *testing.T) {
	// Good rows past the first batch, a quoted line break and a blank
	// line among them, so that a line count kept per batch, or one that
	// counts rows rather than lines, names the wrong line.
	var good strings.Builder
	good.WriteString("\xef\xbb\xbf\nid,owner,phone\n")
	for i := 0; good.Len() < 3*DefaultBatch; i++ {
		fmt.Fprintf(&good, "g%d,u1,13800138000\n", i)
		if i == 100 {
			good.WriteString("q,u1,\"138\n00138000\"\n\n")
		}
	}
	line := strings.Count(good.String(), "\n") + 1 // the broken row's line
	cases := []struct {
		name   string
		bad    string
		batch  int
		maxRec int
	}{
		{"a row with too few fields", "b,u1\n", 0, 0},
		{"a row with a quote inside an unquoted field", "b,u1,138\"00138000\n", 0, 0},
		{"a row with text after a closing quote", "b,u1,\"138\"00138000\n", 0, 0},
		{"a row with a carriage return alone", "b,u1,138\r00138000\n", 0, 0},
		{"a row with a quote that is never closed", "b,u1,\"13800138000\n", 0, 0},
		{"a row with too few fields in batches of one row", "b,u1\n", 1, 0},
		{"a row over the cap", "b,u1," + strings.Repeat("1", 300) + "\n", 0, 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := streamPlan(t, "")
			doc := good.String() + c.bad + "g,u1,13800138000\n"
			_, _, err := streamed(p, Stream{Batch: c.batch, MaxRecord: c.maxRec}, strings.NewReader(doc), ',', nil)
			want := fmt.Sprintf("line %d", line)
			if err == nil || !strings.Contains(err.Error()+" ", want+" ") && !strings.Contains(err.Error(), want+":") {
				t.Fatalf("error %v, want one naming %s", err, want)
			}
		})
	}
}
