package workflow

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// jsonExamples returns the ```json blocks of a Markdown document.
func jsonExamples(t *testing.T, path string) []string {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, part := range strings.Split(string(doc), "```json\n")[1:] {
		block, _, ok := strings.Cut(part, "```")
		if !ok {
			t.Fatalf("%s: a json block is not closed", path)
		}
		out = append(out, block)
	}
	return out
}

// decodeStrict decodes src into v, refusing keys v does not have.
func decodeStrict(src string, v any) error {
	d := json.NewDecoder(bytes.NewReader([]byte(src)))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// TestTheWorkflowJSONInTheDocsIsTheAPIs keeps docs/workflows.md's examples
// of an approval request and an elevation true: each decodes, strictly,
// into what the API answers, and says what the example shows.
func TestTheWorkflowJSONInTheDocsIsTheAPIs(t *testing.T) {
	var approvals, elevations int
	for _, block := range jsonExamples(t, "../../docs/workflows.md") {
		switch {
		case strings.HasPrefix(block, `{"id":"ap-`):
			approvals++
			var a Approval
			if err := decodeStrict(block, &a); err != nil {
				t.Errorf("docs/workflows.md's approval request is not an Approval: %v\n%s", err, block)
			}
			if a.Status != StatusPending || len(a.Steps) != 2 || a.Steps[0].Status != StepWaiting || a.Steps[1].Status != StepLater {
				t.Errorf("the example's statuses are not the API's: %+v", a)
			}
		case strings.HasPrefix(block, `{"id":"el-`):
			elevations++
			var e Elevation
			if err := decodeStrict(block, &e); err != nil {
				t.Errorf("docs/workflows.md's elevation is not an Elevation: %v\n%s", err, block)
			}
			if e.Status != StatusActive {
				t.Errorf("the example's status %q is not the API's %q", e.Status, StatusActive)
			}
		}
	}
	if approvals != 1 || elevations != 1 {
		t.Errorf("found %d approval and %d elevation examples in docs/workflows.md, want one of each", approvals, elevations)
	}
}
