package rulescli

import (
	"fmt"
	"io"

	"github.com/crmguard/crmguard/rules"
)

// RoleDiff prints what a new version of a rule file changes for each role
// (rules.DiffAccess: the routes a role may now call, may call no more, or
// may call on other terms), as a reload's audit event records it. It
// returns the exit code: 0 (1 when a file does not load).
func RoleDiff(oldFile, newFile, hashKey string, out io.Writer) int {
	var sets [2]*rules.Set
	for i, f := range []string{oldFile, newFile} {
		s, err := loadRules(f, hashKey)
		if err != nil {
			fmt.Fprintf(out, "error: %v\n", err)
			return 1
		}
		sets[i] = s
	}
	fmt.Fprintf(out, "%s (version %s) -> %s (version %s)\n", oldFile, sets[0].Version(), newFile, sets[1].Version())
	changes := rules.DiffAccess(sets[0], sets[1])
	if len(changes) == 0 {
		fmt.Fprintln(out, "no role may do anything else")
	}
	for _, c := range changes {
		fmt.Fprintln(out, c.String())
	}
	return 0
}
