package auditlog

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"sort"

	"github.com/tidwall/gjson"
)

// Kind names what happened to the first line that breaks the chain.
type Kind string

const (
	// Removed: lines are missing before this one.
	Removed Kind = "removed"
	// Edited: the line's bytes are not the ones its link was made over.
	Edited Kind = "edited"
	// Reordered: the line is not where the chain put it.
	Reordered Kind = "reordered"
	// Inserted: the line was not written by the chain (no valid link, a
	// copy of an earlier line, or a line without a link among chained ones).
	Inserted Kind = "inserted"
	// Restarted: a new chain starts in the middle of the set, so the lines
	// before it are not tied to the lines after it.
	Restarted Kind = "restarted"
	// Unchained: the line carries no link at all (written without
	// chain_key).
	Unchained Kind = "unchained"
)

// Problem is the first place where the chain breaks.
type Problem struct {
	// File and Line (1-based) name the line.
	File string
	Line int
	// Kind is what happened.
	Kind Kind
	// Detail says it in a sentence.
	Detail string
}

// Error returns "file:line: kind: detail".
func (p *Problem) Error() string {
	return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Line, p.Kind, p.Detail)
}

// Note is something Verify found worth saying that does not break the
// chain (a line cut short by a crash, a key change).
type Note struct {
	// File and Line place the note (Line 0: the file as a whole).
	File string
	Line int
	// Text says what was found.
	Text string
}

// Result is what Verify found.
type Result struct {
	// Files are the files in chain order (empty files left out).
	Files []string
	// Lines counts the chained lines verified.
	Lines int
	// FirstSeq and LastSeq are the seq of the first and last line.
	FirstSeq, LastSeq uint64
	// StartsChain is true when the first line starts the chain; otherwise
	// FirstPrev is the link of the line before it (in a file not given).
	StartsChain bool
	FirstPrev   []byte
	// LastLink is the link of the last line.
	LastLink []byte
	// Notes are things worth saying that do not break the chain.
	Notes []Note
	// Problem is the first break, nil when the set verifies.
	Problem *Problem
}

// Verify checks that files form one unbroken chain made with one of keys
// (several keys: chain_key was changed along the way). Files may come in
// any order and may be gzip-compressed. An error is returned only when a
// file cannot be read; a broken chain is Result.Problem.
func Verify(keys [][]byte, files []string) (*Result, error) {
	return verify(keys, files, false)
}

// VerifyBySeq is Verify for lines whose order was lost, as a log system
// may return them (ordered by a timestamp of its own): it reads every line
// into memory, orders them by seq (a line without a link keeps its place
// after the line before it) and verifies that order. Removed, edited and
// inserted lines are found as by Verify; the order of the lines as given is
// not evidence and is not checked.
func VerifyBySeq(keys [][]byte, files []string) (*Result, error) {
	return verify(keys, files, true)
}

func verify(keys [][]byte, files []string, bySeq bool) (*Result, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("auditlog: verify needs the chain key")
	}
	ordered, empty, err := orderFiles(files)
	if err != nil {
		return nil, err
	}
	var src lineSource = &cursor{files: ordered}
	if bySeq {
		if src, err = sortedBySeq(ordered); err != nil {
			return nil, err
		}
	}
	v := &verification{res: &Result{}, cur: src}
	for _, k := range keys {
		v.keys = append(v.keys, NewVerifier(k))
	}
	for _, f := range ordered {
		v.res.Files = append(v.res.Files, f.name)
	}
	for _, name := range empty {
		v.res.Notes = append(v.res.Notes, Note{File: name, Text: "the file is empty"})
	}
	defer v.cur.close()
	v.run()
	if err := v.cur.error(); err != nil {
		return nil, err
	}
	return v.res, nil
}

type verification struct {
	res     *Result
	cur     lineSource
	keys    []*Verifier
	key     int    // index of the key in use
	prev    []byte // link of the last verified line; nil: chain start
	started bool
	expect  uint64 // seq the next line must carry
}

