package mask

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// star is the rune every built-in mask writes.
const star = '*'

func builtin(name string) (Func, bool) {
	switch name {
	case "phone":
		return Phone, true
	case "id_card":
		return IDCard, true
	case "bank_card":
		return BankCard, true
	case "email":
		return Email, true
	case "name":
		return Name, true
	case "all":
		return All, true
	}
	return nil, false
}

// keepAtMost is how many runes of n a mask may leave visible: want, but never
// more than half (rounded down), so a short value is never shown whole.
func keepAtMost(want, n int) int {
	if want > n/2 {
		return n / 2
	}
	return want
}

// isSep reports whether r is a separator that number masks keep in place.
func isSep(r rune) bool {
	switch r {
	case ' ', '-', '(', ')', '.', '/', '+':
		return true
	}
	return false
}

func isDigit(r rune) bool { return r >= '0' && r <= '9' }

// All replaces every rune by `*`.
func All(dst []byte, s string) []byte {
	for range utf8.RuneCountInString(s) {
		dst = append(dst, star)
	}
	return dst
}

// Phone masks a telephone number. A Chinese mobile number (11 digits starting
// with 1[3-9], optionally after +86, 0086 or 86) keeps its first 3 and last 4
// digits: 13812345678 → 138****5678, +86 138 1234 5678 → +86 138 **** 5678
// (the country prefix and separators stay). Any other number keeps its last 4
// digits (at most half of them). Separators (space - ( ) . / +) stay in place;
// every other rune, letters included, becomes `*`.
func Phone(dst []byte, s string) []byte {
	// the common shape first: a bare 11-digit mobile number (the general
	// path below gives the same result)
	if len(s) == 11 && s[0] == '1' && s[1] >= '3' && allDigits(s) {
		dst = append(dst, s[:3]...)
		dst = append(dst, "****"...)
		return append(dst, s[7:]...)
	}
	digits := 0
	for _, r := range s {
		if isDigit(r) {
			digits++
		}
	}
	keepFirst, keepLast, skip := 0, keepAtMost(4, digits), 0
	if p, ok := cnMobile(s, digits); ok {
		skip, keepFirst, keepLast = p, 3, 4
	}
	d := 0
	for _, r := range s {
		switch {
		case isDigit(r):
			nd := d - skip // position in the national number
			if d < skip || nd < keepFirst || d >= digits-keepLast {
				dst = utf8.AppendRune(dst, r)
			} else {
				dst = append(dst, star)
			}
			d++
		case isSep(r):
			dst = utf8.AppendRune(dst, r)
		default:
			dst = append(dst, star)
		}
	}
	return dst
}

// cnMobile reports whether s is a Chinese mobile number and how many leading
// digits are the country prefix.
func cnMobile(s string, digits int) (prefix int, ok bool) {
	var buf [16]byte
	if digits > len(buf) {
		return 0, false
	}
	n := 0
	for _, r := range s {
		switch {
		case isDigit(r):
			buf[n] = byte(r)
			n++
		case r == ' ' || r == '-' || r == '+':
		default:
			return 0, false
		}
	}
	d := string(buf[:n])
	switch {
	case n == 11:
	case n == 13 && d[:2] == "86":
		prefix = 2
	case n == 15 && d[:4] == "0086":
		prefix = 4
	default:
		return 0, false
	}
	if d[prefix] != '1' || d[prefix+1] < '3' {
		return 0, false
	}
	return prefix, true
}

