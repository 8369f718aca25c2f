package rulescli

import (
	"encoding/json"
	"fmt"
	"sort"
)

// normalise turns a YAML-decoded value into what encoding/json would decode
// from the same JSON (maps with string keys, float64 numbers).
func normalise(v any) any {
	raw, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		return v
	}
	return out
}

// diffJSON lists the paths where got differs from want, one entry each.
func diffJSON(path string, want, got any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want %s, got %s", path, show(want), show(got))}
		}
		var out []string
		for _, k := range sortedKeys(w, g) {
			wv, inW := w[k]
			gv, inG := g[k]
			switch {
			case !inG:
				out = append(out, fmt.Sprintf("%s.%s: missing, want %s", path, k, show(wv)))
			case !inW:
				out = append(out, fmt.Sprintf("%s.%s: unexpected %s", path, k, show(gv)))
			default:
				out = append(out, diffJSON(path+"."+k, wv, gv)...)
			}
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want %s, got %s", path, show(want), show(got))}
		}
		if len(g) != len(w) {
			return []string{fmt.Sprintf("%s: want %d items %s, got %d items %s", path, len(w), show(want), len(g), show(got))}
		}
		var out []string
		for i := range w {
			out = append(out, diffJSON(fmt.Sprintf("%s[%d]", path, i), w[i], g[i])...)
		}
		return out
	default:
		if !jsonEqual(want, got) {
			return []string{fmt.Sprintf("%s: want %s, got %s", path, show(want), show(got))}
		}
		return nil
	}
}

// subsetDiff is diffJSON where objects in want only need their own keys
// to be present and equal in got.
func subsetDiff(path string, want, got any) []string {
	w, ok := want.(map[string]any)
	if !ok {
		return diffJSON(path, want, got)
	}
	g, ok := got.(map[string]any)
	if !ok {
		return []string{fmt.Sprintf("%s: want an object containing %s, got %s", path, show(want), show(got))}
	}
	var out []string
	for _, k := range sortedKeys(w, nil) {
		gv, present := g[k]
		if !present {
			if isZero(w[k]) {
				continue // omitted from the event because it is empty
			}
			out = append(out, fmt.Sprintf("%s.%s: missing, want %s", path, k, show(w[k])))
			continue
		}
		out = append(out, subsetDiff(path+"."+k, w[k], gv)...)
	}
	return out
}

func isZero(v any) bool {
	switch t := v.(type) {
	case nil:
		return true
	case bool:
		return !t
	case float64:
		return t == 0
	case string:
		return t == ""
	case []any:
		return len(t) == 0
	case map[string]any:
		return len(t) == 0
	}
	return false
}

func jsonEqual(a, b any) bool {
	ra, _ := json.Marshal(a)
	rb, _ := json.Marshal(b)
	return string(ra) == string(rb)
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return clip(b)
}

func sortedKeys(a, b map[string]any) []string {
	seen := map[string]bool{}
	var keys []string
	for _, m := range []map[string]any{a, b} {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys
}
