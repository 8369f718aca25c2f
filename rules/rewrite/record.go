package rewrite

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"unsafe"

	"github.com/tidwall/gjson"
)

// nodeStart notes a value inside a record that a rule may change.
func (rw *rewriter) nodeStart(f *frame, ch *child, vstart int) {
	rw.pendingEdit = -1
	if f == nil || f.mode != modeRec {
		return
	}
	ds := &rw.dfa[ch.state]
	if !ds.touch {
		f.allEdits = false
		f.lastChild = -1
		f.n++
		return
	}
	b := rw.doc[vstart]
	drop := ds.drop || (ds.partial && b != '{' && b != '[')
	if drop || len(ds.fields) > 0 {
		rw.pushEdit(f, ch.keyStart, vstart, ch.state, drop)
	} else {
		f.allEdits = false
		f.lastChild = -1
	}
	f.n++
}

// pushEdit adds the edit of the node at [start, vstart...) in state as the
// next child of f (which nodeStart counts after) and makes it pending.
func (rw *rewriter) pushEdit(f *frame, start, vstart int, state int32, drop bool) {
	k := len(rw.edits)
	if k < cap(rw.edits) {
		rw.edits = rw.edits[:k+1]
	} else {
		rw.edits = append(rw.edits, edit{})
	}
	e := &rw.edits[k]
	// Every field is stored on its own: a composite literal is built on
	// the stack with narrow stores and copied with wide loads, which
	// stalls (store forwarding fails) once per edit.
	prevSib, prevComma := int32(-1), int32(-1)
	switch {
	case f.n == 0:
	case f.allEdits:
		prevSib, prevComma = f.lastChild, int32(f.lastComma)
	default:
		prevSib, prevComma = -2, int32(f.lastComma)
	}
	e.start, e.vstart, e.end = int32(start), int32(vstart), -1
	e.prevComma, e.nextComma, e.prevSib = prevComma, -1, prevSib
	e.state = state
	e.drop, e.removed, e.effFirst, e.esc = drop, false, false, false
	rw.pendingEdit = int32(k)
	f.lastChild = rw.pendingEdit
}

// nodeEnd completes a scalar value inside a record.
func (rw *rewriter) nodeEnd(ch *child, vstart, end int, esc bool) {
	if ch.mode != modeRec {
		return
	}
	if rw.pendingEdit >= 0 {
		e := &rw.edits[rw.pendingEdit]
		e.end, e.esc = int32(end), esc
		rw.pendingEdit = -1
	}
	if ds := &rw.dfa[ch.state]; ds.hasCaps {
		rw.capture(ds.caps, vstart, end, esc)
	}
}

// errAmbiguous stands for a condition read on a record with an ambiguous key.
var errAmbiguous = errors.New("rewrite: a key the conditions read appears twice with different values")

// capture records the value [start, end) for the capture slots.
func (rw *rewriter) capture(slots []int32, start, end int, esc bool) {
	for _, s := range slots {
		cp := &rw.caps[s]
		switch cp.n {
		case 0:
			cp.start, cp.end, cp.n, cp.esc = start, end, 1, esc
		case 1:
			if !bytes.Equal(rw.doc[cp.start:cp.end], rw.doc[start:end]) {
				cp.n = 2
				if int(s) < rw.c.nkeys { // a key of Plan.Keys, not the audit id
					rw.ambiguous = true
				}
			}
		}
	}
}

// startRecord resets the per-record state.
func (rw *rewriter) startRecord(start int, parent *frame) {
	rw.recStart = start
	rw.recIndex = 0
	if parent != nil && parent.recArr {
		rw.recIndex = rw.indexBase + parent.n - 1
	}
	rw.edits = rw.edits[:0]
	rw.pendingEdit = -1
	rw.ambiguous = false // capture sets it
	for k := range rw.caps {
		rw.caps[k] = capture{}
	}
	for k := range rw.resOK {
		rw.resOK[k] = false
	}
	for k := range rw.when {
		rw.when[k] = 0
	}
}

