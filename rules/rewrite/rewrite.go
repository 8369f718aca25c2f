package rewrite

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"
	"unsafe"

	"github.com/tidwall/gjson"
)

// frame modes.
const (
	modeNone uint8 = iota // nothing to match below
	modeDoc               // on the way to the records
	modeRec               // inside a record
	modeAns               // off the records path, on an answer rule's path
	modeHit               // a value an answer rule treats
)

// frame is one open container.
type frame struct {
	arr     bool
	mode    uint8
	recArr  bool  // the array of records
	recRoot bool  // a record
	state   int32 // modeRec: automaton state of this container; modeDoc, modeAns: answer trie node (-1 none)
	docPos  int32 // modeDoc: records path segments matched to reach it
	n       int   // children seen so far

	// the container as a node of its parent (modeRec)
	isNode    bool
	hit       bool // an answer rule treats the container when it closes
	nodeEdit  int32
	nodeState int32
	nodeStart int

	// its children (modeRec)
	lastChild int32 // edit of the previous child, -1 when it had none
	allEdits  bool  // every child so far had an edit
	lastComma int

	// the records array (kept, skipComma also for modeDoc, modeAns objects)
	kept        int
	lastKeptEnd int
	skipComma   bool
}

// edit is a change a record may get, decided when the record is complete.
type edit struct {
	start     int32 // the member's key (or the element's value)
	vstart    int32
	end       int32 // after the value
	prevComma int32 // the comma before the member, -1 for the first child
	nextComma int32 // the comma after, -1 for the last child
	prevSib   int32
	state     int32
	drop      bool
	removed   bool
	effFirst  bool
	esc       bool // a string value with escapes
}

// capture is a value read for predicates.
type capture struct {
	start, end int
	n          uint8 // 0 absent, 1 one value, 2 several different values
	esc        bool  // a string with escapes
}

// rewriter is the state of one Rewrite call.
type rewriter struct {
	p   *Plan
	c   *compiled
	dfa []dstate
	doc []byte
	ds  string // doc as a string, shared memory (doc is not changed)
	out []byte

	flushed int
	frames  []frame
	edits   []edit
	caps    []capture
	res     []gjson.Result
	resOK   []bool
	when    []int8

	recStart, recEnd, recIndex int
	indexBase                  int  // the index of the document's first record (streams)
	ambiguous                  bool // a key in Plan.Keys has different values
	rec                        Record

	recordsIn, recordsOut, evalErrors int
	found                             int
	changed                           bool
	fieldCount                        []int
	dropCount                         int
	idBuf                             []byte
	idEnds                            []int

	pendingEdit int32

	// the answer value being read in modeHit (at most one at a time)
	hitField                  int32
	hitKey, hitKept, hitComma int
	ansCount                  []int

	preds *[256]keyPred // keys met in record objects, by place
	gen   int32         // this call's mark on preds (kept with the rewriter)

	scratch, scratch2, sum []byte
	mac                    *mac
}

// rewrite is Plan.Rewrite.
func (p *Plan) rewrite(dst, doc []byte, st *Stats) ([]byte, error) {
	if len(doc) >= math.MaxInt32 {
		return dst, fmt.Errorf("rewrite: a document of %d bytes is too large", len(doc))
	}
	c := p.c
	if c == nil {
		var err error
		if c, err = p.build(); err != nil {
			return dst, err
		}
	}
	return p.rewriteWith(c, dst, doc, 0, st)
}

// rewriteWith is rewrite with the compiled form c; the records are numbered
// (Record.Index) from base.
func (p *Plan) rewriteWith(c *compiled, dst, doc []byte, base int, st *Stats) ([]byte, error) {
	orig := len(dst)
	if cap(dst)-len(dst) < len(doc) {
		nd := make([]byte, len(dst), len(dst)+len(doc)+len(doc)/8)
		copy(nd, dst)
		dst = nd
	}
	rw := getRewriter(p, c, doc, dst)
	defer putRewriter(rw)
	rw.indexBase = base
	err := rw.run()
	if err == nil && rw.found == 0 {
		err = ErrNoRecords
	}
	if st != nil {
		st.RecordsIn += rw.recordsIn
		st.RecordsOut += rw.recordsOut
		st.EvalErrors += rw.evalErrors
		if err == ErrNotVisible {
			st.NotVisible = true
		}
	}
	if err != nil {
		return rw.out[:orig], err
	}
	if st != nil {
		if rw.changed {
			st.Changed = true
		}
		if len(rw.idEnds) > 0 {
			st.IDs = slices.Grow(st.IDs, len(rw.idEnds))
			all := string(rw.idBuf)
			from := 0
			for _, e := range rw.idEnds {
				st.IDs = append(st.IDs, all[from:e])
				from = e
			}
		}
		for i, n := range rw.fieldCount {
			if n > 0 {
				if st.Fields == nil {
					st.Fields = map[string]int{}
				}
				st.Fields[c.fieldKeys[i]] += n
			}
		}
		for i, n := range rw.ansCount {
			if n > 0 {
				if st.Fields == nil {
					st.Fields = map[string]int{}
				}
				st.Fields[c.ansKeys[i]] += n
			}
		}
		if rw.dropCount > 0 {
			if st.Fields == nil {
				st.Fields = map[string]int{}
			}
			st.Fields[c.dropKey] += rw.dropCount
		}
	}
	return rw.out, nil
}

