package caddymodule

import (
	"net/url"

	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func httpcaddyfileServerType() httpcaddyfile.ServerType { return httpcaddyfile.ServerType{} }
