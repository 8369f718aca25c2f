package rules

import (
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/interpreter"
	"cel.dev/cel-go/parser"
	"github.com/crmguard/crmguard/rules/rewrite"
	"github.com/tidwall/gjson"
	"go.yaml.in/yaml/v3"
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

// condition is a compiled CEL condition that may read `record`.
type condition struct {
	e          *expr
	usesRecord bool
	native     *pnode  // nil: evaluate with CEL
	consts     []*expr // request-constant leaves of native
	// constKinds says how each of consts is found per request: most are
	// literals (evaluated once, at load, into fixed) or user.id.
	constKinds []constKind
	fixed      []ref.Val      // per const: its value when constKinds says constFixed
	fixedLists [][]string     // per pIn slot: a literal list of strings, read at load
	keys       []rewrite.Path // record paths native reads, by keyIdx
	nlists     int            // pIn nodes with a constant right side
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
	slot     int // pIn with a constant list: index into condState.lists
}

// condition compiles a record condition at n.
func (l *loader) condition(n *yaml.Node, key, src string) *condition {
	e := compileExpr(&l.diag, l.set.env, n, key, src, recordVars, true)
	if e == nil {
		return nil
	}
	c := &condition{e: e, usesRecord: e.vars[varRecord]}
	nc := &nativeCompiler{l: l, c: c, info: e.ast.NativeRep().SourceInfo(), keyIdx: map[string]int{}}
	if root, ok := nc.compile(e.ast.NativeRep().Expr()); ok && nc.err == nil {
		c.native = root
		c.fixedLists = make([][]string, c.nlists)
		c.readFixedLists(root)
	} else {
		c.consts, c.constKinds, c.fixed, c.keys = nil, nil, nil, nil
	}
	l.lintRoleLiterals(n, key, e)
	return c
}

// readFixedLists fills fixedLists for the `in` nodes whose list is a
// literal of strings.
func (c *condition) readFixedLists(n *pnode) {
	if n.kind == pIn && n.slot >= 0 && c.constKinds[n.kids[1].constIdx] == constFixed {
		c.fixedLists[n.slot] = constStrings(c.fixed[n.kids[1].constIdx])
	}
	for _, k := range n.kids {
		c.readFixedLists(k)
	}
}

type nativeCompiler struct {
	l      *loader
	c      *condition
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
	var d diag
	x := compileExpr(&d, nc.l.set.env, nil, "", src, requestVars, false)
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
func (n *pnode) eval(st *condState, rec keyReader) ref.Val {
	if v, ok := n.evalBool(st, rec); ok {
		return types.Bool(v)
	}
	return n.evalVal(st, rec)
}

// evalBool gives evalVal's answer when that is a bool reached only through
// fast paths: &&, || and ! of fastCmp and of a record string in a constant
// list of strings, and boolean constants. ok is false otherwise (evalVal
// then decides; it may still give a bool).
func (n *pnode) evalBool(st *condState, rec keyReader) (val, ok bool) {
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
func (n *pnode) inList(st *condState, rec keyReader) (val, ok bool) {
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
func (n *pnode) evalVal(st *condState, rec keyReader) ref.Val {
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
	return types.NewErr("rules: unknown predicate node")
}

func isNaN(v ref.Val) bool {
	d, ok := v.(types.Double)
	return ok && math.IsNaN(float64(d))
}

// gjsonToVal turns a JSON value into a CEL value: strings, integers (as
// int when the literal is a whole number that fits), other numbers (as
// double), booleans, null, objects (a lazy map) and arrays.
func gjsonToVal(r gjson.Result) ref.Val {
	switch r.Type {
	case gjson.String:
		return types.String(r.Str)
	case gjson.True:
		return types.True
	case gjson.False:
		return types.False
	case gjson.Null:
		return types.NullValue
	case gjson.Number:
		if !strings.ContainsAny(r.Raw, ".eE") {
			if i, err := strconv.ParseInt(r.Raw, 10, 64); err == nil {
				return types.Int(i)
			}
		}
		return types.Double(r.Num)
	case gjson.JSON:
		if r.IsObject() {
			return &jsonMap{raw: r.Raw}
		}
		var elems []ref.Val
		r.ForEach(func(_, v gjson.Result) bool {
			elems = append(elems, gjsonToVal(v))
			return true
		})
		return types.NewRefValList(types.DefaultTypeAdapter, elems)
	}
	return types.NewErr("no such key")
}

// lookupKey finds key among the members of a raw JSON object. A key that
// is present several times with different values does not exist (the same
// rule as rewrite.Record.Key).
func lookupKey(raw string, key string) (gjson.Result, bool) {
	var found gjson.Result
	n := 0
	ambiguous := false
	gjson.Parse(raw).ForEach(func(k, v gjson.Result) bool {
		if k.Str == key {
			if n > 0 && v.Raw != found.Raw {
				ambiguous = true
				return false
			}
			found = v
			n++
		}
		return true
	})
	if ambiguous || n == 0 {
		return gjson.Result{}, false
	}
	return found, true
}

// jsonMap is a JSON object as a CEL map whose members are read lazily.
type jsonMap struct {
	raw  string
	full traits.Mapper // built on first need for iteration or equality
}

var _ traits.Mapper = (*jsonMap)(nil)

func (m *jsonMap) materialize() traits.Mapper {
	if m.full == nil {
		vals := map[ref.Val]ref.Val{}
		gjson.Parse(m.raw).ForEach(func(k, _ gjson.Result) bool {
			if v, ok := lookupKey(m.raw, k.Str); ok {
				vals[types.String(k.Str)] = gjsonToVal(v)
			}
			return true
		})
		m.full = types.NewRefValMap(types.DefaultTypeAdapter, vals)
	}
	return m.full
}

// Find implements traits.Mapper.
func (m *jsonMap) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		if types.IsError(key) {
			return key, false
		}
		return nil, false
	}
	v, ok := lookupKey(m.raw, string(k))
	if !ok {
		return nil, false
	}
	return gjsonToVal(v), true
}

// Get implements traits.Indexer.
func (m *jsonMap) Get(key ref.Val) ref.Val {
	if v, ok := m.Find(key); ok {
		return v
	}
	return types.NewErr("no such key: %v", key)
}

// Contains implements traits.Container.
func (m *jsonMap) Contains(key ref.Val) ref.Val {
	_, ok := m.Find(key)
	return types.Bool(ok)
}

// Iterator implements traits.Iterable.
func (m *jsonMap) Iterator() traits.Iterator { return m.materialize().Iterator() }

// Size implements traits.Sizer.
func (m *jsonMap) Size() ref.Val { return m.materialize().Size() }

// ConvertToNative implements ref.Val.
func (m *jsonMap) ConvertToNative(t reflect.Type) (any, error) {
	return m.materialize().ConvertToNative(t)
}

// ConvertToType implements ref.Val.
func (m *jsonMap) ConvertToType(t ref.Type) ref.Val { return m.materialize().ConvertToType(t) }

// Equal implements ref.Val.
func (m *jsonMap) Equal(o ref.Val) ref.Val { return m.materialize().Equal(o) }

// Type implements ref.Val.
func (m *jsonMap) Type() ref.Type { return types.MapType }

// Value implements ref.Val.
func (m *jsonMap) Value() any { return m.materialize().Value() }

// lintRoleLiterals warns about `"name" in user.roles` with an undeclared
// role name, and counts declared ones as used.
func (l *loader) lintRoleLiterals(n *yaml.Node, key string, e *expr) {
	v := ast.NewExprVisitor(func(x ast.Expr) {
		if x.Kind() != ast.CallKind || x.AsCall().FunctionName() != operators.In {
			return
		}
		args := x.AsCall().Args()
		if len(args) != 2 || args[0].Kind() != ast.LiteralKind || args[1].Kind() != ast.SelectKind {
			return
		}
		sel := args[1].AsSelect()
		if sel.FieldName() != "roles" || sel.Operand().Kind() != ast.IdentKind || sel.Operand().AsIdent() != varUser {
			return
		}
		if s, ok := args[0].AsLiteral().(types.String); ok {
			l.useRoles(n, key, []string{string(s)})
		}
	})
	ast.PostOrderVisit(e.ast.NativeRep().Expr(), v)
}

// fastCmp compares a record value with a request constant without boxing
// values (val is the bool evalVal gives), for the cases where the result is plain: a record string against
// a constant string (== and !=), and timestamp(record string) against a
// constant timestamp. ok is false when the general path must decide.
func (n *pnode) fastCmp(st *condState, rec keyReader) (val, ok bool) {
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

// canonicalUTC reads the canonical form of a UTC instant in whole seconds,
// exactly YYYY-MM-DDThh:mm:ssZ (upper-case T and Z, no fraction), as Unix
// seconds, with the checks CEL's timestamp(string) makes: month 01-12, a day
// that exists in that month, hours 00-23, minutes and seconds 00-59, years
// 0001-9999. ok is false for every other string, which then goes through
// celTimestamp: a fast path, never a different answer (FuzzCELTimestamp
// checks both against CEL).
func canonicalUTC(s string) (int64, bool) {
	if len(s) != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != 'Z' {
		return 0, false
	}
	// two digits at i as a number, or -1
	two := func(i int) int {
		a, b := s[i]-'0', s[i+1]-'0'
		if a > 9 || b > 9 {
			return -1
		}
		return int(a)*10 + int(b)
	}
	century, yy := two(0), two(2)
	month, day, hour, minute, sec := two(5), two(8), two(11), two(14), two(17)
	if century < 0 || yy < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 || sec > 59 {
		return 0, false
	}
	year := century*100 + yy
	if year < 1 {
		return 0, false
	}
	leap := year%4 == 0 && (year%100 != 0 || year%400 == 0)
	if day > 28+int(monthExtra[month]) && !(month == 2 && day == 29 && leap) {
		return 0, false
	}
	return daysFromCivil(year, month, day)*86400 + int64(hour*3600+minute*60+sec), true
}

// monthExtra is the days of each month beyond 28 (February: 0, leap days
// apart).
var monthExtra = [13]uint8{0, 3, 0, 3, 2, 3, 2, 3, 3, 2, 3, 2, 3}

// daysFromCivil is the number of days from 1970-01-01 to the given date of
// the proleptic Gregorian calendar (Howard Hinnant's days_from_civil).
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400 // y >= 0 here
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era*146097 + doe - 719468)
}

// celTimestamp parses s the way CEL's timestamp(string) does when it
// succeeds: strict RFC 3339 (two-digit fields, '.' fractions, Z or ±hh:mm
// with hh ≤ 23), then time.Parse, then the range of years 1 to 9999. ok is
// false whenever CEL would not give a timestamp; FuzzCELTimestamp checks
// that both agree.
func celTimestamp(s string) (time.Time, bool) {
	if !strictRFC3339(s) {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, false
	}
	if u := t.Unix(); u < -62135596800 || u > 253402300799 {
		return time.Time{}, false
	}
	return t, true
}

// strictRFC3339 reports whether s is
// YYYY-MM-DD(T|t)hh:mm:ss[.frac](Z|z|(+|-)hh:mm) with months 01-12, days
// 01-31, hours 00-23, minutes 00-59 and seconds 00-60.
func strictRFC3339(s string) bool {
	if len(s) < 20 {
		return false
	}
	two := func(i int, max int) bool {
		if !isDigit(s[i]) || !isDigit(s[i+1]) {
			return false
		}
		v := int(s[i]-'0')*10 + int(s[i+1]-'0')
		return v <= max
	}
	for i := 0; i < 4; i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	if s[4] != '-' || !two(5, 12) || s[5:7] == "00" || s[7] != '-' || !two(8, 31) || s[8:10] == "00" ||
		(s[10] != 'T' && s[10] != 't') || !two(11, 23) || s[13] != ':' || !two(14, 59) || s[16] != ':' || !two(17, 60) {
		return false
	}
	rest := s[19:]
	if rest[0] == '.' {
		i := 1
		for i < len(rest) && isDigit(rest[i]) {
			i++
		}
		if i == 1 {
			return false
		}
		rest = rest[i:]
	}
	switch {
	case len(rest) == 1:
		return rest[0] == 'Z' || rest[0] == 'z'
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-'):
		zone := "x" + rest[1:] // keep the offsets of two()'s indexes simple
		return isDigit(zone[1]) && isDigit(zone[2]) && int(zone[1]-'0')*10+int(zone[2]-'0') <= 23 &&
			zone[3] == ':' && isDigit(zone[4]) && isDigit(zone[5]) && int(zone[4]-'0')*10+int(zone[5]-'0') <= 59
	}
	return false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