// finishRecord decides whether the record just closed is visible and writes
// it (or drops it).
func (rw *rewriter) finishRecord() error {
	visible := true
	if rw.p.Visible != nil && rw.ambiguous {
		rw.evalErrors++
		visible = false
	} else if rw.p.Visible != nil {
		ok, err := rw.p.Visible(&rw.rec)
		if err != nil {
			rw.evalErrors++
			ok = false
		}
		visible = ok
	}
	var arr *frame
	if len(rw.frames) > 0 && rw.frames[len(rw.frames)-1].recArr {
		arr = &rw.frames[len(rw.frames)-1]
	}
	if !visible {
		rw.changed = true
		if arr == nil {
			return ErrNotVisible
		}
		if arr.kept == 0 {
			rw.emit(rw.recStart)
			rw.flushed = rw.recEnd
			arr.skipComma = true
		} else {
			// drop from the end of the last kept record: the comma, the
			// space and any hidden records before this one
			if rw.flushed < arr.lastKeptEnd {
				rw.emit(arr.lastKeptEnd)
			}
			rw.flushed = rw.recEnd
		}
		return nil
	}
	rw.recordsOut++
	if arr != nil {
		arr.kept++
		arr.lastKeptEnd = rw.recEnd
	}
	if s := rw.c.auditSlot; s >= 0 && rw.caps[s].n > 0 {
		raw := rw.doc[rw.caps[s].start:rw.caps[s].end]
		if raw[0] == '"' {
			keep(&rw.idBuf, decodeString(rw.idBuf, raw))
		} else {
			keep(&rw.idBuf, append(rw.idBuf, raw...))
		}
		keep(&rw.idEnds, append(rw.idEnds, len(rw.idBuf)))
	}
	return rw.apply()
}

// apply writes the visible record with its edits.
func (rw *rewriter) apply() error {
	skipUntil := -1
	for k := range rw.edits {
		e := &rw.edits[k]
		if int(e.start) < skipUntil {
			continue
		}
		var act Action
		var fi int32
		if fi = rw.c.first[e.state]; fi >= 0 && !e.drop {
			act = rw.c.actions[fi] // resolve's first case, without the call
		} else {
			act, fi = rw.resolve(e)
		}
		if act == 0 {
			continue
		}
		if act == Remove {
			first := e.prevSib == -1 || (e.prevSib >= 0 && rw.edits[e.prevSib].removed && rw.edits[e.prevSib].effFirst)
			e.removed, e.effFirst = true, first
			a, b := int(e.prevComma), int(e.end)
			if first {
				a = int(e.start)
				if e.nextComma >= 0 {
					b = int(e.nextComma) + 1
				}
			}
			rw.emit(a)
			rw.flushed = b
			skipUntil = b
		} else {
			v := rw.doc[e.vstart:e.end]
			if (act == Mask || act == Hash) && v[0] == 'n' {
				continue // null stays null
			}
			rw.emit(int(e.vstart))
			rw.writeValue(act, &rw.p.Fields[fi], v, !e.esc)
			rw.flushed = int(e.end)
			skipUntil = int(e.end)
		}
		rw.changed = true
		if e.drop {
			rw.dropCount++
		} else {
			rw.fieldCount[fi]++
		}
	}
	return nil
}

// resolve picks the action for an edit: expose's drop, else the strongest
// field rule whose condition holds (or fails).
func (rw *rewriter) resolve(e *edit) (Action, int32) {
	if e.drop {
		return Remove, -1
	}
	if fi := rw.c.first[e.state]; fi >= 0 {
		return rw.c.actions[fi], fi
	}
	for _, fi := range rw.dfa[e.state].fields {
		f := &rw.p.Fields[fi]
		if f.When == nil {
			return f.Action, fi
		}
		w := rw.when[fi]
		if w == 0 {
			ok, err := f.When(&rw.rec)
			if rw.ambiguous {
				err = errAmbiguous
			}
			if err != nil {
				rw.evalErrors++
				ok = true
			}
			w = 2
			if ok {
				w = 1
			}
			rw.when[fi] = w
		}
		if w == 1 {
			return f.Action, fi
		}
	}
	return 0, -1
}

