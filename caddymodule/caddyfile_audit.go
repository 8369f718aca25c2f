package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
)

// unmarshalAudit reads the audit subdirective:
//
//	audit <file>
//	audit <file> {
//		chain_key <secret>     # e.g. {env.CRMGUARD_AUDIT_KEY}
//		roll_size <size>       # e.g. 100MiB
//	}
func (h *Handler) unmarshalAudit(d *caddyfile.Dispenser) error {
	if err := oneArg(d, &h.Audit); err != nil {
		return err
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "chain_key":
			if err := oneArg(d, &h.AuditChainKey); err != nil {
				return err
			}
		case "roll_size":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			n, err := humanize.ParseBytes(s)
			if err != nil || n == 0 {
				return d.Errf("crm_guard: audit roll_size %q is not a size (e.g. 100MiB)", s)
			}
			h.AuditRollSize = int64(n)
		default:
			return d.Errf("crm_guard: unknown audit option %q (chain_key, roll_size)", d.Val())
		}
	}
	return nil
}
