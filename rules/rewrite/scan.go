package rewrite

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"unicode/utf8"
)

// The scanner validates JSON (RFC 8259, strings in UTF-8) without recursion.

// ws marks the JSON whitespace bytes.
var ws = [256]bool{' ': true, '\t': true, '\n': true, '\r': true}

// strStop marks the bytes that end the fast path of a string: the quote, the
// backslash, control characters and non-ASCII bytes.
var strStop = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	for c := 0x80; c < 0x100; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// stopMask has the high bit set in each byte of x (little endian) that is a
// quote, a backslash, a control character or not ASCII. Borrows may also set
// it in bytes above the first such byte, so only the lowest one counts.
func stopMask(x uint64) uint64 {
	q := x ^ (lsb * '"')
	b := x ^ (lsb * '\\')
	// Per byte, with no borrow coming in, the high bit is set by x-0x20
	// for the bytes below 0x20 and from 0xA0; by q-1 for a quote (q is
	// zero) and for every byte from 0x80 except 0xA2 (q is 0x81 or more),
	// and 0xA2 is one x-0x20 sets; by b-1 for a backslash. For the other
	// bytes of 0x20-0x7F, x-0x20, q-1 and b-1 all stay below 0x80. A byte
	// borrows only when it is flagged, so below the first flagged byte
	// there is no borrow and the lowest flagged byte is exact.
	// (TestStopMask checks every byte value at every place.)
	return ((x - lsb*0x20) | (q - lsb) | (b - lsb)) & msb
}

// utf8Len returns the length of the valid UTF-8 sequence at doc[i] (a byte of
// 0x80 or more), or 0 when it is not valid (overlong forms, surrogates and
// values above U+10FFFF are refused, as RFC 3629 says).
func utf8Len(doc []byte, i int) int {
	c := doc[i]
	switch {
	case c >= 0xC2 && c <= 0xDF:
		if i+1 < len(doc) && doc[i+1]&0xC0 == 0x80 {
			return 2
		}
	case c >= 0xE0 && c <= 0xEF:
		if i+2 < len(doc) && doc[i+1]&0xC0 == 0x80 && doc[i+2]&0xC0 == 0x80 {
			if (c == 0xE0 && doc[i+1] < 0xA0) || (c == 0xED && doc[i+1] >= 0xA0) {
				return 0
			}
			return 3
		}
	case c >= 0xF0 && c <= 0xF4:
		if i+3 < len(doc) && doc[i+1]&0xC0 == 0x80 && doc[i+2]&0xC0 == 0x80 && doc[i+3]&0xC0 == 0x80 {
			if (c == 0xF0 && doc[i+1] < 0x90) || (c == 0xF4 && doc[i+1] >= 0x90) {
				return 0
			}
			return 4
		}
	}
	return 0
}

// skipWS returns the offset of the first non-space byte from i.
func skipWS(doc []byte, i int) int {
	for i < len(doc) && ws[doc[i]] {
		i++
	}
	return i
}

// syntaxError is invalid JSON at a byte offset.
func syntaxError(i int, what string) error {
	return fmt.Errorf("rewrite: invalid JSON at byte %d: %s", i, what)
}

var hexVal = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = int8(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = int8(c - 'a' + 10)
		t[c-'a'+'A'] = int8(c - 'a' + 10)
	}
	return t
}()

// scanString checks the string whose opening quote is at i and returns the
// offset after its closing quote and whether it holds escapes.
func scanString(doc []byte, i int) (int, bool, error) {
	start := i
	i++
	// fast path: plain ASCII up to the closing quote
	for i+8 <= len(doc) {
		m := stopMask(binary.LittleEndian.Uint64(doc[i:]))
		if m == 0 {
			i += 8
			continue
		}
		i += bits.TrailingZeros64(m) >> 3
		if doc[i] == '"' {
			return i + 1, false, nil
		}
		return scanStringRest(doc, start, i, true)
	}
	return scanStringRest(doc, start, i, false)
}

// scanStringRest goes on from i with escapes, UTF-8 and the end of input;
// atStop says that doc[i] is known to be a byte strStop marks.
func scanStringRest(doc []byte, start, i int, atStop bool) (int, bool, error) {
	esc := false
	for {
		if !atStop {
			// fast path: eight plain ASCII bytes at a time
			for i+8 <= len(doc) {
				x := binary.LittleEndian.Uint64(doc[i:])
				if stopMask(x) != 0 {
					i += bits.TrailingZeros64(stopMask(x)) >> 3
					break
				}
				i += 8
			}
			if i+8 > len(doc) { // the last bytes of the input, one by one
				for i < len(doc) && !strStop[doc[i]] {
					i++
				}
			}
		}
		atStop = false
		if i >= len(doc) {
			return 0, false, syntaxError(start, "unterminated string")
		}
		c := doc[i]
		switch {
		case c == '"':
			return i + 1, esc, nil
		case c == '\\':
			esc = true
			if i+1 >= len(doc) {
				return 0, false, syntaxError(i, "unterminated escape")
			}
			switch doc[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(doc) || hexVal[doc[i+2]] < 0 || hexVal[doc[i+3]] < 0 || hexVal[doc[i+4]] < 0 || hexVal[doc[i+5]] < 0 {
					return 0, false, syntaxError(i, "bad \\u escape")
				}
				i += 6
			default:
				return 0, false, syntaxError(i, fmt.Sprintf("bad escape \\%c", doc[i+1]))
			}
		case c < 0x20:
			return 0, false, syntaxError(i, "control character in string")
		default:
			// a run of non-ASCII runes (CJK text) without going back to
			// the ASCII path for each
			for {
				// two three-byte runes (most CJK) at once, when neither
				// starts with E0 or ED (whose second byte is limited)
				for i+8 <= len(doc) {
					x := binary.LittleEndian.Uint64(doc[i:])
					if x&0xC0C0F0C0C0F0 != 0x8080E08080E0 {
						break
					}
					if l1, l2 := byte(x), byte(x>>24); l1 == 0xE0 || l1 == 0xED || l2 == 0xE0 || l2 == 0xED {
						break
					}
					i += 6
				}
				// three-byte runes, checked three bytes at once
				for i+4 <= len(doc) {
					x := binary.LittleEndian.Uint32(doc[i:])
					if x&0xC0C0F0 != 0x8080E0 {
						break
					}
					if lead, second := byte(x), byte(x>>8); (lead == 0xE0 && second < 0xA0) || (lead == 0xED && second >= 0xA0) {
						return 0, false, syntaxError(i, "invalid UTF-8 in string")
					}
					i += 3
				}
				if i >= len(doc) || doc[i] < 0x80 {
					break
				}
				n := utf8Len(doc, i)
				if n == 0 {
					return 0, false, syntaxError(i, "invalid UTF-8 in string")
				}
				i += n
				if i >= len(doc) || doc[i] < 0x80 {
					break
				}
			}
		}
	}
}

