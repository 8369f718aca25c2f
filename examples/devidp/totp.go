package devidp

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// TOTPStep is the RFC 6238 time step.
const TOTPStep = 30 * time.Second

// TOTP returns the 6-digit RFC 6238 code (HMAC-SHA1, 30 s step) of a
// base32 secret at time t.
func TOTP(secret string, t time.Time) (string, error) {
	key, err := decodeSecret(secret)
	if err != nil {
		return "", err
	}
	return hotp(key, uint64(t.Unix()/int64(TOTPStep/time.Second))), nil
}

func decodeSecret(secret string) ([]byte, error) {
	s := strings.ToUpper(strings.ReplaceAll(secret, " ", ""))
	s = strings.TrimRight(s, "=")
	key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(s)
	if err != nil || len(key) == 0 {
		return nil, fmt.Errorf("devidp: TOTP secret is not base32: %v", err)
	}
	return key, nil
}

// hotp is RFC 4226 with 6 digits.
func hotp(key []byte, counter uint64) string {
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], counter)
	m := hmac.New(sha1.New, key)
	m.Write(msg[:])
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	code := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	return fmt.Sprintf("%06d", code%1_000_000)
}

// checkTOTP accepts the code of the current step or one step either side
// and returns the step it matched (for replay protection).
func checkTOTP(secret, code string, now time.Time) (uint64, bool) {
	key, err := decodeSecret(secret)
	if err != nil || len(code) != 6 {
		return 0, false
	}
	cur := uint64(now.Unix() / int64(TOTPStep/time.Second))
	for _, step := range []uint64{cur - 1, cur, cur + 1} {
		if hmac.Equal([]byte(hotp(key, step)), []byte(code)) {
			return step, true
		}
	}
	return 0, false
}
