package caddymodule

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// auditDocKeys reads the keys of docs/audit.md's "## Schema" table.
func auditDocKeys(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	_, schema, ok := strings.Cut(string(doc), "\n## Schema\n")
	if !ok {
		t.Fatal(`docs/audit.md has no "## Schema" section`)
	}
	schema, _, _ = strings.Cut(schema, "\n#")
	row := regexp.MustCompile("^\\| `([a-z_]+)` \\|")
	var keys []string
	sc := bufio.NewScanner(strings.NewReader(schema))
	for sc.Scan() {
		if m := row.FindStringSubmatch(sc.Text()); m != nil {
			keys = append(keys, m[1])
		}
	}
	return keys
}

// TestTheAuditSchemaInTheDocsIsTheEvent keeps docs/audit.md's schema
// true: its keys are exactly the AuditEvent's JSON keys plus those a
// chained audit file adds to every line (read from a line written).
func TestTheAuditSchemaInTheDocsIsTheEvent(t *testing.T) {
	documented := auditDocKeys(t)
	if len(documented) < 20 {
		t.Fatalf("read only %d keys from docs/audit.md's schema table; the reader is broken", len(documented))
	}
	var written []string
	et := reflect.TypeOf(AuditEvent{})
	for i := range et.NumField() {
		if name, _, _ := strings.Cut(et.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			written = append(written, name)
		}
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeEvents(t, path, auditFileOptions{ChainKey: chainKey}, 1, func() time.Time { return time.Unix(0, 0) })
	line, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(line, &ev); err != nil {
		t.Fatalf("the chained line is not JSON: %v\n%s", err, line)
	}
	for k := range ev {
		if !slices.Contains(written, k) {
			written = append(written, k) // seq, chain_prev, chain
		}
	}
	slices.Sort(written)
	slices.Sort(documented)
	for _, k := range written {
		if !slices.Contains(documented, k) {
			t.Errorf("the audit event has %q, docs/audit.md's schema does not name it", k)
		}
	}
	for _, k := range documented {
		if !slices.Contains(written, k) {
			t.Errorf("docs/audit.md's schema names %q, no audit event has it", k)
		}
	}
}
