package rewrite

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"testing"
)

func TestStopMask(t *testing.T) {
	t.Run("the lowest flagged byte of a word is its first quote, backslash, control or non-ASCII byte", func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		var w [8]byte
		check := func() {
			want := 8
			for k, c := range w {
				if strStop[c] {
					want = k
					break
				}
			}
			got := bits.TrailingZeros64(stopMask(binary.LittleEndian.Uint64(w[:]))) >> 3
			if got != want {
				t.Fatalf("word % x: first stop at %d, want %d", w, got, want)
			}
		}
		for pos := range 8 {
			for c := range 256 {
				for range 50 {
					for k := range w {
						if k < pos { // plain bytes before pos, any after
							w[k] = byte(0x20 + r.IntN(0x60))
							if w[k] == '"' || w[k] == '\\' {
								w[k] = 'a'
							}
						} else {
							w[k] = byte(r.IntN(256))
						}
					}
					w[pos] = byte(c)
					check()
				}
			}
		}
	})
}

func TestAppendString(t *testing.T) {
	// reference: the byte-by-byte escaping appendString's fast path skips to
	ref := func(s []byte) []byte {
		out := []byte{'"'}
		for _, c := range s {
			switch {
			case c == '"' || c == '\\':
				out = append(out, '\\', c)
			case c == '\n':
				out = append(out, `\n`...)
			case c == '\r':
				out = append(out, `\r`...)
			case c == '\t':
				out = append(out, `\t`...)
			case c < 0x20:
				out = append(out, fmt.Sprintf(`\u%04x`, c)...)
			default:
				out = append(out, c)
			}
		}
		return append(out, '"')
	}
	t.Run("every byte value at every place of strings up to 24 bytes is escaped as byte by byte, and plainJSON says when nothing is", func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 4))
		for n := 1; n <= 24; n++ {
			for pos := range n {
				for c := range 256 {
					s := make([]byte, n)
					for k := range s {
						s[k] = byte(0x20 + r.IntN(0xe0)) // plain ASCII and UTF-8 bytes
						if s[k] == '"' || s[k] == '\\' {
							s[k] = 'a'
						}
					}
					s[pos] = byte(c)
					want := ref(s)
					if got := appendString([]byte("x"), s); !bytes.Equal(got, append([]byte("x"), want...)) {
						t.Fatalf("% x: got %q, want %q", s, got, want)
					}
					if plain := len(want) == len(s)+2; plainJSON(s) != plain {
						t.Fatalf("% x: plainJSON says %v, but the escaped form is %q", s, !plain, want)
					}
				}
			}
		}
	})
	t.Run("escMask flags a word with a byte to escape and no word of plain bytes", func(t *testing.T) {
		if escMask(binary.LittleEndian.Uint64([]byte("abcdefgh"))) != 0 || escMask(binary.LittleEndian.Uint64([]byte("\xe4\xb8\xad\xff\x80 ~\x7f"))) != 0 {
			t.Fatal("a plain word is flagged")
		}
		for _, w := range []string{"abcdefg\"", "\\bcdefgh", "abc\x00efgh", "abcdefg\x1f"} {
			if escMask(binary.LittleEndian.Uint64([]byte(w))) == 0 {
				t.Fatalf("%q is not flagged", w)
			}
		}
	})
}
