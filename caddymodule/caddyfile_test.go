package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	// The standard directives (reverse_proxy, handle, header, ...).
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// issueCaddyfile is the Caddyfile shape of the issue: the contract that
// docs and tests use.
const issueCaddyfile = `crm.example.com {
	crm_guard {
		rules /etc/crmguard/rules.yaml
		oidc {
			issuer https://idp.example.com
			client_id crm
			client_secret {env.OIDC_CLIENT_SECRET}
		}
		session {
			secret {env.CRMGUARD_SESSION_SECRET}
		}
		audit /var/log/crmguard/audit.jsonl
		max_body 16MiB
		hash_key {env.CRMGUARD_HASH_KEY}
	}
	reverse_proxy crm.internal:8080
}
`

func adapt(t *testing.T, src string) (string, error) {
	t.Helper()
	out, _, err := caddyfile.Adapter{ServerType: httpcaddyfileServerType()}.Adapt([]byte(src), nil)
	return string(out), err
}

// handlerNames lists the handlers of the first route tree in order,
// descending into subroutes.
func handlerNames(t *testing.T, cfg string) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(cfg), &v); err != nil {
		t.Fatal(err)
	}
	var names []string
	var walk func(any)
	walk = func(x any) {
		switch n := x.(type) {
		case map[string]any:
			if h, ok := n["handler"].(string); ok {
				names = append(names, h)
			}
			for _, k := range []string{"apps", "http", "servers", "srv0", "routes", "handle"} {
				if c, ok := n[k]; ok {
					walk(c)
				}
			}
		case []any:
			for _, c := range n {
				walk(c)
			}
		}
	}
	walk(v)
	return names
}

