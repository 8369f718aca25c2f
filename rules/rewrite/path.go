package rewrite

// ParsePath compiles a field path: the checked subset of gjson path syntax
// (`a.b`, `a.#.b`, `a.0`, `*` and `?` in keys matching every key they fit, `\`
// escapes such as `@odata\.etag` or `a\.b`), plus `**` for any depth (`**.key`).
// "@this" (or "") is the value itself. gjson modifiers (`@reverse`…),
// queries (`#(...)`), multipaths and pipes are refused with an error naming
// the part.
func ParsePath(s string) (Path, error) { return parsePath(s) }

// MustParsePath is ParsePath that panics on error, for tests and constants.
func MustParsePath(s string) Path {
	p, err := ParsePath(s)
	if err != nil {
		panic(err)
	}
	return p
}
