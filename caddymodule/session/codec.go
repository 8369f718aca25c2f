package session

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// ErrInvalid is returned by Codec.Open for anything that is not a value
// this Codec (with one of its keys) sealed for the same purpose: tampered,
// truncated, foreign or empty input.
var ErrInvalid = errors.New("session: invalid or tampered value")

// Codec seals small values (a session id, a sign-in state) with AES-256-GCM
// under a list of keys: the first key seals, every key opens, so keys can
// be rotated without signing everybody out. It is safe for concurrent use.
type Codec struct {
	aeads   []cipher.AEAD
	macKeys [][]byte
}

// NewCodec derives one AES-256 key per secret with HKDF-SHA256 (the info
// string names the purpose, so keys for different purposes differ). The
// first secret is the current one.
func NewCodec(secrets []string, purpose string) (*Codec, error) {
	if len(secrets) == 0 {
		return nil, fmt.Errorf("session: no secrets to derive %s keys from", purpose)
	}
	c := &Codec{}
	for i, s := range secrets {
		if len(s) < MinSecretLength {
			return nil, fmt.Errorf("session: secret #%d is %d bytes long, need at least %d", i+1, len(s), MinSecretLength)
		}
		key, err := hkdf.Key(sha256.New, []byte(s), []byte("crmguard-session-v1"), "aes-gcm "+purpose, 32)
		if err != nil {
			return nil, fmt.Errorf("session: deriving %s key: %w", purpose, err)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("session: %s key: %w", purpose, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("session: %s key: %w", purpose, err)
		}
		mac, err := hkdf.Key(sha256.New, []byte(s), []byte("crmguard-session-v1"), "hmac "+purpose, 32)
		if err != nil {
			return nil, fmt.Errorf("session: deriving %s mac key: %w", purpose, err)
		}
		c.aeads = append(c.aeads, aead)
		c.macKeys = append(c.macKeys, mac)
	}
	return c, nil
}

// Seal encrypts plaintext with the current key, binding it to aad (for
// example the cookie name), and returns URL-safe base64 text.
func (c *Codec) Seal(plaintext, aad []byte) string {
	aead := c.aeads[0]
	out := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		panic("session: no randomness: " + err.Error())
	}
	out = aead.Seal(out, out, plaintext, aad)
	return base64.RawURLEncoding.EncodeToString(out)
}

// Open decrypts a value made by Seal with any of the keys and the same aad.
// Every failure is ErrInvalid.
func (c *Codec) Open(sealed string, aad []byte) ([]byte, error) {
	if len(sealed) > 8192 {
		return nil, ErrInvalid
	}
	raw, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil {
		return nil, ErrInvalid
	}
	for _, aead := range c.aeads {
		n := aead.NonceSize()
		if len(raw) < n+aead.Overhead() {
			return nil, ErrInvalid
		}
		if pt, err := aead.Open(nil, raw[:n], raw[n:], aad); err == nil {
			return pt, nil
		}
	}
	return nil, ErrInvalid
}

// MAC returns an HMAC-SHA256 of msg under the current key, URL-safe base64.
func (c *Codec) MAC(msg []byte) string {
	return base64.RawURLEncoding.EncodeToString(c.mac(c.macKeys[0], msg))
}

// VerifyMAC reports whether tag is MAC(msg) under any of the keys, in
// constant time per key.
func (c *Codec) VerifyMAC(msg []byte, tag string) bool {
	got, err := base64.RawURLEncoding.DecodeString(tag)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	ok := false
	for _, k := range c.macKeys {
		if hmac.Equal(got, c.mac(k, msg)) {
			ok = true
		}
	}
	return ok
}

func (c *Codec) mac(key, msg []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	return h.Sum(nil)
}

// RandomID returns n random bytes as URL-safe base64.
func RandomID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("session: no randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