// writeValue writes the new value for a mask, hash, null or replace;
// noEsc says that v is known to hold no escapes (the scan saw none).
func (rw *rewriter) writeValue(act Action, f *Field, v []byte, noEsc bool) {
	switch act {
	case Null:
		keep(&rw.out, append(rw.out, "null"...))
		return
	case Replace:
		keep(&rw.out, append(rw.out, f.Replace...))
		return
	}
	var text []byte
	switch v[0] {
	case '{', '[':
		keep(&rw.out, append(rw.out, "null"...)) // no text to mask or hash: fail closed
		return
	case '"':
		if !noEsc && bytes.IndexByte(v, '\\') >= 0 {
			keep(&rw.scratch, decodeString(rw.scratch[:0], v))
			text = rw.scratch
		} else {
			text = v[1 : len(v)-1]
		}
	default:
		text = v // numbers, true, false: their literal text
	}
	if act == Hash {
		if rw.mac == nil {
			rw.mac = rw.c.getMac()
		}
		keep(&rw.sum, rw.mac.sum(rw.sum[:0], text))
		keep(&rw.out, appendHexString(rw.out, rw.sum))
		return
	}
	s := unsafe.String(unsafe.SliceData(text), len(text))
	// The mask appends straight to the output, after the opening quote
	// (text is in doc or rw.scratch, never in rw.out). A mask seldom makes
	// a byte JSON must escape; when it does, the masked text is taken out
	// and written again, escaped.
	n := len(rw.out)
	out := f.Mask(append(rw.out, '"'), s)
	if plainJSON(out[n+1:]) {
		keep(&rw.out, append(out, '"'))
		return
	}
	keep(&rw.scratch2, append(rw.scratch2[:0], out[n+1:]...))
	keep(&rw.out, appendString(out[:n], rw.scratch2))
}

// hexPairs holds the two lower-case hex digits of each byte.
var hexPairs = func() (t [256][2]byte) {
	const digits = "0123456789abcdef"
	for i := range t {
		t[i] = [2]byte{digits[i>>4], digits[i&15]}
	}
	return t
}()

// appendHexString appends b in lower-case hex as a JSON string.
func appendHexString(dst, b []byte) []byte {
	n := len(dst)
	dst = slices.Grow(dst, 2*len(b)+2)[:n+2*len(b)+2]
	dst[n] = '"'
	o := dst[n+1 : n+1+2*len(b)]
	for k, c := range b {
		*(*[2]byte)(o[2*k:]) = hexPairs[c]
	}
	dst[len(dst)-1] = '"'
	return dst
}

// fill builds the result of Plan.Keys[i] for this record.
func (rw *rewriter) fill(i int) {
	rw.resOK[i] = true
	r := &rw.res[i]
	cp := &rw.caps[i]
	if cp.n != 1 {
		*r = gjson.Result{}
		return
	}
	raw := rw.ds[cp.start:cp.end]
	*r = gjson.Result{Raw: raw, Index: cp.start}
	switch raw[0] {
	case '"':
		r.Type = gjson.String
		if cp.esc {
			r.Str = string(decodeString(nil, rw.doc[cp.start:cp.end]))
		} else {
			r.Str = raw[1 : len(raw)-1]
		}
	case 't':
		r.Type = gjson.True
	case 'f':
		r.Type = gjson.False
	case 'n':
		r.Type = gjson.Null
	case '{', '[':
		r.Type = gjson.JSON
	default:
		r.Type = gjson.Number
		r.Num, _ = strconv.ParseFloat(raw, 64)
	}
}

// get reads a gjson path from the record.
func (rw *rewriter) get(path string) gjson.Result {
	return gjson.Get(rw.ds[rw.recStart:rw.recEnd], path)
}

// recordRaw returns the record's bytes.
func (rw *rewriter) recordRaw() []byte { return rw.doc[rw.recStart:rw.recEnd:rw.recEnd] }
