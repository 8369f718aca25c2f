// Package mediatype is crmguard's one reader of Content-Type and
// Content-Disposition values. It decides what kind of body a value names
// (JSON, a form, a table, a spreadsheet, a generic binary type), whether an
// answer is a download, and whether a body's charset may be read.
//
// # How it reads
//
// Two readings, for two questions:
//
//   - [Essence] and [KindOf] read only the type/subtype, lower case, without
//     looking at parameters. A value whose parameters are malformed still has
//     its type: a download must not hide behind a broken parameter, and a
//     POST form with one must still be read for a _method override.
//   - [Read] reads a value in full, for a body the proxy is about to read:
//     type "/" subtype, then `; name=value` parameters (value a token or a
//     quoted string), following RFC 9110 section 8.3.1. It allocates
//     nothing for the usual labels (application/json, with or without
//     `charset=utf-8`): the rewriting hot path never builds a parameter map.
//
// # Charset policy (one, for every body the proxy reads)
//
// A body is read as UTF-8 bytes. Its Content-Type may name no charset,
// `utf-8`, or its subset `us-ascii` (any case, quoted or not). Anything else
// is refused by the caller (request bodies 400, answers 502): `utf8`,
// `utf-16`, `latin1`, `gbk`, an RFC 2231 `charset*=` parameter, a quoted
// charset with a backslash escape, a charset given twice (any parameter
// given twice). A value Read cannot read is refused the same way: it lacks a
// type or subtype, a parameter is not name=value, a quoted string is not
// closed, there are spaces around "=", or it has more than [MaxParams]
// parameters.
//
// A byte order mark is not a charset: the body's bytes are read as they
// are. A JSON body (request or answer) that starts with one is not valid
// JSON and is refused; a CSV or TSV answer may start with a UTF-8 BOM, which
// the table rewriter skips when it reads the header and keeps in its
// output; a UTF-16 BOM makes a table's bytes invalid UTF-8 (refused).
//
// Several Content-Type lines: a request body with more than one is refused
// before it is read (the guard would read one line, the CRM perhaps
// another). An answer's lines are read by [Lines]: each must be readable,
// and all must name the same [Kind], or the answer cannot be rewritten. A
// rewritten answer keeps its label only when it is one line ([Label]).
package mediatype

import (
	"errors"
	"fmt"
	"strings"
)

// Kind is what a Content-Type says about a body's format.
type Kind uint8

const (
	// Unknown is any other type (text/html, text/plain, application/xml),
	// no type at all, or an empty value.
	Unknown Kind = iota
	// JSON is application/json or application/*+json.
	JSON
	// Form is application/x-www-form-urlencoded.
	Form
	// Multipart is multipart/form-data.
	Multipart
	// CSV is comma-separated text (text/csv and its older names).
	CSV
	// TSV is text/tab-separated-values.
	TSV
	// Sheet is a spreadsheet (Excel, OOXML, OpenDocument): a download that
	// cannot be rewritten.
	Sheet
	// Binary is a generic binary type (application/octet-stream, ...):
	// browsers save such answers as files whatever the bytes are, so they
	// are downloads, but the bytes are read as what they are.
	Binary
)

// String names the kind for messages.
func (k Kind) String() string {
	switch k {
	case JSON:
		return "JSON"
	case Form:
		return "urlencoded form"
	case Multipart:
		return "multipart form"
	case CSV:
		return "CSV"
	case TSV:
		return "TSV"
	case Sheet:
		return "spreadsheet"
	case Binary:
		return "binary"
	}
	return "unknown"
}

// Table reports whether the kind is a table the proxy rewrites by column
// (CSV or TSV).
func (k Kind) Table() bool { return k == CSV || k == TSV }

// Download reports whether an answer of this kind is a download whatever its
// Content-Disposition: a table, a spreadsheet or a generic binary type.
func (k Kind) Download() bool { return k == CSV || k == TSV || k == Sheet || k == Binary }

// MaxParams is the most parameters a value [Read] accepts.
const MaxParams = 16

// Type is a Content-Type value as [Read] read it.
type Type struct {
	// Essence is the type/subtype, lower case ("application/json").
	Essence string
	// Kind is what the essence names.
	Kind Kind
	// raw holds the parameters as written, from the first ';' on.
	raw string
}

// ErrCharset is wrapped by the error [Read] returns for a charset the
// policy does not accept; [CharsetError] carries the charset.
var ErrCharset = errors.New("mediatype: only UTF-8 (or US-ASCII) bodies are read")

// CharsetError is the error for a charset other than UTF-8 or US-ASCII.
type CharsetError struct {
	// Charset is the parameter's value as written (unquoted), or its
	// name when the name itself is refused ("charset*").
	Charset string
}

// Error says which charset was refused.
func (e *CharsetError) Error() string {
	return fmt.Sprintf("mediatype: charset %q is not read (UTF-8 or US-ASCII only)", e.Charset)
}

