package rules

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// docBlock is one ```yaml block of a document: its text and the line its
// first line has in the document.
type docBlock struct {
	line int
	text string
}

// yamlBlocks returns the ```yaml blocks of a Markdown document.
func yamlBlocks(doc []byte) []docBlock {
	var out []docBlock
	var cur *docBlock
	var b strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```yaml":
			cur = &docBlock{line: n + 1}
			b.Reset()
		case cur != nil && strings.TrimSpace(line) == "```":
			cur.text = b.String()
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return out
}

// docAlternatives splits a block that writes one key several times, once
// per line ("allow: public" then "allow: [sales]"), into one snippet per
// top-level entry; a block without a repeated key is one snippet.
func docAlternatives(text string) []string {
	var starts []int
	seen := map[string]bool{}
	repeated := false
	lines := strings.SplitAfter(text, "\n")
	for i, l := range lines {
		if l == "" || l[0] == ' ' || l[0] == '#' || l[0] == '\n' || l[0] == '-' {
			continue
		}
		key, _, _ := strings.Cut(l, ":")
		repeated = repeated || seen[key]
		seen[key] = true
		starts = append(starts, i)
	}
	if !repeated {
		return []string{text}
	}
	var out []string
	for i, s := range starts {
		end := len(lines)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		out = append(out, strings.Join(lines[s:end], ""))
	}
	return out
}

// docsBase is the rule file a fragment of docs/rules.md is set into: it
// declares the roles, schedule and approval policies the examples name,
// and one route a route fragment's keys are laid over.
const docsBase = `version: 1
subject:
  id: claims.preferred_username
  roles: claims.groups
  attrs:
    teams: claims.teams
    reports: claims.direct_reports
roles:
  observer: {}
  sales: {}
  sales_manager: {inherits: [sales]}
  service: {}
  service_plus: {}
  finance: {}
  marketing: {}
  compliance: {}
  it_security: {}
  admin: {inherits: [sales_manager, service, finance]}
schedules:
  business_hours: {days: mon-fri, hours: "08:00-20:00", tz: Asia/Shanghai}
approvals:
  export:
    steps: [{name: manager, approvers: [sales_manager]}]
  handover:
    steps: [{name: manager, approvers: [sales_manager]}]
routes:
  - id: docs.example
    match: {path: "/api/customers/{id}"}
    allow: [sales, service, sales_manager, admin]
    records: list
`

// docsAliases stands in for the anchors that docs/rules.md's excerpts of
// examples/rules.yaml name but do not define, and for its "..." that
// leaves a condition out.
var docsAliases = strings.NewReplacer(
	"*may_set_owner", `'body.owner_id == user.id'`,
	"*customer_visible", `'record.owner_id == user.id'`,
	"allow_if: ...}", "allow_if: 'record.owner_id == user.id'}",
	"allow_if: ..., ", "allow_if: 'body.owner_id == user.id', ",
)

// setKey sets key in the mapping m to val, replacing an entry of that key.
func setKey(m *yaml.Node, key string, val *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = val
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, val)
}

// deleteKey removes key's entry from the mapping m.
func deleteKey(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = slices.Delete(m.Content, i, i+2)
			return
		}
	}
}

