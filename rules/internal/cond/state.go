package cond

import (
	"fmt"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"github.com/crmguard/crmguard/rules/rewrite"
	"github.com/tidwall/gjson"
)

// RecordKeys gathers the record values the native predicates of one route
// read, so that the rewriter captures each once per record
// (rewrite.Plan.Keys). It is used at load only.
type RecordKeys struct {
	paths []rewrite.Path
	index map[string]int
}

// Add makes c's native predicate read its record values from k's list. A
// condition is added to one RecordKeys only, before it is prepared.
func (k *RecordKeys) Add(c *Condition) {
	if c.native == nil {
		return
	}
	if k.index == nil {
		k.index = map[string]int{}
	}
	var renumber func(n *pnode)
	renumber = func(n *pnode) {
		if n.kind == pRec {
			p := c.keys[n.keyIdx]
			s := p.String()
			i, ok := k.index[s]
			if !ok {
				i = len(k.paths)
				k.index[s] = i
				k.paths = append(k.paths, p)
			}
			n.keyIdx = i
		}
		for _, kid := range n.kids {
			renumber(kid)
		}
	}
	renumber(c.native)
	c.keys, c.chains, c.added = nil, nil, true
}

// Paths lists the gathered record paths, for rewrite.Plan.Keys.
func (k *RecordKeys) Paths() []rewrite.Path { return k.paths }

// State is a record condition prepared for one request: its request
// constants are evaluated once. It is used by one request only.
type State struct {
	c      *Condition
	consts []ref.Val
	lists  [][]string // per pIn slot: the constant list when all strings
	act    *Activation
	// Most conditions have a few constants and lists: they fit here,
	// in the State's own allocation.
	constsBuf [4]ref.Val
	listsBuf  [2][]string
}

// Prepare evaluates the condition's request constants for the request a
// holds.
func (c *Condition) Prepare(a *Activation) *State {
	cs := &State{c: c, act: a}
	if c.native != nil {
		if len(c.consts) <= len(cs.constsBuf) {
			cs.consts = cs.constsBuf[:len(c.consts)]
		} else {
			cs.consts = make([]ref.Val, len(c.consts))
		}
		for i, x := range c.consts {
			switch {
			case c.constKinds[i] == constFixed:
				cs.consts[i] = c.fixed[i]
				continue
			case c.constKinds[i] == constUserID && a.User != nil:
				cs.consts[i] = types.String(a.User.ID)
				continue
			}
			v, _, err := x.prg.Eval(a)
			if err != nil {
				v = types.WrapErr(err)
			}
			cs.consts[i] = v
		}
		if c.nlists > 0 {
			if c.nlists <= len(cs.listsBuf) {
				cs.lists = cs.listsBuf[:c.nlists]
			} else {
				cs.lists = make([][]string, c.nlists)
			}
			fillLists(c.native, cs)
		}
	}
	return cs
}

// Eval evaluates the condition on one record (rec may be nil for a
// condition that does not read `record`). It is a rewrite.Predicate.
func (cs *State) Eval(rec *rewrite.Record) (bool, error) {
	if cs.c.native != nil {
		var v ref.Val
		if rec == nil {
			v = cs.c.native.eval(cs, noRecord{})
		} else {
			v = cs.c.native.eval(cs, rec)
		}
		if b, ok := v.(types.Bool); ok {
			return bool(b), nil
		}
		return false, valError(v)
	}
	act := cs.act
	if rec != nil {
		act = act.WithRecord(rec.Raw())
	}
	return cs.c.e.EvalBool(act)
}

// EvalJSON evaluates the condition on one record given as the raw JSON
// of an object (a stored record a write changes), natively when it can:
// the record's values are read as `record` reads them in CEL (a key
// present twice with different values does not exist). A condition given
// to RecordKeys.Add is evaluated in CEL here.
func (cs *State) EvalJSON(raw []byte) (bool, error) {
	c := cs.c
	if c.native != nil && !c.added {
		v := c.native.eval(cs, jsonRecord{raw: string(raw), chains: c.chains})
		if b, ok := v.(types.Bool); ok {
			return bool(b), nil
		}
		return false, valError(v)
	}
	return c.e.EvalBool(cs.act.WithRecord(raw))
}

// jsonRecord reads a native predicate's record values from raw JSON.
type jsonRecord struct {
	raw    string
	chains [][]string
}

// Key returns the value at chains[i]; a key absent, present twice with
// different values, or under a value that is not an object does not
// exist.
func (r jsonRecord) Key(i int) gjson.Result {
	cur := gjson.Result{Type: gjson.JSON, Raw: r.raw}
	for _, k := range r.chains[i] {
		if !cur.IsObject() {
			return gjson.Result{}
		}
		v, ok := lookupKey(cur.Raw, k)
		if !ok {
			return gjson.Result{}
		}
		cur = v
	}
	return cur
}

type noRecord struct{}

func (noRecord) Key(int) gjson.Result { return gjson.Result{} }

func valError(v ref.Val) error {
	if e, ok := v.(*types.Err); ok {
		return fmt.Errorf("cond: %v", e)
	}
	return fmt.Errorf("cond: the condition gave %s, not a bool", v.Type().TypeName())
}

// fillLists keeps, for each `x in CONSTANT` node, the constant as a list of
// strings when it is one (the fast path of pIn).
func fillLists(n *pnode, cs *State) {
	if n.kind == pIn && n.slot >= 0 {
		if strs := cs.c.fixedLists[n.slot]; strs != nil {
			cs.lists[n.slot] = strs // a literal list, read once at load
		} else if strs := constStrings(cs.consts[n.kids[1].constIdx]); strs != nil {
			cs.lists[n.slot] = strs
		}
	}
	for _, k := range n.kids {
		fillLists(k, cs)
	}
}

// constStrings is a CEL list of strings as a Go slice (nil for any other
// value).
func constStrings(v ref.Val) []string {
	l, ok := v.(traits.Lister)
	if !ok || l.Type() != types.ListType {
		return nil
	}
	size, _ := l.Size().(types.Int)
	strs := make([]string, 0, int(size))
	for i := types.Int(0); i < size; i++ {
		s, ok := l.Get(i).(types.String)
		if !ok {
			return nil
		}
		strs = append(strs, string(s))
	}
	return strs
}