// rewriters keeps the per-call state (and its buffers) between calls.
var rewriters = sync.Pool{New: func() any { return new(rewriter) }}

// getRewriter prepares a rewriter for one call, reusing pooled buffers.
func getRewriter(p *Plan, c *compiled, doc, dst []byte) *rewriter {
	rw := rewriters.Get().(*rewriter)
	// preds stay: they count only with this call's gen
	preds, gen := rw.preds, rw.gen+1
	if preds == nil {
		preds = new([256]keyPred)
	}
	if gen <= 0 {
		gen = 1
		clear(preds[:])
	}
	frames, edits, caps, res, resOK, when, counts, ansCounts := rw.frames[:0], rw.edits[:0], rw.caps, rw.res, rw.resOK, rw.when, rw.fieldCount, rw.ansCount
	idBuf, idEnds, scratch, scratch2, sum := rw.idBuf[:0], rw.idEnds[:0], rw.scratch[:0], rw.scratch2[:0], rw.sum[:0]
	*rw = rewriter{p: p, c: c, dfa: c.dfa, doc: doc, out: dst,
		frames: frames, edits: edits, idBuf: idBuf, idEnds: idEnds, scratch: scratch, scratch2: scratch2, sum: sum}
	if len(doc) > 0 {
		rw.ds = unsafe.String(unsafe.SliceData(doc), len(doc))
	}
	rw.rec.rw = rw
	rw.preds, rw.gen = preds, gen
	nslots := c.nkeys
	if c.auditSlot >= 0 {
		nslots++
	}
	rw.caps = resize(caps, nslots)
	rw.res = resize(res, c.nkeys)
	rw.resOK = resize(resOK, c.nkeys)
	rw.when = resize(when, len(p.Fields))
	rw.fieldCount = resize(counts, len(p.Fields))
	rw.ansCount = resize(ansCounts, len(p.Answer))
	return rw
}

// resize returns s with n zero elements, reusing its memory when it can.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// putRewriter drops the references to the call's data and pools rw.
func putRewriter(rw *rewriter) {
	if rw.mac != nil {
		rw.c.putMac(rw.mac)
	}
	clear(rw.res)
	if cap(rw.frames) > 1<<12 || cap(rw.edits) > 1<<12 || cap(rw.idBuf) > 1<<20 {
		return // a very deep or large document: let its buffers go
	}
	rw.p, rw.c, rw.dfa, rw.doc, rw.ds, rw.out, rw.mac = nil, nil, nil, nil, "", nil, nil
	rw.rec.rw = nil
	rewriters.Put(rw)
}

// emit copies the document up to offset to.
func (rw *rewriter) emit(to int) {
	keep(&rw.out, append(rw.out, rw.doc[rw.flushed:to]...))
	rw.flushed = to
}

// keep sets *p to b, which is *p appended to. When b still uses *p's memory
// (there was room) only the length is stored (the compiler leaves the
// pointer alone in p = p[:n]): storing the pointer again costs a write
// barrier while the collector runs, as the rewriter lives on the heap, and
// the scan appends several times per record. Comparing the two pointers
// reads no memory.
func keep[T any](p *[]T, b []T) {
	if cap(b) == cap(*p) && unsafe.SliceData(b) == unsafe.SliceData(*p) {
		*p = (*p)[:len(b)]
	} else {
		*p = b
	}
}

// child is the context of the value about to be read.
type child struct {
	keyStart int
	mode     uint8
	state    int32
	docPos   int32
}

