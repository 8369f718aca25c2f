package auditlog

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var testKey = []byte("audit-chain-test-key")

// chainLines returns n chained lines (without newlines) continuing st,
// the first one starting a file.
func chainLines(key []byte, st State, n int, from int) ([]string, State) {
	c := NewChain(key, st)
	var out []string
	for i := 0; i < n; i++ {
		ev := fmt.Sprintf(`{"time":"2026-11-20T02:00:%02dZ","user":"u%d","method":"GET","path":"/api/customers/%d","decision":"allow","status":200}`, (from+i)%60, (from+i)%3, from+i)
		line := c.Append(nil, []byte(ev), i == 0)
		out = append(out, strings.TrimSuffix(string(line), "\n"))
	}
	return out, c.State()
}

func writeFile(t *testing.T, dir, name string, lines []string, gz bool) string {
	t.Helper()
	p := filepath.Join(dir, name)
	data := []byte(strings.Join(lines, "\n") + "\n")
	if len(lines) == 0 {
		data = nil
	}
	if gz {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
		data = b.Bytes()
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func move(lines []string, from, to int) []string {
	l := append([]string(nil), lines...)
	x := l[from]
	l = append(l[:from], l[from+1:]...)
	return append(l[:to], append([]string{x}, l[to:]...)...)
}

func without(lines []string, i int) []string {
	return append(append([]string(nil), lines[:i]...), lines[i+1:]...)
}

func with(lines []string, at int, extra string) []string {
	l := append([]string(nil), lines[:at]...)
	return append(append(l, extra), lines[at:]...)
}

func TestVerifyNamesTheFirstBrokenLine(t *testing.T) {
	base, _ := chainLines(testKey, State{}, 10, 0)
	otherKey, _ := chainLines([]byte("someone else's key"), State{}, 10, 0)
	forged := strings.Replace(base[4], `"user":"u1"`, `"user":"u2"`, 1)
	if forged == base[4] {
		t.Fatal("the test's edit did not apply")
	}
	tests := []struct {
		name  string
		lines []string
		kind  Kind
		line  int
	}{
		{name: "an untouched file verifies", lines: base},
		{name: "an edited field is found on its own line", lines: append(append(append([]string(nil), base[:4]...), forged), base[5:]...), kind: Edited, line: 5},
		{name: "an edited seq is an edit, not a removal", lines: append(append(append([]string(nil), base[:4]...), strings.Replace(base[4], `"seq":5`, `"seq":9`, 1)), base[5:]...), kind: Edited, line: 5},
		{name: "a removed line is found where it is missing", lines: without(base, 4), kind: Removed, line: 5},
		{name: "the first lines of a file removed are found on its new first line", lines: base[3:], kind: Removed, line: 1},
		{name: "two swapped lines are reordered", lines: move(base, 4, 3), kind: Reordered, line: 4},
		{name: "a line moved later is reordered where it is missing", lines: move(base, 2, 7), kind: Reordered, line: 3},
		{name: "a line moved earlier is reordered where it stands", lines: move(base, 7, 2), kind: Reordered, line: 3},
		{name: "a forged line with the next seq is inserted", lines: with(base, 4, strings.Replace(forged, `"seq":5`, `"seq":5`, 1)), kind: Inserted, line: 5},
		{name: "a forged line with a later seq is inserted", lines: with(base, 4, strings.Replace(forged, `"seq":5`, `"seq":12`, 1)), kind: Inserted, line: 5},
		{name: "a copy of an earlier line is inserted", lines: with(base, 6, base[2]), kind: Inserted, line: 7},
		{name: "a line without a link between chained lines is inserted", lines: with(base, 3, `{"time":"2026-11-20T02:00:00Z","user":"x","decision":"allow"}`), kind: Inserted, line: 4},
		{name: "a file written without chain_key is unchained", lines: []string{`{"time":"2026-11-20T02:00:00Z","user":"x","decision":"allow"}`}, kind: Unchained, line: 1},
		{name: "a file chained with another key does not verify", lines: otherKey, kind: Edited, line: 1},
		{name: "a line cut short by a crash, followed by the chain, is a note", lines: with(base, 5, base[5][:40])},
		{name: "a cut last line is a note", lines: append(append([]string(nil), base...), base[0][:30])},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "audit.jsonl", tt.lines, false)
			res, err := Verify([][]byte{testKey}, []string{p})
			if err != nil {
				t.Fatal(err)
			}
			if tt.kind == "" {
				if res.Problem != nil {
					t.Fatalf("want OK, got %v", res.Problem)
				}
				return
			}
			if res.Problem == nil {
				t.Fatalf("want %s at line %d, got OK", tt.kind, tt.line)
			}
			if res.Problem.Kind != tt.kind || res.Problem.Line != tt.line || res.Problem.File != p {
				t.Fatalf("want %s at %s:%d, got %v", tt.kind, p, tt.line, res.Problem)
			}
		})
	}
}

