// Command crmguard is Caddy with the crm_guard module linked in, plus the
// `rules` and `audit` subcommands operators use on rule files and audit
// files:
//
//	crmguard run --config Caddyfile        # every Caddy command works
//	crmguard rules lint FILE
//	crmguard rules test FILE...
//	crmguard rules explain --rules FILE --user JSON "GET /path"
//	crmguard rules matrix FILE
//	crmguard rules diff OLD NEW
//	crmguard rules schema
//	crmguard audit verify [--key KEY] FILES...
//	crmguard audit report --from DATE --to DATE FILES...
//	crmguard audit review --rules FILE --since 90d FILES...
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules: reverse_proxy, file_server, encode, ...
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// The crm_guard handler.
	_ "github.com/crmguard/crmguard/caddymodule"
)

func main() {
	caddycmd.Main()
}
