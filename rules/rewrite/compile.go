package rewrite

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tidwall/gjson"
)

// compiled is what Compile derives from a Plan.
type compiled struct {
	recSegs   []seg
	dfa       []dstate
	root      int32
	nkeys     int
	auditSlot int // capture slot of AuditID, -1 when none
	maxDepth  int
	fieldKeys []string // "action:name" per field
	dropKey   string
	// first is, per automaton state, the field rule that applies to a
	// node in that state without a condition (-1: none, or a condition to
	// evaluate first).
	first   []int32
	actions []Action  // per field
	ans     []anode   // the answer rules' trie, node 0 the root; empty: none
	ansKeys []string  // "action:answer.name" per answer rule
	macs    sync.Pool // of *mac under the plan's key
	macKey  *macKey
	// the plan read for tables, built on the first RewriteTable
	tableOnce sync.Once
	table     *tablePlan
	// the form a stream rewrites its batches of records with, built on
	// the first stream (stream.go)
	listOnce sync.Once
	list     *compiled
}

// strength orders actions, strongest first.
func strength(a Action) int {
	switch a {
	case Remove:
		return 0
	case Null:
		return 1
	case Replace:
		return 2
	case Hash:
		return 3
	}
	return 4
}

// build checks the plan and derives its compiled form.
func (p *Plan) build() (*compiled, error) {
	c := &compiled{auditSlot: -1, maxDepth: p.MaxDepth, nkeys: len(p.Keys), dropKey: "expose:dropped"}
	if c.maxDepth <= 0 {
		c.maxDepth = DefaultMaxDepth
	}
	if !p.Records.plain() {
		return nil, fmt.Errorf("rewrite: records path %q: only plain keys and indexes are allowed", p.Records.String())
	}
	c.recSegs = p.Records.segs
	b := &builder{}
	for i, k := range p.Keys {
		if len(k.segs) == 0 || !k.plain() {
			return nil, fmt.Errorf("rewrite: key %d (%q): only plain keys and indexes are allowed, and it must name a key", i, k.String())
		}
		b.paths = append(b.paths, npath{segs: k.segs, kind: kCap, idx: int32(i)})
	}
	if len(p.AuditID.segs) > 0 {
		if !p.AuditID.plain() {
			return nil, fmt.Errorf("rewrite: audit id path %q: only plain keys and indexes are allowed", p.AuditID.String())
		}
		c.auditSlot = len(p.Keys)
		b.paths = append(b.paths, npath{segs: p.AuditID.segs, kind: kCap, idx: int32(c.auditSlot)})
	}
	filter := len(p.Expose) > 0
	for _, e := range p.Expose {
		if len(e.segs) == 0 {
			filter = false // "@this": everything is exposed
			continue
		}
		b.paths = append(b.paths, npath{segs: e.segs, kind: kExpose})
	}
	c.fieldKeys = make([]string, len(p.Fields))
	for i := range p.Fields {
		f := &p.Fields[i]
		if len(f.Path.segs) == 0 {
			return nil, fmt.Errorf("rewrite: field %d: the path must name a key, not the record itself", i)
		}
		if err := p.checkAction(f, "field"); err != nil {
			return nil, err
		}
		name := f.Name
		if name == "" {
			name = f.Path.String()
		}
		c.fieldKeys[i] = f.Action.String() + ":" + name
		b.paths = append(b.paths, npath{segs: f.Path.segs, kind: kField, idx: int32(i)})
	}
	b.rank = func(f int32) int { return strength(p.Fields[f].Action)*1<<20 + int(f) }
	// The automaton depends only on the paths, their kinds and the action
	// strengths: plans built per request for the same route and roles share
	// one.
	key := automatonKey(b, filter, p.Fields)
	if a, ok := automata.Load(key); ok {
		c.root, c.dfa = a.(*automaton).root, a.(*automaton).dfa
	} else {
		root, err := b.build(filter)
		if err != nil {
			return nil, err
		}
		c.root, c.dfa = root, b.states
		if automataCount.Add(1) <= maxAutomata {
			automata.Store(key, &automaton{root: root, dfa: b.states})
		}
	}
	c.actions = make([]Action, len(p.Fields))
	for i := range p.Fields {
		c.actions[i] = p.Fields[i].Action
	}
	c.first = make([]int32, len(c.dfa))
	for s := range c.dfa {
		c.first[s] = -1
		if fs := c.dfa[s].fields; len(fs) > 0 && p.Fields[fs[0]].When == nil {
			c.first[s] = fs[0]
		}
	}
	if err := p.buildAnswer(c); err != nil {
		return nil, err
	}
	c.macKey = newMacKey(p.HashKey)
	c.macs.New = func() any { return newMac(c.macKey) }
	return c, nil
}

// checkAction checks the action of a field rule (what names the kind).
func (p *Plan) checkAction(f *Field, what string) error {
	switch f.Action {
	case Remove, Null, Hash:
	case Mask:
		if f.Mask == nil {
			return fmt.Errorf("rewrite: %s %q: action mask without a mask function", what, f.Path.String())
		}
	case Replace:
		if !gjson.ValidBytes(f.Replace) {
			return fmt.Errorf("rewrite: %s %q: the replacement %q is not valid JSON", what, f.Path.String(), f.Replace)
		}
	default:
		return fmt.Errorf("rewrite: %s %q: unknown action %d", what, f.Path.String(), f.Action)
	}
	if f.Action == Hash && len(p.HashKey) == 0 {
		return fmt.Errorf("rewrite: %s %q: action hash needs a hash key", what, f.Path.String())
	}
	return nil
}

// automaton is a built automaton, shared read-only by the plans that have
// the same paths.
type automaton struct {
	root int32
	dfa  []dstate
}

// automata caches automata by automatonKey; at most maxAutomata are kept
// (beyond that, plans build their own).
var (
	automata      sync.Map
	automataCount atomic.Int64
)

const maxAutomata = 4096

// automatonKey names everything the automaton is built from.
func automatonKey(b *builder, filter bool, fields []Field) string {
	var k []byte
	if filter {
		k = append(k, 'F')
	}
	for _, np := range b.paths {
		k = append(k, byte(np.kind))
		k = binary.AppendUvarint(k, uint64(np.idx))
		if np.kind == kField {
			k = append(k, byte(strength(fields[np.idx].Action)))
		}
		for _, sg := range np.segs {
			k = append(k, byte(sg.kind))
			k = binary.AppendUvarint(k, uint64(len(sg.key)))
			k = append(k, sg.key...)
		}
		k = append(k, 0xff)
	}
	return string(k)
}

func (c *compiled) getMac() *mac  { return c.macs.Get().(*mac) }
func (c *compiled) putMac(m *mac) { c.macs.Put(m) }