// run scans the whole document once, without recursion: a value starts
// at the top of the loop, and the inner loop closes containers and moves to
// the next member or element.
func (rw *rewriter) run() error {
	doc := rw.doc
	c := rw.c
	i := skipWS(doc, 0)
	ch := child{keyStart: i, mode: modeDoc, state: -1}
	if len(c.ans) > 0 {
		ch.state = 0
	}
	for {
		// A value starts at i.
		if i >= len(doc) {
			return syntaxError(i, "unexpected end of input, a value was expected")
		}
		vstart := i
		b := doc[i]
		var parent *frame
		if len(rw.frames) > 0 {
			parent = &rw.frames[len(rw.frames)-1]
		}
		recRoot := false
		// Where the value sits: a record, the records, or a node in a record.
		switch ch.mode {
		case modeDoc:
			if int(ch.docPos) == len(c.recSegs) {
				rw.found++
				if rw.p.Single {
					if b != '{' {
						return fmt.Errorf("rewrite: the record at %q is not an object", rw.p.Records.String())
					}
					recRoot = true
				} else if b != '[' && b != 'n' {
					return fmt.Errorf("rewrite: the records at %q are not an array", rw.p.Records.String())
				}
			}
		case modeRec:
			if parent != nil && parent.recArr {
				if b != '{' {
					return fmt.Errorf("rewrite: record %d at byte %d is not an object", parent.n, i)
				}
				parent.n++
				recRoot = true
			} else if rw.dfa[ch.state].touch {
				rw.nodeStart(parent, &ch, vstart)
			} else {
				// nothing can change this node: only the sibling facts
				rw.pendingEdit = -1
				parent.allEdits = false
				parent.lastChild = -1
				parent.n++
			}
		}
		if recRoot {
			rw.recordsIn++
			rw.startRecord(vstart, parent)
			ch = child{mode: modeRec, state: c.root}
		}
		switch b {
		case '{', '[':
			if len(rw.frames) >= c.maxDepth {
				return fmt.Errorf("rewrite: nesting deeper than %d levels at byte %d", c.maxDepth, i)
			}
			k := len(rw.frames)
			if k < cap(rw.frames) {
				rw.frames = rw.frames[:k+1]
			} else {
				rw.frames = append(rw.frames, frame{})
			}
			f := &rw.frames[k]
			// zeroed, then set field by field, not as one literal: a
			// literal is built on the stack with narrow stores and copied
			// with wide loads, a store forwarding stall per container
			*f = frame{}
			f.arr, f.mode, f.recRoot = b == '[', ch.mode, recRoot
			f.state, f.docPos = ch.state, ch.docPos
			f.nodeEdit, f.nodeState, f.nodeStart = -1, ch.state, vstart
			f.lastChild, f.allEdits = -1, true
			if ch.mode == modeHit {
				f.mode, f.hit = modeNone, true
			}
			if ch.mode == modeRec && !recRoot {
				f.isNode = true
				f.nodeEdit = rw.pendingEdit
				if c.dfa[ch.state].dead {
					f.mode = modeNone
				}
			}
			if ch.mode == modeDoc {
				if int(ch.docPos) == len(c.recSegs) {
					if !recRoot {
						f.recArr = true
						f.mode = modeRec
					}
				}
			}
			if recRoot {
				f.mode = modeRec
			}
			i = skipWS(doc, i+1)
			if i >= len(doc) {
				return syntaxError(i, "unexpected end of input in a container")
			}
			if (b == '{' && doc[i] == '}') || (b == '[' && doc[i] == ']') {
				// empty container: fall to the close below
			} else {
				var err error
				at := atKey
				if f.mode == modeRec && !f.arr {
					if i, at, err = rw.members(f, i, &ch); err != nil {
						return err
					}
				}
				if at == atKey {
					if i, err = rw.beginChild(i, &ch); err != nil {
						return err
					}
				}
				if at != afterValue {
					continue
				}
				// the object's members were read: on to its end
			}
		case '"':
			end, esc, err := scanString(doc, i)
			if err != nil {
				return err
			}
			i = end
			if ch.mode == modeRec && (rw.pendingEdit >= 0 || rw.dfa[ch.state].hasCaps) {
				rw.nodeEnd(&ch, vstart, i, esc)
			} else if ch.mode == modeHit {
				rw.hit(parent, vstart, i)
			}
		case 't', 'f', 'n':
			end, err := scanLiteral(doc, i)
			if err != nil {
				return err
			}
			i = end
			rw.nodeEnd(&ch, vstart, i, false)
			if ch.mode == modeHit {
				rw.hit(parent, vstart, i)
			}
		default:
			if b != '-' && (b < '0' || b > '9') {
				return syntaxError(i, fmt.Sprintf("unexpected %q, a value was expected", b))
			}
			end, err := scanNumber(doc, i)
			if err != nil {
				return err
			}
			i = end
			rw.nodeEnd(&ch, vstart, i, false)
			if ch.mode == modeHit {
				rw.hit(parent, vstart, i)
			}
		}
		// After a value: close containers or go on with the next child.
		for {
			if len(rw.frames) == 0 {
				i = skipWS(doc, i)
				if i != len(doc) {
					return syntaxError(i, "data after the end of the document")
				}
				rw.emit(len(doc))
				return nil
			}
			f := &rw.frames[len(rw.frames)-1]
			i = skipWS(doc, i)
			if i >= len(doc) {
				return syntaxError(i, "unexpected end of input in a container")
			}
			b := doc[i]
			if b == ',' {
				if f.mode == modeRec {
					if f.recArr {
						if f.skipComma {
							rw.emit(i)
							rw.flushed = i + 1
							f.skipComma = false
						}
					} else {
						if f.lastChild >= 0 {
							rw.edits[f.lastChild].nextComma = int32(i)
						}
						f.lastComma = i
					}
				} else if f.mode == modeDoc || f.mode == modeAns {
					if f.skipComma {
						// the first member was removed: drop this comma
						// and the spacing after it
						rw.emit(i)
						rw.flushed = skipWS(doc, i+1)
						f.skipComma = false
					}
					f.lastComma = i
				}
				i = skipWS(doc, i+1)
				if i >= len(doc) {
					return syntaxError(i, "unexpected end of input after a comma")
				}
				var err error
				if f.mode == modeRec && !f.arr {
					var at uint8
					if i, at, err = rw.members(f, i, &ch); err != nil {
						return err
					}
					if at == afterValue {
						continue // at the object's end (or what stands there)
					}
					if at == atValue {
						break
					}
				}
				if f.recArr {
					// the next record: all beginChild does for it
					ch.keyStart, ch.mode = i, modeRec
					break
				}
				if i, err = rw.beginChild(i, &ch); err != nil {
					return err
				}
				break
			}
			if (f.arr && b != ']') || (!f.arr && b != '}') {
				if f.arr {
					return syntaxError(i, fmt.Sprintf("unexpected %q in an array", b))
				}
				return syntaxError(i, fmt.Sprintf("unexpected %q in an object", b))
			}
			i++
			closed := f // stays valid: nothing is pushed before it is read
			rw.frames = rw.frames[:len(rw.frames)-1]
			if closed.recRoot {
				rw.recEnd = i
				if err := rw.finishRecord(); err != nil {
					return err
				}
				continue
			}
			if closed.hit {
				rw.hit(&rw.frames[len(rw.frames)-1], closed.nodeStart, i)
				continue
			}
			if closed.isNode {
				if closed.nodeEdit >= 0 {
					rw.edits[closed.nodeEdit].end = int32(i)
				}
				if ds := &c.dfa[closed.nodeState]; len(ds.caps) > 0 {
					rw.capture(ds.caps, closed.nodeStart, i, false)
				}
			}
		}
	}
}

