package rules

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
	"go.yaml.in/yaml/v3"
)

// celUser is `user` in CEL expressions (see celtypes.go).
type celUser struct {
	ID      string         // user.id
	Roles   []string       // user.roles
	Attrs   map[string]any // user.attrs
	MFA     bool           // user.mfa
	AuthAge time.Duration  // user.auth_age
}

// celRequest is `request` in CEL expressions (see celtypes.go).
type celRequest struct {
	Method string            // request.method
	Path   string            // request.path
	Params map[string]string // request.params

	// request.query and request.header are built from rawQuery and
	// rawHeader when an expression first reads them: most rule files never
	// do, and most requests need not pay for two maps.
	rawQuery  url.Values
	rawHeader http.Header
	once      sync.Once
	query     map[string]string
	header    map[string]string
}

// maps builds request.query and request.header once.
func (r *celRequest) maps() {
	r.once.Do(func() {
		r.query = single(r.rawQuery)
		r.header = singleHeader(r.rawHeader)
	})
}

// Query is request.query: each parameter given once (or always with the
// same value) by name.
func (r *celRequest) Query() map[string]string { r.maps(); return r.query }

// Header is request.header: header values by lower-case name, a repeated
// header's values joined by ", ".
func (r *celRequest) Header() map[string]string { r.maps(); return r.header }

// The variables an expression may use, by kind of expression.
const (
	varUser    = "user"
	varRequest = "request"
	varRecord  = "record"
	varNow     = "now"
	varClaims  = "claims"
)

var (
	subjectVars = []string{varClaims}
	requestVars = []string{varUser, varRequest, varNow}
	recordVars  = []string{varUser, varRequest, varNow, varRecord}
)

// inScheduleFn is the function in_schedule(name) expands to: the macro
// passes `now` so that the function needs no per-request binding.
const inScheduleFn = "crmguard_in_schedule"

