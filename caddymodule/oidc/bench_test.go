package oidc

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/crmguard/crmguard/caddymodule/store/redistest"
	"github.com/crmguard/crmguard/examples/devidp"
)

// BenchmarkIdentify measures what the proxy adds per request to find the
// caller: a session cookie looked up in the file or Redis store (opened,
// read, checked; no refresh), and a bearer JWT verified with the cached
// key set. The baseline is a request carrying no credentials.
func BenchmarkIdentify(b *testing.B) {
	cli := devidp.Client{ID: "cli", Secret: "cli-secret", RedirectURIs: []string{"http://127.0.0.1:1/cli"}, Audience: []string{"crm"}}
	for _, store := range []string{"file", "redis"} {
		var opts envOptions
		if store == "redis" {
			opts.store = redistest.Start(b)
		}
		opts.extraClients = []devidp.Client{cli}
		e := newEnv(b, opts)
		px := e.proxies[0]
		br := e.browser("zhang")
		br.signIn(px)
		cookie := br.cookie(px, "crmguard_session")
		run := func(name string, req *http.Request) {
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					id, err := px.p.Identify(req)
					if err != nil || (name != "no credentials" && id == nil) {
						b.Fatalf("Identify: %v %v", id, err)
					}
				}
			})
		}
		if store == "file" {
			run("no credentials", httptest.NewRequest(http.MethodGet, "/app", nil))
			req := httptest.NewRequest(http.MethodGet, "/app", nil)
			req.Header.Set("Authorization", "Bearer "+tokenFor(b, e, "cli", "wang"))
			run("bearer JWT", req)
		}
		req := httptest.NewRequest(http.MethodGet, "/app", nil)
		req.AddCookie(cookie)
		run("session in the "+store+" store", req)
	}
}
