package rules

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"net/http"
	"testing"

	"github.com/crmguard/crmguard/rules/mask"
)

// csvExport is a generated customer export of n rows.
func csvExport(n int) []byte {
	var b bytes.Buffer
	b.WriteString("\ufeffid,name,company,phone,id_card,bank_account,email,city,owner_id,team,stage,contract_amount,last_contact_at\r\n")
	owners := []string{"zhang", "wu", "chen", "huang", "liu"}
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "%d,客户%d,\"Acme, Ltd %d\",138%08d,1101011990%08d,62220212345%08d,c%d@example.cn,上海,%s,east,lead,%d.00,2026-10-01T09:00:00Z\r\n",
			i+1, i, i, i, i, i, i, owners[i%len(owners)], i*100)
	}
	return b.Bytes()
}

// exportSizes are the row counts the CSV export benchmarks run at: the
// project's allocations per export must not grow with them.
var exportSizes = []int{3000, 30000}

// BenchmarkRewriteCSVExport rewrites a customer export as a sales rep
// (visible per row, phone and ID masked, bank column removed), at each
// size in exportSizes.
func BenchmarkRewriteCSVExport(b *testing.B) {
	s := mustLoad(b, csvRules)
	u := &User{ID: "zhang", Roles: []string{"sales"}}
	h := http.Header{"Content-Type": {csvType}}
	for _, rows := range exportSizes {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			doc := csvExport(rows)
			var out []byte
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				d := s.Decide(u, request("GET", "/api/customers/export"))
				var err error
				out, _, err = d.Rewrite(out[:0], 200, h, doc)
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBaselineEncodingCSVRoundTrip reads the same exports with
// encoding/csv, keeps the same rows, masks and drops the same columns and
// writes them with csv.Writer.
func BenchmarkBaselineEncodingCSVRoundTrip(b *testing.B) {
	phone, _ := mask.Builtin("phone")
	idCard, _ := mask.Builtin("id_card")
	for _, rows := range exportSizes {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			doc := csvExport(rows)
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				rows, err := csv.NewReader(bytes.NewReader(doc[3:])).ReadAll()
				if err != nil {
					b.Fatal(err)
				}
				var out bytes.Buffer
				out.WriteString("\ufeff")
				w := csv.NewWriter(&out)
				w.UseCRLF = true
				for j, r := range rows {
					if j > 0 && r[8] != "zhang" {
						continue
					}
					if j > 0 {
						r[3] = string(phone(nil, r[3]))
						r[4] = string(idCard(nil, r[4]))
					}
					_ = w.Write(append(r[:5:5], r[6:]...))
				}
				w.Flush()
			}
		})
	}
}