// Unwrap makes errors.Is(err, ErrCharset) true.
func (e *CharsetError) Unwrap() error { return ErrCharset }

// Essence is the type/subtype of a Content-Type value, lower case and
// without parameters, read without looking at them ("" for an empty value).
func Essence(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// KindOf is the kind of a Content-Type value's [Essence].
func KindOf(ct string) Kind {
	if len(ct) >= 16 && strings.EqualFold(ct[:16], "application/json") && (len(ct) == 16 || ct[16] == ';') {
		return JSON // the usual label, without lowering
	}
	return kindOfEssence(Essence(ct))
}

// kindOfEssence classifies a lower-case type/subtype.
func kindOfEssence(mt string) Kind {
	switch mt {
	case "application/json":
		return JSON
	case "application/x-www-form-urlencoded":
		return Form
	case "multipart/form-data":
		return Multipart
	case "text/csv", "application/csv", "text/x-csv", "application/x-csv",
		"text/comma-separated-values", "text/x-comma-separated-values":
		return CSV
	case "text/tab-separated-values":
		return TSV
	case "application/vnd.ms-excel",
		"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
		"application/vnd.openxmlformats-officedocument.spreadsheetml.template",
		"application/vnd.ms-excel.sheet.macroenabled.12",
		"application/vnd.ms-excel.sheet.binary.macroenabled.12",
		"application/vnd.oasis.opendocument.spreadsheet",
		"application/x-excel", "application/x-msexcel", "application/xls", "application/x-xls",
		"application/excel":
		return Sheet
	case "application/octet-stream", "binary/octet-stream", "application/force-download",
		"application/x-download", "application/download":
		return Binary
	}
	if strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json") {
		return JSON
	}
	return Unknown
}

// Read reads one Content-Type value in full and applies the charset policy
// (see the package doc). The error says what cannot be read; a charset the
// policy refuses gives a *[CharsetError].
func Read(ct string) (Type, error) {
	switch {
	case strings.EqualFold(ct, "application/json"):
		return Type{Essence: "application/json", Kind: JSON}, nil
	case strings.EqualFold(ct, "application/json; charset=utf-8"):
		return Type{Essence: "application/json", Kind: JSON, raw: ct[16:]}, nil
	}
	s := trimOWS(ct)
	typ, rest := token(s)
	if typ == "" || !strings.HasPrefix(rest, "/") {
		return Type{}, fmt.Errorf("mediatype: %q has no type/subtype", ct)
	}
	sub, rest := token(rest[1:])
	if sub == "" {
		return Type{}, fmt.Errorf("mediatype: %q has no subtype", ct)
	}
	essence := strings.ToLower(s[:len(s)-len(rest)])
	t := Type{Essence: essence, Kind: kindOfEssence(essence), raw: trimOWS(rest)}
	if t.raw != "" && t.raw[0] != ';' {
		return Type{}, fmt.Errorf("mediatype: %q has text after its type that is not a parameter", ct)
	}
	if err := checkParams(t.raw, true); err != nil {
		return Type{}, fmt.Errorf("mediatype: %q: %w", ct, err)
	}
	return t, nil
}

// Param is the value of the parameter name (lower case) of a Type that
// [Read] accepted, unquoted; "" when it is absent.
func (t Type) Param(name string) string {
	var v string
	_ = eachParam(t.raw, func(n, val string) error {
		if strings.EqualFold(n, name) {
			v = unquote(val)
		}
		return nil
	})
	return v
}

// Lines reads the Content-Type lines of an answer the proxy is to read
// (rewrite). No line, or one empty line, is a Type of kind [Unknown]. Each
// line must be readable ([Read]) and all must name the same kind.
func Lines(cts []string) (Type, error) {
	if len(cts) == 1 && len(cts[0]) == 16 && strings.EqualFold(cts[0], "application/json") {
		return Type{Essence: "application/json", Kind: JSON}, nil // the usual answer
	}
	var first Type
	for i, ct := range cts {
		var t Type
		if trimOWS(ct) != "" {
			var err error
			if t, err = Read(ct); err != nil {
				return t, err
			}
		}
		if i == 0 {
			first = t
		} else if t.Kind != first.Kind {
			return first, fmt.Errorf("mediatype: the Content-Type lines %q and %q name different formats (%s and %s)", cts[0], ct, first.Kind, t.Kind)
		}
	}
	return first, nil
}

// Label reports whether cts is one Content-Type line naming JSON, CSV or TSV
// that [Read] accepts: a label a rewritten answer (UTF-8 JSON, CSV or TSV by
// construction) may keep.
func Label(cts []string) bool {
	if len(cts) != 1 {
		return false
	}
	t, err := Read(cts[0])
	return err == nil && (t.Kind == JSON || t.Kind.Table())
}

