// Package mask holds the masks of the rule file: functions that append a
// masked form of a string to a buffer, working on runes, never bytes.
package mask

// Func appends the masked form of s to dst and returns it. It never fails:
// input of an unexpected shape is masked more, not less.
type Func func(dst []byte, s string) []byte

// Builtin returns the built-in mask called name (phone, id_card, bank_card,
// email, name, all).
func Builtin(name string) (Func, bool) { return builtin(name) }

// Names lists the built-in masks' names.
func Names() []string { return []string{"phone", "id_card", "bank_card", "email", "name", "all"} }

// Custom is a mask from the rule file's `masks` block.
type Custom struct {
	// KeepStart is how many leading runes stay visible.
	KeepStart int `yaml:"keep_start"`
	// KeepEnd is how many trailing runes stay visible.
	KeepEnd int `yaml:"keep_end"`
	// Char is the one-rune replacement; empty: "*".
	Char string `yaml:"char"`
}

// New builds the custom mask c describes: KeepStart and KeepEnd runes stay,
// every rune between becomes Char. When the string is too short to keep both
// ends and still hide a rune, at most half of it is kept (the end first).
func New(c Custom) (Func, error) { return newCustom(c) }
