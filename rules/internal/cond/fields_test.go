package cond

import (
	"fmt"
	"testing"
)

func TestRecordFieldsListsWhatAConditionReads(t *testing.T) {
	env, err := NewEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, src, want string
	}{
		{"a plain field", `record.owner_id == user.id`, "[[owner_id]]"},
		{"several fields in order", `record.owner_id == user.id || record.team in user.attrs.teams || timestamp(record.last_contact_at) < now`, "[[owner_id] [team] [last_contact_at]]"},
		{"a nested field", `record.address.city == "上海"`, "[[address city]]"},
		{"an index with a literal key", `record["address"].city == "x"`, "[[address city]]"},
		{"a field tested with has", `has(record.team) && record.team == "east"`, "[[team]]"},
		{"a computed key stops the reading", `record[user.id] == true`, "[]"},
		{"a field read inside a function", `record.name.startsWith("张")`, "[[name]]"},
		{"a field read inside a list", `"x" in [record.a, record.b]`, "[[a] [b]]"},
		{"a field read inside a comprehension", `record.tags.exists(t, t == "vip")`, "[[tags]]"},
		{"no record at all", `"admin" in user.roles`, "[]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, issues := Compile(env, c.src, RecordScope, true)
			if e == nil {
				t.Fatalf("%s: %v", c.src, issues)
			}
			if got := fmt.Sprint(e.RecordFields()); got != c.want && !(got == "[]" && c.want == "[]") {
				t.Errorf("RecordFields(%s) = %s, want %s", c.src, got, c.want)
			}
		})
	}
}
