package rulescli

import (
	"errors"
	"fmt"
	"io"

	"github.com/crmguard/crmguard/rules"
)

// lintHashKey stands in for the real key when linting: it lets a file that
// uses `hash` load, and hash values are never printed.
const lintHashKey = "crmguard lint key"

// Lint loads a rule file and prints its errors and warnings, one per
// line as file:line:col: key: message. It returns the exit code: 1 when
// the file does not load, 0 otherwise (warnings alone do not fail).
func Lint(path string, out io.Writer) int {
	set, err := rules.LoadFile(path, rules.WithHashKey([]byte(lintHashKey)))
	if err != nil {
		var le *rules.LoadError
		if errors.As(err, &le) {
			for _, e := range le.Errors {
				fmt.Fprintf(out, "error: %s\n", e.Error())
			}
			fmt.Fprintf(out, "%s: %d error(s)\n", path, len(le.Errors))
		} else {
			fmt.Fprintf(out, "error: %v\n", err)
		}
		return 1
	}
	ws := set.Warnings()
	for _, w := range ws {
		fmt.Fprintf(out, "warning: %s\n", w.String())
	}
	fmt.Fprintf(out, "%s: ok, %d warning(s)\n", path, len(ws))
	return 0
}

// Test runs case files and prints one line per failing case (and a summary
// line per file). It returns 1 when a case failed or a file did not load.
func Test(paths []string, opt Options, verbose bool, out io.Writer) int {
	code := 0
	if len(paths) == 0 {
		fmt.Fprintln(out, "error: no test files given")
		return 1
	}
	for _, p := range paths {
		results, err := RunFile(p, opt)
		if err != nil {
			fmt.Fprintf(out, "FAIL %s: %v\n", p, err)
			code = 1
			continue
		}
		failed := 0
		for _, r := range results {
			if !r.Passed() {
				failed++
				fmt.Fprintln(out, r.String())
			} else if verbose {
				fmt.Fprintln(out, r.String())
			}
		}
		if failed > 0 {
			code = 1
			fmt.Fprintf(out, "FAIL %s: %d of %d cases failed\n", p, failed, len(results))
		} else {
			fmt.Fprintf(out, "ok   %s: %d cases passed\n", p, len(results))
		}
	}
	return code
}
