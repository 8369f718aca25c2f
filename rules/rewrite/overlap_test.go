package rewrite

import "testing"

func TestTouches(t *testing.T) {
	cases := []struct {
		name       string
		rule, read string
		want       bool
	}{
		{"a key touches itself", "name", "name", true},
		{"keys compare without case", "Name", "name", true},
		{"different keys do not touch", "name", "phone", false},
		{"reading inside a treated value touches it", "contacts", "contacts.#.mobile", true},
		{"reading a value that holds a treated one by its keys touches it", "contacts.#.mobile", "contacts", true},
		{"reading a parent of a treated field touches it", "address.city", "address", true},
		{"siblings do not touch", "address.city", "address.street", false},
		{"a key at any depth touches the top-level key", "**.phone", "phone", true},
		{"a key at any depth touches a nested key", "**.mobile", "contacts.#.mobile", true},
		{"a key at any depth is not looked for inside another field's value", "**.bank_account", "name", false},
		{"a key at any depth is not looked for inside a parent", "**.mobile", "contacts", false},
		{"a key at any depth under a named key is found in it", "contacts.**.mobile", "contacts", true},
		{"a key at any depth under a key does not touch another key", "contacts.**.mobile", "name", false},
		{"a read at any depth may reach inside a treated value", "secret", "**.x", true},
		{"every element meets an index", "contacts.#.name", "contacts.0.name", true},
		{"every element does not meet an object key", "contacts.#.name", "contacts.x.name", false},
		{"a pattern meets the keys it fits", "bank_*", "bank_name", true},
		{"a pattern meets keys in any case", "bank_*", "BANK_NAME", true},
		{"a pattern does not meet keys it does not fit", "bank_*", "name", false},
		{"two patterns are taken to meet", "a*", "*b", true},
		{"the whole record touches everything", "@this", "name", true},
		{"two any-depth paths meet on the same keys", "**.a.**.b", "x.a.y.b", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := MustParsePath(c.rule).Touches(MustParsePath(c.read)); got != c.want {
				t.Errorf("%q.Touches(%q) = %v, want %v", c.rule, c.read, got, c.want)
			}
		})
	}
}

func TestCovers(t *testing.T) {
	cases := []struct {
		name string
		p, q string
		want bool
	}{
		{"a key covers itself", "name", "name", true},
		{"a key covers itself in any case", "name", "NAME", true},
		{"a parent covers its child", "address", "address.city", true},
		{"a child does not cover its parent", "address.city", "address", false},
		{"a sibling is not covered", "address.city", "address.street", false},
		{"a pattern covers the keys it fits", "address.*", "address.city", true},
		{"every element covers every element", "contacts.#", "contacts.#.name", true},
		{"every element does not cover an object key", "contacts.#", "contacts.x", false},
		{"a key does not cover every element", "contacts.0", "contacts.#", false},
		{"any depth covers a nested key", "**.city", "address.city", true},
		{"an any-depth path is not covered by a fixed one", "city", "**.city", false},
		{"the whole record covers everything", "@this", "a.b", true},
		{"a pattern in the covered path needs the same pattern", "a*", "ab*", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := MustParsePath(c.p).Covers(MustParsePath(c.q)); got != c.want {
				t.Errorf("%q.Covers(%q) = %v, want %v", c.p, c.q, got, c.want)
			}
		})
	}
}
