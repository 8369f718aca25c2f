package rewrite

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/crmguard/crmguard/rules/internal/crmgen"
	"github.com/crmguard/crmguard/rules/mask"
)

// The four CRM answer shapes from shared/fixtures/crm-shapes (copied into
// testdata): each gets a rule set that masks the phone, removes the tax and
// bank fields (or, where a CRM has none, the comparable sensitive ones) and
// keeps only one owner's records.
func TestCRMShapes(t *testing.T) {
	cases := []struct {
		name    string
		file    string
		plan    *Plan
		want    string
		in, out int
	}{
		{
			name: "Salesforce records keep the owner's accounts with the phone masked and tax and bank ids removed",
			file: "salesforce-query.json",
			plan: &Plan{
				Records: MustParsePath("records"), Keys: paths("OwnerId"), Visible: ownerIs("005A0000001aaaa"),
				Fields:  []Field{mk("Phone", mask.Phone), rm("Tax_ID__c"), rm("Bank_Account__c")},
				AuditID: MustParsePath("Id"),
			},
			in: 3, out: 2,
			want: `{
  "totalSize": 3,
  "done": true,
  "records": [
    {
      "attributes": {"type": "Account", "url": "/services/data/v60.0/sobjects/Account/001A000001a1AAA"},
      "Id": "001A000001a1AAA",
      "Name": "上海远航贸易有限公司",
      "Phone": "138****5678",
      "OwnerId": "005A0000001aaaa",
      "Industry": "Retail",
      "AnnualRevenue": 12000000,
      "LastActivityDate": "2026-10-02"
    },
    {
      "attributes": {"type": "Account", "url": "/services/data/v60.0/sobjects/Account/001A000001a1AAC"},
      "Id": "001A000001a1AAC",
      "Name": "Acme GmbH",
      "Phone": "+** ** ***4567",
      "OwnerId": "005A0000001aaaa",
      "Industry": "Manufacturing",
      "AnnualRevenue": null,
      "LastActivityDate": null
    }
  ]
}
`,
		},
		{
			name: "HubSpot results keep the owner's contacts with the phone masked under properties",
			file: "hubspot-contacts.json",
			plan: &Plan{
				Records: MustParsePath("results"), Keys: paths("properties.hubspot_owner_id"), Visible: ownerIs("71"),
				Fields:  []Field{mk("properties.phone", mask.Phone), rm("properties.tax_id"), rm("properties.bank_*")},
				AuditID: MustParsePath("id"),
			},
			in: 2, out: 1,
			want: `{
  "results": [
    {
      "id": "512",
      "properties": {
        "email": "li.lei@example.cn",
        "firstname": "磊",
        "lastname": "李",
        "phone": "136****5678",
        "hubspot_owner_id": "71",
        "lifecyclestage": "customer",
        "notes_last_contacted": "2026-09-14T08:30:00Z"
      },
      "createdAt": "2025-01-03T10:00:00Z",
      "updatedAt": "2026-09-14T08:31:00Z",
      "archived": false
    }
  ],
  "paging": {"next": {"after": "514", "link": "https://api.example.com/crm/v3/objects/contacts?after=514"}}
}
`,
		},
		{
			name: "EspoCRM list keeps the owner's accounts with the phone masked and the billing street removed",
			file: "espocrm-accounts.json",
			plan: &Plan{
				Records: MustParsePath("list"), Keys: paths("assignedUserId"), Visible: ownerIs("u-wang"),
				Fields:  []Field{mk("phoneNumber", mask.Phone), rm("billingAddress*"), rm("**.tax*"), rm("**.bank*")},
				AuditID: MustParsePath("id"),
			},
			in: 2, out: 1,
			want: `{
  "total": 2,
  "list": [
    
    {
      "id": "5f1a2b3c4d5e6f709",
      "name": "Nordwind AB",
      "phoneNumber": "+** * **3 456",
      "emailAddress": "info@nordwind.example.se",
      "assignedUserId": "u-wang",
      "assignedUserName": "王芳",
      "teamsIds": ["team-export", "team-south"],
      "teamsNames": {"team-export": "出口", "team-south": "华南销售"},
      "type": "Partner",
      "createdAt": "2023-07-01 15:00:00"
    }
  ]
}
`,
		},
		{
			name: "SuiteCRM JSON:API data keeps the owner's account with the office phone masked and revenue fields removed under attributes",
			file: "suitecrm-jsonapi.json",
			plan: &Plan{
				Records: MustParsePath("data"), Keys: paths("attributes.assigned_user_id"), Visible: ownerIs("seed_sally_id"),
				Fields:  []Field{mk("attributes.phone_*", mask.Phone), rm("attributes.annual_revenue"), rm("attributes.sic_code")},
				AuditID: MustParsePath("id"),
			},
			in: 1, out: 1,
			want: `{
  "data": [
    {
      "type": "Accounts",
      "id": "1b2c3d4e-0000-4000-8000-00000000a001",
      "attributes": {
        "name": "杭州西湖茶业",
        "phone_office": "****-****6666",
        "assigned_user_id": "seed_sally_id",
        "description": "年度合同 2026 版, 报价 18.5 万"
      },
      "relationships": {"contacts": {"links": {"related": "V8/module/Accounts/1b2c3d4e/relationships/contacts"}}}
    }
  ],
  "meta": {"total-pages": 1},
  "links": {"self": "V8/module/Accounts?page[size]=20"}
}
`,
		},
		{
			name: "SuiteCRM JSON:API data shows another owner an empty list",
			file: "suitecrm-jsonapi.json",
			plan: &Plan{
				Records: MustParsePath("data"), Keys: paths("attributes.assigned_user_id"), Visible: ownerIs("someone_else"),
				Fields: []Field{mk("attributes.phone_*", mask.Phone)},
			},
			in: 1, out: 0,
			want: `{
  "data": [
    
  ],
  "meta": {"total-pages": 1},
  "links": {"self": "V8/module/Accounts?page[size]=20"}
}
`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc, err := os.ReadFile("testdata/" + c.file)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.plan.Compile(); err != nil {
				t.Fatal(err)
			}
			var st Stats
			out, err := c.plan.Rewrite(nil, doc, &st)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != c.want {
				t.Fatalf("\n got:\n%s\nwant:\n%s", out, c.want)
			}
			if !json.Valid(out) {
				t.Fatal("output is not valid JSON")
			}
			if st.RecordsIn != c.in || st.RecordsOut != c.out || len(st.IDs) != c.out {
				t.Fatalf("records %d in, %d out, ids %q; want %d in, %d out", st.RecordsIn, st.RecordsOut, st.IDs, c.in, c.out)
			}
		})
	}
}

func TestRewriteAgreesWithTheStdlibRoundTrip(t *testing.T) {
	p := benchPlan()
	if err := p.Compile(); err != nil {
		t.Fatal(err)
	}
	for seed := uint64(1); seed <= 5; seed++ {
		t.Run("generated list "+string(rune('0'+seed))+" gives the same JSON as decode-edit-encode", func(t *testing.T) {
			doc := crmgen.Customers(300, seed)
			var st Stats
			out, err := p.Rewrite(nil, doc, &st)
			if err != nil {
				t.Fatal(err)
			}
			want, err := crmgen.StdlibRewrite(doc, p.HashKey)
			if err != nil {
				t.Fatal(err)
			}
			var got, exp map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(want, &exp); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, exp) {
				t.Fatal("the one-pass rewrite and the stdlib round trip differ")
			}
			if n := len(exp["list"].([]any)); n != st.RecordsOut || len(st.IDs) != n || st.RecordsIn != 300 {
				t.Fatalf("stats %d in, %d out, %d ids; the stdlib kept %d", st.RecordsIn, st.RecordsOut, len(st.IDs), n)
			}
		})
	}
}