func (v *verification) run() {
	for {
		line, pos, ok := v.cur.next()
		if !ok {
			return
		}
		l, parsed := ParseLine(line)
		if !v.started {
			if !parsed {
				v.fail(pos, v.unparsedKind(line), "the first line carries no chain link")
				return
			}
			if !l.HasPrev {
				v.fail(pos, Removed, "the first line of the file carries no chain_prev: lines before it were removed")
				return
			}
			v.started = true
			v.prev, v.expect = l.Prev, l.Seq
			v.res.StartsChain, v.res.FirstPrev, v.res.FirstSeq = l.Prev == nil, l.Prev, l.Seq
		}
		if !parsed {
			if v.unparsed(line, pos) {
				continue
			}
			return
		}
		if l.Seq == v.expect && v.check(&l) {
			v.accept(&l)
			continue
		}
		if l.HasPrev && l.Prev == nil && v.checkAny(nil, &l) >= 0 {
			v.fail(pos, Restarted, fmt.Sprintf("a new chain starts here (seq %d): nothing ties the lines before it to the lines after it (a writer that lost its place: its file moved away without copytruncate or roll_size, then a restart; or lines were replaced)", l.Seq))
			return
		}
		v.classify(line, &l, pos)
		return
	}
}

// check verifies l under the running link with the key in use, or with
// another key (noted as a key change).
func (v *verification) check(l *Line) bool {
	if v.keys[v.key].Check(v.prev, l) {
		return true
	}
	i := v.checkAny(v.prev, l)
	if i < 0 {
		return false
	}
	v.key = i
	v.res.Notes = append(v.res.Notes, Note{File: v.cur.pos().file, Line: v.cur.pos().line,
		Text: fmt.Sprintf("the chain continues with key #%d from here (chain_key was changed)", i+1)})
	return true
}

// checkAny returns the index of a key under which l follows prev, or -1.
func (v *verification) checkAny(prev []byte, l *Line) int {
	for i, k := range v.keys {
		if k.Check(prev, l) {
			return i
		}
	}
	return -1
}

func (v *verification) accept(l *Line) {
	v.prev = append(v.prev[:0:0], l.Link[:]...)
	v.expect = l.Seq + 1
	v.res.Lines++
	v.res.LastSeq = l.Seq
	v.res.LastLink = v.prev
}

func (v *verification) fail(p position, k Kind, detail string) {
	v.res.Problem = &Problem{File: p.file, Line: p.line, Kind: k, Detail: detail}
}

// unparsed handles a line without a valid link; it returns true when the
// chain goes on after it (a line cut short by a crash).
func (v *verification) unparsed(line []byte, p position) bool {
	line = append([]byte(nil), line...)
	nxt, _, ok := v.cur.next()
	if !ok && !gjson.ValidBytes(line) {
		v.res.Notes = append(v.res.Notes, Note{File: p.file, Line: p.line,
			Text: "the last line is cut short (a write still under way, or interrupted by a crash or a full disk)"})
		return true
	}
	continues := false
	if ok {
		if n, parsed := ParseLine(nxt); parsed && n.Seq == v.expect && v.checkAny(v.prev, &n) >= 0 {
			continues = true
			if !gjson.ValidBytes(line) && len(bytes.TrimSpace(line)) > 0 {
				v.res.Notes = append(v.res.Notes, Note{File: p.file, Line: p.line,
					Text: "the line is cut short (a write interrupted by a crash or a full disk); the chain continues after it"})
				if v.check(&n) {
					v.accept(&n)
				}
				return true
			}
		}
	}
	switch {
	case continues:
		v.fail(p, Inserted, "a line without a link stands between two chained lines")
	default:
		v.fail(p, v.unparsedKind(line), "the line carries no valid chain link")
	}
	return false
}