// rotatedSet writes a chain over three files the way a rolling writer
// does; the oldest is gzip-compressed.
func rotatedSet(t *testing.T, dir string) (files []string, lines [][]string) {
	t.Helper()
	st := State{}
	var parts [][]string
	for i := 0; i < 3; i++ {
		var l []string
		l, st = chainLines(testKey, st, 5, i*5)
		parts = append(parts, l)
	}
	files = []string{
		writeFile(t, dir, "audit-2026-11-20T02-00-00.000.jsonl.gz", parts[0], true),
		writeFile(t, dir, "audit-2026-11-20T03-00-00.000.jsonl", parts[1], false),
		writeFile(t, dir, "audit.jsonl", parts[2], false),
	}
	return files, parts
}

func TestVerifyRotatedSets(t *testing.T) {
	t.Run("an untouched rotated set verifies in any argument order, gzip included", func(t *testing.T) {
		files, _ := rotatedSet(t, t.TempDir())
		for _, order := range [][]string{files, {files[2], files[0], files[1]}} {
			res, err := Verify([][]byte{testKey}, order)
			if err != nil {
				t.Fatal(err)
			}
			if res.Problem != nil {
				t.Fatalf("want OK, got %v", res.Problem)
			}
			if res.Lines != 15 || res.FirstSeq != 1 || res.LastSeq != 15 || !res.StartsChain {
				t.Errorf("want 15 lines, seq 1..15 from the chain's start, got %+v", res)
			}
		}
	})
	t.Run("a missing middle file is found on the next file's first line", func(t *testing.T) {
		files, _ := rotatedSet(t, t.TempDir())
		res, err := Verify([][]byte{testKey}, []string{files[0], files[2]})
		if err != nil {
			t.Fatal(err)
		}
		if res.Problem == nil || res.Problem.Kind != Removed || res.Problem.File != files[2] || res.Problem.Line != 1 {
			t.Fatalf("want removed at %s:1, got %v", files[2], res.Problem)
		}
	})
	t.Run("the newer files alone verify from the link they continue", func(t *testing.T) {
		files, parts := rotatedSet(t, t.TempDir())
		res, err := Verify([][]byte{testKey}, files[1:])
		if err != nil {
			t.Fatal(err)
		}
		if res.Problem != nil || res.StartsChain || res.FirstSeq != 6 {
			t.Fatalf("want OK from seq 6, got %+v", res)
		}
		last, _ := ParseLine([]byte(parts[0][4]))
		if !bytes.Equal(res.FirstPrev, last.Link[:]) {
			t.Errorf("the first link continued is not the last link of the oldest file")
		}
	})
	t.Run("an edit inside a gzip file is found", func(t *testing.T) {
		dir := t.TempDir()
		files, parts := rotatedSet(t, dir)
		parts[0][2] = strings.Replace(parts[0][2], `"status":200`, `"status":403`, 1)
		writeFile(t, dir, filepath.Base(files[0]), parts[0], true)
		res, err := Verify([][]byte{testKey}, files)
		if err != nil {
			t.Fatal(err)
		}
		if res.Problem == nil || res.Problem.Kind != Edited || res.Problem.File != files[0] || res.Problem.Line != 3 {
			t.Fatalf("want edited at %s:3, got %v", files[0], res.Problem)
		}
	})
	t.Run("a chain that starts anew in the middle is restarted", func(t *testing.T) {
		dir := t.TempDir()
		a, _ := chainLines(testKey, State{}, 4, 0)
		b, _ := chainLines(testKey, State{Seq: 4}, 4, 4) // the writer lost the link, kept counting
		files := []string{writeFile(t, dir, "a.jsonl", a, false), writeFile(t, dir, "b.jsonl", b, false)}
		res, err := Verify([][]byte{testKey}, files)
		if err != nil {
			t.Fatal(err)
		}
		if res.Problem == nil || res.Problem.Kind != Restarted || res.Problem.File != files[1] || res.Problem.Line != 1 {
			t.Fatalf("want restarted at %s:1, got %v", files[1], res.Problem)
		}
	})
	t.Run("a key change verifies with both keys and is noted", func(t *testing.T) {
		dir := t.TempDir()
		newKey := []byte("the new key")
		a, st := chainLines(testKey, State{}, 4, 0)
		b, _ := chainLines(newKey, st, 4, 4)
		files := []string{writeFile(t, dir, "a.jsonl", a, false), writeFile(t, dir, "b.jsonl", b, false)}
		res, err := Verify([][]byte{testKey, newKey}, files)
		if err != nil {
			t.Fatal(err)
		}
		if res.Problem != nil || len(res.Notes) != 1 || res.Notes[0].File != files[1] || res.Notes[0].Line != 1 {
			t.Fatalf("want OK with a note at %s:1, got %v %v", files[1], res.Problem, res.Notes)
		}
		res, _ = Verify([][]byte{testKey}, files)
		if res.Problem == nil || res.Problem.File != files[1] || res.Problem.Line != 1 {
			t.Fatalf("with the old key only, want a problem at %s:1, got %v", files[1], res.Problem)
		}
	})
}