// Attachment reports whether one Content-Disposition value makes an answer a
// download: any disposition but a readable "inline" (RFC 6266: browsers
// treat an unknown type as attachment, and a value that cannot be read is
// taken as one, fail closed).
func Attachment(cd string) bool {
	s := trimOWS(cd)
	typ, rest := token(s)
	if !strings.EqualFold(typ, "inline") {
		return true
	}
	rest = trimOWS(rest)
	if rest != "" && rest[0] != ';' {
		return true
	}
	return checkParams(rest, false) != nil
}

// Download reports whether an answer with these Content-Disposition and
// Content-Type lines is a download: any line of either says so
// ([Attachment], [Kind.Download] of the [Essence]).
func Download(dispositions, types []string) bool {
	for _, cd := range dispositions {
		if Attachment(cd) {
			return true
		}
	}
	for _, ct := range types {
		if KindOf(ct).Download() {
			return true
		}
	}
	return false
}

// checkParams checks parameters as written (from the first ';' on, or ""):
// their syntax, at most MaxParams, no name twice, and, when charset is set,
// the charset policy.
func checkParams(raw string, charset bool) error {
	n := 0
	return eachParam(raw, func(name, val string) error {
		n++
		if n > MaxParams {
			return fmt.Errorf("more than %d parameters", MaxParams)
		}
		if charset && strings.IndexByte(name, '*') >= 0 && strings.HasPrefix(strings.ToLower(name), "charset") {
			return &CharsetError{Charset: name}
		}
		if charset && strings.EqualFold(name, "charset") && !charsetOK(val) {
			return &CharsetError{Charset: unquote(val)}
		}
		// A name given twice: the proxy and the CRM could each read a
		// different one. At most MaxParams names, so this stays small.
		seen := 0
		_ = eachParam(raw, func(other, _ string) error {
			if strings.EqualFold(other, name) {
				seen++
			}
			if seen > 1 {
				return errDone
			}
			return nil
		})
		if seen > 1 {
			return fmt.Errorf("parameter %q is given twice", strings.ToLower(name))
		}
		return nil
	})
}

var errDone = errors.New("done")

// charsetOK applies the policy to a charset value as written (a token or a
// quoted string).
func charsetOK(v string) bool {
	if len(v) >= 2 && v[0] == '"' {
		v = v[1 : len(v)-1]
		if strings.IndexByte(v, '\\') >= 0 {
			return false // an escaped charset name is no charset a client means
		}
	}
	return strings.EqualFold(v, "utf-8") || strings.EqualFold(v, "us-ascii")
}

// eachParam calls fn with each parameter's name and raw value (a token, or a
// quoted string with its quotes) of raw ("" or starting with ';'), and
// returns the first error, fn's or a syntax error. Empty parameters
// between semicolons are refused (as Go's mime package does), a trailing
// semicolon is not.
func eachParam(raw string, fn func(name, val string) error) error {
	for s := raw; s != ""; {
		if s[0] != ';' {
			return fmt.Errorf("expected ';' at %q", s)
		}
		s = trimOWS(s[1:])
		if s == "" {
			return nil // a trailing semicolon
		}
		name, rest := token(s)
		if name == "" {
			return fmt.Errorf("a parameter has no name at %q", s)
		}
		if !strings.HasPrefix(rest, "=") {
			return fmt.Errorf("parameter %q has no \"=\" right after its name", name)
		}
		rest = rest[1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := quotedEnd(rest)
			if end < 0 {
				return fmt.Errorf("parameter %q has an unterminated quoted value", name)
			}
			val, rest = rest[:end], rest[end:]
		} else {
			val, rest = token(rest)
			if val == "" {
				return fmt.Errorf("parameter %q has no value", name)
			}
		}
		if err := fn(name, val); err != nil {
			if err == errDone {
				return nil
			}
			return err
		}
		s = trimOWS(rest)
	}
	return nil
}

// quotedEnd is the index just after the quoted string s starts with, or -1
// (RFC 9110: qdtext is tab, space, visible ASCII but '"' and '\', and
// bytes from 0x80; quoted-pair escapes tab, space, visible and 0x80+).
func quotedEnd(s string) int {
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			if i+1 >= len(s) || !qdChar(s[i+1]) && s[i+1] != '"' && s[i+1] != '\\' {
				return -1
			}
			i++
		case !qdChar(c):
			return -1
		}
	}
	return -1
}

func qdChar(c byte) bool {
	return c == '\t' || c == ' ' || c >= 0x21 && c != '"' && c != '\\' && c != 0x7f
}

// unquote is a parameter's value without its quotes and escapes.
func unquote(v string) string {
	if len(v) < 2 || v[0] != '"' {
		return v
	}
	v = v[1 : len(v)-1]
	if strings.IndexByte(v, '\\') < 0 {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// token splits s into its leading RFC 9110 token and the rest.
func token(s string) (tok, rest string) {
	i := 0
	for i < len(s) && tokenChar(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

func tokenChar(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	return strings.IndexByte(`()<>@,;:\"/[]?={}`, c) < 0
}

// trimOWS trims HTTP's optional white space (spaces and tabs).
func trimOWS(s string) string {
	return strings.Trim(s, " \t")
}
