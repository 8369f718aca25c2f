package rewrite

import (
	"bytes"
	"slices"
	"testing"
)

// TestTableTextOutlivesTheDocumentOnlyWhereItMust: the audit ids are read
// after the guard has reused the answer's buffer, so they are copies; the
// header's names are read for every row, so decoding a row's doubled
// quotes must not overwrite them.
func TestTableTextOutlivesTheDocumentOnlyWhereItMust(t *testing.T) {
	in := "id,\"own\"\"er\"\n\"a\"\"1\",zhang\n\"b\"\"22\",wu\n3,zhang\n"
	t.Run("the audit ids are kept when the document's buffer is reused", func(t *testing.T) {
		doc := []byte(in)
		p := &Plan{AuditID: paths("id")[0]}
		var st Stats
		if _, err := p.RewriteTable(nil, doc, ',', &st); err != nil {
			t.Fatal(err)
		}
		copy(doc, bytes.Repeat([]byte("x"), len(doc)))
		if want := []string{`a"1`, `b"22`, "3"}; !slices.Equal(st.IDs, want) {
			t.Fatalf("ids after the buffer is reused: %q, want %q", st.IDs, want)
		}
	})
	t.Run("a quoted header name is read alike in every row", func(t *testing.T) {
		var owners []string
		p := &Plan{Visible: func(r *Record) (bool, error) {
			owners = append(owners, r.Get(`own"er`).Str)
			return r.Get(`own"er`).Str == "zhang", nil
		}, AuditID: paths("id")[0]}
		var st Stats
		if _, err := p.RewriteTable(nil, []byte(in), ',', &st); err != nil {
			t.Fatal(err)
		}
		if want := []string{"zhang", "wu", "zhang"}; !slices.Equal(owners, want) {
			t.Fatalf("owners read %q, want %q", owners, want)
		}
		if want := []string{`a"1`, "3"}; !slices.Equal(st.IDs, want) {
			t.Fatalf("ids %q, want %q", st.IDs, want)
		}
	})
}