func TestParseLineRoundTrip(t *testing.T) {
	c := NewChain(testKey, State{})
	tests := []struct {
		name      string
		event     string
		fileStart bool
		hasPrev   bool
	}{
		{name: "the first line starts the chain with an empty chain_prev", event: `{"a":1}`, hasPrev: true},
		{name: "a middle line carries no chain_prev", event: `{"a":2}`},
		{name: "a file's first line carries the previous link", event: `{"a":3}`, fileStart: true, hasPrev: true},
		{name: "an empty object gets no leading comma", event: `{}`},
		{name: "a trailing newline in the event is dropped", event: "{\"a\":4}\n"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := c.State()
			line := c.Append(nil, []byte(tt.event), tt.fileStart)
			if !bytes.HasSuffix(line, []byte("}\n")) || bytes.Count(line, []byte("\n")) != 1 {
				t.Fatalf("not one line: %q", line)
			}
			l, ok := ParseLine(line)
			if !ok {
				t.Fatalf("does not parse: %s", line)
			}
			if l.Seq != uint64(i+1) || l.HasPrev != tt.hasPrev {
				t.Errorf("seq %d has_prev %v, want %d %v: %s", l.Seq, l.HasPrev, i+1, tt.hasPrev, line)
			}
			if l.HasPrev && !bytes.Equal(l.Prev, before.Link) {
				t.Errorf("chain_prev %x, want %x", l.Prev, before.Link)
			}
			if !NewVerifier(testKey).Check(before.Link, &l) {
				t.Errorf("the link does not verify: %s", line)
			}
		})
	}
}

func TestParseLineRefusesLookalikes(t *testing.T) {
	good := string(NewChain(testKey, State{}).Append(nil, []byte(`{"a":1}`), true))
	tests := []struct{ name, line string }{
		{name: "a line without a link", line: `{"a":1}`},
		{name: "a link one digit short", line: strings.Replace(good, `"}`, `}`, 1)[:len(good)-2] + `"}`},
		{name: "a link that is not hex", line: good[:len(good)-10] + `zzzzzzz"}`},
		{name: "no seq before the link", line: strings.Replace(good, `"seq":1`, `"seq":"1"`, 1)},
		{name: "a chain_prev of the wrong length", line: strings.Replace(good, `"chain_prev":""`, `"chain_prev":"ab"`, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := ParseLine([]byte(tt.line)); ok {
				t.Errorf("parsed: %s", tt.line)
			}
		})
	}
}

