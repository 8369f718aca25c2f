package cond

import (
	"math"
	"strings"

	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/interpreter"
	"cel.dev/cel-go/parser"
	"github.com/crmguard/crmguard/rules/rewrite"
	"github.com/tidwall/gjson"
)

// A record condition (`visible`, a field's `when` / `unless`) runs once per
// record, so it must be fast. At load, its checked CEL tree is compiled into
// a native predicate when it has a common shape:
//
//   - `&&`, `||`, `!` of the shapes below;
//   - comparisons (== != < <= > >=) and `in` between record values
//     (record.a, record.a.b, record["k"], timestamp(record.a)) and
//     request constants;
//   - any sub-expression that does not read `record` (user.*, request.*,
//     now - duration("8760h"), "role" in user.roles, in_schedule(...)): it
//     is compiled as its own CEL program and evaluated once per request.
//
// The operators use CEL's own value semantics (types.Equal, Compare,
// Contains, ConvertToType), so the native path and CEL agree, errors
// included; TestNativeAndCELAgree and FuzzNativeAgreesWithCEL check it.
// Every other shape runs in CEL with `record` read lazily from the raw
// record bytes.

// Condition is a compiled record condition: a CEL expression that may read
// `record`, with its native predicate when it has one. It is immutable once
// its route's RecordKeys are gathered, and safe for concurrent use.
type Condition struct {
	e          *Expr
	usesRecord bool
	native     *pnode  // nil: evaluate with CEL
	consts     []*Expr // request-constant leaves of native
	// constKinds says how each of consts is found per request: most are
	// literals (evaluated once, at load, into fixed) or user.id.
	constKinds []constKind
	fixed      []ref.Val      // per const: its value when constKinds says constFixed
	fixedLists [][]string     // per pIn slot: a literal list of strings, read at load
	keys       []rewrite.Path // record paths native reads, by keyIdx (until RecordKeys.Add)
	// chains are the same paths as keys of the record (until
	// RecordKeys.Add), for EvalJSON.
	chains [][]string
	added  bool // given to RecordKeys.Add: native reads its record through the rewriter
	nlists int  // pIn nodes with a constant right side
}

// constKind says how a request constant is evaluated.
type constKind uint8

const (
	constCEL    constKind = iota // its own CEL program, per request
	constFixed                   // no variables: evaluated at load
	constUserID                  // user.id, read from the request's user
)

type pkind uint8

const (
	pOr pkind = iota
	pAnd
	pNot
	pCmp   // op over two operands
	pIn    // kids[0] in kids[1]
	pConst // a request constant (constIdx)
	pRec   // a record value (keyIdx), as timestamp when asTime
)

// pnode is a node of a native predicate.
type pnode struct {
	kind     pkind
	op       string
	kids     []*pnode
	constIdx int
	keyIdx   int
	asTime   bool
	slot     int // pIn with a constant list: index into State.lists
}

// CompileCondition compiles a record condition (RecordScope, a bool) and,
// when its shape allows, its native predicate.
func CompileCondition(env *Env, src string) (*Condition, []Issue) {
	return compileCondition(env, src, RecordScope)
}

// CompileWriteCondition compiles a condition on a write and the stored
// record it changes (WriteScope: it may read `body` too, as a request
// constant) and, when its shape allows, its native predicate. Evaluate it
// on a record's JSON with State.EvalJSON (it is not given to RecordKeys).
func CompileWriteCondition(env *Env, src string) (*Condition, []Issue) {
	return compileCondition(env, src, WriteScope)
}

func compileCondition(env *Env, src string, scope Scope) (*Condition, []Issue) {
	e, issues := Compile(env, src, scope, true)
	if e == nil {
		return nil, issues
	}
	c := &Condition{e: e, usesRecord: e.ReadsRecord()}
	nc := &nativeCompiler{env: env, c: c, info: e.ast.NativeRep().SourceInfo(), keyIdx: map[string]int{}}
	if root, ok := nc.compile(e.ast.NativeRep().Expr()); ok && nc.err == nil {
		c.native = root
		c.fixedLists = make([][]string, c.nlists)
		c.readFixedLists(root)
	} else {
		c.consts, c.constKinds, c.fixed, c.keys, c.chains = nil, nil, nil, nil, nil
	}
	return c, nil
}

// Expr is the condition's CEL expression.
func (c *Condition) Expr() *Expr { return c.e }

// UsesRecord reports whether the condition reads `record`; one that does
// not has the same answer for every record of a request.
func (c *Condition) UsesRecord() bool { return c.usesRecord }

// Native reports whether the condition runs as a native predicate (false:
// in CEL).
func (c *Condition) Native() bool { return c.native != nil }

