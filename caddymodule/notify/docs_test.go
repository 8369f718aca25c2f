package notify

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestTheEventsInTheDocsAreEvents keeps the webhook examples of
// docs/caddyfile.md and docs/workflows.md true: each decodes, strictly,
// into the Event a webhook receives.
func TestTheEventsInTheDocsAreEvents(t *testing.T) {
	seen := 0
	for _, path := range []string{"../../docs/caddyfile.md", "../../docs/workflows.md"} {
		doc, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, part := range strings.Split(string(doc), "```json\n")[1:] {
			block, _, _ := strings.Cut(part, "```")
			if !strings.HasPrefix(block, `{"type":`) {
				continue
			}
			seen++
			d := json.NewDecoder(bytes.NewReader([]byte(block)))
			d.DisallowUnknownFields()
			var ev Event
			if err := d.Decode(&ev); err != nil {
				t.Errorf("%s: the example is not an Event: %v\n%s", path, err, block)
				continue
			}
			if ev.Time.IsZero() || ev.Text == "" {
				t.Errorf("%s: the example lacks time or text, which every event has:\n%s", path, block)
			}
		}
	}
	if seen < 2 {
		t.Errorf("found %d webhook event examples in docs/caddyfile.md and docs/workflows.md, want at least 2", seen)
	}
}
