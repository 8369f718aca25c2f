package devidp

import (
	"encoding/base32"
	"testing"
	"time"
)

// The RFC 6238 appendix B vectors (SHA-1, secret "12345678901234567890"),
// last six digits.
func TestTOTPMatchesRFC6238Vectors(t *testing.T) {
	secret := base32.StdEncoding.EncodeToString([]byte("12345678901234567890"))
	cases := []struct {
		unix int64
		want string
	}{
		{59, "287082"},
		{1111111109, "081804"},
		{1111111111, "050471"},
		{1234567890, "005924"},
		{2000000000, "279037"},
		{20000000000, "353130"},
	}
	for _, c := range cases {
		t.Run("the code at "+time.Unix(c.unix, 0).UTC().Format(time.RFC3339)+" is "+c.want, func(t *testing.T) {
			got, err := TOTP(secret, time.Unix(c.unix, 0))
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("TOTP = %s, want %s", got, c.want)
			}
		})
	}
}

func TestCheckTOTP(t *testing.T) {
	secret := "JBSWY3DPEHPK3PXP"
	now := time.Unix(1700000000, 0)
	cur, _ := TOTP(secret, now)
	prev, _ := TOTP(secret, now.Add(-TOTPStep))
	old, _ := TOTP(secret, now.Add(-3*TOTPStep))
	cases := []struct {
		name string
		code string
		ok   bool
	}{
		{"the current code is accepted", cur, true},
		{"the previous step's code is accepted (clock drift)", prev, true},
		{"a code three steps old is refused", old, old == cur},
		{"a code of the wrong length is refused", "12345", false},
		{"letters are refused", "abcdef", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, ok := checkTOTP(secret, c.code, now); ok != c.ok {
				t.Fatalf("checkTOTP(%q) = %v, want %v", c.code, ok, c.ok)
			}
		})
	}
	if _, err := TOTP("not base32!", now); err == nil {
		t.Fatal("TOTP accepted a secret that is not base32")
	}
}
