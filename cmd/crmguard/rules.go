package main

import (
	"os"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/crmguard/crmguard/cmd/crmguard/internal/rulescli"
	"github.com/crmguard/crmguard/rules"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "rules",
		Usage: "lint|test|explain|matrix|diff|schema ...",
		Short: "Checks, tests and explains crm_guard rule files",
		Long: `
Work with crm_guard rule files without starting a server.

  crmguard rules lint FILE
      Load the rule file; print errors and warnings as file:line:col: key: message.
      Exits 1 when the file does not load.

  crmguard rules test FILE...
      Run test-case files (see README.md, "Testing rule files") through the handler
      logic in-process: fixed identities, a fake CRM, no network. Prints one line
      per failing case with what differed; exits 1 on any failure.

  crmguard rules explain --rules FILE [--user JSON] [--upstream FILE] "GET /path"
      Say which route matches and why, the decision, and what the rules would
      do to the answer.

  crmguard rules matrix FILE [--format md|csv|html]
      The permission matrix for access reviews: for every role and route, the
      methods allowed, the conditions in words (own / team / pool records,
      schedules, MFA age), export approval, and the fields removed, masked or
      hashed for the role.

  crmguard rules diff OLD NEW
      What the new version changes for each role: the routes it may now call,
      may call no more, or may call on other terms (what a reload's audit
      event records).

  crmguard rules schema
      Print the rule file's JSON Schema (every key with its meaning) for
      editors: see docs/rules.md, "Editor support".
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(lintCommand(), testCommand(), explainCommand(), matrixCommand(), diffCommand(), schemaCommand())
		},
	})
}

// osExit ends the process; tests that run commands replace it.
var osExit = os.Exit

// exit returns a cobra error carrying an exit code without printing usage.
func exit(cmd *cobra.Command, code int) error {
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	if code != 0 {
		osExit(code)
	}
	return nil
}

func lintCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "lint FILE",
		Short: "Checks a rule file and prints its errors and warnings",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return exit(cmd, rulescli.Lint(args[0], cmd.OutOrStdout()))
		},
	}
}

func testCommand() *cobra.Command {
	var opt rulescli.Options
	var verbose bool
	c := &cobra.Command{
		Use:   "test FILE...",
		Short: "Runs rule test-case files without network",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return exit(cmd, rulescli.Test(args, opt, verbose, cmd.OutOrStdout()))
		},
	}
	hashKeyFlag(c, &opt.HashKey, hashKeyUsage)
	c.Flags().Int64Var(&opt.MaxBody, "max-body", 0, "max_body in bytes (default 16 MiB)")
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "also print passing cases")
	return c
}

func explainCommand() *cobra.Command {
	var in rulescli.ExplainInput
	c := &cobra.Command{
		Use:   `explain --rules FILE [--user JSON] "METHOD /path"`,
		Short: "Explains what the rules do with one request",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in.Request = args[0]
			return exit(cmd, rulescli.Explain(in, cmd.OutOrStdout()))
		},
	}
	c.Flags().StringVar(&in.RulesFile, "rules", "", "the rule file (required)")
	c.Flags().StringVar(&in.UserJSON, "user", "", `the user, e.g. {"id":"zhang","roles":["sales"],"attrs":{"teams":["east"]},"mfa":true}; empty: anonymous`)
	c.Flags().StringVar(&in.Now, "now", "", "the clock, RFC 3339 (default: now)")
	c.Flags().StringVar(&in.UpstreamFile, "upstream", "", "a sample CRM answer body to rewrite")
	c.Flags().StringVar(&in.UpstreamType, "upstream-type", "application/json", "the sample answer's Content-Type")
	hashKeyFlag(c, &in.HashKey, hashKeyUsage)
	_ = c.MarkFlagRequired("rules")
	return c
}

func matrixCommand() *cobra.Command {
	var in rulescli.MatrixInput
	c := &cobra.Command{
		Use:   "matrix RULES [--format md|csv|html]",
		Short: "Prints the permission matrix: role x route, conditions in words, fields treated",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in.RulesFile = args[0]
			return exit(cmd, rulescli.Matrix(in, cmd.OutOrStdout()))
		},
	}
	c.Flags().StringVar(&in.Format, "format", "md", "md, csv or html")
	hashKeyFlag(c, &in.HashKey, hashKeyUsage)
	return c
}

func schemaCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Prints the JSON Schema of the rule file, for editors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(rules.Schema())
			return err
		},
	}
}

func diffCommand() *cobra.Command {
	var hashKey string
	c := &cobra.Command{
		Use:   "diff OLD NEW",
		Short: "Says what a new version of a rule file changes for each role",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return exit(cmd, rulescli.RoleDiff(args[0], args[1], hashKey, cmd.OutOrStdout()))
		},
	}
	hashKeyFlag(c, &hashKey, hashKeyUsage)
	return c
}
