package rules

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/mask"
	"github.com/crmguard/crmguard/rules/rewrite"
	"go.yaml.in/yaml/v3"
)

// path compiles a field path.
func (l *loader) path(n *yaml.Node, key, p string) (rewrite.Path, bool) {
	path, err := checkFieldPath(p)
	if err != nil {
		l.errorf(n, key, "%v", err)
		return path, false
	}
	return path, true
}

var fieldKeys = []string{"remove", "mask", "hash", "null", "replace", "for", "except", "when", "unless"}

// fields reads a `fields` mapping (record paths) or, with answer, an
// `answer` mapping (paths from the answer's root, outside the records; their
// conditions may not read record).
func (l *loader) fields(r *route, n *yaml.Node, key string, answer bool) []*fieldRule {
	var out []*fieldRule
	es, _ := l.entries(n, key)
	for _, e := range es {
		fk := joinKey(key, e.name)
		path, ok := l.path(e.key, fk, e.name)
		if !ok {
			continue
		}
		if answer {
			// the rewriter's own checks: plain keys, outside the records
			chk := rewrite.Plan{Records: r.recPath, Single: r.single, HashKey: []byte("load-time check"),
				Answer: []rewrite.Field{{Path: path, Action: rewrite.Null}}}
			if err := chk.Compile(); err != nil {
				l.errorf(e.key, fk, "%s", strings.TrimPrefix(err.Error(), "rewrite: "))
				continue
			}
		}
		f := &fieldRule{path: e.name, p: path, key: fk}
		v := resolve(e.val)
		if v.Kind == yaml.ScalarNode {
			switch v.Value {
			case "remove", "hash", "null":
				f.action = v.Value
			default:
				l.errorf(v, fk, "unknown action %q (remove, hash, null, or a mapping such as {mask: phone} or {replace: VALUE})", v.Value)
				continue
			}
			l.fieldAction(f, v, fk)
			out = append(out, f)
			continue
		}
		fs, ok := l.entries(v, fk, fieldKeys...)
		if !ok {
			continue
		}
		good := true
		for _, a := range fs {
			ak := joinKey(fk, a.name)
			switch a.name {
			case "remove", "hash", "null":
				b, ok := l.boolean(a.val, ak)
				if ok && b {
					good = good && l.setAction(f, a, fk, a.name)
				} else if ok {
					l.errorf(a.val, ak, "write the action only when it applies (%s: true)", a.name)
					good = false
				}
			case "mask":
				if m, ok := l.str(a.val, ak); ok {
					if fn, ok := l.set.masks[m]; ok {
						f.maskFn = fn
					} else if fn, ok := mask.Builtin(m); ok {
						f.maskFn = fn
					} else {
						l.errorf(a.val, ak, "unknown mask %q (built in: %s; or declare it under masks)", m, strings.Join(builtinMasks, ", "))
						good = false
					}
					f.mask = m
					good = good && l.setAction(f, a, fk, "mask")
				}
			case "replace":
				var val any
				if err := a.val.Decode(&val); err != nil {
					l.errorf(a.val, ak, "cannot read the value: %v", err)
					good = false
					continue
				}
				raw, err := json.Marshal(yamlToJSONable(val))
				if err != nil {
					l.errorf(a.val, ak, "the value cannot be written as JSON: %v", err)
					good = false
					continue
				}
				f.replace = raw
				good = good && l.setAction(f, a, fk, "replace")
			case "for":
				f.forR, _ = l.strList(a.val, ak)
				l.useRoles(a.val, ak, f.forR)
			case "except":
				f.except, _ = l.strList(a.val, ak)
				l.useRoles(a.val, ak, f.except)
			case "when", "unless":
				if src, ok := l.str(a.val, ak); ok {
					c := l.condition(a.val, ak, src)
					if answer && c != nil && c.UsesRecord() {
						l.errorf(a.val, ak, "an answer field's condition cannot read record: it applies to the whole answer, outside the records")
						good = false
					}
					if a.name == "when" {
						f.when = c
					} else {
						f.unless = c
					}
				}
			}
		}
		if f.forR != nil && f.except != nil {
			l.errorf(v, fk, "use for or except, not both")
			good = false
		}
		if f.action == "" {
			l.errorf(v, fk, "no action (one of remove, mask, hash, null, replace)")
			good = false
		}
		if good {
			l.fieldAction(f, v, fk)
			out = append(out, f)
		}
	}
	return out
}

func (l *loader) setAction(f *fieldRule, a entry, fk, action string) bool {
	if f.action != "" {
		l.errorf(a.key, fk, "two actions (%s and %s); a field gets one", f.action, action)
		return false
	}
	f.action = action
	return true
}

func (l *loader) fieldAction(f *fieldRule, n *yaml.Node, key string) {
	if f.action == "hash" && len(l.cfg.hashKey) == 0 {
		l.errorf(n, key, "hash needs a secret key (the handler's hash_key setting), and none was given")
	}
}

// yamlToJSONable turns the map[string]any / map[any]any trees yaml
// decodes into values encoding/json can write.
func yamlToJSONable(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = yamlToJSONable(x)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[fmt.Sprint(k)] = yamlToJSONable(x)
		}
		return out
	case []any:
		for i, x := range v {
			v[i] = yamlToJSONable(x)
		}
		return v
	}
	return v
}

// finishRoute gives the native conditions of a route one shared list of
// record keys (the rewriter captures them during its scan) and compiles a
// template plan so that rewriter errors show at load.
func (l *loader) finishRoute(r *route) {
	if !r.rewrites {
		return
	}
	var keys cond.RecordKeys
	for _, c := range r.conditions() {
		keys.Add(c)
	}
	r.keys = keys.Paths()
	tpl := &rewrite.Plan{Records: r.recPath, Single: r.single, Keys: r.keys, Expose: r.expose, AuditID: r.auditID, HashKey: []byte("load-time check")}
	for _, f := range r.fields {
		tpl.Fields = append(tpl.Fields, f.rewriteField(nil))
	}
	for _, f := range r.answer {
		tpl.Answer = append(tpl.Answer, f.rewriteField(nil))
	}
	if err := tpl.Compile(); err != nil {
		l.errorf(r.node, r.key, "%s", strings.TrimPrefix(err.Error(), "rewrite: "))
	}
}

func (r *route) conditions() []*cond.Condition {
	var out []*cond.Condition
	if r.visible != nil {
		out = append(out, r.visible)
	}
	for _, f := range append(r.fields[:len(r.fields):len(r.fields)], r.answer...) {
		if f.when != nil {
			out = append(out, f.when)
		}
		if f.unless != nil {
			out = append(out, f.unless)
		}
	}
	return out
}
