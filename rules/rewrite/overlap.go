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
	m := newPairMemo(len(p.segs), 2*len(q.segs)+1)
	// absorbing: p's current `**` has taken at least one of q's keys.
	var walk func(i, j int, absorbing bool) bool
	walk = func(i, j int, absorbing bool) bool {
		if i == len(p.segs) {
			return true // q's value is p's or inside it
		}
		if j == len(q.segs) {
			return !absorbing // q's value holds p's, named below it
		}
		col := 2 * j
		if absorbing {
			col++
		}
		if v, ok := m.get(i, col); ok {
			return v
		}
		var r bool
		switch a, b := p.segs[i], q.segs[j]; {
		case a.kind == segAny:
			r = walk(i+1, j, false) || walk(i, j+1, true)
		case b.kind == segAny:
			r = walk(i, j+1, false) || walk(i+1, j, false)
		default:
			r = mayShare(a, b) && walk(i+1, j+1, false)
		}
		m.set(i, col, r)
		return r
	}
	return walk(0, 0, false)
}

// Covers reports whether every value q names lies at or inside a value p
// names: p names "address" or "address.*" and q "address.city". It is
// false whenever that is not certain (q reaches any depth with `**` where p
// does not, q names an ancestor of p's values, a pattern in q that p does
// not repeat).
func (p Path) Covers(q Path) bool {
	m := newPairMemo(len(p.segs), len(q.segs))
	var walk func(i, j int) bool
	walk = func(i, j int) bool {
		if i == len(p.segs) {
			return true
		}
		if j == len(q.segs) {
			return false // q names a value that holds more than p's
		}
		if v, ok := m.get(i, j); ok {
			return v
		}
		var r bool
		switch a, b := p.segs[i], q.segs[j]; {
		case a.kind == segAny:
			r = walk(i+1, j) || b.kind != segAny && walk(i, j+1)
		case b.kind == segAny:
			r = false
		default:
			r = segCovers(a, b) && walk(i+1, j+1)
		}
		m.set(i, j, r)
		return r
	}
	return walk(0, 0)
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

// pairMemo remembers the answer for a pair of segment positions, so that
// paths with several `**` stay linear in the number of pairs.
type pairMemo struct {
	cols int
	seen []uint8 // 0 unknown, 1 false, 2 true
}

func newPairMemo(n, m int) *pairMemo {
	return &pairMemo{cols: m + 1, seen: make([]uint8, (n+1)*(m+1))}
}

func (m *pairMemo) get(i, j int) (bool, bool) {
	v := m.seen[i*m.cols+j]
	return v == 2, v != 0
}

func (m *pairMemo) set(i, j int, v bool) {
	if v {
		m.seen[i*m.cols+j] = 2
	} else {
		m.seen[i*m.cols+j] = 1
	}
}
