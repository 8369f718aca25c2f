package cond

import (
	"reflect"
	"strconv"
	"strings"
	"time"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/interpreter"
	"github.com/tidwall/gjson"
)

// Activation gives expressions their variables for one request (and, made
// with WithRecord, one record). It is used by one request only.
type Activation struct {
	// User is `user`; nil when the expression has none (the subject block).
	User *User
	// Request is `request`.
	Request *Request
	// Now is `now`.
	Now time.Time
	// Claims is `claims`: the verified token's claims (the subject block
	// only).
	Claims map[string]any
	// Approver and Requester are `approver` and `requester` (an approval
	// step's condition only).
	Approver, Requester *User
	// Body is `body`: the values the request body sets (NewBody); nil
	// when the body was not read, so that a condition reading it fails.
	Body *Body

	record ref.Val
}

// ResolveName implements interpreter.Activation.
func (a *Activation) ResolveName(name string) (any, bool) {
	switch name {
	case varUser:
		return a.User, a.User != nil
	case varRequest:
		return a.Request, a.Request != nil
	case varNow:
		return a.Now, !a.Now.IsZero()
	case varClaims:
		return a.Claims, a.Claims != nil
	case varRecord:
		return a.record, a.record != nil
	case varApprover:
		return a.Approver, a.Approver != nil
	case varRequester:
		return a.Requester, a.Requester != nil
	case varBody:
		if a.Body == nil {
			return nil, false
		}
		return a.Body.m, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (a *Activation) Parent() interpreter.Activation { return nil }

// WithRecord is a copy of a that also holds a record's raw JSON (an
// object) as `record`, read lazily.
func (a *Activation) WithRecord(raw []byte) *Activation {
	b := *a
	b.record = &jsonMap{raw: string(raw)}
	return &b
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