// beginChild reads the key of the next member (objects) and sets ch for the
// value that follows; i is at the member's first byte.
func (rw *rewriter) beginChild(i int, ch *child) (int, error) {
	doc := rw.doc
	f := &rw.frames[len(rw.frames)-1]
	ch.keyStart = i
	ch.mode = f.mode
	if f.arr {
		switch f.mode {
		case modeDoc, modeAns:
			rec := false
			if f.mode == modeDoc {
				if sg := rw.c.recSegs[f.docPos]; sg.idx == f.n {
					ch.docPos, rec = f.docPos+1, true
				}
			}
			ch.state = rw.c.ansArr(f.state, f.n)
			rw.docChild(f, ch, rec)
			f.n++
		case modeRec:
			if !f.recArr {
				ch.state = rw.dfa[f.state].arrChild(f.n)
			}
		}
		return i, nil
	}
	if doc[i] != '"' {
		return 0, syntaxError(i, fmt.Sprintf("unexpected %q, a key was expected", doc[i]))
	}
	end, esc, err := scanString(doc, i)
	if err != nil {
		return 0, err
	}
	if f.mode != modeNone {
		var key string
		if esc {
			rw.scratch = decodeString(rw.scratch[:0], doc[i:end])
			key = unsafe.String(unsafe.SliceData(rw.scratch), len(rw.scratch))
		} else {
			key = rw.ds[i+1 : end-1]
		}
		switch f.mode {
		case modeDoc, modeAns:
			rec := f.mode == modeDoc && rw.c.recSegs[f.docPos].key == key
			if rec {
				ch.docPos = f.docPos + 1
			}
			ch.state = rw.c.ansObj(f.state, key)
			rw.docChild(f, ch, rec)
		case modeRec:
			ch.state = rw.dfa[f.state].objChild(key)
			// members did not predict this key: keep it for the next
			// record (members is the only reader)
			if tag := rw.predTag(f); !esc && tag != 0 {
				kp := rw.predSlot(f)
				n := end - (i + 1) // the key and its closing quote
				kp.colon = end < len(doc) && doc[end] == ':'
				if kp.colon {
					n++ // and the colon right after it
				}
				kp.tag, kp.start, kp.len, kp.to = tag, int32(i+1), int32(n), ch.state
				kp.m0, kp.m1 = byteMask(n), byteMask(n-8)
			}
		}
	}
	return rw.afterKey(end)
}

