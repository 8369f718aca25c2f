package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/crmguard/crmguard/examples/demo"
	"github.com/crmguard/crmguard/examples/devidp"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "demo",
		Usage: "[--config <Caddyfile>] [--rules <file>] [--listen localhost:8080] | totp <user>",
		Short: "Runs the example CRM, a development identity provider and the guard on this machine",
		Long: `
Runs the whole product on this machine, with nothing to set up: the example
legacy CRM (examples/crm) and a development OpenID Provider with one user per
role (examples/devidp), both on 127.0.0.1, and the guard in front of the CRM,
configured by the repository's Caddyfile and examples/rules.yaml. It prints
the address to open, the users and their passwords, and what to try.
Ctrl-C stops everything.

The demo users sign in with a password and a TOTP code; print a user's
current code with:

	crmguard demo totp zhang

The identity provider is for development only: its users, passwords and keys
live in memory.`,
		CobraFunc: func(cmd *cobra.Command) {
			f := cmd.Flags()
			f.String("config", "Caddyfile", "the Caddyfile the guard runs")
			f.String("rules", "", "the rule file (default: examples/rules.yaml of the Caddyfile's repository)")
			f.String("listen", demo.DefaultListen, "the guard's address (loopback only)")
			f.Int64("seed", 1, "the seed of the CRM's generated data")
			f.String("totp-seed", demo.DefaultTOTPSeed, "the seed of the demo users' TOTP secrets")
			f.String("admin", "localhost:2019", "Caddy's admin address, or off")
			f.String("audit", "demo-audit.jsonl", "the audit file (hash-chained; see the README, \"The audit trail\"), or \"\" for the Caddy logger")
			f.String("audit-key", demo.DefaultAuditKey, "the audit file's chain key")
			cmd.Args = cobra.NoArgs
			cmd.RunE = func(cmd *cobra.Command, _ []string) error {
				cfg := demo.Config{}
				cfg.Caddyfile, _ = f.GetString("config")
				cfg.Rules, _ = f.GetString("rules")
				cfg.Listen, _ = f.GetString("listen")
				cfg.Seed, _ = f.GetInt64("seed")
				cfg.TOTPSeed, _ = f.GetString("totp-seed")
				cfg.Admin, _ = f.GetString("admin")
				cfg.Audit, _ = f.GetString("audit")
				cfg.AuditKey, _ = f.GetString("audit-key")
				return runDemo(cmd.Context(), cfg, cmd.OutOrStdout())
			}
			totp := &cobra.Command{
				Use:   "totp <user>",
				Short: "Prints a demo user's current TOTP code",
				Args:  cobra.ExactArgs(1),
				RunE: func(cmd *cobra.Command, args []string) error {
					seed, _ := cmd.Flags().GetString("totp-seed")
					code, err := demo.TOTP(devidp.DemoUsers(seed), args[0], time.Now())
					if err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), code)
					return nil
				},
			}
			totp.Flags().String("totp-seed", demo.DefaultTOTPSeed, "the seed of the demo users' TOTP secrets")
			cmd.AddCommand(totp)
		},
	})
}

// runDemo starts the demo stack, prints the banner and waits for Ctrl-C.
func runDemo(ctx context.Context, cfg demo.Config, out io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := demo.Start(ctx, cfg)
	if err != nil {
		return err
	}
	printBanner(out, d)
	<-ctx.Done()
	fmt.Fprintln(out, "\ncrmguard demo: stopping the guard, the identity provider and the CRM")
	d.Stop()
	return nil
}

// demoRoles says what each demo user shows.
var demoRoles = map[string]string{
	"zhang": "sales rep, team east",
	"wang":  "sales manager, team east",
	"li":    "customer service",
	"zhao":  "finance",
	"sun":   "marketing (de-identified data)",
	"xiao":  "new hire, observation mode (read-only)",
	"qian":  "compliance (ID numbers after a fresh sign-in; reviews break-glass access)",
	"zhou":  "IT security (second approver of exports)",
	"admin": "administrator",
}

func printBanner(out io.Writer, d *demo.Stack) {
	self := "crmguard"
	if strings.Contains(os.Args[0], "go-build") {
		self = "go run ./cmd/crmguard"
	}
	fmt.Fprintf(out, `
crmguard demo: the example CRM behind the guard, on this machine only.

  Open      %s
  Sign-in   %s  (development identity provider: DEVELOPMENT ONLY)
  CRM       http://%s  (unguarded; only the guard should talk to it)
  Rules     %s  (edit and save: the guard reloads them)

Users sign in with the password below, then the 6-digit code printed by
  %s demo totp <user>
(a code is accepted once; wait for the next one to sign in again)

`, d.URL, d.Issuer, d.CRMAddr, d.Rules, self)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  user\tpassword\tgroups\twho")
	for _, u := range d.Users {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", u.Username, u.Password, strings.Join(u.Groups, ","), demoRoles[u.Username])
	}
	_ = tw.Flush()
	fmt.Fprintf(out, `
What to try:
  1. zhang: the customer list holds team east's customers (zhang's own
     among them; the CRM is asked for team east only), "Public pool" the
     customers no one contacted for a year; phones and ID numbers are
     masked, bank accounts gone. "Export CSV" is refused: exports need an
     approval.
  2. li (customer service): Deals, Edit, change the stage, Save: the page
     shows the proxy's refusal naming the field. Changing "Next step" works.
  3. qian (compliance): open a customer, "Show ID number": the ID number
     appears only within 5 minutes of an MFA sign-in; later, you sign in
     again first.
  4. sun (marketing): ids hashed, names masked; no phone, e-mail, company,
     city, amount, owner, contacts or bank data, and no search by them.
  5. xiao (new hire): reads the team's customers; every change is refused.
  6. wang (sales manager): exports the CSV, Monday to Friday 08:00-20:00
     Shanghai time only.
  7. An export with approval (in those hours): zhang clicks "Export CSV",
     then "Ask for approval", writes the purpose and sends it. wang opens
     %[1]s/.crmguard/approvals, the request, Approve (signed in more than
     10 minutes ago? the guard asks for the second factor again first);
     zhou (IT security) approves too. zhang clicks "Export CSV": the file
     downloads once; a second click is refused.
  8. Break-glass: li opens %[1]s/.crmguard/elevations and starts
     "complaint" for 30 minutes with a reason: customers' phones show
     unmasked until it ends (at 30 minutes, "End it now", or sign-out).
     qian then reviews it there with a note.
  9. Sign out (top right), then reload: the session is gone.
%[3]s
Test a rule change first: %[2]s rules test examples/rules_test.yaml

Ctrl-C stops everything.
`, d.URL, self, auditLine(d, self))
}

// auditLine says where the demo's audit events go and how to read them.
func auditLine(d *demo.Stack, self string) string {
	if d.Audit == "" {
		return "Every decision is written to the audit log (logger crm_guard.audit)."
	}
	return fmt.Sprintf(`Every decision is written to the audit file %[1]s, hash-chained with the
key %[2]q (README.md, "The audit trail"): for example
  %[3]s audit verify --key %[2]s %[1]s
  %[3]s audit report --from $(date +%%F) --to $(date +%%F) --tz Asia/Shanghai %[1]s`, d.Audit, d.AuditKey, self)
}
