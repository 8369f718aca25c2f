package caddymodule

import (
	"net/http"
	"strings"
)

// Upstream identity headers set by the guard from the verified identity.
const (
	// HeaderUser carries the verified user's id to the CRM.
	HeaderUser = "X-CRM-User"
	// HeaderRoles carries the user's effective roles, comma-separated.
	HeaderRoles = "X-CRM-Roles"
)

// The map keys of HeaderUser and HeaderRoles in an http.Header, found once
// instead of on every request.
var (
	userHeaderKey  = http.CanonicalHeaderKey(HeaderUser)
	rolesHeaderKey = http.CanonicalHeaderKey(HeaderRoles)
)

// forgeableHeaders are identity (and path-override) headers that auth
// proxies and frameworks trust; a client must never be able to set them.
var forgeableHeaders = []string{
	"X-Forwarded-User",
	"X-Forwarded-Email",
	"X-Forwarded-Preferred-Username",
	"X-Forwarded-Groups",
	"X-Forwarded-Access-Token",
	"X-Remote-User",
	"X-Remote-Group",
	"X-Remote-Email",
	"Remote-User",
	"Remote-Email",
	"Remote-Groups",
	"Remote-Name",
	"X-User",
	"X-Email",
	"X-Auth-User",
	"X-Authenticated-User",
	"X-Webauth-User",
	// Headers that make the CRM route on another path than the one the
	// rules judged (Symfony, Zend and IIS-hosted apps honour them).
	"X-Original-Url",
	"X-Rewrite-Url",
	"X-Original-Uri",
	"X-Forwarded-Path",
	"X-Forwarded-Prefix",
	"X-Envoy-Original-Path",
}

// forgeablePrefixes are header name prefixes (canonical form) stripped the
// same way: every header the proxy itself sets, and the families of
// oauth2-proxy, Apache mod_auth_openidc, Azure App Service, Google IAP and
// AWS ALB (X-Ms-Client-Principal-Idp, X-Amzn-Oidc-Accesstoken, ...).
var forgeablePrefixes = []string{
	"X-Crm-",
	"X-Crmguard-",
	"X-Auth-Request-",
	"X-Forwarded-User",
	"Oidc_claim_",
	"X-Ms-Client-Principal",
	"X-Goog-Authenticated-User-",
	"X-Amzn-Oidc-",
}

// headerScrubber removes forged identity headers and the proxy's own
// cookies from requests on their way to the CRM.
type headerScrubber struct {
	names         map[string]bool // canonical header names
	prefixes      []string        // canonical prefixes
	cookiePrefixs []string        // cookie name prefixes
}

func newHeaderScrubber(extra []string, cookiePrefixes []string) *headerScrubber {
	s := &headerScrubber{names: map[string]bool{}}
	for _, n := range forgeableHeaders {
		s.names[http.CanonicalHeaderKey(n)] = true
	}
	s.prefixes = append(s.prefixes, forgeablePrefixes...)
	for _, n := range extra {
		if strings.HasSuffix(n, "*") {
			s.prefixes = append(s.prefixes, http.CanonicalHeaderKey(strings.TrimSuffix(n, "*")))
			continue
		}
		s.names[http.CanonicalHeaderKey(n)] = true
	}
	for _, p := range cookiePrefixes {
		if p != "" {
			s.cookiePrefixs = append(s.cookiePrefixs, p)
		}
	}
	return s
}

// scrub deletes forged identity headers from h. Names are compared in
// canonical form and also with '_' read as '-', because some servers (CGI,
// PHP, many legacy CRMs) treat X_Forwarded_User like X-Forwarded-User.
func (s *headerScrubber) scrub(h http.Header) {
	for name := range h {
		dashed := strings.ReplaceAll(name, "_", "-")
		// Without an underscore both spellings are the same name: it is
		// checked once.
		if s.forged(http.CanonicalHeaderKey(dashed)) || (dashed != name && s.forged(http.CanonicalHeaderKey(name))) {
			delete(h, name)
		}
	}
	s.scrubCookies(h)
}

func (s *headerScrubber) forged(canon string) bool {
	if s.names[canon] {
		return true
	}
	for _, p := range s.prefixes {
		if strings.HasPrefix(canon, p) {
			return true
		}
	}
	return false
}

// scrubCookies removes the proxy's own cookies from every Cookie header,
// keeping the others byte for byte.
func (s *headerScrubber) scrubCookies(h http.Header) {
	lines, ok := h["Cookie"]
	if !ok || len(s.cookiePrefixs) == 0 {
		return
	}
	var kept []string
	for _, line := range lines {
		var parts []string
		for _, part := range strings.Split(line, ";") {
			name, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if s.ownCookie(strings.TrimSpace(name)) {
				continue
			}
			if strings.TrimSpace(part) != "" {
				parts = append(parts, strings.TrimSpace(part))
			}
		}
		if len(parts) > 0 {
			kept = append(kept, strings.Join(parts, "; "))
		}
	}
	if len(kept) == 0 {
		h.Del("Cookie")
		return
	}
	h["Cookie"] = kept
}

func (s *headerScrubber) ownCookie(name string) bool {
	lower := strings.ToLower(name)
	lower = strings.TrimPrefix(lower, "__host-")
	lower = strings.TrimPrefix(lower, "__secure-")
	for _, p := range s.cookiePrefixs {
		if strings.HasPrefix(lower, strings.ToLower(p)) {
			return true
		}
	}
	return false
}

// scrubSetCookies removes from an upstream answer the Set-Cookie lines that
// would set (or clear) one of the proxy's own cookies: a CRM must not plant
// a session (fixation) nor sign the user out. Lines in keep (set by the
// proxy itself before the upstream answered) stay.
func (s *headerScrubber) scrubSetCookies(h http.Header, keep []string) {
	lines, ok := h["Set-Cookie"]
	if !ok {
		return
	}
	var kept []string
	for _, line := range lines {
		name, _, _ := strings.Cut(line, "=")
		if s.ownCookie(strings.TrimSpace(name)) && !contains(keep, line) {
			continue
		}
		kept = append(kept, line)
	}
	if len(kept) == 0 {
		delete(h, "Set-Cookie")
		return
	}
	h["Set-Cookie"] = kept
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