// newEnv builds the CEL environment for one rule file; schedules are the
// file's schedules (in_schedule with an unknown literal name is a compile
// error).
func newEnv(schedules map[string]*schedule) (*cel.Env, error) {
	expand := func(eh cel.MacroExprFactory, target ast.Expr, args []ast.Expr) (ast.Expr, *common.Error) {
		arg := args[0]
		if arg.Kind() == ast.LiteralKind {
			name, ok := arg.AsLiteral().(types.String)
			if !ok {
				return nil, eh.NewError(arg.ID(), "in_schedule takes a schedule name (a string)")
			}
			if _, ok := schedules[string(name)]; !ok {
				return nil, eh.NewError(arg.ID(), fmt.Sprintf("unknown schedule %q (declared: %s)", string(name), strings.Join(sortedKeys(schedules), ", ")))
			}
		}
		return eh.NewCall(inScheduleFn, eh.NewIdent(varNow), eh.Copy(arg)), nil
	}
	inSchedule := func(lhs, rhs ref.Val) ref.Val {
		now, ok := lhs.(types.Timestamp)
		if !ok {
			return types.NewErr("in_schedule: now is not a timestamp")
		}
		name, ok := rhs.(types.String)
		if !ok {
			return types.NewErr("in_schedule: the schedule name is not a string")
		}
		s, ok := schedules[string(name)]
		if !ok {
			return types.NewErr("in_schedule: unknown schedule %q", string(name))
		}
		return types.Bool(s.contains(now.Time))
	}
	return cel.NewEnv(
		objTypesOption(),
		cel.Variable(varUser, cel.ObjectType(userTypeName)),
		cel.Variable(varRequest, cel.ObjectType(requestTypeName)),
		cel.Variable(varRecord, cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable(varNow, cel.TimestampType),
		cel.Variable(varClaims, cel.MapType(cel.StringType, cel.DynType)),
		cel.Macros(cel.GlobalMacro("in_schedule", 1, expand)),
		cel.Function(inScheduleFn, cel.Overload("crmguard_in_schedule_timestamp_string",
			[]*cel.Type{cel.TimestampType, cel.StringType}, cel.BoolType,
			cel.BinaryBinding(inSchedule))),
		ext.Strings(),
	)
}

// expr is a compiled, type-checked CEL expression.
type expr struct {
	src  string
	ast  *cel.Ast
	prg  cel.Program
	vars map[string]bool // variables the expression references
}

// compileExpr compiles src found at node n (key names the place). allowed
// lists the variables the expression may use; boolean says the result must
// be a condition. Problems are reported to d; nil is returned then.
func compileExpr(d *diag, env *cel.Env, n *yaml.Node, key, src string, allowed []string, boolean bool) *expr {
	if strings.TrimSpace(src) == "" {
		d.errorf(n, key, "empty expression")
		return nil
	}
	checked, iss := env.Compile(src)
	if iss != nil && iss.Err() != nil {
		for _, e := range iss.Errors() {
			d.errs = append(d.errs, &Error{Position: exprPos(d, n, key, src, e.Location), Msg: cleanCELMessage(e.Message)})
		}
		return nil
	}
	vars := referencedVars(checked)
	for v := range vars {
		ok := false
		for _, a := range allowed {
			ok = ok || a == v
		}
		if !ok {
			d.errorf(n, key, "%s is not available here (this expression may use: %s)", v, strings.Join(allowed, ", "))
			return nil
		}
	}
	if boolean {
		t := checked.OutputType()
		if !t.IsExactType(cel.BoolType) && !t.IsExactType(cel.DynType) {
			d.errorf(n, key, "the condition gives %s, not a bool", t)
			return nil
		}
	}
	prg, err := env.Program(checked, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		d.errorf(n, key, "%v", err)
		return nil
	}
	return &expr{src: src, ast: checked, prg: prg, vars: vars}
}

// exprPos places a CEL error: inside a one-line plain or quoted scalar the
// column is exact; otherwise the scalar's start is given.
func exprPos(d *diag, n *yaml.Node, key, src string, loc common.Location) Position {
	p := d.pos(n, key)
	if n == nil || loc == nil || strings.Contains(src, "\n") || loc.Line() != 1 {
		return p
	}
	switch n.Style {
	case 0:
		p.Column += loc.Column()
	case yaml.SingleQuotedStyle, yaml.DoubleQuotedStyle:
		if !strings.ContainsAny(n.Value, `\'`) {
			p.Column += loc.Column() + 1
		}
	}
	return p
}

func cleanCELMessage(m string) string {
	m = strings.TrimSuffix(m, " (in container '')")
	return m
}

// referencedVars lists the top-level variables an expression reads.
func referencedVars(a *cel.Ast) map[string]bool {
	out := map[string]bool{}
	for _, r := range a.NativeRep().ReferenceMap() {
		if r.Name != "" && len(r.OverloadIDs) == 0 {
			name := r.Name
			if i := strings.IndexByte(name, '.'); i >= 0 {
				name = name[:i]
			}
			switch name {
			case varUser, varRequest, varRecord, varNow, varClaims:
				out[name] = true
			}
		}
	}
	return out
}

// evalBool evaluates a condition; an error or a non-bool result is
// returned as an error (callers count it as false).
func (e *expr) evalBool(act any) (bool, error) {
	v, _, err := e.prg.Eval(act)
	if err != nil {
		return false, err
	}
	b, ok := v.(types.Bool)
	if !ok {
		return false, fmt.Errorf("rules: condition %q gave %s, not a bool", e.src, v.Type().TypeName())
	}
	return bool(b), nil
}

// celToNative turns a CEL value into plain Go values (string, float64,
// int64, bool, nil, []any, map[string]any, time.Time, time.Duration).
func celToNative(v ref.Val) any {
	switch v := v.(type) {
	case types.String:
		return string(v)
	case types.Bool:
		return bool(v)
	case types.Int:
		return int64(v)
	case types.Uint:
		return uint64(v)
	case types.Double:
		return float64(v)
	case types.Null:
		return nil
	case types.Timestamp:
		return v.Time
	case types.Duration:
		return v.Duration
	}
	if l, ok := v.(interface {
		Size() ref.Val
		Get(ref.Val) ref.Val
	}); ok && v.Type() == types.ListType {
		n, _ := l.Size().(types.Int)
		out := make([]any, 0, int(n))
		for i := types.Int(0); i < n; i++ {
			out = append(out, celToNative(l.Get(i)))
		}
		return out
	}
	if v.Type() == types.MapType {
		if m, err := v.ConvertToNative(reflect.TypeFor[map[string]any]()); err == nil {
			return m
		}
	}
	return v.Value()
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