func TestReadState(t *testing.T) {
	lines, st := chainLines(testKey, State{}, 3, 0)
	whole := strings.Join(lines, "\n") + "\n"
	tests := []struct {
		name    string
		content string
		want    State
		cut     bool
	}{
		{name: "an empty file starts a chain", content: ""},
		{name: "a chained file continues from its last line", content: whole, want: st},
		{name: "a file cut mid-line continues from its last whole line", content: whole + lines[0][:50], want: st, cut: true},
		{name: "a file whose last line has no link starts a chain", content: whole + `{"time":"x"}` + "\n"},
		{name: "a single cut line starts a chain", content: lines[0][:50], cut: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := strings.NewReader(tt.content)
			got, cut, err := ReadState(r, int64(len(tt.content)))
			if err != nil {
				t.Fatal(err)
			}
			if got.Seq != tt.want.Seq || !bytes.Equal(got.Link, tt.want.Link) || cut != tt.cut {
				t.Errorf("got %d %x cut=%v, want %d %x cut=%v", got.Seq, got.Link, cut, tt.want.Seq, tt.want.Link, tt.cut)
			}
		})
	}
}

func TestEventUnwrapsTheCaddyLoggerForm(t *testing.T) {
	ev := `{"time":"2026-11-20T02:00:00Z","user":"zhang","decision":"allow"}`
	tests := []struct {
		name, line, want string
	}{
		{name: "a file sink line is the event", line: ev, want: ev},
		{name: "a Caddy log entry holds the event under event", line: `{"level":"info","ts":1.7e9,"logger":"crm_guard.audit","msg":"request","event":` + ev + `}`, want: ev},
		{name: "an export with other keys first still finds decision", line: `{"host":"a","time":"x","decision":"deny"}`, want: `{"host":"a","time":"x","decision":"deny"}`},
		{name: "a line that is no event is refused", line: `{"level":"info","msg":"started"}`},
		{name: "a line that is not an object is refused", line: `[1,2]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Event([]byte(tt.line))
			if string(got) != tt.want || ok != (tt.want != "") {
				t.Errorf("got %q %v, want %q", got, ok, tt.want)
			}
		})
	}
}

// TestVerifyWhatALogSystemExports checks the forms a central log system
// gives back: the raw lines in another order (VerifyBySeq orders them), and
// lines re-encoded from parsed fields (their bytes changed: edited).
func TestVerifyWhatALogSystemExports(t *testing.T) {
	a, st := chainLines(testKey, State{}, 6, 0)
	b, _ := chainLines(testKey, st, 6, 6)
	all := append(append([]string(nil), a...), b...)
	shuffled := []string{all[3], all[0], all[7], all[1], all[11], all[2], all[5], all[4], all[9], all[6], all[10], all[8]}
	tests := []struct {
		name  string
		lines []string
		bySeq bool
		kind  Kind
	}{
		{name: "a rotated set exported in one file, out of order, verifies by seq", lines: shuffled, bySeq: true},
		{name: "the same export read in its own order does not verify", lines: shuffled, kind: Removed},
		{name: "by seq, a line the export lost is still removed", lines: without(shuffled, 3), bySeq: true, kind: Removed},
		{name: "by seq, an edited line is still edited", lines: append([]string{strings.Replace(shuffled[0], `"decision":"allow"`, `"decision":"deny"`, 1)}, shuffled[1:]...), bySeq: true, kind: Edited},
		{name: "a line re-encoded with its keys in another order is edited", lines: append([]string{strings.Replace(all[0], `{"time":"2026-11-20T02:00:00Z","user":"u0"`, `{"user":"u0","time":"2026-11-20T02:00:00Z"`, 1)}, all[1:]...), kind: Edited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "export.jsonl", tt.lines, false)
			verify := Verify
			if tt.bySeq {
				verify = VerifyBySeq
			}
			res, err := verify([][]byte{testKey}, []string{p})
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.kind == "" && res.Problem != nil:
				t.Fatalf("want OK, got %v", res.Problem)
			case tt.kind == "" && res.Lines != len(tt.lines):
				t.Fatalf("verified %d lines of %d", res.Lines, len(tt.lines))
			case tt.kind != "" && (res.Problem == nil || res.Problem.Kind != tt.kind):
				t.Fatalf("want %s, got %v", tt.kind, res.Problem)
			}
		})
	}
}