// CELOnly is a copy of c that never runs natively: the general path, to
// compare the native predicates with (benchmarks, differential tests).
func (c *Condition) CELOnly() *Condition {
	d := *c
	d.native = nil
	return &d
}

// readFixedLists fills fixedLists for the `in` nodes whose list is a
// literal of strings.
func (c *Condition) readFixedLists(n *pnode) {
	if n.kind == pIn && n.slot >= 0 && c.constKinds[n.kids[1].constIdx] == constFixed {
		c.fixedLists[n.slot] = constStrings(c.fixed[n.kids[1].constIdx])
	}
	for _, k := range n.kids {
		c.readFixedLists(k)
	}
}

type nativeCompiler struct {
	env    *Env
	c      *Condition
	info   *ast.SourceInfo
	keyIdx map[string]int
	err    error
}

func readsRecord(e ast.Expr) bool {
	found := false
	visitor := ast.NewExprVisitor(func(x ast.Expr) {
		if x.Kind() == ast.IdentKind && x.AsIdent() == varRecord {
			found = true
		}
	})
	ast.PostOrderVisit(e, visitor)
	return found
}

func (nc *nativeCompiler) constant(e ast.Expr) (*pnode, bool) {
	src, err := parser.Unparse(e, nc.info)
	if err != nil {
		return nil, false
	}
	// The whole condition was checked against its scope already: a part
	// that does not read record is a request constant, whether it reads
	// the request, the user or the body's values.
	x, _ := Compile(nc.env, src, BodyScope, false)
	if x == nil {
		return nil, false
	}
	kind, fixed := constCEL, ref.Val(nil)
	switch {
	case len(x.vars) == 0:
		// A literal (["east"], 100, duration("24h")): the same value for
		// every request.
		if v, _, err := x.prg.Eval(interpreter.EmptyActivation()); err == nil && !types.IsError(v) {
			kind, fixed = constFixed, v
		}
	case e.Kind() == ast.SelectKind && !e.AsSelect().IsTestOnly() && e.AsSelect().FieldName() == "id" &&
		e.AsSelect().Operand().Kind() == ast.IdentKind && e.AsSelect().Operand().AsIdent() == varUser:
		kind = constUserID
	}
	nc.c.consts = append(nc.c.consts, x)
	nc.c.constKinds = append(nc.c.constKinds, kind)
	nc.c.fixed = append(nc.c.fixed, fixed)
	return &pnode{kind: pConst, constIdx: len(nc.c.consts) - 1}, true
}

func (nc *nativeCompiler) compile(e ast.Expr) (*pnode, bool) {
	if !readsRecord(e) {
		return nc.constant(e)
	}
	if e.Kind() != ast.CallKind {
		return nc.operand(e)
	}
	call := e.AsCall()
	args := call.Args()
	switch call.FunctionName() {
	case operators.LogicalOr, operators.LogicalAnd:
		kind := pOr
		if call.FunctionName() == operators.LogicalAnd {
			kind = pAnd
		}
		n := &pnode{kind: kind}
		for _, a := range args {
			k, ok := nc.compile(a)
			if !ok {
				return nil, false
			}
			n.kids = append(n.kids, k)
		}
		return n, true
	case operators.LogicalNot:
		k, ok := nc.compile(args[0])
		if !ok {
			return nil, false
		}
		return &pnode{kind: pNot, kids: []*pnode{k}}, true
	case operators.Equals, operators.NotEquals, operators.Less, operators.LessEquals,
		operators.Greater, operators.GreaterEquals, operators.In:
		if len(args) != 2 {
			return nil, false
		}
		a, ok := nc.side(args[0])
		if !ok {
			return nil, false
		}
		b, ok := nc.side(args[1])
		if !ok {
			return nil, false
		}
		if call.FunctionName() == operators.In {
			n := &pnode{kind: pIn, kids: []*pnode{a, b}, slot: -1}
			if b.kind == pConst {
				n.slot = nc.c.nlists
				nc.c.nlists++
			}
			return n, true
		}
		return &pnode{kind: pCmp, op: call.FunctionName(), kids: []*pnode{a, b}}, true
	}
	return nc.operand(e)
}

// side compiles one operand of a comparison.
func (nc *nativeCompiler) side(e ast.Expr) (*pnode, bool) {
	if !readsRecord(e) {
		return nc.constant(e)
	}
	return nc.operand(e)
}

