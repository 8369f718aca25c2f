package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// schemaObject is an object node of the schema with fixed keys, and the
// way to it.
type schemaObject struct {
	steps []schemaStep
	node  *schemaNode
}

// schemaStep is one step down the schema: a key, an array item ("[]"),
// a mapping's value ("{}"), or an alternative of a oneOf ("|N").
type schemaStep string

func schemaObjects(n *schemaNode, steps []schemaStep, out *[]schemaObject) {
	if n.props != nil {
		*out = append(*out, schemaObject{steps: slices.Clone(steps), node: n})
		for _, p := range n.props {
			schemaObjects(p.node, append(steps, schemaStep(p.name)), out)
		}
	}
	if n.values != nil {
		schemaObjects(n.values, append(steps, "{}"), out)
	}
	if n.items != nil {
		schemaObjects(n.items, append(steps, "[]"), out)
	}
	for i, a := range n.oneOf {
		schemaObjects(a, append(steps, schemaStep("|"+strconv.Itoa(i))), out)
	}
}

// probeBase is a small rule file that loads; probes add an unknown key
// somewhere in it.
func probeBase() map[string]any {
	return map[string]any{
		"version": 1,
		"roles":   map[string]any{"x": map[string]any{}},
		"routes": []any{map[string]any{
			"id": "r", "match": map[string]any{"path": "/a/{id}"}, "allow": []any{"x"}, "records": "list",
		}},
	}
}

// probe puts {zz_unknown: 1} at steps in doc and returns the key path the
// loader names it by.
func probe(doc map[string]any, steps []schemaStep) string {
	for len(steps) > 0 && strings.HasPrefix(string(steps[len(steps)-1]), "|") {
		steps = steps[:len(steps)-1] // the alternative is chosen by the value put there
	}
	if len(steps) == 0 {
		doc["zz_unknown"] = 1
		return "zz_unknown"
	}
	var cur any = doc
	key := ""
	for i, s := range steps {
		last := i == len(steps)-1
		switch {
		case strings.HasPrefix(string(s), "|"):
			continue
		case s == "[]":
			list := cur.([]any)
			if len(list) == 0 || last {
				list = append(list[:0], map[string]any{})
			}
			key = indexKey(key, 0)
			if last {
				list[0] = map[string]any{"zz_unknown": 1}
				return joinKey(key, "zz_unknown")
			}
			cur = list[0]
		default:
			m := cur.(map[string]any)
			name := string(s)
			if s == "{}" {
				name = "x"
				if _, ok := m[name]; !ok && len(m) > 0 {
					for k := range m {
						name = k
						break
					}
				}
			}
			key = joinKey(key, name)
			if last {
				m[name] = map[string]any{"zz_unknown": 1}
				return joinKey(key, "zz_unknown")
			}
			next, ok := m[name]
			if !ok || !isContainer(next) {
				if i+1 < len(steps) && steps[i+1] == "[]" {
					next = []any{map[string]any{}}
				} else {
					next = map[string]any{}
				}
				m[name] = next
			}
			cur = next
		}
	}
	return key
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func isContainer(v any) bool {
	switch v.(type) {
	case map[string]any, []any:
		return true
	}
	return false
}

// TestSchemaKeysAreTheLoadersKeys puts an unknown key in every object of
// the schema and checks that the loader refuses it, naming as known
// exactly the keys the schema lists there.
func TestSchemaKeysAreTheLoadersKeys(t *testing.T) {
	var objs []schemaObject
	schemaObjects(ruleFileSchema, nil, &objs)
	if len(objs) < 20 {
		t.Fatalf("only %d objects in the schema", len(objs))
	}
	for _, o := range objs {
		var names []string
		for _, p := range o.node.props {
			names = append(names, p.name)
		}
		doc := probeBase()
		at := probe(doc, o.steps)
		if strings.HasPrefix(at, "routes[0].target.fetch_many.") {
			// the loader reads fetch_many only on a bulk target
			doc["routes"].([]any)[0].(map[string]any)["target"].(map[string]any)["ids"] = "ids.#"
		}
		where := strings.TrimSuffix(strings.TrimSuffix(at, "zz_unknown"), ".")
		t.Run("the loader knows the keys of "+cmpOr(where, "the top level"), func(t *testing.T) {
			src, _ := yaml.Marshal(doc)
			_, err := Load("probe.yaml", src)
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("the probe loaded: %v\n%s", err, src)
			}
			for _, e := range le.Errors {
				if e.Key != at {
					continue
				}
				_, list, ok := strings.Cut(e.Msg, "known here: ")
				if !ok {
					t.Fatalf("%s: %s", at, e.Msg)
				}
				known := strings.Split(strings.TrimSuffix(list, ")"), ", ")
				slices.Sort(known)
				slices.Sort(names)
				if !slices.Equal(known, names) {
					t.Errorf("the loader knows %v, the schema %v", known, names)
				}
				return
			}
			t.Fatalf("no unknown-key error at %s in:\n%v\n%s", at, err, src)
		})
	}
}

