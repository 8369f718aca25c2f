package cond

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// Body is `body` in expressions: the values a request body sets, as a map
// from key to value. Package rules reads the body (refusing one it cannot
// read with certainty) and builds it with NewBody; a Body is used by one
// request only.
//
// Keys are looked up as encoding/json binds them to a struct field: the
// exact key first, then a key equal to it under Unicode simple case
// folding (strings.EqualFold), so body.owner_id reads "Owner_ID" as a Go
// CRM would. The reader refuses objects holding two keys that fold alike,
// so at most one key matches.
type Body struct {
	m *foldMap
}

// NewBody builds `body` from decoded values: strings, json.Number (an
// integer literal that fits becomes an int, any other number a double, as
// record values do), float64, int64, bool, nil, []string, []any and
// map[string]any, nested.
func NewBody(fields map[string]any) *Body {
	return &Body{m: newFoldMap(fields)}
}

// bodyVal turns a decoded body value into a CEL value.
func bodyVal(v any) ref.Val {
	switch v := v.(type) {
	case nil:
		return types.NullValue
	case string:
		return types.String(v)
	case bool:
		return types.Bool(v)
	case int64:
		return types.Int(v)
	case float64:
		return types.Double(v)
	case json.Number:
		s := string(v)
		if !strings.ContainsAny(s, ".eE") {
			if i, err := strconv.ParseInt(s, 10, 64); err == nil {
				return types.Int(i)
			}
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return types.NewErr("the number %s cannot be read", s)
		}
		return types.Double(f)
	case []string:
		elems := make([]ref.Val, len(v))
		for i, s := range v {
			elems[i] = types.String(s)
		}
		return types.NewRefValList(types.DefaultTypeAdapter, elems)
	case []any:
		elems := make([]ref.Val, len(v))
		for i, e := range v {
			elems[i] = bodyVal(e)
		}
		return types.NewRefValList(types.DefaultTypeAdapter, elems)
	case map[string]any:
		return newFoldMap(v)
	}
	return types.NewErr("a body value of type %T cannot be read", v)
}

// foldMap is a body object as a CEL map whose keys are found as
// encoding/json finds struct fields (see Body).
type foldMap struct {
	keys []string
	base traits.Mapper
}

var _ traits.Mapper = (*foldMap)(nil)

func newFoldMap(fields map[string]any) *foldMap {
	vals := make(map[ref.Val]ref.Val, len(fields))
	keys := make([]string, 0, len(fields))
	for k, v := range fields {
		keys = append(keys, k)
		vals[types.String(k)] = bodyVal(v)
	}
	return &foldMap{keys: keys, base: types.NewRefValMap(types.DefaultTypeAdapter, vals)}
}

// Find implements traits.Mapper.
func (m *foldMap) Find(key ref.Val) (ref.Val, bool) {
	if v, ok := m.base.Find(key); ok {
		return v, true
	}
	k, ok := key.(types.String)
	if !ok {
		if types.IsError(key) {
			return key, false
		}
		return nil, false
	}
	for _, have := range m.keys {
		if strings.EqualFold(have, string(k)) {
			return m.base.Find(types.String(have))
		}
	}
	return nil, false
}

// Get implements traits.Indexer.
func (m *foldMap) Get(key ref.Val) ref.Val {
	if v, ok := m.Find(key); ok {
		return v
	}
	return types.NewErr("no such key: %v", key)
}

// Contains implements traits.Container.
func (m *foldMap) Contains(key ref.Val) ref.Val {
	_, ok := m.Find(key)
	return types.Bool(ok)
}

// Iterator implements traits.Iterable.
func (m *foldMap) Iterator() traits.Iterator { return m.base.Iterator() }

// Size implements traits.Sizer.
func (m *foldMap) Size() ref.Val { return m.base.Size() }

// ConvertToNative implements ref.Val.
func (m *foldMap) ConvertToNative(t reflect.Type) (any, error) { return m.base.ConvertToNative(t) }

// ConvertToType implements ref.Val.
func (m *foldMap) ConvertToType(t ref.Type) ref.Val { return m.base.ConvertToType(t) }

// Equal implements ref.Val.
func (m *foldMap) Equal(o ref.Val) ref.Val { return m.base.Equal(o) }

// Type implements ref.Val.
func (m *foldMap) Type() ref.Type { return types.MapType }

// Value implements ref.Val.
func (m *foldMap) Value() any { return m.base.Value() }