// getKey returns the value of key in the mapping m, or nil.
func getKey(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// docsRuleFile sets a snippet of docs/rules.md into docsBase: a list of
// routes replaces the base's routes; a top-level mapping section (roles,
// approvals, ...) adds its entries to the base's; any other file key
// replaces the base's; a route key is laid over the base's route. It
// returns "" for a snippet that is no part of a rule file (a rules test
// file or case, which has cases or expect).
func docsRuleFile(t *testing.T, snippet string) string {
	t.Helper()
	var doc, base yaml.Node
	if err := yaml.Unmarshal([]byte(docsAliases.Replace(snippet)), &doc); err != nil {
		t.Fatalf("the block is not YAML: %v\n%s", err, snippet)
	}
	if err := yaml.Unmarshal([]byte(docsBase), &base); err != nil {
		t.Fatal(err)
	}
	file := base.Content[0]
	route := getKey(file, "routes").Content[0]
	if len(doc.Content) == 0 {
		t.Fatalf("the block is empty")
	}
	root := doc.Content[0]
	switch root.Kind {
	case yaml.SequenceNode:
		if len(root.Content) > 0 && getKey(root.Content[0], "expect") != nil {
			return ""
		}
		setKey(file, "routes", root)
	case yaml.MappingNode:
		if getKey(root, "cases") != nil || getKey(root, "expect") != nil {
			return "" // a rules test file, or a part of a case
		}
		for i := 0; i+1 < len(root.Content); i += 2 {
			key, val := root.Content[i].Value, root.Content[i+1]
			switch {
			case key == "mfa" && (getKey(val, "amr") != nil || getKey(val, "acr") != nil):
				setKey(file, key, val) // the file's mfa; a route's has neither
			case slices.Contains(routeKeys, key):
				setKey(route, key, val)
				// What the base route says that the fragment's key excludes
				// or needs: allow or deny, records or record, a target for
				// a body guard that reads the stored record.
				switch key {
				case "deny":
					deleteKey(route, "allow")
				case "record":
					deleteKey(route, "records")
				case "body":
					if getKey(root, "target") == nil {
						var target yaml.Node
						if err := yaml.Unmarshal([]byte(`{fetch: "/api/customers/{id}", allow_if: "true"}`), &target); err != nil {
							t.Fatal(err)
						}
						setKey(route, "target", target.Content[0])
					}
				}
			case val.Kind == yaml.MappingNode && getKey(file, key) != nil && getKey(file, key).Kind == yaml.MappingNode:
				dst := getKey(file, key)
				for j := 0; j+1 < len(val.Content); j += 2 {
					setKey(dst, val.Content[j].Value, val.Content[j+1])
				}
			default:
				setKey(file, key, val)
			}
		}
	default:
		t.Fatalf("the block is neither a mapping nor a list:\n%s", snippet)
	}
	out, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestEveryRulesDocExampleLoads keeps the rule file examples of README.md
// and docs/ true: each ```yaml block, set into a rule file that declares
// what it names, loads without an error. Blocks that write a key several
// times show alternatives and load one line at a time.
func TestEveryRulesDocExampleLoads(t *testing.T) {
	for _, name := range []string{"../docs/rules.md", "../docs/workflows.md", "../docs/operator-guide.md", "../README.md"} {
		doc, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		where := strings.TrimPrefix(name, "../")
		blocks := yamlBlocks(doc)
		if name == "../docs/rules.md" && len(blocks) < 20 {
			t.Fatalf("found only %d yaml blocks in docs/rules.md; the reader is broken", len(blocks))
		}
		for _, b := range blocks {
			for i, snippet := range docAlternatives(b.text) {
				t.Run(fmt.Sprintf("the block at %s:%d (%d) loads", where, b.line, i+1), func(t *testing.T) {
					file := docsRuleFile(t, snippet)
					if file == "" {
						return // a rules test case
					}
					if _, err := Load(where, []byte(file), WithHashKey([]byte("k"))); err != nil {
						t.Errorf("does not load:\n%v\n-- the block:\n%s\n-- set into:\n%s", err, snippet, file)
					}
				})
			}
		}
	}
}

func TestDocAlternativesSplitsARepeatedKey(t *testing.T) {
	cases := []struct {
		name string
		text string
		want int
	}{
		{"a block without a repeated key is one snippet", "a: 1\nb:\n  c: 2\n", 1},
		{"a key written twice makes one snippet per entry", "a: 1\na: 2 # x\nb: 3\n", 3},
		{"nested keys of the same name do not count", "a:\n  x: 1\nb:\n  x: 2\n", 1},
		{"a list is one snippet", "- id: a\n- id: b\n", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := docAlternatives(c.text); len(got) != c.want {
				t.Errorf("docAlternatives(%q) = %q, want %d snippets", c.text, got, c.want)
			}
		})
	}
}

// TestTheTopLevelKeysTableIsTheSchemas keeps docs/rules.md's table of
// top-level keys true: it names exactly the keys the schema (and so the
// loader, TestSchemaKeysAreTheLoadersKeys) knows at the top of a file, and
// marks required those the schema requires.
func TestTheTopLevelKeysTableIsTheSchemas(t *testing.T) {
	doc, err := os.ReadFile("../docs/rules.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "\n## Top-level keys\n")
	if !ok {
		t.Fatal(`docs/rules.md has no "## Top-level keys" section`)
	}
	table, _, _ = strings.Cut(table, "\n\n`")
	var documented, required []string
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		key := strings.Trim(strings.TrimSpace(cells[1]), "`")
		documented = append(documented, key)
		if strings.Contains(cells[2], "(required)") {
			required = append(required, key)
		}
	}
	var schema struct {
		Properties map[string]any `json:"properties"`
		Required   []string       `json:"required"`
	}
	if err := json.Unmarshal(Schema(), &schema); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range schema.Properties {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	slices.Sort(documented)
	slices.Sort(required)
	slices.Sort(schema.Required)
	if !slices.Equal(documented, keys) {
		t.Errorf("docs/rules.md's top-level keys are\n%v\nthe schema's\n%v", documented, keys)
	}
	if !slices.Equal(required, schema.Required) {
		t.Errorf("docs/rules.md marks required %v, the schema requires %v", required, schema.Required)
	}
}