func (v *verification) unparsedKind(line []byte) Kind {
	if !bytes.Contains(line, []byte(`"chain":`)) {
		return Unchained
	}
	return Edited
}

// classify names what broke the chain at line l (seq and link as written),
// given the running link and the seq expected there.
func (v *verification) classify(raw []byte, l *Line, p position) {
	cur := *l
	cur.Body = append([]byte(nil), l.Body...)
	nxtRaw, np, hasNext := v.cur.next()
	var nxt Line
	nxtParsed := false
	if hasNext {
		nxtRaw = append([]byte(nil), nxtRaw...)
		nxt, nxtParsed = ParseLine(nxtRaw)
	}
	nextContinues := nxtParsed && nxt.Seq == v.expect && v.checkAny(v.prev, &nxt) >= 0
	nextFollowsThis := nxtParsed && nxt.Seq == v.expect+1 && v.checkAny(cur.Link[:], &nxt) >= 0
	switch {
	case cur.Seq == v.expect && nextContinues:
		v.fail(p, Inserted, fmt.Sprintf("the line claims seq %d but has no valid link; the real line with that seq follows it", cur.Seq))
	case cur.Seq == v.expect || nextFollowsThis:
		v.fail(p, Edited, fmt.Sprintf("the line (seq %d) does not match its link: its bytes were changed", v.expect))
	case cur.Seq < v.expect:
		v.fail(p, Inserted, fmt.Sprintf("the line repeats seq %d, which the chain already had (a copy of an earlier line)", cur.Seq))
	case nextContinues:
		// Skipping this line continues the chain: it was moved here from
		// later on (reordered) if it follows the line before its own seq.
		if v.belongsLater(&cur, &nxt, np) {
			v.fail(p, Reordered, fmt.Sprintf("the line with seq %d stands before seq %d: it was moved here from later in the chain", cur.Seq, v.expect))
			return
		}
		v.fail(p, Inserted, fmt.Sprintf("the line claims seq %d but has no valid link", cur.Seq))
	default:
		if at, found := v.findSeq(v.expect); found {
			v.fail(p, Reordered, fmt.Sprintf("the line with seq %d, expected here, stands later at %s:%d", v.expect, at.file, at.line))
			return
		}
		n := cur.Seq - v.expect
		what := fmt.Sprintf("%d lines (seq %d to %d) are", n, v.expect, cur.Seq-1)
		if n == 1 {
			what = fmt.Sprintf("1 line (seq %d) is", v.expect)
		}
		if p.line == 1 {
			v.fail(p, Removed, what+" missing before the first line of this file (a file of the set, or the end of the previous one, is missing)")
			return
		}
		v.fail(p, Removed, what+" missing before this line")
	}
}

// belongsLater walks the chain on from nxt (which continues the running
// link) to the line with seq cur.Seq-1 and reports whether cur follows it.
func (v *verification) belongsLater(cur, nxt *Line, _ position) bool {
	prev := nxt.Link[:]
	seq := nxt.Seq
	for seq+1 < cur.Seq {
		line, _, ok := v.cur.next()
		if !ok {
			return false
		}
		l, parsed := ParseLine(line)
		if !parsed {
			continue // a line cut short, or something else; keep looking
		}
		if l.Seq != seq+1 || v.checkAny(prev, &l) < 0 {
			return false
		}
		prev, seq = append([]byte(nil), l.Link[:]...), l.Seq
	}
	return v.checkAny(prev, cur) >= 0
}

// findSeq reads on to the line with seq s.
func (v *verification) findSeq(s uint64) (position, bool) {
	for {
		line, p, ok := v.cur.next()
		if !ok {
			return position{}, false
		}
		if l, parsed := ParseLine(line); parsed && l.Seq == s {
			return p, true
		}
	}
}

type position struct {
	file string
	line int
}

// orderedFile is a file with the seq of its first chained line.
type orderedFile struct {
	name     string
	firstSeq uint64
	chained  bool
}