// Where members stops reading.
const (
	atKey      uint8 = iota // at a member's key, for beginChild
	atValue                 // at a member's value (ch is set), for the top of run
	afterValue              // after the last value it read, for the close loop
)

// members is the fast path for the members of a record object f (mode
// modeRec), from i, the first byte of a member: while each key is the one
// predicted at its place and its value is a string, number, true, false or
// null, it reads the member whole, doing what beginChild, the top of run and
// the close loop would do for it, without going round run's loop. It stops
// at a key it cannot predict (atKey), before a value that is a container or
// not a value (atValue, with ch set as beginChild sets it), or after a value
// not followed by a comma (afterValue). Errors are the ones run would give.
//
// The steps run calls functions for (the key's check, the colon, a plain
// string, the end of a node) are written out here: this loop runs once per
// member of every record, and each call costs the spilling of its state.
func (rw *rewriter) members(f *frame, i int, ch *child) (int, uint8, error) {
	doc := rw.doc
	for {
		// The key: the one met at this place in an earlier record? (see
		// predSlot; a miss goes to beginChild, which keeps this one.)
		kp := rw.predSlot(f)
		tag := rw.predTag(f)
		if doc[i] != '"' || kp.tag != tag || tag == 0 { // i < len(doc): every caller checked it
			return i, atKey, nil
		}
		// compare the key, its closing quote and (kp.colon) the colon
		a, pb, n := i+1, int(kp.start), int(kp.len)
		if n <= 16 && a+16 <= len(doc) {
			// pb < a (the key was met earlier in doc), so pb+16 fits
			// too; one bounds check per 16-byte window
			p, q := doc[a:a+16], doc[pb:pb+16]
			x := binary.LittleEndian.Uint64(p) ^ binary.LittleEndian.Uint64(q)
			y := binary.LittleEndian.Uint64(p[8:]) ^ binary.LittleEndian.Uint64(q[8:])
			if x&kp.m0|y&kp.m1 != 0 {
				return i, atKey, nil
			}
		} else if a+n > len(doc) || rw.ds[a:a+n] != rw.ds[pb:pb+n] {
			return i, atKey, nil
		}
		ch.keyStart, ch.mode, ch.state = i, modeRec, kp.to
		i0 := i
		i = a + n
		if !kp.colon {
			var err error
			if i, err = rw.afterKey(i); err != nil {
				return 0, 0, err
			}
		} else if i < len(doc) && ws[doc[i]] {
			i = skipWS(doc, i)
		}
		if i >= len(doc) {
			return i, atValue, nil
		}
		// The value.
		vstart := i
		b := doc[i]
		switch {
		case b == '"', b == 't', b == 'f', b == 'n', b == '-', b >= '0' && b <= '9':
		default:
			return i, atValue, nil // a container, or an error for run to give
		}
		ds := &rw.dfa[kp.to]
		if ds.touch {
			// nodeStart for a scalar: touch means a drop, a partial
			// (which drops a scalar) or field rules, so always an edit
			rw.pushEdit(f, i0, vstart, kp.to, ds.drop || ds.partial)
			f.n++
		} else {
			// nothing can change this node: only the sibling facts
			rw.pendingEdit = -1
			f.allEdits = false
			f.lastChild = -1
			f.n++
		}
		esc := false
		switch b {
		case '"':
			// scanString's first step: plain ASCII up to the quote
			j := i + 1
			for j+8 <= len(doc) {
				m := stopMask(binary.LittleEndian.Uint64(doc[j:]))
				if m == 0 {
					j += 8
					continue
				}
				j += bits.TrailingZeros64(m) >> 3
				break
			}
			// j is at the first byte stopMask flags, or at a byte not
			// looked at (fewer than 8 left): every byte before j is plain
			if j < len(doc) && doc[j] == '"' {
				i = j + 1
			} else {
				end, e, err := scanString(doc, i)
				if err != nil {
					return 0, 0, err
				}
				i, esc = end, e
			}
		case 't', 'f', 'n':
			end, err := scanLiteral(doc, i)
			if err != nil {
				return 0, 0, err
			}
			i = end
		default:
			end, err := scanNumber(doc, i)
			if err != nil {
				return 0, 0, err
			}
			i = end
		}
		// nodeEnd
		if rw.pendingEdit >= 0 {
			e := &rw.edits[rw.pendingEdit]
			e.end, e.esc = int32(i), esc
			rw.pendingEdit = -1
		}
		if ds.hasCaps {
			rw.capture(ds.caps, vstart, i, esc)
		}
		// After the value: a comma and the next member, or stop. (The
		// byte expected is tested first; spacing is the exception.)
		if i >= len(doc) || doc[i] != ',' {
			if i = skipWS(doc, i); i >= len(doc) || doc[i] != ',' {
				return i, afterValue, nil
			}
		}
		if f.lastChild >= 0 {
			rw.edits[f.lastChild].nextComma = int32(i)
		}
		f.lastComma = i
		i++
		if i >= len(doc) || doc[i] != '"' {
			if i = skipWS(doc, i); i >= len(doc) {
				return 0, 0, syntaxError(i, "unexpected end of input after a comma")
			}
		}
	}
}

