package main

import (
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Flags that several subcommands share, each declared in one place.

// hashKeyUsage is the --hash-key text of the rules commands, which fall
// back to a fixed test key.
const hashKeyUsage = "key of the hash action (default $CRMGUARD_HASH_KEY, else a fixed test key)"

// hashKeyFlag declares --hash-key on c with usage; when it is not given,
// *key is $CRMGUARD_HASH_KEY as the command starts.
func hashKeyFlag(c *cobra.Command, key *string, usage string) {
	c.Flags().StringVar(key, "hash-key", "", usage)
	beforeRun(c, func(*cobra.Command) {
		if *key == "" {
			*key = os.Getenv("CRMGUARD_HASH_KEY")
		}
	})
}

// progressFlag declares -q/--quiet on c; unless it is given, *progress is
// the command's stderr as the command starts.
func progressFlag(c *cobra.Command, progress *io.Writer) {
	quiet := c.Flags().BoolP("quiet", "q", false, "no progress on stderr")
	beforeRun(c, func(cmd *cobra.Command) {
		if !*quiet {
			*progress = cmd.ErrOrStderr()
		}
	})
}

// beforeRun adds f to what c does once its flags are parsed, before it
// runs (after what was added before).
func beforeRun(c *cobra.Command, f func(*cobra.Command)) {
	prev := c.PreRun
	c.PreRun = func(cmd *cobra.Command, args []string) {
		if prev != nil {
			prev(cmd, args)
		}
		f(cmd)
	}
}
