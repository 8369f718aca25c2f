package rewrite

import (
	"encoding/binary"
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
