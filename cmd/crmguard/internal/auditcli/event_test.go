package auditcli

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// members lists what forEachMember found, as key=value lines.
func members(s string) (string, bool) {
	var b strings.Builder
	ok := forEachMember(s, func(k, v string) { b.WriteString(k + "=" + v + "\n") })
	return b.String(), ok
}

// gjsonMembers lists the members gjson finds, the same way.
func gjsonMembers(s string) string {
	var b strings.Builder
	gjson.Parse(s).ForEach(func(k, v gjson.Result) bool {
		b.WriteString(k.String() + "=" + v.Raw + "\n")
		return true
	})
	return b.String()
}

func TestForEachMemberAgreesWithGjson(t *testing.T) {
	tests := []struct{ name, in string }{
		{name: "an event as the sink writes it", in: `{"time":"2026-11-20T02:00:00Z","user":"zhang","record_ids":["1","4"],"fields":{"mask:phone":3},"export":{},"duration_ms":0.4}`},
		{name: "spaces and newlines between tokens", in: "{ \"a\" : 1 ,\n\t\"b\" : [ 1 , 2 ] , \"c\" : { \"d\" : \"e\" } }"},
		{name: "escaped quotes and backslashes in keys and values", in: `{"a\"b":"c\\\"d","e\\":"}{][","f":["\"]"]}`},
		{name: "unicode escapes in a key", in: `{"us\u0065r":"x"}`},
		{name: "literals and negative numbers", in: `{"a":true,"b":false,"c":null,"d":-1.5e3}`},
		{name: "an empty object", in: `{}`},
		{name: "nested brackets inside strings", in: `{"a":{"b":"]}","c":[["}"]]},"d":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := members(tt.in)
			if !ok || got != gjsonMembers(tt.in) {
				t.Errorf("ok=%v\n got %s\nwant %s", ok, got, gjsonMembers(tt.in))
			}
		})
	}
}

func TestForEachMemberRefusesBrokenObjects(t *testing.T) {
	for _, in := range []string{``, `[1]`, `{"a"}`, `{"a":}`, `{"a":1`, `{"a":"x`, `{"a":1 "b":2}`, `{a:1}`, `{"a":{"b":1}`} {
		t.Run("refuses "+in, func(t *testing.T) {
			if _, ok := members(in); ok {
				t.Errorf("accepted %q", in)
			}
		})
	}
}

func FuzzForEachMember(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":"\"","b":[{"c":"]"}]}`, `{ "k" : { } , "l" : [ ] }`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := members(s)
		if !gjson.Valid(s) || !strings.HasPrefix(strings.TrimLeft(s, " \t\r\n"), "{") {
			return // only valid objects have a right answer
		}
		if !ok {
			t.Fatalf("refused a valid object %q", s)
		}
		if want := gjsonMembers(s); got != want {
			t.Fatalf("%q\n got %s\nwant %s", s, got, want)
		}
	})
}
