package cond

import (
	"testing"
)

func TestDescribeSaysAConditionInWordsPerRoleSet(t *testing.T) {
	visible := `"admin" in user.roles || "service" in user.roles || record.owner_id == user.id || record.team in user.attrs.teams || timestamp(record.last_contact_at) < now - duration("8760h")`
	tests := []struct {
		name  string
		src   string
		roles []string
		want  string
	}{
		{name: "a role the condition names sees everything", src: visible, roles: []string{"admin"}, want: "always"},
		{name: "another role gets the record shapes in words", src: visible, roles: []string{"sales"},
			want: "own (owner_id) or team (team in the user's teams) or pool (last_contact_at older than 8760h)"},
		{name: "an and of a role test and a shape keeps the shape", src: `"sales_manager" in user.roles && record.team in user.attrs.teams`, roles: []string{"sales", "sales_manager"},
			want: "team (team in the user's teams)"},
		{name: "an and whose role test fails is never", src: `"sales_manager" in user.roles && record.team in user.attrs.teams`, roles: []string{"sales"}, want: "never"},
		{name: "a negated role test is decided", src: `!("marketing" in user.roles)`, roles: []string{"marketing"}, want: "never"},
		{name: "a schedule is named", src: `in_schedule("business_hours")`, roles: []string{"sales"}, want: "in schedule business_hours"},
		{name: "an attribute other than teams is named as it is", src: `record.region in user.attrs.regions`, roles: nil, want: "region in the user's regions"},
		{name: "other shapes keep their own text", src: `record.amount > 100 && record.owner_id == user.id`, roles: nil, want: "record.amount > 100 and own (owner_id)"},
		{name: "an or inside an and is bracketed", src: `record.stage == "won" && (record.owner_id == user.id || record.team in user.attrs.teams)`, roles: nil,
			want: `record.stage == "won" and (own (owner_id) or team (team in the user's teams))`},
	}
	env, err := NewEnv(map[string]Schedule{"business_hours": nil})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, issues := Compile(env, tt.src, RecordScope, true)
			if e == nil {
				t.Fatalf("compile: %v", issues)
			}
			if got := e.Describe(tt.roles).String(); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}