// The records of a list repeat their keys in the same order: a key
// byte-equal to the one met at the same place before (checked then, without
// escapes) is the same valid key and leads to the same state. rw.preds keeps
// the last key met at each place, hashed by place; a slot's tag says which
// place (and call) it holds.

// predSlot is the slot of rw.preds for the next member of f.
func (rw *rewriter) predSlot(f *frame) *keyPred {
	return &rw.preds[(uint(f.state)*61+uint(f.n))%uint(len(rw.preds))]
}

// predTag names the place of the next member of f in this call: the call's
// gen (≥ 1), the object's state (< maxStates ≤ 1<<12) and the member's
// index, in one word so that a slot is checked with one comparison. A place
// that does not fit (an index from 1<<20 on) has tag 0: never predicted.
func (rw *rewriter) predTag(f *frame) uint64 {
	if uint(f.n) >= 1<<20 {
		return 0
	}
	return uint64(uint32(rw.gen))<<32 | uint64(uint32(f.state))<<20 | uint64(f.n)
}

// predTag needs the automaton's states to fit in 12 bits.
const _ = uint(1<<12 - maxStates)

// keyPred is a key met in a record object: its place (tag), its bytes in the
// document (from after its opening quote to its closing quote, or to the
// colon when that comes right after), and its state.
type keyPred struct {
	tag            uint64
	start, len, to int32  // len: the bytes compared
	colon          bool   // they end with the colon after the key
	m0, m1         uint64 // the bytes compared, in two words
}

// byteMask has the low n bytes set (0 ≤ n ≤ 8; all for more, none for less).
func byteMask(n int) uint64 {
	switch {
	case n <= 0:
		return 0
	case n >= 8:
		return ^uint64(0)
	}
	return 1<<(8*n) - 1
}

// afterKey reads the colon after a key that ends before i.
func (rw *rewriter) afterKey(i int) (int, error) {
	doc := rw.doc
	if i < len(doc) && doc[i] != ':' {
		i = skipWS(doc, i)
	}
	if i >= len(doc) || doc[i] != ':' {
		return 0, syntaxError(i, "a colon was expected after the key")
	}
	i++
	if i < len(doc) && ws[doc[i]] {
		i = skipWS(doc, i)
	}
	return i, nil
}
