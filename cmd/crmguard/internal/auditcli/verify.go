// Package auditcli implements the `crmguard audit` commands: verify the
// hash chain of audit files, report who saw and changed what, and review
// rights that are granted but unused.
package auditcli

import (
	"fmt"
	"io"

	"github.com/crmguard/crmguard/caddymodule/auditlog"
)

// Verify checks that files form one unbroken hash chain made with one of
// keys and prints OK or the first line removed, edited, reordered or
// inserted. bySeq orders the lines by seq first (an export of a log system
// that lost their order). It returns the exit code: 0 OK, 1 a broken
// chain, 2 a usage or read error.
func Verify(keys []string, files []string, bySeq bool, out io.Writer) int {
	if len(keys) == 0 {
		fmt.Fprintln(out, "error: no chain key: give --key or set CRMGUARD_AUDIT_KEY")
		return 2
	}
	if len(files) == 0 {
		fmt.Fprintln(out, "error: no audit files given")
		return 2
	}
	kb := make([][]byte, len(keys))
	for i, k := range keys {
		kb[i] = []byte(k)
	}
	verify := auditlog.Verify
	if bySeq {
		verify = auditlog.VerifyBySeq
	}
	res, err := verify(kb, files)
	if err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		return 2
	}
	for _, n := range res.Notes {
		if n.Line > 0 {
			fmt.Fprintf(out, "note: %s:%d: %s\n", n.File, n.Line, n.Text)
		} else {
			fmt.Fprintf(out, "note: %s: %s\n", n.File, n.Text)
		}
	}
	if res.Problem != nil {
		fmt.Fprintf(out, "FAIL: %s\n", res.Problem.Error())
		if res.Lines > 0 {
			fmt.Fprintf(out, "      the %d lines before it (seq %d to %d) verify\n", res.Lines, res.FirstSeq, res.LastSeq)
		}
		return 1
	}
	start := "the chain starts at its first line"
	if !res.StartsChain {
		start = fmt.Sprintf("continuing from link %s (the files before it were not given)", auditlog.HexLink(res.FirstPrev))
	}
	fmt.Fprintf(out, "OK: %d lines in %d files (seq %d to %d), %s\n", res.Lines, len(res.Files), res.FirstSeq, res.LastSeq, start)
	fmt.Fprintf(out, "last link: %s\n", auditlog.HexLink(res.LastLink))
	fmt.Fprintln(out, "(lines removed from the very end leave no trace in the chain: compare the last link with a copy kept elsewhere)")
	return 0
}
