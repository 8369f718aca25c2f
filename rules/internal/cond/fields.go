package cond

import (
	"slices"
	"strings"

	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
)

// RecordFields lists the record values the expression reads, each as its
// keys from the record ("record.owner_id" is [owner_id],
// "record.address.city" and `record["address"].city` are [address city],
// "has(record.team)" is [team]), in order of first appearance. A record read through a computed key (record[user.x])
// is listed up to that key. For lint: which fields a condition depends on.
func (e *Expr) RecordFields() [][]string {
	var out [][]string
	seen := map[string]bool{}
	var visit func(x ast.Expr, reading bool)
	visit = func(x ast.Expr, reading bool) {
		if keys, ok := recordKeys(x); ok && !reading && len(keys) > 0 {
			k := strings.Join(keys, "\x00")
			if !seen[k] {
				seen[k] = true
				out = append(out, keys)
			}
		}
		// The operand of a select or index that itself reads the record is
		// part of that longer reading.
		switch x.Kind() {
		case ast.SelectKind:
			_, inner := recordKeys(x)
			visit(x.AsSelect().Operand(), inner)
		case ast.CallKind:
			c := x.AsCall()
			_, inner := recordKeys(x)
			for i, a := range c.Args() {
				visit(a, inner && i == 0)
			}
			if c.IsMemberFunction() {
				visit(c.Target(), false)
			}
		case ast.ListKind:
			for _, el := range x.AsList().Elements() {
				visit(el, false)
			}
		case ast.MapKind:
			for _, en := range x.AsMap().Entries() {
				me := en.AsMapEntry()
				visit(me.Key(), false)
				visit(me.Value(), false)
			}
		case ast.StructKind:
			for _, f := range x.AsStruct().Fields() {
				visit(f.AsStructField().Value(), false)
			}
		case ast.ComprehensionKind:
			cp := x.AsComprehension()
			visit(cp.IterRange(), false)
			visit(cp.AccuInit(), false)
			visit(cp.LoopCondition(), false)
			visit(cp.LoopStep(), false)
			visit(cp.Result(), false)
		}
	}
	visit(e.ast.NativeRep().Expr(), false)
	return out
}

// recordKeys reads x as a chain of keys from `record`: record.a.b,
// record["a"], has(record.a) (a test-only select).
func recordKeys(x ast.Expr) ([]string, bool) {
	switch x.Kind() {
	case ast.IdentKind:
		return nil, x.AsIdent() == varRecord
	case ast.SelectKind:
		s := x.AsSelect()
		keys, ok := recordKeys(s.Operand())
		if !ok {
			return nil, false
		}
		return append(slices.Clone(keys), s.FieldName()), true
	case ast.CallKind:
		c := x.AsCall()
		if c.FunctionName() != operators.Index || len(c.Args()) != 2 {
			return nil, false
		}
		keys, ok := recordKeys(c.Args()[0])
		if !ok {
			return nil, false
		}
		if k := c.Args()[1]; k.Kind() == ast.LiteralKind {
			if s, isStr := k.AsLiteral().(types.String); isStr {
				return append(slices.Clone(keys), string(s)), true
			}
		}
		return keys, true // a computed key: the reading stops here
	}
	return nil, false
}
