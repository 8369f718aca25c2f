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

	"github.com/prometheus/client_golang/prometheus"
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

// descRecorder is a Registerer that keeps the descriptions of what is
// registered on it.
type descRecorder struct {
	prometheus.Registerer
	descs []*prometheus.Desc
}

// Register records c's descriptions and registers it.
func (r *descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		r.descs = append(r.descs, d)
	}
	return r.Registerer.Register(c)
}

// TestTheMetricsInTheDocsAreTheHandlers keeps docs/audit.md's metrics
// table true: its rows are the metrics the handler registers, with their
// labels.
func TestTheMetricsInTheDocsAreTheHandlers(t *testing.T) {
	doc, err := os.ReadFile("../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "\n## Metrics\n")
	if !ok {
		t.Fatal(`docs/audit.md has no "## Metrics" section`)
	}
	table, _, _ = strings.Cut(table, "\n#")
	row := regexp.MustCompile("(?m)^\\| `(crmguard_[a-z_]+)` \\| ([^|]*) \\|")
	var documented []string
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		documented = append(documented, m[1]+" "+strings.NewReplacer("`", "", " ", "").Replace(m[2]))
	}
	rec := &descRecorder{Registerer: prometheus.NewRegistry()}
	if _, err := newGuardMetrics(rec); err != nil {
		t.Fatal(err)
	}
	if _, err := notifyFailures(rec); err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`fqName: "([^"]+)"`)
	labels := regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	var registered []string
	for _, d := range rec.descs {
		s := d.String()
		n, l := name.FindStringSubmatch(s), labels.FindStringSubmatch(s)
		if n == nil || l == nil {
			t.Fatalf("cannot read the description %s", s)
		}
		registered = append(registered, n[1]+" "+l[1])
	}
	slices.Sort(documented)
	slices.Sort(registered)
	if len(registered) < 6 || !slices.Equal(documented, registered) {
		t.Errorf("docs/audit.md's metrics (name labels) are\n%q\nthe handler registers\n%q", documented, registered)
	}
}

// TestTheAuditExampleInTheDocsIsAnEvent keeps docs/audit.md's example
// true: it decodes strictly into an AuditEvent, and the handler writes
// that event as exactly the example's bytes (key order, number format).
func TestTheAuditExampleInTheDocsIsAnEvent(t *testing.T) {
	doc, err := os.ReadFile("../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	_, example, ok := strings.Cut(string(doc), "\n## Example\n\n```json\n")
	if !ok {
		t.Fatal("docs/audit.md has no \"## Example\" section opening with a json block")
	}
	example, _, _ = strings.Cut(example, "\n```")
	d := json.NewDecoder(strings.NewReader(example))
	d.DisallowUnknownFields()
	var ev AuditEvent
	if err := d.Decode(&ev); err != nil {
		t.Fatalf("the example is not an audit event: %v\n%s", err, example)
	}
	got, err := ev.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != example {
		t.Errorf("the handler writes the example's event as\n%s\nthe docs show\n%s", got, example)
	}
}
