package caddymodule

import (
	"net/http/httptest"
	"testing"
)

func TestCachingOfUserSpecificAnswers(t *testing.T) {
	tests := []struct {
		name string
		path string
		cc   string
		want string
	}{
		{name: "a rewritten answer may not be stored by any cache", path: "/api/customers", cc: "public, max-age=600", want: "private, no-store"},
		{name: "a streamed answer on a role route is made private", path: "/api/events", cc: "public, max-age=60, s-maxage=600", want: "private, max-age=60"},
		{name: "a streamed answer without cache headers is made private (a shared cache may store it heuristically)", path: "/api/events", cc: "", want: "private"},
		{name: "a streamed answer with max-age alone is made private", path: "/api/events", cc: "max-age=60", want: "private, max-age=60"},
		{name: "a field-qualified private is not private enough", path: "/api/events", cc: `private="Set-Cookie", max-age=60`, want: "private, max-age=60"},
		{name: "a no-store answer is left alone", path: "/api/events", cc: "no-store", want: "no-store"},
		{name: "a private answer is left alone", path: "/api/events", cc: "max-age=60, private", want: "max-age=60, private"},
		{name: "a public route's answer keeps its caching", path: "/healthz", cc: "public, max-age=60", want: "public, max-age=60"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, _ := newTestGuard(t, guardSetup{user: zhang})
			up := jsonUpstream(customers)
			if tt.cc != "" {
				up.header.Set("Cache-Control", tt.cc)
			}
			rec := serve(t, g, httptest.NewRequest("GET", tt.path, nil), up)
			if got := rec.Header().Get("Cache-Control"); got != tt.want {
				t.Errorf("Cache-Control: want %q, got %q", tt.want, got)
			}
		})
	}
}
