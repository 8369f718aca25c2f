package caddymodule

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// caddyfileDocBlock is a Caddyfile example of the documentation.
type caddyfileDocBlock struct {
	where string // file:line of its first line
	text  string
}

// caddyfileDocBlocks returns the fenced blocks without a language (or
// marked caddyfile) of README.md and docs/*.md that configure crm_guard.
func caddyfileDocBlocks(t *testing.T) []caddyfileDocBlock {
	t.Helper()
	files, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../README.md")
	var out []caddyfileDocBlock
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		in, start := false, 0
		var b strings.Builder
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			switch {
			case !in && (line == "```" || line == "```caddyfile"):
				in, start = true, n+1
				b.Reset()
			case in && line == "```":
				in = false
				text := b.String()
				// A Caddyfile opens a block on its first line ("{", a
				// site, crm_guard, notify); a shell session does not.
				if (strings.Contains(text, "crm_guard") || strings.HasPrefix(text, "notify {")) && strings.HasSuffix(firstLine(text), "{") {
					out = append(out, caddyfileDocBlock{where: strings.TrimPrefix(f, "../") + ":" + strconv.Itoa(start), text: text})
				}
			case in:
				b.WriteString(sc.Text())
				b.WriteByte('\n')
			case strings.HasPrefix(line, "```"):
				// a fenced block in another language: skip to its end
				for sc.Scan() {
					n++
					if strings.TrimSpace(sc.Text()) == "```" {
						break
					}
				}
			}
		}
	}
	return out
}

// docOIDCElided is how the docs leave an oidc block out.
var docOIDCElided = regexp.MustCompile(`oidc \{ \.\.\. \}`)

// completeCaddyfile makes a documented fragment a Caddyfile: a
// crm_guard block goes into a site, a notify block into a crm_guard
// block, and an oidc block written `oidc { ... }` gets the keys it needs.
func completeCaddyfile(text string) string {
	text = docOIDCElided.ReplaceAllString(text, "oidc {\n\t\t\tissuer https://idp.example.com\n\t\t\tclient_id crm\n\t\t}")
	first := firstLine(text)
	switch {
	case strings.HasPrefix(first, "notify "):
		return "example.com {\n\tcrm_guard {\n\t\trules rules.yaml\n" + text + "\t}\n}\n"
	case strings.HasPrefix(first, "crm_guard "):
		return "example.com {\n" + text + "}\n"
	}
	return text
}

// firstLine returns the first line of text that is neither empty nor a
// comment, trimmed.
func firstLine(text string) string {
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return l
		}
	}
	return ""
}

// TestEveryCaddyfileExampleInTheDocsAdapts keeps the Caddyfile examples of
// README.md and docs/ true: each one, completed where it is a fragment,
// is read by Caddy's adapter, whose crm_guard parser refuses unknown
// subdirectives and bad sizes, durations and arguments.
func TestEveryCaddyfileExampleInTheDocsAdapts(t *testing.T) {
	blocks := caddyfileDocBlocks(t)
	if len(blocks) < 8 {
		t.Fatalf("found only %d Caddyfile examples in README.md and docs/; the reader is broken", len(blocks))
	}
	for _, b := range blocks {
		t.Run("the example at "+b.where+" adapts", func(t *testing.T) {
			src := completeCaddyfile(b.text)
			out, err := adapt(t, src)
			if err != nil {
				t.Fatalf("%v\n-- the example, completed:\n%s", err, src)
			}
			if strings.Contains(b.text, "crm_guard {") && !strings.Contains(out, `"handler":"crm_guard"`) {
				t.Errorf("the adapted configuration has no crm_guard handler:\n%s", out)
			}
		})
	}
}

// caddyfileDocTable reads the subdirective table of docs/caddyfile.md:
// each row's subdirective name and JSON key.
func caddyfileDocTable(t *testing.T) (names, keys []string) {
	t.Helper()
	data, err := os.ReadFile("../docs/caddyfile.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)[^`]*`[^|]*\\| `([a-z_]+)`")
	for _, m := range row.FindAllStringSubmatch(string(data), -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
		keys = append(keys, m[2])
	}
	return names, keys
}

// TestTheCaddyfileTableIsTheHandlersOptions keeps the table of
// docs/caddyfile.md true: its JSON keys are exactly the Handler's, and the
// parser knows every subdirective it names.
func TestTheCaddyfileTableIsTheHandlersOptions(t *testing.T) {
	names, keys := caddyfileDocTable(t)
	if len(keys) < 10 {
		t.Fatalf("read only %d rows of docs/caddyfile.md's table; the reader is broken", len(keys))
	}
	var fields []string
	ht := reflect.TypeOf(Handler{})
	for i := range ht.NumField() {
		f := ht.Field(i)
		if !f.IsExported() {
			continue
		}
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			fields = append(fields, name)
		}
	}
	slices.Sort(fields)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	if !slices.Equal(keys, fields) {
		t.Errorf("docs/caddyfile.md's table names the JSON keys\n%v\nthe Handler has\n%v", keys, fields)
	}
	for _, name := range names {
		t.Run("crm_guard knows "+name, func(t *testing.T) {
			_, err := adapt(t, "example.com {\n\tcrm_guard {\n\t\trules r.yaml\n\t\t"+name+"\n\t}\n}\n")
			if err != nil && strings.Contains(err.Error(), "unknown subdirective") {
				t.Errorf("the table documents %s, the parser refuses it: %v", name, err)
			}
		})
	}
}

// commentedOption matches a Caddyfile line that shows an option commented
// out inside a block: "\t\t# name args".
var commentedOption = regexp.MustCompile(`(?m)^(\s+)# ([a-z][a-z_]*)\b.*$`)

// TestTheCommentedOptionsInTheDocsExist keeps the options the Caddyfile
// examples show commented out (the defaults and alternatives of
// docs/signin.md, the Redis store of docs/operator-guide.md) true: the
// parser of the block they sit in knows each name.
func TestTheCommentedOptionsInTheDocsExist(t *testing.T) {
	seen := 0
	for _, b := range caddyfileDocBlocks(t) {
		for _, m := range commentedOption.FindAllStringSubmatchIndex(b.text, -1) {
			indent, name := b.text[m[2]:m[3]], b.text[m[4]:m[5]]
			seen++
			t.Run(fmt.Sprintf("%s at %s names an option", name, b.where), func(t *testing.T) {
				src := completeCaddyfile(b.text[:m[0]] + indent + name + b.text[m[1]:])
				_, err := adapt(t, src)
				if err != nil && (strings.Contains(err.Error(), "unknown subdirective") || strings.Contains(err.Error(), "unknown audit option")) {
					t.Errorf("%v\n-- the example with the option uncommented:\n%s", err, src)
				}
			})
		}
	}
	if seen < 10 {
		t.Errorf("found only %d commented options in the Caddyfile examples; docs/signin.md alone shows more", seen)
	}
}
