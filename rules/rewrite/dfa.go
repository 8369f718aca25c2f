package rewrite

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
)

// The record paths (fields, expose, keys, audit id) are compiled into one
// deterministic automaton over the keys and indexes met while walking down a
// record. Each state says what happens to a node reached in it (which rules
// end there, whether expose drops it) and where its children go, so the scan
// does one table step per key.

// pathKind is what a compiled record path is for.
type pathKind uint8

const (
	kField  pathKind = iota // a field rule
	kExpose                 // an expose entry
	kCap                    // a value captured for predicates (Keys, AuditID)
)

// npath is one record path in the automaton.
type npath struct {
	segs []seg
	kind pathKind
	idx  int32 // field index or capture slot
}

// nst is one position in one path.
type nst struct{ p, pos int32 }

// dstate is one automaton state: the node reached and where its children go.
type dstate struct {
	// touch: a rule may change the node (fields, drop, partial); hasCaps:
	// the node is captured. Checked for every node, so they come first.
	touch, hasCaps bool
	// bloom has bit keyHash(k) set for every literal key k: a key whose bit
	// is clear is no literal.
	bloom uint64

	// About the node.
	fields  []int32 // field rules that end here, strongest first
	caps    []int32 // capture slots that end here
	drop    bool    // expose removes the node
	partial bool    // expose keeps the node only with filtered children (a scalar is removed)
	dead    bool    // no rule can apply below: children need no lookups

	// Children of an object: the literal keys sorted by keyHash, byHash[h]
	// the first of hash h.
	lits   []lit
	byHash [65]uint8
	pats   []string // patterns at this level (at most maxPatterns)
	patT   []int32  // target per bit set of matching patterns; patT[0]: other keys

	// Children of an array.
	idxs   map[int]int32
	anyIdx int32
}

// lit is a literal key and the state it leads to.
type lit struct {
	key string
	to  int32
}

// maxPatterns bounds the wildcard keys live at one level; maxStates bounds the
// automaton.
const (
	maxPatterns = 8
	maxStates   = 4096
)

// builder builds the automaton.
type builder struct {
	paths  []npath
	states []dstate
	sets   [][]nst
	filt   []bool
	index  map[string]int32
	kbuf   []byte
	rank   func(f int32) int // strength order of fields
}

// descriptor is a state before it is interned.
type descriptor struct {
	set     []nst
	filter  bool
	fields  []int32
	caps    []int32
	drop    bool
	partial bool
}

func (d *descriptor) key(buf []byte) []byte {
	for _, n := range d.set {
		buf = binary.AppendUvarint(buf, uint64(n.p))
		buf = binary.AppendUvarint(buf, uint64(n.pos))
	}
	buf = append(buf, 0xff)
	for _, f := range d.fields {
		buf = binary.AppendUvarint(buf, uint64(f))
	}
	buf = append(buf, 0xff)
	for _, c := range d.caps {
		buf = binary.AppendUvarint(buf, uint64(c))
	}
	flags := byte(0)
	if d.filter {
		flags |= 1
	}
	if d.drop {
		flags |= 2
	}
	if d.partial {
		flags |= 4
	}
	return append(buf, 0xff, flags)
}

// add puts (p, pos) and its `**` closure into set.
func (b *builder) add(set []nst, p, pos int32) []nst {
	for {
		n := nst{p, pos}
		dup := false
		for _, h := range set {
			if h == n {
				dup = true
				break
			}
		}
		if !dup {
			set = append(set, n)
		}
		if b.paths[p].segs[pos].kind != segAny {
			return set
		}
		pos++
	}
}