// operand compiles record.a.b, record["k"] or timestamp(record...).
func (nc *nativeCompiler) operand(e ast.Expr) (*pnode, bool) {
	asTime := false
	if e.Kind() == ast.CallKind && e.AsCall().FunctionName() == "timestamp" && len(e.AsCall().Args()) == 1 && !e.AsCall().IsMemberFunction() {
		asTime = true
		e = e.AsCall().Args()[0]
	}
	var keys []string
	for {
		switch e.Kind() {
		case ast.SelectKind:
			s := e.AsSelect()
			if s.IsTestOnly() {
				return nil, false
			}
			keys = append(keys, s.FieldName())
			e = s.Operand()
			continue
		case ast.CallKind:
			c := e.AsCall()
			if c.FunctionName() != operators.Index || len(c.Args()) != 2 || c.Args()[1].Kind() != ast.LiteralKind {
				return nil, false
			}
			k, ok := c.Args()[1].AsLiteral().(types.String)
			if !ok {
				return nil, false
			}
			keys = append(keys, string(k))
			e = c.Args()[0]
			continue
		case ast.IdentKind:
			if e.AsIdent() != varRecord || len(keys) == 0 {
				return nil, false
			}
		default:
			return nil, false
		}
		break
	}
	for i, j := 0, len(keys)-1; i < j; i, j = i+1, j-1 {
		keys[i], keys[j] = keys[j], keys[i]
	}
	escaped := make([]string, len(keys))
	for i, k := range keys {
		escaped[i] = escapePathKey(k)
	}
	p := strings.Join(escaped, ".")
	idx, ok := nc.keyIdx[p]
	if !ok {
		path, err := rewrite.ParsePath(p)
		if err != nil {
			nc.err = err
			return nil, false
		}
		idx = len(nc.c.keys)
		nc.c.keys = append(nc.c.keys, path)
		nc.c.chains = append(nc.c.chains, keys)
		nc.keyIdx[p] = idx
	}
	return &pnode{kind: pRec, keyIdx: idx, asTime: asTime}, true
}

