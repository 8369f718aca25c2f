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
		Usage: "verify|report|review ...",
		Short: "Verifies, reports on and reviews crm_guard audit files",
		Long: `
Work with crm_guard audit files (plain or gzip-compressed JSON lines).

  crmguard audit verify [--key KEY]... [--by-seq] FILES...
      Check the keyed hash chain of audit files written with
      "audit FILE { chain_key ... }" (see docs/audit.md). Files may be given in
      any order (rolled and current ones together). Prints OK, or the first
      line removed, edited, reordered or inserted as file:line: kind.
      The key defaults to $CRMGUARD_AUDIT_KEY. --by-seq orders the lines by
      their seq first (an export of a log system). Exits 1 when the chain is
      broken, 2 on a usage or read error.

  crmguard audit report --from DATE --to DATE [--tz ZONE] [--format text|csv|json|html] FILES...
      Who saw and changed what in the period (dates YYYY-MM-DD in --tz, both
      included): per user requests, distinct records, records per route,
      sensitive fields received untreated, exports (rows, grant, purpose),
      writes and the fields they set, denials by reason, off-hours activity,
      elevations and approvals; the most unusual users. Reads the file
      sink's lines and Caddy log entries (the event under "event"), plain or
      gzip-compressed. The HTML is one self-contained file with charts.

  crmguard audit review --rules FILE --since 90d FILES...
      An access review: roles and routes the rule file grants that nobody
      used in the window, users seen before it but not since, elevations
      used and never reviewed, grants approved and never used.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(verifyCommand(), reportCommand(), reviewCommand())
		},
	})
}

func verifyCommand() *cobra.Command {
	var keys []string
	var bySeq bool
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
			return exit(cmd, auditcli.Verify(keys, args, bySeq, cmd.OutOrStdout()))
		},
	}
	c.Flags().BoolVar(&bySeq, "by-seq", false, "order the lines by seq first: for an export of a log system that lost their order (held in memory)")
	c.Flags().StringArrayVar(&keys, "key", nil, "the chain key; repeat it for files written before and after a key change (default $CRMGUARD_AUDIT_KEY)")
	return c
}

func reportCommand() *cobra.Command {
	var o auditcli.ReportOptions
	c := &cobra.Command{
		Use:   "report --from DATE --to DATE [--format text|csv|json|html] FILES...",
		Short: "Reports who saw and changed what in a period",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return exit(cmd, auditcli.ReportCommand(o, args, cmd.OutOrStdout(), cmd.ErrOrStderr()))
		},
	}
	f := c.Flags()
	f.StringVar(&o.From, "from", "", "first day of the period, YYYY-MM-DD (or an RFC 3339 time)")
	f.StringVar(&o.To, "to", "", "last day of the period, YYYY-MM-DD, included (or an RFC 3339 time, excluded)")
	f.StringVar(&o.TZ, "tz", "Local", "time zone of the dates, days and business hours (IANA name)")
	f.StringVar(&o.Days, "days", "mon-fri", "business days, as in a rule file's schedules")
	f.StringVar(&o.Hours, "hours", "08:00-20:00", "business hours, as in a rule file's schedules; outside them is off hours")
	f.StringVar(&o.Format, "format", "text", "text, csv, json or html")
	f.IntVar(&o.Top, "top", 5, "length of the lists of unusual users")
	progressFlag(c, &o.Progress)
	_ = c.MarkFlagRequired("from")
	_ = c.MarkFlagRequired("to")
	return c
}

func reviewCommand() *cobra.Command {
	var o auditcli.ReviewOptions
	c := &cobra.Command{
		Use:   "review --rules FILE --since 90d FILES...",
		Short: "Lists rights nobody used, dormant users, unreviewed elevations and unused grants",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return exit(cmd, auditcli.ReviewCommand(o, args, cmd.OutOrStdout(), cmd.ErrOrStderr()))
		},
	}
	f := c.Flags()
	f.StringVar(&o.RulesFile, "rules", "", "the rule file whose grants are reviewed (required)")
	f.StringVar(&o.Since, "since", "90d", "the window: 90d, a duration, a date (YYYY-MM-DD) or an RFC 3339 time")
	f.StringVar(&o.Now, "now", "", "the end of the window, RFC 3339 (default: now)")
	f.StringVar(&o.Format, "format", "text", "text or json")
	hashKeyFlag(c, &o.HashKey, "key of the rules' hash action, if the rule file needs one to load (default $CRMGUARD_HASH_KEY)")
	progressFlag(c, &o.Progress)
	_ = c.MarkFlagRequired("rules")
	return c
}