// orderFiles sorts files by the seq of their first chained line; files
// without a chained line come first (so the verifier reports them), empty
// files are left out.
func orderFiles(names []string) (ordered []orderedFile, empty []string, err error) {
	for _, name := range names {
		r, err := Open(name)
		if err != nil {
			return nil, nil, err
		}
		of := orderedFile{name: name}
		lines := 0
		for lines < 1000 {
			line, ok := r.Next()
			if !ok {
				break
			}
			lines++
			if l, parsed := ParseLine(line); parsed {
				of.firstSeq, of.chained = l.Seq, true
				break
			}
		}
		err = r.Err()
		r.Close()
		if err != nil {
			return nil, nil, err
		}
		if lines == 0 {
			empty = append(empty, name)
			continue
		}
		ordered = append(ordered, of)
	}
	sort.SliceStable(ordered, func(i, j int) bool {
		a, b := ordered[i], ordered[j]
		if a.chained != b.chained {
			return !a.chained
		}
		return a.firstSeq < b.firstSeq
	})
	return ordered, empty, nil
}

// lineSource hands the verifier its lines in the order to verify.
type lineSource interface {
	// next returns the next line (valid until the following call) and
	// where it stands in its file.
	next() ([]byte, position, bool)
	// pos is where the line next returned last stands.
	pos() position
	error() error
	close()
}

// memLines is every line of a set, held in memory in seq order.
type memLines struct {
	lines []memLine
	i     int
}

type memLine struct {
	line []byte
	at   position
	seq  uint64
}

// sortedBySeq reads every line of files and orders them by seq; a line
// without a link takes the seq of the line before it in its file, so it
// stays after that line.
func sortedBySeq(files []orderedFile) (*memLines, error) {
	m := &memLines{}
	c := &cursor{files: files}
	defer c.close()
	var prev uint64
	lastFile := ""
	for {
		line, at, ok := c.next()
		if !ok {
			break
		}
		if at.file != lastFile {
			prev, lastFile = 0, at.file
		}
		seq := prev
		if l, parsed := ParseLine(line); parsed {
			seq = l.Seq
		}
		prev = seq
		m.lines = append(m.lines, memLine{line: append([]byte(nil), line...), at: at, seq: seq})
	}
	if c.err != nil {
		return nil, c.err
	}
	sort.SliceStable(m.lines, func(i, j int) bool { return m.lines[i].seq < m.lines[j].seq })
	return m, nil
}

func (m *memLines) next() ([]byte, position, bool) {
	if m.i >= len(m.lines) {
		return nil, position{}, false
	}
	m.i++
	l := m.lines[m.i-1]
	return l.line, l.at, true
}

func (m *memLines) pos() position {
	if m.i == 0 {
		return position{}
	}
	return m.lines[m.i-1].at
}

func (m *memLines) error() error { return nil }
func (m *memLines) close()       {}

// cursor reads the lines of the ordered files one after the other.
type cursor struct {
	files []orderedFile
	i     int
	r     *Reader
	at    position
	err   error
}

func (c *cursor) next() ([]byte, position, bool) {
	for c.err == nil && c.i < len(c.files) {
		if c.r == nil {
			r, err := Open(c.files[c.i].name)
			if err != nil {
				c.err = err
				return nil, position{}, false
			}
			c.r = r
		}
		if line, ok := c.r.Next(); ok {
			c.at = position{file: c.r.Name(), line: c.r.Line()}
			return line, c.at, true
		}
		c.err = c.r.Err()
		c.r.Close()
		c.r = nil
		c.i++
	}
	return nil, position{}, false
}

func (c *cursor) pos() position { return c.at }

func (c *cursor) error() error { return c.err }

func (c *cursor) close() {
	if c.r != nil {
		c.r.Close()
	}
}

// HexLink formats a link for people.
func HexLink(b []byte) string { return hex.EncodeToString(b) }
