package rewrite

import "strings"

// Touches and Covers compare two field paths by the values they name,
// without reading a document: package rules uses them to decide whether a
// query parameter that filters or sorts on one field touches a value a
// field rule masks, or lies outside an `expose` list. Touches says true
// when the paths alone cannot rule a meeting out; Covers says true only
// when it is certain. Keys compare
// without regard to case (a CRM's query parameters often name fields in any
// case), `*`/`?` patterns the same way.

// Touches reports whether reading a value q names may read a value p
// names: q's value is p's or lies inside it ("contacts.#.mobile" inside
// "contacts"), or q's value holds one p names by keys below q's
// ("contacts" holds "contacts.#.mobile"). A key p finds at any depth
// ("**.mobile") is not looked for inside q's value: whether one is there
// depends on the data, which this check does not see, so "**.mobile" does
// not touch "name" (but touches "contacts.#.mobile"). Two patterns, or a
// pattern and `#`, are taken to meet.
func (p Path) Touches(q Path) bool {
	var buf [64]uint8
	w := newPathWalk(p, q, 2*len(q.segs)+2, buf[:])
	return w.touches(0, 0, false)
}

// Covers reports whether every value q names lies at or inside a value p
// names: p names "address" or "address.*" and q "address.city". It is
// false whenever that is not certain (q reaches any depth with `**` where p
// does not, q names an ancestor of p's values, a pattern in q that p does
// not repeat).
func (p Path) Covers(q Path) bool {
	var buf [64]uint8
	w := newPathWalk(p, q, len(q.segs)+1, buf[:])
	return w.covers(0, 0)
}

// pathWalk compares two paths segment by segment, remembering the answer
// for each pair of positions so that paths with several `**` stay linear
// in the number of pairs.
type pathWalk struct {
	p, q []seg
	cols int
	seen []uint8 // 0 unknown, 1 false, 2 true
}

// newPathWalk prepares a walk with cols memo columns per position of p,
// in buf (the caller's stack) when it is large enough.
func newPathWalk(p, q Path, cols int, buf []uint8) pathWalk {
	w := pathWalk{p: p.segs, q: q.segs, cols: cols}
	if n := (len(p.segs) + 1) * cols; n <= len(buf) {
		w.seen = buf[:n]
	} else {
		w.seen = make([]uint8, n)
	}
	return w
}

func (w *pathWalk) get(i, j int) (v, known bool) {
	x := w.seen[i*w.cols+j]
	return x == 2, x != 0
}

func (w *pathWalk) set(i, j int, v bool) bool {
	if v {
		w.seen[i*w.cols+j] = 2
	} else {
		w.seen[i*w.cols+j] = 1
	}
	return v
}

// touches is Touches from positions i (in p) and j (in q); absorbing says
// p's current `**` has taken at least one of q's keys.
func (w *pathWalk) touches(i, j int, absorbing bool) bool {
	if i == len(w.p) {
		return true // q's value is p's or inside it
	}
	if j == len(w.q) {
		return !absorbing // q's value holds p's, named below it
	}
	col := 2 * j
	if absorbing {
		col++
	}
	if v, ok := w.get(i, col); ok {
		return v
	}
	var r bool
	switch a, b := w.p[i], w.q[j]; {
	case a.kind == segAny:
		r = w.touches(i+1, j, false) || w.touches(i, j+1, true)
	case b.kind == segAny:
		r = w.touches(i, j+1, false) || w.touches(i+1, j, false)
	default:
		r = mayShare(a, b) && w.touches(i+1, j+1, false)
	}
	return w.set(i, col, r)
}

// covers is Covers from positions i (in p) and j (in q).
func (w *pathWalk) covers(i, j int) bool {
	if i == len(w.p) {
		return true
	}
	if j == len(w.q) {
		return false // q names a value that holds more than p's
	}
	if v, ok := w.get(i, j); ok {
		return v
	}
	var r bool
	switch a, b := w.p[i], w.q[j]; {
	case a.kind == segAny:
		r = w.covers(i+1, j) || b.kind != segAny && w.covers(i, j+1)
	case b.kind == segAny:
		r = false
	default:
		r = segCovers(a, b) && w.covers(i+1, j+1)
	}
	return w.set(i, j, r)
}

// mayShare reports whether two one-level segments (no `**`) can name the
// same key or index.
func mayShare(a, b seg) bool {
	switch {
	case a.kind == segKey && b.kind == segKey:
		return strings.EqualFold(a.key, b.key)
	case a.kind == segKey && b.kind == segEach:
		return a.idx >= 0
	case a.kind == segEach && b.kind == segKey:
		return b.idx >= 0
	case a.kind == segKey && b.kind == segPattern:
		return matchPattern(strings.ToLower(b.key), strings.ToLower(a.key))
	case a.kind == segPattern && b.kind == segKey:
		return matchPattern(strings.ToLower(a.key), strings.ToLower(b.key))
	}
	return true // `#` with `#`, or a pattern with a pattern or `#`
}

// segCovers reports whether one-level segment a names every key or index
// that b names.
func segCovers(a, b seg) bool {
	switch {
	case a.kind == segKey && b.kind == segKey:
		return strings.EqualFold(a.key, b.key)
	case a.kind == segEach:
		return b.kind == segEach
	case a.kind == segPattern && b.kind == segKey:
		return matchPattern(strings.ToLower(a.key), strings.ToLower(b.key))
	case a.kind == segPattern && b.kind == segPattern:
		return strings.EqualFold(a.key, b.key)
	}
	return false
}
