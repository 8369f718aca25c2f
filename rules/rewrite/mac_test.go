package rewrite

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"strings"
	"testing"
)

func TestMacIsHMACSHA256(t *testing.T) {
	keys := map[string][]byte{
		"a short key":                 []byte("k"),
		"an empty key":                {},
		"a key of exactly one block":  bytes.Repeat([]byte{7}, 64),
		"a key longer than one block": []byte(strings.Repeat("long key ", 20)),
	}
	msgs := [][]byte{nil, []byte("li@example.cn"), bytes.Repeat([]byte("x"), 200)}
	for name, key := range keys {
		t.Run(name+" gives crypto/hmac's result for every message, again and again", func(t *testing.T) {
			m := newMac(newMacKey(key))
			for round := 0; round < 2; round++ {
				for _, msg := range msgs {
					h := hmac.New(sha256.New, key)
					h.Write(msg)
					want := h.Sum(nil)
					if got := m.sum(nil, msg); !bytes.Equal(got, want) {
						t.Fatalf("MAC of %q = %x, want %x", msg, got, want)
					}
				}
			}
		})
	}
}