// scanNumber checks the number starting at i and returns the offset after it.
func scanNumber(doc []byte, i int) (int, error) {
	start := i
	if i < len(doc) && doc[i] == '-' {
		i++
	}
	if i >= len(doc) {
		return 0, syntaxError(start, "truncated number")
	}
	switch {
	case doc[i] == '0':
		i++
	case doc[i] >= '1' && doc[i] <= '9':
		for i < len(doc) && doc[i] >= '0' && doc[i] <= '9' {
			i++
		}
	default:
		return 0, syntaxError(start, fmt.Sprintf("unexpected %q", doc[i]))
	}
	if i < len(doc) && doc[i] == '.' {
		i++
		d := i
		for i < len(doc) && doc[i] >= '0' && doc[i] <= '9' {
			i++
		}
		if i == d {
			return 0, syntaxError(start, "number without digits after the point")
		}
	}
	if i < len(doc) && (doc[i] == 'e' || doc[i] == 'E') {
		i++
		if i < len(doc) && (doc[i] == '+' || doc[i] == '-') {
			i++
		}
		d := i
		for i < len(doc) && doc[i] >= '0' && doc[i] <= '9' {
			i++
		}
		if i == d {
			return 0, syntaxError(start, "number without exponent digits")
		}
	}
	return i, nil
}

// scanLiteral checks true, false or null at i.
func scanLiteral(doc []byte, i int) (int, error) {
	var lit string
	switch doc[i] {
	case 't':
		lit = "true"
	case 'f':
		lit = "false"
	default:
		lit = "null"
	}
	if len(doc)-i < len(lit) || string(doc[i:i+len(lit)]) != lit {
		return 0, syntaxError(i, "bad literal")
	}
	return i + len(lit), nil
}

// decodeString appends the decoded content of the JSON string raw (with its
// quotes, already checked) to dst. A lone surrogate becomes U+FFFD.
func decodeString(dst, raw []byte) []byte {
	raw = raw[1 : len(raw)-1]
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			j := i + 1
			for j < len(raw) && raw[j] != '\\' {
				j++
			}
			dst = append(dst, raw[i:j]...)
			i = j
			continue
		}
		switch raw[i+1] {
		case 'u':
			r := hex4(raw[i+2:])
			i += 6
			if r >= 0xD800 && r < 0xDC00 && i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
				if r2 := hex4(raw[i+2:]); r2 >= 0xDC00 && r2 < 0xE000 {
					r = (r-0xD800)<<10 + (r2 - 0xDC00) + 0x10000
					i += 6
				}
			}
			dst = utf8.AppendRune(dst, r) // surrogates left alone become U+FFFD
			continue
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		default: // " \ /
			dst = append(dst, raw[i+1])
		}
		i += 2
	}
	return dst
}

func hex4(b []byte) rune {
	return rune(hexVal[b[0]])<<12 | rune(hexVal[b[1]])<<8 | rune(hexVal[b[2]])<<4 | rune(hexVal[b[3]])
}

// plainJSON reports whether b holds no byte that a JSON string must escape
// (a quote, a backslash or a control character): appendString would write
// it as it is.
func plainJSON(b []byte) bool {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if escMask(binary.LittleEndian.Uint64(b[i:])) != 0 {
			return false
		}
	}
	if len(b) >= 8 {
		// the last bytes, in the word that ends with them
		return escMask(binary.LittleEndian.Uint64(b[len(b)-8:])) == 0
	}
	for ; i < len(b); i++ {
		if c := b[i]; c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// escMask is not zero when a byte of x is a quote, a backslash or a control
// character (those appendString must escape), and zero when none is. It is
// stopMask's test without the bytes from 0x80 (UTF-8 is written as it is):
// &^x clears the high bit of those, and since they do not borrow, a word
// without a byte to escape has no borrow at all.
func escMask(x uint64) uint64 {
	q := x ^ (lsb * '"')
	b := x ^ (lsb * '\\')
	return ((x - lsb*0x20) | (q - lsb) | (b - lsb)) &^ x & msb
}

// appendString appends s as a JSON string.
func appendString(dst, s []byte) []byte {
	const hexd = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&15])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