// intern returns the id of the state d describes, creating it when new.
func (b *builder) intern(d *descriptor) (int32, error) {
	sort.Slice(d.set, func(i, j int) bool {
		if d.set[i].p != d.set[j].p {
			return d.set[i].p < d.set[j].p
		}
		return d.set[i].pos < d.set[j].pos
	})
	sort.Slice(d.fields, func(i, j int) bool { return b.rank(d.fields[i]) < b.rank(d.fields[j]) })
	sort.Slice(d.caps, func(i, j int) bool { return d.caps[i] < d.caps[j] })
	b.kbuf = d.key(b.kbuf[:0])
	if id, ok := b.index[string(b.kbuf)]; ok {
		return id, nil
	}
	k := string(b.kbuf)
	if len(b.states) >= maxStates {
		return 0, fmt.Errorf("rewrite: the record paths need more than %d matcher states; use fewer `**` and wildcards", maxStates)
	}
	id := int32(len(b.states))
	b.index[k] = id
	b.states = append(b.states, dstate{
		touch: d.drop || d.partial || len(d.fields) > 0, hasCaps: len(d.caps) > 0,
		fields: d.fields, caps: d.caps, drop: d.drop, partial: d.partial,
		dead: len(d.set) == 0 && !d.filter,
	})
	b.sets = append(b.sets, d.set)
	b.filt = append(b.filt, d.filter)
	return id, nil
}

// step computes the child reached from state s by a key or an index.
// match says whether a key or index segment accepts the child.
func (b *builder) step(s int32, isIdx bool, match func(sg seg) bool) *descriptor {
	d := &descriptor{}
	exposeEnded := false
	for _, n := range b.sets[s] {
		pth := &b.paths[n.p]
		sg := pth.segs[n.pos]
		if sg.kind == segAny {
			d.set = b.add(d.set, n.p, n.pos)
			continue
		}
		var ok bool
		switch sg.kind {
		case segKey, segPattern:
			ok = match(sg)
		case segEach:
			ok = isIdx
		}
		if !ok {
			continue
		}
		if int(n.pos)+1 == len(pth.segs) {
			switch pth.kind {
			case kField:
				d.fields = appendUnique(d.fields, pth.idx)
			case kCap:
				d.caps = appendUnique(d.caps, pth.idx)
			case kExpose:
				exposeEnded = true
			}
			continue
		}
		d.set = b.add(d.set, n.p, n.pos+1)
	}
	filter := b.filt[s]
	exposeAlive := false
	for _, n := range d.set {
		if b.paths[n.p].kind == kExpose {
			exposeAlive = true
		}
	}
	switch {
	case !filter || exposeEnded:
		d.set = b.without(d.set, kExpose)
	case exposeAlive:
		d.partial, d.filter = true, true
	default:
		d.drop = true
		d.fields = nil
		d.set = b.only(d.set, kCap)
	}
	return d
}

func appendUnique(s []int32, v int32) []int32 {
	for _, h := range s {
		if h == v {
			return s
		}
	}
	return append(s, v)
}

func (b *builder) without(set []nst, k pathKind) []nst {
	out := set[:0]
	for _, n := range set {
		if b.paths[n.p].kind != k {
			out = append(out, n)
		}
	}
	return out
}

func (b *builder) only(set []nst, k pathKind) []nst {
	out := set[:0]
	for _, n := range set {
		if b.paths[n.p].kind == k {
			out = append(out, n)
		}
	}
	return out
}

// build creates the automaton; state 0 is the dead state, the returned id the
// record root.
func (b *builder) build(filter bool) (int32, error) {
	b.index = map[string]int32{}
	if _, err := b.intern(&descriptor{}); err != nil {
		return 0, err
	}
	root := &descriptor{filter: filter}
	for p := range b.paths {
		root.set = b.add(root.set, int32(p), 0)
	}
	if !filter {
		root.set = b.without(root.set, kExpose)
	}
	rootID, err := b.intern(root)
	if err != nil {
		return 0, err
	}
	for s := int32(0); int(s) < len(b.states); s++ {
		if err := b.fill(s); err != nil {
			return 0, err
		}
	}
	return rootID, nil
}

