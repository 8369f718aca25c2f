package mask

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestBuiltins(t *testing.T) {
	cases := []struct {
		name, mask, in, want string
	}{
		{"a Chinese mobile keeps the first three and last four digits", "phone", "13812345678", "138****5678"},
		{"a Chinese mobile with +86 and spaces keeps prefix and separators", "phone", "+86 138 1234 5678", "+86 138 **** 5678"},
		{"a Chinese mobile with 0086 keeps the prefix", "phone", "008613812345678", "0086138****5678"},
		{"a Chinese mobile with dashes keeps them", "phone", "138-1234-5678", "138-****-5678"},
		{"a landline keeps its last four digits", "phone", "0571-88886666", "****-****6666"},
		{"a foreign number keeps its last four digits and separators", "phone", "+49 30 1234567", "+** ** ***4567"},
		{"a short number shows at most half its digits", "phone", "12345", "***45"},
		{"letters in a phone value are masked", "phone", "555 call me", "**5 **** **"},
		{"an empty phone stays empty", "phone", "", ""},
		{"an 18-digit ID keeps region and last four", "id_card", "110101199003071234", "110101********1234"},
		{"an 18-character ID ending in X keeps region and last four", "id_card", "11010119900307123X", "110101********123X"},
		{"a 15-digit ID hides the birth date", "id_card", "110101900307123", "110101******123"},
		{"another identity number keeps the last four", "id_card", "E12345678", "*****5678"},
		{"a bank card keeps its last four digits", "bank_card", "6222020200112233445", "***************3445"},
		{"a grouped bank card keeps its groups", "bank_card", "6222 0202 0011 2233", "**** **** **** 2233"},
		{"an IBAN keeps its last four characters", "bank_card", "DE89370400440532013000", "******************3000"},
		{"an email keeps the first rune and the domain", "email", "li.lei@example.cn", "l***@example.cn"},
		{"an email with a non-ASCII local part keeps the first rune", "email", "李雷@example.cn", "李***@example.cn"},
		{"a one-letter local part is hidden", "email", "a@example.cn", "***@example.cn"},
		{"a value without @ is hidden", "email", "not-an-email", "***"},
		{"a two-rune Chinese name keeps the surname", "name", "张伟", "张*"},
		{"a three-rune Chinese name keeps the surname", "name", "李小明", "李**"},
		{"a Western name keeps each initial", "name", "John Doe", "J*** D**"},
		{"a name with a middle dot keeps each part's initial", "name", "阿沛·阿旺晋美", "阿*·阿***"},
		{"a one-rune name is hidden", "name", "李", "*"},
		{"a one-rune name with spaces is hidden", "name", " 李 ", " * "},
		{"an initial is hidden", "name", "J Doe", "* D**"},
		{"a hyphenated name keeps each part's initial", "name", "Jean-Luc Picard", "J***-L** P*****"},
		{"all hides every rune", "all", "张伟 ab", "*****"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, ok := Builtin(c.mask)
			if !ok {
				t.Fatalf("Builtin(%q) not found", c.mask)
			}
			got := string(f(nil, c.in))
			if got != c.want {
				t.Fatalf("%s(%q) = %q, want %q", c.mask, c.in, got, c.want)
			}
		})
	}
}

func TestMasksAppendAndWorkOnRunes(t *testing.T) {
	for _, name := range Names() {
		t.Run(name+" appends to dst and writes valid UTF-8 of no more runes than it read", func(t *testing.T) {
			f, _ := Builtin(name)
			for _, in := range []string{"张伟", "13812345678", "li.lei@example.cn", "110101199003071234", "x", "", "\xff\xfe bad", "éé@éé"} {
				out := f([]byte("pre:"), in)
				if !strings.HasPrefix(string(out), "pre:") {
					t.Fatalf("%s(%q) did not append: %q", name, in, out)
				}
				body := out[4:]
				if !utf8.Valid(body) {
					t.Fatalf("%s(%q) = %q: invalid UTF-8", name, in, body)
				}
				if name != "email" && utf8.RuneCount(body) > utf8.RuneCountInString(in) {
					t.Fatalf("%s(%q) = %q: more runes than the input", name, in, body)
				}
				if len(in) > 1 && in != "x" && string(body) == in {
					t.Fatalf("%s(%q) left the value unchanged", name, in)
				}
			}
		})
	}
}

func TestMasksDoNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 128)
	for _, name := range Names() {
		t.Run(name+" makes no allocation", func(t *testing.T) {
			f, _ := Builtin(name)
			n := testing.AllocsPerRun(100, func() { buf = f(buf[:0], "+86 138 1234 5678 张伟 li@x.cn") })
			if n != 0 {
				t.Fatalf("%s allocates %v times per call", name, n)
			}
		})
	}
}

func TestFastPathsAgreeWithTheGeneralPath(t *testing.T) {
	// the general path, reached with a separator that changes nothing else
	t.Run("a bare mobile number is masked as with a leading space", func(t *testing.T) {
		for _, in := range []string{"13812345678", "19900001111", "13000000000"} {
			fast, general := string(Phone(nil, in)), string(Phone(nil, " "+in))
			if " "+fast != general {
				t.Fatalf("Phone(%q) = %q, but the general path gives %q", in, fast, general)
			}
		}
	})
	t.Run("an 18-character ID is masked as by keeping 6 and 4", func(t *testing.T) {
		for _, in := range []string{"110101199003071234", "11010119900307123x"} {
			if got, want := string(IDCard(nil, in)), string(keepEnds(nil, in, 18, 6, 4, '*')); got != want {
				t.Fatalf("IDCard(%q) = %q, want %q", in, got, want)
			}
		}
	})
}

func TestUnknownBuiltin(t *testing.T) {
	t.Run("an unknown mask name is not found", func(t *testing.T) {
		if _, ok := Builtin("phon"); ok {
			t.Fatal("Builtin(phon) found a mask")
		}
	})
}

func TestCustom(t *testing.T) {
	cases := []struct {
		name string
		c    Custom
		in   string
		want string
	}{
		{"keep_end 4 keeps the last four runes", Custom{KeepEnd: 4}, "6222020200112233", "************2233"},
		{"keep_start and keep_end keep both ends", Custom{KeepStart: 3, KeepEnd: 4, Char: "#"}, "13812345678", "138####5678"},
		{"the char may be any one rune", Custom{KeepStart: 1, Char: "某"}, "张三丰", "张某某"},
		{"a value too short to hide anything shows at most half its runes", Custom{KeepStart: 3, KeepEnd: 4}, "abcdef", "***def"},
		{"a value one rune longer than both ends hides that rune", Custom{KeepStart: 3, KeepEnd: 4}, "abcdefgh", "abc*efgh"},
		{"keep nothing masks every rune", Custom{}, "密码ab", "****"},
		{"runes are counted, not bytes", Custom{KeepEnd: 1}, "张伟明", "**明"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := New(c.c)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(f(nil, c.in)); got != c.want {
				t.Fatalf("mask(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
	bad := []struct {
		name string
		c    Custom
	}{
		{"a negative keep_start is refused", Custom{KeepStart: -1}},
		{"a negative keep_end is refused", Custom{KeepEnd: -2}},
		{"a char of two runes is refused", Custom{Char: "**"}},
		{"a control character is refused", Custom{Char: "\n"}},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			if _, err := New(c.c); err == nil || !strings.HasPrefix(err.Error(), "mask: ") {
				t.Fatalf("New(%+v) error = %v, want a mask: error", c.c, err)
			}
		})
	}
}
