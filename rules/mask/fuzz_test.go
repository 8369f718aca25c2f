package mask

import (
	"testing"
	"unicode"
	"unicode/utf8"
)

func letters(s string) int {
	n := 0
	for _, r := range s {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			n++
		}
	}
	return n
}

func FuzzMasks(f *testing.F) {
	for _, s := range []string{"13812345678", "+86 138 1234 5678", "110101199003071234", "li.lei@example.cn", "张伟", "John Doe", "", "\xff"} {
		f.Add(s)
	}
	custom, err := New(Custom{KeepStart: 2, KeepEnd: 3, Char: "#"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		masks := map[string]Func{"custom": custom}
		for _, n := range Names() {
			masks[n], _ = Builtin(n)
		}
		for name, m := range masks {
			out := m(nil, s)
			if !utf8.Valid(out) {
				t.Fatalf("%s(%q) = %q: invalid UTF-8", name, s, out)
			}
			n, in := utf8.RuneCount(out), utf8.RuneCountInString(s)
			if name != "email" && n != in {
				t.Fatalf("%s(%q) = %q: %d runes from %d", name, s, out, n, in)
			}
			// a value with at least two letters or digits always loses one
			if string(out) == s && utf8.ValidString(s) && letters(s) >= 2 {
				t.Fatalf("%s(%q) left the value as it was", name, s)
			}
		}
	})
}
