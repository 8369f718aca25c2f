package crmgen

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestCustomers(t *testing.T) {
	t.Run("3000 records make a valid list of about 1.3 MB", func(t *testing.T) {
		doc := Customers(3000, 1)
		var v struct {
			Total int              `json:"total"`
			List  []map[string]any `json:"list"`
		}
		if err := json.Unmarshal(doc, &v); err != nil {
			t.Fatal(err)
		}
		if len(v.List) != 3000 || v.Total != 3000 {
			t.Fatalf("got %d records, total %d", len(v.List), v.Total)
		}
		if len(doc) < 1_150_000 || len(doc) > 1_450_000 {
			t.Fatalf("document is %d bytes", len(doc))
		}
		for _, k := range []string{"id", "name", "phone", "id_card", "email", "owner_id", "team", "stage", "contract_amount", "last_contact_at", "notes", "tags", "address"} {
			if _, ok := v.List[0][k]; !ok {
				t.Fatalf("record 0 has no %q", k)
			}
		}
	})
	t.Run("the same seed gives the same bytes", func(t *testing.T) {
		if !bytes.Equal(Customers(50, 7), Customers(50, 7)) {
			t.Fatal("two documents differ")
		}
	})
}