// IDCard masks an identity number. A Chinese 18-character resident ID (17
// digits and a digit or X) keeps the region code (6) and the last 4:
// 110101199003071234 → 110101********1234. The old 15-digit form keeps the
// region code and the last 3, hiding the birth date: 110101900307123 →
// 110101******123. Anything else keeps its last 4 runes (at most half).
func IDCard(dst []byte, s string) []byte {
	if len(s) == 18 && allDigits(s[:17]) && (isDigit(rune(s[17])) || s[17] == 'X' || s[17] == 'x') {
		dst = append(dst, s[:6]...)
		dst = append(dst, "********"...)
		return append(dst, s[14:]...)
	}
	n := utf8.RuneCountInString(s)
	first, last := 0, keepAtMost(4, n)
	if len(s) == 18 && allDigits(s[:17]) && (isDigit(rune(s[17])) || s[17] == 'X' || s[17] == 'x') {
		first, last = 6, 4
	} else if len(s) == 15 && allDigits(s) {
		first, last = 6, 3
	}
	return keepEnds(dst, s, n, first, last, star)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// keepEnds keeps the first and last runes and writes c for the others.
func keepEnds(dst []byte, s string, n, first, last int, c rune) []byte {
	if c < utf8.RuneSelf && isASCII(s) { // bytes are runes
		if first+last > n {
			first, last = n, 0
		}
		dst = append(dst, s[:first]...)
		for range n - first - last {
			dst = append(dst, byte(c))
		}
		return append(dst, s[n-last:]...)
	}
	i := 0
	for _, r := range s {
		if i < first || i >= n-last {
			dst = utf8.AppendRune(dst, r)
		} else {
			dst = utf8.AppendRune(dst, c)
		}
		i++
	}
	return dst
}

// BankCard masks a card or account number (IBANs too): the last 4 letters or
// digits stay (at most half), every other letter, digit or rune becomes `*`,
// spaces and dashes stay: 6222 0202 0011 2233 445 → **** **** **** ***3 445.
func BankCard(dst []byte, s string) []byte {
	an := 0
	for _, r := range s {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			an++
		}
	}
	keep := keepAtMost(4, an)
	i := 0
	for _, r := range s {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			if i >= an-keep {
				dst = utf8.AppendRune(dst, r)
			} else {
				dst = append(dst, star)
			}
			i++
		case r == ' ' || r == '-':
			dst = utf8.AppendRune(dst, r)
		default:
			dst = append(dst, star)
		}
	}
	return dst
}

// Email keeps the first rune of the local part and the domain, and writes
// three stars for the rest whatever its length: li.lei@example.cn →
// l***@example.cn. The last `@` splits; a value without one becomes `***`.
func Email(dst []byte, s string) []byte {
	at := -1
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '@' {
			at = i
			break
		}
	}
	if at < 0 {
		return append(dst, "***"...)
	}
	if local := s[:at]; utf8.RuneCountInString(local) > 1 {
		r, _ := utf8.DecodeRuneInString(local)
		dst = utf8.AppendRune(dst, r)
	}
	dst = append(dst, "***"...)
	if utf8.ValidString(s[at:]) {
		return append(dst, s[at:]...)
	}
	for _, r := range s[at:] { // invalid bytes become U+FFFD
		dst = utf8.AppendRune(dst, r)
	}
	return dst
}

// Name keeps the first rune of every word and writes `*` for each other rune:
// 张伟 → 张*, 李小明 → 李**, John Doe → J*** D**. Words are split at white
// space, `·` and `-`, which stay. A word of one rune (an initial, or a
// one-character name) becomes `*`: keeping it would show all of it.
func Name(dst []byte, s string) []byte {
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if isNameSep(r) {
			dst = utf8.AppendRune(dst, r)
			s = s[n:]
			continue
		}
		end := len(s) // the word is s[:end]
		for k, r := range s {
			if isNameSep(r) {
				end = k
				break
			}
		}
		word := s[:end]
		if utf8.RuneCountInString(word) >= 2 {
			dst = utf8.AppendRune(dst, r)
			word = word[n:]
		}
		for range utf8.RuneCountInString(word) {
			dst = append(dst, star)
		}
		s = s[end:]
	}
	return dst
}

func isNameSep(r rune) bool { return unicode.IsSpace(r) || r == '·' || r == '-' }

// newCustom builds a keep-the-ends mask.
func newCustom(c Custom) (Func, error) {
	if c.KeepStart < 0 || c.KeepEnd < 0 {
		return nil, fmt.Errorf("mask: keep_start and keep_end must not be negative (got %d and %d)", c.KeepStart, c.KeepEnd)
	}
	ch := '*'
	if c.Char != "" {
		r, n := utf8.DecodeRuneInString(c.Char)
		if n != len(c.Char) || r == utf8.RuneError || unicode.IsControl(r) {
			return nil, fmt.Errorf("mask: char must be one printable character, got %q", c.Char)
		}
		ch = r
	}
	ks, ke := c.KeepStart, c.KeepEnd
	return func(dst []byte, s string) []byte {
		n := utf8.RuneCountInString(s)
		first, last := ks, ke
		if first+last >= n { // nothing would be hidden: keep at most half
			budget := n / 2
			last = min(ke, budget)
			first = min(ks, budget-last)
		}
		return keepEnds(dst, s, n, first, last, ch)
	}, nil
}
