package rewrite

import "fmt"

// The answer rules (Plan.Answer) are compiled into a small trie over the
// keys and indexes from the document's root. The scan walks it on the way
// down to the records (modeDoc) and beside them (modeAns); a value reached at
// a node where a rule ends is treated when it is complete (modeHit).

// anode is one node of the answer trie.
type anode struct {
	kids  []akid
	field int32 // the rule that applies here, -1: none
}

// akid is an edge of the answer trie: a key, and the array index it names.
type akid struct {
	key string
	idx int
	to  int32
}

// buildAnswer checks the answer rules and builds their trie into c.
func (p *Plan) buildAnswer(c *compiled) error {
	if len(p.Answer) == 0 {
		return nil
	}
	c.ans = []anode{{field: -1}}
	c.ansKeys = make([]string, len(p.Answer))
	for i := range p.Answer {
		f := &p.Answer[i]
		name := f.Path.String()
		if len(f.Path.segs) == 0 {
			return fmt.Errorf("rewrite: answer field %d: the path must name a key, not the whole answer", i)
		}
		if !f.Path.plain() {
			return fmt.Errorf("rewrite: answer field %q: only plain keys and indexes are allowed (no `*`, `?`, `#` or `**`)", name)
		}
		if f.When != nil {
			return fmt.Errorf("rewrite: answer field %q: a condition is not supported (answer fields apply to the whole answer)", name)
		}
		if err := p.checkAction(f, "answer field"); err != nil {
			return err
		}
		// The path may not lead to the records or into them: that is a
		// record field; nor to a value around them.
		n := min(len(f.Path.segs), len(p.Records.segs))
		same := true
		for k := 0; k < n; k++ {
			if f.Path.segs[k].key != p.Records.segs[k].key {
				same = false
				break
			}
		}
		if same {
			if len(f.Path.segs) > len(p.Records.segs) {
				return fmt.Errorf("rewrite: answer field %q reaches into the records at %q: put it in the record fields", name, p.Records.String())
			}
			return fmt.Errorf("rewrite: answer field %q would treat the records at %q as a whole", name, p.Records.String())
		}
		if f.Name != "" {
			name = f.Name
		}
		c.ansKeys[i] = f.Action.String() + ":answer." + name
		at := int32(0)
		for _, sg := range f.Path.segs {
			next := int32(-1)
			for _, k := range c.ans[at].kids {
				if k.key == sg.key {
					next = k.to
					break
				}
			}
			if next < 0 {
				next = int32(len(c.ans))
				c.ans = append(c.ans, anode{field: -1})
				c.ans[at].kids = append(c.ans[at].kids, akid{key: sg.key, idx: sg.idx, to: next})
			}
			at = next
		}
		if old := c.ans[at].field; old < 0 || strength(f.Action) < strength(p.Answer[old].Action) {
			c.ans[at].field = int32(i)
		}
	}
	return nil
}

// ansObj is the trie node under node at for the object key, -1 for none.
func (c *compiled) ansObj(at int32, key string) int32 {
	if at < 0 {
		return -1
	}
	for _, k := range c.ans[at].kids {
		if k.key == key {
			return k.to
		}
	}
	return -1
}

// ansArr is the trie node under node at for the array index n, -1 for none.
func (c *compiled) ansArr(at int32, n int) int32 {
	if at < 0 {
		return -1
	}
	for _, k := range c.ans[at].kids {
		if k.idx == n {
			return k.to
		}
	}
	return -1
}

// docChild sets the mode of a child of a modeDoc or modeAns frame f from
// whether it stays on the records path (rec) and its answer node (ch.state),
// and keeps f's count of kept children.
func (rw *rewriter) docChild(f *frame, ch *child, rec bool) {
	switch {
	case ch.state >= 0 && rw.c.ans[ch.state].field >= 0:
		// a rule ends here (never on the records path: Compile refuses it)
		ch.mode = modeHit
		fi := rw.c.ans[ch.state].field
		rw.hitField, rw.hitKey, rw.hitKept, rw.hitComma = fi, ch.keyStart, f.kept, f.lastComma
		if rw.p.Answer[fi].Action != Remove {
			f.kept++
		}
		return
	case rec:
		ch.mode = modeDoc
	case ch.state >= 0:
		ch.mode = modeAns
	default:
		ch.mode = modeNone
	}
	f.kept++
}

// hit treats the answer value at [vstart, end) that docChild marked; f is
// its parent.
func (rw *rewriter) hit(f *frame, vstart, end int) {
	fi := rw.hitField
	af := &rw.p.Answer[fi]
	act := af.Action
	v := rw.doc[vstart:end]
	if act == Remove {
		if rw.hitKept > 0 {
			rw.emit(rw.hitComma)
		} else {
			rw.emit(rw.hitKey)
			f.skipComma = true
		}
		rw.flushed = end
	} else {
		if (act == Mask || act == Hash) && v[0] == 'n' {
			return // null stays null
		}
		rw.emit(vstart)
		rw.writeValue(act, af, v, false)
		rw.flushed = end
	}
	rw.changed = true
	rw.ansCount[fi]++
}
