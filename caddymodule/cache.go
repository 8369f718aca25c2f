package caddymodule

import (
	"net/http"
	"strings"
)

// privatise keeps shared caches (a CDN in front of the proxy) from storing
// an answer that depends on who asked (the CRM saw X-CRM-User): "public"
// and s-maxage are dropped and "private" is added unless the answer is
// already private or no-store. An answer without Cache-Control gets
// "private" too: a request cookie does not stop a shared cache, and
// Expires or Last-Modified (heuristic freshness) would let it store.
func privatise(h http.Header) {
	var kept []string
	private, noStore, shared := false, false, false
	for _, line := range h["Cache-Control"] {
		for _, d := range strings.Split(line, ",") {
			d = strings.TrimSpace(d)
			l := strings.ToLower(d)
			switch {
			case d == "":
				continue
			case l == "public" || strings.HasPrefix(l, "s-maxage"):
				shared = true
				continue
			case l == "private":
				private = true
				continue
			case strings.HasPrefix(l, "private="):
				// private="Set-Cookie" keeps only those fields private.
				continue
			case l == "no-store":
				noStore = true
			}
			kept = append(kept, d)
		}
	}
	if !shared && (noStore || private) {
		return
	}
	h["Cache-Control"] = []string{strings.Join(append([]string{"private"}, kept...), ", ")}
}

// dropValidators removes headers that describe the CRM's bytes, not the
// rewritten ones.
func dropValidators(h http.Header) {
	for _, k := range []string{"ETag", "Last-Modified", "Accept-Ranges", "Content-MD5", "Digest", "Repr-Digest", "Content-Digest"} {
		h.Del(k)
	}
}
