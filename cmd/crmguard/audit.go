package main

import (
	"os"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/crmguard/crmguard/cmd/crmguard/internal/auditcli"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "audit",
		Usage: "verify ...",
		Short: "Verifies crm_guard audit files",
		Long: `
Work with crm_guard audit files (plain or gzip-compressed JSON lines).

  crmguard audit verify [--key KEY]... FILES...
      Check the keyed hash chain of audit files written with
      "audit FILE { chain_key ... }" (see docs/audit.md). Files may be given in
      any order (rolled and current ones together). Prints OK, or the first
      line removed, edited, reordered or inserted as file:line: kind.
      The key defaults to $CRMGUARD_AUDIT_KEY. Exits 1 when the chain is
      broken, 2 on a usage or read error.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(verifyCommand())
		},
	})
}

func verifyCommand() *cobra.Command {
	var keys []string
	c := &cobra.Command{
		Use:   "verify [--key KEY]... FILES...",
		Short: "Verifies the hash chain of audit files",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(keys) == 0 {
				if k := os.Getenv("CRMGUARD_AUDIT_KEY"); k != "" {
					keys = []string{k}
				}
			}
			return exit(cmd, auditcli.Verify(keys, args, cmd.OutOrStdout()))
		},
	}
	c.Flags().StringArrayVar(&keys, "key", nil, "the chain key; repeat it for files written before and after a key change (default $CRMGUARD_AUDIT_KEY)")
	return c
}