// TestEveryLoaderKeyListIsInTheSchema reads the loader's source: every
// list of keys it accepts somewhere must be the keys of an object of the
// schema, so that a key added to the loader cannot be missing from it.
func TestEveryLoaderKeyListIsInTheSchema(t *testing.T) {
	vars := map[string][]string{"routeKeys": routeKeys, "fieldKeys": fieldKeys, "targetKeys": targetKeys,
		"queryKeys": queryKeys, "queryParamKeys": queryParamKeys, "forwardKeys": forwardKeys,
		"limitKeys": limitKeys}
	var objs []schemaObject
	schemaObjects(ruleFileSchema, nil, &objs)
	schemaSets := map[string]bool{}
	for _, o := range objs {
		var names []string
		for _, p := range o.node.props {
			names = append(names, p.name)
		}
		slices.Sort(names)
		schemaSets[strings.Join(names, ",")] = true
	}
	files, _ := filepath.Glob("load*.go")
	fset := token.NewFileSet()
	lists := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "entries" || len(call.Args) <= 2 {
				return true
			}
			var keys []string
			if id, ok := call.Args[2].(*ast.Ident); ok && call.Ellipsis.IsValid() {
				keys = vars[id.Name]
				if keys == nil {
					t.Errorf("%s: entries takes the keys of %s, which this test does not know", fset.Position(call.Pos()), id.Name)
				}
			} else {
				for _, a := range call.Args[2:] {
					lit, ok := a.(*ast.BasicLit)
					if !ok {
						t.Errorf("%s: a key that is not a literal", fset.Position(a.Pos()))
						continue
					}
					s, _ := strconv.Unquote(lit.Value)
					keys = append(keys, s)
				}
			}
			lists++
			slices.Sort(keys)
			if !schemaSets[strings.Join(keys, ",")] {
				t.Errorf("%s: the loader accepts %v, which no object of the schema lists", fset.Position(call.Pos()), keys)
			}
			return true
		})
	}
	if lists < 15 {
		t.Errorf("found only %d key lists in the loader", lists)
	}
}

func TestSchemaIsJSONWithADescriptionForEveryKey(t *testing.T) {
	var root map[string]any
	if err := json.Unmarshal(Schema(), &root); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, n map[string]any)
	count := 0
	walk = func(path string, n map[string]any) {
		if props, ok := n["properties"].(map[string]any); ok {
			for k, v := range props {
				vm := v.(map[string]any)
				count++
				if d, _ := vm["description"].(string); d == "" {
					t.Errorf("%s.%s has no description", path, k)
				}
				walk(path+"."+k, vm)
			}
		}
		for _, k := range []string{"items", "additionalProperties"} {
			if m, ok := n[k].(map[string]any); ok {
				walk(path+"."+k, m)
			}
		}
		if alts, ok := n["oneOf"].([]any); ok {
			for _, a := range alts {
				walk(path, a.(map[string]any))
			}
		}
	}
	walk("", root)
	if count < 90 {
		t.Errorf("only %d keys described", count)
	}
}

// validate checks v (decoded YAML) against n, for the parts of JSON
// Schema the rule file's schema uses.
func validate(n *schemaNode, v any, at string) []string {
	if n.oneOf != nil {
		for _, a := range n.oneOf {
			if len(validate(a, v, at)) == 0 {
				return nil
			}
		}
		return []string{at + ": matches none of the alternatives"}
	}
	if n.enum != nil {
		for _, e := range n.enum {
			if e == v {
				return nil
			}
		}
		return []string{fmt.Sprintf("%s: %v is not one of %v", at, v, n.enum)}
	}
	switch n.typ {
	case "":
		return nil
	case "string":
		if _, ok := v.(string); !ok {
			return []string{fmt.Sprintf("%s: %v is not a string", at, v)}
		}
	case "integer":
		if _, ok := v.(int); !ok {
			return []string{fmt.Sprintf("%s: %v is not an integer", at, v)}
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return []string{fmt.Sprintf("%s: %v is not a boolean", at, v)}
		}
	case "array":
		list, ok := v.([]any)
		if !ok {
			return []string{fmt.Sprintf("%s: %v is not a list", at, v)}
		}
		var out []string
		for i, x := range list {
			out = append(out, validate(n.items, x, fmt.Sprintf("%s[%d]", at, i))...)
		}
		return out
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: %v is not a mapping", at, v)}
		}
		var out []string
		for _, r := range n.req {
			if _, ok := m[r]; !ok {
				out = append(out, at+": missing "+r)
			}
		}
		for k, x := range m {
			switch {
			case n.values != nil:
				out = append(out, validate(n.values, x, at+"."+k)...)
			default:
				i := slices.IndexFunc(n.props, func(p schemaProp) bool { return p.name == k })
				if i < 0 {
					out = append(out, at+": unknown key "+k)
					continue
				}
				out = append(out, validate(n.props[i].node, x, at+"."+k)...)
			}
		}
		return out
	}
	return nil
}

func TestTheProjectsRuleFilesFollowTheSchema(t *testing.T) {
	files := []string{filepath.Join("..", "examples", "rules.yaml"), filepath.Join("testdata", "example.yaml")}
	for _, f := range files {
		t.Run(f+" follows the schema", func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Load(f, data, WithHashKey([]byte("k"))); err != nil {
				t.Fatalf("the file does not load: %v", err)
			}
			var v any
			if err := yaml.Unmarshal(data, &v); err != nil {
				t.Fatal(err)
			}
			for _, problem := range validate(ruleFileSchema, v, "") {
				t.Error(problem)
			}
		})
	}
	t.Run("the validator itself refuses a wrong file", func(t *testing.T) {
		var v any
		_ = yaml.Unmarshal([]byte("version: 2\nroles: {a: {inherit: [b]}}\nroutes: [{id: r, allow: yes}]\n"), &v)
		if got := validate(ruleFileSchema, v, ""); len(got) < 3 {
			t.Errorf("want at least three problems, got %v", got)
		}
	})
}

func TestTheSchemaInDocsIsCurrent(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "docs", "rules.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != string(Schema()) {
		t.Error("docs/rules.schema.json differs from Schema(): run `go run ./cmd/crmguard rules schema > docs/rules.schema.json`")
	}
}
