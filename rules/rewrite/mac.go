package rewrite

import (
	"crypto/sha256"
	"encoding"
	"hash"
)

// macKey is an HMAC-SHA256 key (RFC 2104) with its padded key blocks hashed
// once: every MAC then starts from the saved states, two compressions for a
// short value.
type macKey struct {
	inner, outer []byte // sha256 states after the ipad and opad blocks
}

// newMacKey prepares key (hashed first when longer than a block).
func newMacKey(key []byte) *macKey {
	if len(key) > sha256.BlockSize {
		s := sha256.Sum256(key)
		key = s[:]
	}
	var ipad, opad [sha256.BlockSize]byte
	copy(ipad[:], key)
	copy(opad[:], key)
	for i := range ipad {
		ipad[i] ^= 0x36
		opad[i] ^= 0x5c
	}
	in, out := sha256.New(), sha256.New()
	in.Write(ipad[:])
	out.Write(opad[:])
	k := &macKey{}
	k.inner, _ = in.(encoding.BinaryMarshaler).MarshalBinary()
	k.outer, _ = out.(encoding.BinaryMarshaler).MarshalBinary()
	return k
}

// mac computes MACs under one key; it is not safe for concurrent use.
type mac struct {
	k               *macKey
	in, out         hash.Hash
	inLoad, outLoad encoding.BinaryUnmarshaler // in and out, to load the saved states
	buf             []byte
}

// newMac returns a MAC state for k.
func newMac(k *macKey) *mac {
	m := &mac{k: k, in: sha256.New(), out: sha256.New(), buf: make([]byte, 0, sha256.Size)}
	m.inLoad, m.outLoad = m.in.(encoding.BinaryUnmarshaler), m.out.(encoding.BinaryUnmarshaler)
	return m
}

// sum appends the MAC of msg to dst.
func (m *mac) sum(dst, msg []byte) []byte {
	// The saved states come from MarshalBinary of the same type: they
	// cannot fail to load.
	_ = m.inLoad.UnmarshalBinary(m.k.inner)
	m.in.Write(msg)
	m.buf = m.in.Sum(m.buf[:0])
	_ = m.outLoad.UnmarshalBinary(m.k.outer)
	m.out.Write(m.buf)
	return m.out.Sum(dst)
}