func TestCaddyfile(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		wantOrder []string // handlers in this relative order
		wantErr   string
		check     func(t *testing.T, h map[string]any)
	}{
		{name: "the issue's Caddyfile parses and puts the guard before the proxy without an order line",
			src: issueCaddyfile, wantOrder: []string{"crm_guard", "reverse_proxy"},
			check: func(t *testing.T, h map[string]any) {
				if h["rules"] != "/etc/crmguard/rules.yaml" || h["audit"] != "/var/log/crmguard/audit.jsonl" || h["max_body"] != float64(16<<20) {
					t.Errorf("handler config: %v", h)
				}
				oidc, _ := h["oidc"].(map[string]any)
				if oidc["issuer"] != "https://idp.example.com" || oidc["client_secret"] != "{env.OIDC_CLIENT_SECRET}" {
					t.Errorf("oidc block: %v", oidc)
				}
				if h["hash_key"] != "{env.CRMGUARD_HASH_KEY}" {
					t.Errorf("hash_key: %v", h["hash_key"])
				}
			}},
		{name: "a guard in a site that proxies inside handle blocks runs before them",
			src:       ":8080 {\n\thandle /api/* {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n\tcrm_guard rules.yaml\n}\n",
			wantOrder: []string{"crm_guard", "subroute", "reverse_proxy"}},
		{name: "header and rewrite directives run before the guard",
			src:       ":8080 {\n\tcrm_guard rules.yaml\n\trewrite /old /api/customers\n\theader X-Frame-Options DENY\n\treverse_proxy 127.0.0.1:9\n}\n",
			wantOrder: []string{"headers", "rewrite", "crm_guard", "reverse_proxy"}},
		{name: "every subdirective is read",
			src: ":8080 {\n\tcrm_guard {\n\t\trules r.yaml\n\t\tstrip_headers X-Legacy-User X-Sso-*\n\t\tcookie_prefixes crmguard mysess\n\t\tmode shadow\n\t\treload_interval 2s\n\t}\n}\n",
			check: func(t *testing.T, h map[string]any) {
				if h["mode"] != "shadow" || h["reload_interval"] != float64(2e9) {
					t.Errorf("handler config: %v", h)
				}
				if s, _ := json.Marshal(h["strip_headers"]); string(s) != `["X-Legacy-User","X-Sso-*"]` {
					t.Errorf("strip_headers: %s", s)
				}
			}},
		{name: "a notify block is read with its placeholders kept for provisioning",
			src: ":8080 {\n\tcrm_guard {\n\t\trules r.yaml\n\t\tnotify {\n\t\t\twebhook https://hooks.example.com/crm {\n\t\t\t\theader Authorization \"Bearer {env.HOOK_TOKEN}\"\n\t\t\t}\n\t\t}\n\t}\n}\n",
			check: func(t *testing.T, h map[string]any) {
				if s, _ := json.Marshal(h["notify"]); string(s) != `{"webhooks":[{"headers":{"Authorization":"Bearer {env.HOOK_TOKEN}"},"url":"https://hooks.example.com/crm"}]}` {
					t.Errorf("notify: %s", s)
				}
			}},
		{name: "store takes a Redis URL, its placeholders kept for provisioning",
			src: ":8080 {\n\tcrm_guard {\n\t\trules r.yaml\n\t\tstore rediss://:{env.REDIS_PASSWORD}@redis.internal:6380/0\n\t}\n}\n",
			check: func(t *testing.T, h map[string]any) {
				if h["store"] != "rediss://:{env.REDIS_PASSWORD}@redis.internal:6380/0" {
					t.Errorf("store: %v", h["store"])
				}
			}},
		{name: "store takes a file path", src: ":8080 {\n\tcrm_guard {\n\t\trules r.yaml\n\t\tstore /var/lib/crmguard/state.db\n\t}\n}\n",
			check: func(t *testing.T, h map[string]any) {
				if h["store"] != "/var/lib/crmguard/state.db" {
					t.Errorf("store: %v", h["store"])
				}
			}},
		{name: "store without a value is an error", src: ":8080 {\n\tcrm_guard {\n\t\trules r.yaml\n\t\tstore\n\t}\n}\n", wantErr: "argument"},
		{name: "store with two values is an error", src: ":8080 {\n\tcrm_guard {\n\t\trules r.yaml\n\t\tstore a.db b.db\n\t}\n}\n", wantErr: "takes one argument"},
		{name: "an unknown subdirective is an error", src: ":8080 {\n\tcrm_guard {\n\t\trules r.yaml\n\t\trulez x\n\t}\n}\n", wantErr: `unknown subdirective "rulez"`},
		{name: "a size that is not a size is an error", src: ":8080 {\n\tcrm_guard {\n\t\trules r.yaml\n\t\tmax_body lots\n\t}\n}\n", wantErr: "max_body"},
		{name: "a missing rules file is an error", src: ":8080 {\n\tcrm_guard {\n\t\taudit a.jsonl\n\t}\n}\n", wantErr: "rules file is required"},
		{name: "an unknown mode is an error", src: ":8080 {\n\tcrm_guard {\n\t\trules r.yaml\n\t\tmode lenient\n\t}\n}\n", wantErr: "mode must be shadow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := adapt(t, tt.src)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want error containing %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			names := handlerNames(t, cfg)
			at := -1
			for _, want := range tt.wantOrder {
				found := -1
				for i := at + 1; i < len(names); i++ {
					if names[i] == want {
						found = i
						break
					}
				}
				if found < 0 {
					t.Fatalf("handler %q not found after position %d in %v", want, at, names)
				}
				at = found
			}
			if tt.check != nil {
				var v any
				_ = json.Unmarshal([]byte(cfg), &v)
				h := findHandler(v, "crm_guard")
				if h == nil {
					t.Fatalf("no crm_guard handler in %s", cfg)
				}
				tt.check(t, h)
			}
		})
	}
}

func findHandler(x any, name string) map[string]any {
	switch n := x.(type) {
	case map[string]any:
		if n["handler"] == name {
			return n
		}
		for _, c := range n {
			if h := findHandler(c, name); h != nil {
				return h
			}
		}
	case []any:
		for _, c := range n {
			if h := findHandler(c, name); h != nil {
				return h
			}
		}
	}
	return nil
}