// fill computes the transitions of state s.
func (b *builder) fill(s int32) error {
	set := b.sets[s]
	st := dstate{}
	lits := map[string]bool{}
	idxs := map[int]bool{}
	var pats []string
	for _, n := range set {
		sg := b.paths[n.p].segs[n.pos]
		switch sg.kind {
		case segKey:
			lits[sg.key] = true
			if sg.idx >= 0 {
				idxs[sg.idx] = true
			}
		case segPattern:
			dup := false
			for _, p := range pats {
				dup = dup || p == sg.key
			}
			if !dup {
				pats = append(pats, sg.key)
			}
		}
	}
	if len(pats) > maxPatterns {
		return fmt.Errorf("rewrite: more than %d different wildcard keys apply at one level (%s)", maxPatterns, strings.Join(pats, ", "))
	}
	sort.Strings(pats)
	target := func(d *descriptor) (int32, error) { return b.intern(d) }
	for l := range lits {
		d := b.step(s, false, func(sg seg) bool {
			if sg.kind == segKey {
				return sg.key == l
			}
			return matchPattern(sg.key, l)
		})
		t, err := target(d)
		if err != nil {
			return err
		}
		st.lits = append(st.lits, lit{l, t})
	}
	if len(st.lits) > 255 {
		return fmt.Errorf("rewrite: more than 255 different keys apply at one level")
	}
	sort.Slice(st.lits, func(i, j int) bool {
		if hi, hj := keyHash(st.lits[i].key), keyHash(st.lits[j].key); hi != hj {
			return hi < hj
		}
		return st.lits[i].key < st.lits[j].key
	})
	for _, l := range st.lits {
		st.bloom |= 1 << keyHash(l.key)
	}
	for h := range st.byHash {
		st.byHash[h] = uint8(sort.Search(len(st.lits), func(i int) bool { return keyHash(st.lits[i].key) >= uint(h) }))
	}
	st.pats = pats
	st.patT = make([]int32, 1<<len(pats))
	for m := range st.patT {
		d := b.step(s, false, func(sg seg) bool {
			if sg.kind != segPattern {
				return false
			}
			j := sort.SearchStrings(pats, sg.key)
			return m&(1<<j) != 0
		})
		t, err := target(d)
		if err != nil {
			return err
		}
		st.patT[m] = t
	}
	if len(idxs) > 0 {
		st.idxs = make(map[int]int32, len(idxs))
	}
	for ix := range idxs {
		t, err := target(b.step(s, true, func(sg seg) bool { return sg.kind == segKey && sg.idx == ix }))
		if err != nil {
			return err
		}
		st.idxs[ix] = t
	}
	t, err := target(b.step(s, true, func(sg seg) bool { return false }))
	if err != nil {
		return err
	}
	st.anyIdx = t
	// keep the node facts set by intern
	cur := &b.states[s]
	cur.bloom = st.bloom
	cur.lits, cur.byHash, cur.pats, cur.patT, cur.idxs, cur.anyIdx = st.lits, st.byHash, st.pats, st.patT, st.idxs, st.anyIdx
	return nil
}

// objChild is the state of the member called key.
func (d *dstate) objChild(key string) int32 {
	if d.dead {
		return 0
	}
	if h := keyHash(key); d.bloom&(1<<h) != 0 {
		for _, l := range d.lits[d.byHash[h]:d.byHash[h+1]] {
			if l.key == key {
				return l.to
			}
		}
	}
	if len(d.pats) == 0 {
		return d.patT[0]
	}
	m := 0
	for j, p := range d.pats {
		if matchPattern(p, key) {
			m |= 1 << j
		}
	}
	return d.patT[m]
}

// keyHash is the bloom bit number (0-63) of a key: from its length and its
// first and last bytes.
func keyHash(k string) uint {
	if len(k) == 0 {
		return 0
	}
	return (uint(len(k))*7 + uint(k[0]) + uint(k[len(k)-1])*3) & 63
}

// arrChild is the state of the element at index i.
func (d *dstate) arrChild(i int) int32 {
	if d.dead {
		return 0
	}
	if d.idxs != nil {
		if t, ok := d.idxs[i]; ok {
			return t
		}
	}
	return d.anyIdx
}
