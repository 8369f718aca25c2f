package oidc

import (
	"net/url"
	"strings"
)

// safeReturn returns raw when it is a same-origin relative reference (a
// path starting with a single "/", optionally with a query), else "/".
// It refuses everything a browser could read as another origin:
// "//evil", "/\evil", "https://evil", "/%2F%2Fevil", "/%5Cevil",
// control characters and backslashes anywhere.
func safeReturn(raw string) string {
	if !isSafeReturn(raw) {
		return "/"
	}
	return raw
}

func isSafeReturn(raw string) bool {
	if raw == "" || len(raw) > 2048 || raw[0] != '/' {
		return false
	}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c < 0x20 || c == 0x7f || c == '\\' || c >= 0x80 {
			return false
		}
	}
	if strings.HasPrefix(raw, "//") {
		return false
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return false
	}
	// Decode repeatedly: a path that becomes "//x" or "/\x" once a proxy
	// or browser decodes it is refused too.
	p := u.EscapedPath()
	for i := 0; i < 3; i++ {
		dec, err := url.PathUnescape(p)
		if err != nil {
			return false
		}
		if strings.HasPrefix(dec, "//") || strings.HasPrefix(dec, "/\\") || strings.ContainsRune(dec, '\\') {
			return false
		}
		for j := 0; j < len(dec); j++ {
			if dec[j] < 0x20 || dec[j] == 0x7f {
				return false
			}
		}
		if dec == p {
			break
		}
		p = dec
	}
	return true
}