// escapePathKey writes a key so that the rewriter's path syntax reads it
// as exactly that key.
func escapePathKey(k string) string {
	var b strings.Builder
	for _, c := range k {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c > 0x7f) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// keyReader reads the values of condition.keys from one record.
type keyReader interface {
	Key(i int) gjson.Result
}

// eval evaluates a native predicate on one record. st holds the request
// constants. The common case, where every node reached has a plain boolean
// answer, runs without CEL values; any other goes through evalVal.
func (n *pnode) eval(st *State, rec keyReader) ref.Val {
	if v, ok := n.evalBool(st, rec); ok {
		return types.Bool(v)
	}
	return n.evalVal(st, rec)
}

// evalBool gives evalVal's answer when that is a bool reached only through
// fast paths: &&, || and ! of fastCmp and of a record string in a constant
// list of strings, and boolean constants. ok is false otherwise (evalVal
// then decides; it may still give a bool).
func (n *pnode) evalBool(st *State, rec keyReader) (val, ok bool) {
	switch n.kind {
	case pOr, pAnd:
		stop := n.kind == pOr
		for _, k := range n.kids {
			v, ok := k.evalBool(st, rec)
			if !ok {
				return false, false
			}
			if v == stop {
				return stop, true
			}
		}
		return !stop, true
	case pNot:
		v, ok := n.kids[0].evalBool(st, rec)
		return !v, ok
	case pConst:
		b, ok := st.consts[n.constIdx].(types.Bool)
		return bool(b), ok
	case pIn:
		return n.inList(st, rec)
	case pCmp:
		return n.fastCmp(st, rec)
	}
	return false, false
}

// inList is `record string in a constant list of strings`; ok is false for
// every other case.
func (n *pnode) inList(st *State, rec keyReader) (val, ok bool) {
	if n.slot < 0 || n.kids[0].kind != pRec || n.kids[0].asTime {
		return false, false
	}
	list := st.lists[n.slot]
	if list == nil {
		return false, false
	}
	str, ok := recStr(rec, n.kids[0].keyIdx)
	if !ok {
		return false, false
	}
	for _, s := range list {
		if s == str {
			return true, true
		}
	}
	return false, true
}

// evalVal evaluates n with CEL values, errors included.
func (n *pnode) evalVal(st *State, rec keyReader) ref.Val {
	switch n.kind {
	case pOr, pAnd:
		stop := types.True
		if n.kind == pAnd {
			stop = types.False
		}
		var err ref.Val
		for _, k := range n.kids {
			v := k.evalVal(st, rec)
			b, ok := v.(types.Bool)
			if ok && b == stop {
				return stop
			}
			if !ok && err == nil {
				if types.IsError(v) {
					err = v
				} else {
					err = types.MaybeNoSuchOverloadErr(v)
				}
			}
		}
		if err != nil {
			return err
		}
		return stop.Negate()
	case pNot:
		v := n.kids[0].evalVal(st, rec)
		b, ok := v.(types.Bool)
		if !ok {
			return types.MaybeNoSuchOverloadErr(v)
		}
		return b.Negate()
	case pConst:
		return st.consts[n.constIdx]
	case pRec:
		r := rec.Key(n.keyIdx)
		if !r.Exists() {
			return types.NewErr("no such key: %s", "record value")
		}
		v := gjsonToVal(r)
		if n.asTime {
			switch v.(type) {
			case types.String, types.Int, types.Timestamp:
				return v.ConvertToType(types.TimestampType)
			}
			return types.MaybeNoSuchOverloadErr(v)
		}
		return v
	case pIn:
		if v, ok := n.inList(st, rec); ok {
			return types.Bool(v)
		}
		a := n.kids[0].evalVal(st, rec)
		if types.IsError(a) {
			return a
		}
		b := n.kids[1].evalVal(st, rec)
		if types.IsError(b) {
			return b
		}
		if b.Type().HasTrait(traits.ContainerType) {
			return b.(traits.Container).Contains(a)
		}
		return types.ValOrErr(b, "no such overload")
	case pCmp:
		if v, ok := n.fastCmp(st, rec); ok {
			return types.Bool(v)
		}
		a := n.kids[0].evalVal(st, rec)
		if types.IsError(a) {
			return a
		}
		b := n.kids[1].evalVal(st, rec)
		if types.IsError(b) {
			return b
		}
		switch n.op {
		case operators.Equals:
			return types.Equal(a, b)
		case operators.NotEquals:
			v := types.Equal(a, b)
			if bv, ok := v.(types.Bool); ok {
				return bv.Negate()
			}
			return v
		}
		if !a.Type().HasTrait(traits.ComparerType) {
			return types.MaybeNoSuchOverloadErr(a)
		}
		if isNaN(a) || isNaN(b) {
			return types.False
		}
		cmp := a.(traits.Comparer).Compare(b)
		ci, ok := cmp.(types.Int)
		if !ok {
			return cmp
		}
		switch n.op {
		case operators.Less:
			return types.Bool(ci < 0)
		case operators.LessEquals:
			return types.Bool(ci <= 0)
		case operators.Greater:
			return types.Bool(ci > 0)
		case operators.GreaterEquals:
			return types.Bool(ci >= 0)
		}
	}
	return types.NewErr("cond: unknown predicate node")
}

func isNaN(v ref.Val) bool {
	d, ok := v.(types.Double)
	return ok && math.IsNaN(float64(d))
}

// fastCmp compares a record value with a request constant without boxing
// values (val is the bool evalVal gives), for the cases where the result is plain: a record string against
// a constant string (== and !=), and timestamp(record string) against a
// constant timestamp. ok is false when the general path must decide.
func (n *pnode) fastCmp(st *State, rec keyReader) (val, ok bool) {
	recSide, constSide := n.kids[0], n.kids[1]
	flip := false
	if recSide.kind != pRec {
		recSide, constSide, flip = constSide, recSide, true
	}
	if recSide.kind != pRec || constSide.kind != pConst {
		return false, false
	}
	c := st.consts[constSide.constIdx]
	str, ok := recStr(rec, recSide.keyIdx)
	if !ok {
		return false, false
	}
	if !recSide.asTime {
		cs, ok := c.(types.String)
		if !ok {
			return false, false
		}
		switch n.op {
		case operators.Equals:
			return str == string(cs), true
		case operators.NotEquals:
			return str != string(cs), true
		}
		return false, false
	}
	ct, ok := c.(types.Timestamp)
	if !ok {
		return false, false
	}
	var cmp int
	if sec, ok := canonicalUTC(str); ok {
		// whole seconds against the constant's seconds and nanoseconds
		cs, cn := ct.Unix(), ct.Nanosecond()
		switch {
		case sec < cs, sec == cs && cn > 0:
			cmp = -1
		case sec > cs:
			cmp = 1
		}
	} else {
		t, ok := celTimestamp(str)
		if !ok {
			return false, false // the general path makes the same error
		}
		cmp = t.Compare(ct.Time)
	}
	if flip {
		cmp = -cmp
	}
	switch n.op {
	case operators.Equals:
		return cmp == 0, true
	case operators.NotEquals:
		return cmp != 0, true
	case operators.Less:
		return cmp < 0, true
	case operators.LessEquals:
		return cmp <= 0, true
	case operators.Greater:
		return cmp > 0, true
	case operators.GreaterEquals:
		return cmp >= 0, true
	}
	return false, false
}

// recStr is rec.Key(i).Str when that is a string, without copying the
// whole result when rec is a rewriter's record.
func recStr(rec keyReader, i int) (string, bool) {
	if r, ok := rec.(*rewrite.Record); ok {
		return r.Str(i)
	}
	r := rec.Key(i)
	return r.Str, r.Type == gjson.String
}
