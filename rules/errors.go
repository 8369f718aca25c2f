package rules

import (
	"fmt"
	"strings"
)

// Error is one problem in a rule file, with the place it was found.
type Error struct {
	Position
	// Msg says what is wrong.
	Msg string
}

// Error formats the problem as "file:line:col: key: message".
func (e *Error) Error() string { return e.Position.String() + e.Msg }

// String formats a position as "file:line:col: key: " (parts that are
// unknown are left out).
func (p Position) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteString(":")
	}
	if p.Line > 0 {
		fmt.Fprintf(&b, "%d:%d:", p.Line, p.Column)
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	return b.String()
}

// LoadError is returned by Load when a rule file does not compile. It
// lists every problem found, in file order.
type LoadError struct {
	// Errors are the problems, each with its position.
	Errors []*Error
}

// Error prints one problem per line.
func (e *LoadError) Error() string {
	lines := make([]string, len(e.Errors))
	for i, err := range e.Errors {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap gives the single problems to errors.Is and errors.As.
func (e *LoadError) Unwrap() []error {
	out := make([]error, len(e.Errors))
	for i, err := range e.Errors {
		out[i] = err
	}
	return out
}

// String formats a warning like an error: "file:line:col: key: message".
func (w Warning) String() string { return w.Position.String() + w.Msg }
