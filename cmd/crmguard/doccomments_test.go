package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// undocumented returns, as file:line: what, the exported names of the
// non-test Go files in fsys that have no doc comment: functions, methods
// of exported types, types, constants, variables, and the fields of
// exported struct types. A field counts as documented by its own comment
// or by the comment of a field above it that names it ("From and To are
// ..."); a name in a const, var or type group by the group's comment.
func undocumented(fsys fs.FS) ([]string, error) {
	var out []string
	fset := token.NewFileSet()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
				return fs.SkipDir
			}
			return nil
		}
		if path.Ext(p) != ".go" || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		src, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, p, src, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return fmt.Errorf("parsing %s: %w", p, err)
		}
		missing := func(pos token.Pos, what string) {
			at := fset.Position(pos)
			out = append(out, fmt.Sprintf("%s:%d: %s", at.Filename, at.Line, what))
		}
		for _, decl := range f.Decls {
			switch decl := decl.(type) {
			case *ast.FuncDecl:
				if decl.Name.IsExported() && decl.Doc == nil && receiverExported(decl) {
					missing(decl.Pos(), "func "+decl.Name.Name)
				}
			case *ast.GenDecl:
				for _, spec := range decl.Specs {
					switch spec := spec.(type) {
					case *ast.TypeSpec:
						if !spec.Name.IsExported() {
							continue
						}
						if spec.Doc == nil && decl.Doc == nil {
							missing(spec.Pos(), "type "+spec.Name.Name)
						}
						if st, ok := spec.Type.(*ast.StructType); ok {
							for _, name := range undocumentedFields(st) {
								missing(name.Pos(), "field "+spec.Name.Name+"."+name.Name)
							}
						}
					case *ast.ValueSpec:
						for _, name := range spec.Names {
							if name.IsExported() && spec.Doc == nil && spec.Comment == nil && decl.Doc == nil {
								missing(name.Pos(), decl.Tok.String()+" "+name.Name)
							}
						}
					}
				}
			}
		}
		return nil
	})
	return out, err
}

// receiverExported reports whether fn is a function or a method of an
// exported type (methods of unexported types are not documentation).
func receiverExported(fn *ast.FuncDecl) bool {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return true
	}
	t := fn.Recv.List[0].Type
	if star, ok := t.(*ast.StarExpr); ok {
		t = star.X
	}
	switch x := t.(type) {
	case *ast.IndexExpr:
		t = x.X
	case *ast.IndexListExpr:
		t = x.X
	}
	id, ok := t.(*ast.Ident)
	return !ok || id.IsExported()
}

// undocumentedFields returns the exported fields of st with neither a
// comment of their own nor one above them that names them.
func undocumentedFields(st *ast.StructType) []*ast.Ident {
	var out []*ast.Ident
	above := ""
	for _, field := range st.Fields.List {
		doc := ""
		if field.Doc != nil {
			doc = field.Doc.Text()
		} else if field.Comment != nil {
			doc = field.Comment.Text()
		}
		for _, name := range field.Names {
			if name.IsExported() && doc == "" && !strings.Contains(above, name.Name) {
				out = append(out, name)
			}
		}
		if doc != "" {
			above = doc
		}
	}
	return out
}

func TestUndocumentedFindsWhatLacksADocComment(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{name: "a documented function passes", src: "// F does.\nfunc F() {}\n"},
		{name: "an undocumented function is named", src: "func F() {}\n", want: []string{"a.go:3: func F"}},
		{name: "an unexported function needs no comment", src: "func f() {}\n"},
		{name: "a method of an unexported type needs no comment", src: "type t struct{}\n\nfunc (t) F() {}\n"},
		{name: "an undocumented method of an exported type is named", src: "// T is.\ntype T struct{}\n\nfunc (*T) F() {}\n", want: []string{"a.go:6: func F"}},
		{name: "an undocumented type is named", src: "type T int\n", want: []string{"a.go:3: type T"}},
		{name: "a constant in a documented group passes", src: "// Kinds.\nconst (\n\tA = 1\n\tB = 2\n)\n"},
		{name: "an undocumented variable is named", src: "var V = 1\n", want: []string{"a.go:3: var V"}},
		{name: "a field with a line comment passes", src: "// T is.\ntype T struct {\n\tA int // A is.\n}\n"},
		{name: "a field named in the comment above it passes", src: "// T is.\ntype T struct {\n\t// From and To bound it.\n\tFrom int\n\tTo   int\n}\n"},
		{name: "an undocumented field is named", src: "// T is.\ntype T struct {\n\t// A is.\n\tA int\n\tB int\n}\n", want: []string{"a.go:7: field T.B"}},
		{name: "fields of an unexported struct need no comment", src: "type t struct {\n\tA int\n}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := fstest.MapFS{
				"a.go":          {Data: []byte("package a\n\n" + tt.src)},
				"a_test.go":     {Data: []byte("package a\n\nfunc Undocumented() {}\n")},
				"testdata/b.go": {Data: []byte("package b\n\nfunc Undocumented() {}\n")},
			}
			got, err := undocumented(fsys)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("undocumented = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEveryExportedNameHasADocComment(t *testing.T) {
	got, err := undocumented(os.DirFS("../.."))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range got {
		t.Errorf("%s has no doc comment", m)
	}
}
