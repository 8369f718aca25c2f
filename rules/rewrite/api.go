// Package rewrite rewrites a JSON answer in one pass over its bytes: it finds
// the records, drops the ones a predicate hides, applies an allow-list
// (expose) and removes, masks, hashes, nulls or replaces fields, writing into
// one output buffer. It never unmarshals the document and validates all of
// it (also the parts it does not touch) while it copies.
//
// A Plan is built by the rule engine (per route and role set), compiled with
// Compile, and then used by any number of goroutines. The same Plan rewrites
// CSV and TSV answers (Plan.RewriteTable, table.go): every data row is a
// record, its columns the keys, with the same predicates, strength order,
// path matcher and keyed hash.
//
// How it works: the record paths (fields, expose, the keys predicates read,
// the audit id) are compiled into one deterministic automaton over keys and
// array indexes. The scanner is iterative (an explicit stack, so nesting
// depth is bounded by Plan.MaxDepth, never by the Go stack) and copies
// unchanged spans of the input in bulk. While a record is scanned, the
// values predicates read are captured and the changes rules may make are
// noted; when the record closes, Visible decides, and only a visible
// record's changes are applied (masks and HMACs run only on what the client
// receives).
//
// Decisions where the rule format is silent:
//   - Every copy of a duplicate key is treated. A key that predicates read
//     (Plan.Keys) appearing with different values hides the record: a
//     predicate cannot be fooled by the copy the client does not use.
//   - Keys and values are matched and masked decoded: "ph\u006fne" is phone.
//   - Mask and Hash of a number or boolean work on its literal text and
//     give a string; of null keep null; of an object or array give null
//     (there is no text to mask: fail closed).
//   - When several rules match one value the strongest wins: Remove, Null,
//     Replace, Hash, Mask. A rule on a value hides rules inside it.
//   - Invalid JSON anywhere is an error, including invalid UTF-8 in strings
//     (overlong forms and encoded surrogates too), a byte order mark and
//     data after the document. A \u escape of a lone surrogate is valid JSON
//     and is passed through; masks see it as U+FFFD.
//   - A rule set that changes nothing gives the input byte for byte;
//     removing members keeps the rest of the input's spacing.
package rewrite

import (
	"errors"

	"github.com/tidwall/gjson"
)

// Action is what a field rule does to a value it matches.
type Action uint8

const (
	// Remove deletes the member (or array element) from its container.
	Remove Action = iota + 1
	// Mask replaces a value by Field.Mask applied to its text: strings are
	// masked on their decoded value, numbers and booleans on their literal
	// text (the result is a JSON string), null stays null, and an object or
	// array becomes null (fail closed: there is no text to mask).
	Mask
	// Hash replaces a value by the lowercase hex HMAC-SHA256 of its text
	// under Plan.HashKey (a stable, de-identified join key). Text is taken as
	// for Mask; null stays null, objects and arrays become null.
	Hash
	// Null replaces the value by JSON null.
	Null
	// Replace replaces the value by Field.Replace (raw JSON).
	Replace
)

// String returns the action's name as the rule file spells it.
func (a Action) String() string {
	switch a {
	case Remove:
		return "remove"
	case Mask:
		return "mask"
	case Hash:
		return "hash"
	case Null:
		return "null"
	case Replace:
		return "replace"
	}
	return "unknown"
}

// Path is a compiled field path. The zero Path is "@this": the value itself.
type Path struct {
	raw  string
	segs []seg
}

// String returns the path as it was written.
func (p Path) String() string {
	if p.raw == "" {
		return "@this"
	}
	return p.raw
}

// Predicate is a condition on one record. An error counts as "not visible"
// for Plan.Visible and as "the action applies" for Field.When (fail closed);
// both are counted in Stats.EvalErrors.
type Predicate func(r *Record) (bool, error)

// Field is one field rule: every value matched by Path gets Action.
type Field struct {
	// Path is relative to each record.
	Path Path
	// Action is what happens to a matched value.
	Action Action
	// Mask appends the masked form of s to dst and returns the extended
	// slice (Action Mask); it must keep dst's bytes and must not retain s,
	// which may point into the document. The functions of package
	// rules/mask fit.
	Mask func(dst []byte, s string) []byte
	// Replace is the raw JSON written instead of the value (Action Replace).
	Replace []byte
	// When limits the rule to records for which it holds; nil: always.
	When Predicate
	// Name names the rule in Stats.Fields ("action:name"); empty: the path.
	Name string
}

// Plan says how to rewrite one kind of answer. Set the fields, call Compile
// once before the Plan is shared, then do not change it; Rewrite is then
// safe for concurrent use. (Rewrite on a Plan never compiled compiles a
// private copy on every call: correct, but slow.)
type Plan struct {
	// Records is where the records are: the array of records (or, with
	// Single, the one record). The zero Path ("@this") is the whole body.
	// Only plain keys and array indexes are accepted here. Every place the
	// path matches (duplicate keys) is treated. A body where it matches
	// nothing is an error (ErrNoRecords); JSON null there counts as an
	// empty list.
	Records Path
	// Single means the value at Records is one record, not an array.
	Single bool
	// Keys are record paths (plain keys and indexes only, e.g. "owner_id"
	// or "attributes.assigned_user_id") whose values predicates read with
	// Record.Key(i). They are captured during the scan, so predicates need
	// no second look at the record.
	Keys []Path
	// Visible hides the records for which it is false (or fails); nil: every
	// record is visible. A hidden list record is dropped from its array; a
	// hidden Single record makes Rewrite return ErrNotVisible (answer 404).
	// A record in which a key of Keys appears several times with different
	// values is hidden without calling Visible (and Field.When conditions on
	// it count as failed), so a predicate cannot be fooled by duplicates.
	Visible Predicate
	// Expose is an allow-list of record paths: every other member of the
	// record is removed, before Fields apply. Empty: no allow-list.
	Expose []Path
	// Fields are the field rules. When several match one value the
	// strongest applies: Remove, then Null, Replace, Hash, Mask; ties go to
	// the first in the list.
	Fields []Field
	// Answer are field rules on the answer outside the records (list
	// totals, paging, counts): their paths start at the document's root.
	// Only plain keys and indexes are accepted, a path may not name the
	// records or anything inside or around them (a prefix of Records), and
	// When must be nil (the caller decides per request which apply). They
	// are applied in the same pass as the records; when several end at one
	// value the strongest applies, as for Fields. Stats.Fields counts them
	// as "action:answer.<name>".
	Answer []Field
	// HashKey is the HMAC key for Action Hash.
	HashKey []byte
	// AuditID is the record path whose value names a visible record in
	// Stats.IDs; the zero Path: no ids are collected.
	AuditID Path
	// MaxDepth limits nesting (0: DefaultMaxDepth); deeper is an error.
	MaxDepth int

	c *compiled
}

// DefaultMaxDepth is the nesting limit when Plan.MaxDepth is 0.
const DefaultMaxDepth = 10000

// Stats is what a Rewrite did, for the audit event. Rewrite adds to it.
type Stats struct {
	// RecordsIn counts the records found.
	RecordsIn int
	// RecordsOut counts the records left after Visible.
	RecordsOut int
	// EvalErrors counts predicate failures (each hid a record or applied
	// a field rule).
	EvalErrors int
	// NotVisible is true when a Single record was hidden.
	NotVisible bool
	// IDs holds the AuditID value of every visible record, in order (a
	// stream keeps the first Stream.MaxIDs of them).
	IDs []string
	// IDsOmitted counts the visible records' ids a stream left out of IDs.
	IDsOmitted int
	// Fields counts treated values per "action:name".
	Fields map[string]int
	// Changed is true when the output differs from the input.
	Changed bool
}

// ErrNotVisible is returned for a Single record hidden by Plan.Visible: the
// caller answers 404.
var ErrNotVisible = errors.New("rewrite: the record is not visible")

// ErrNoRecords is returned when Plan.Records matches nothing in the body.
var ErrNoRecords = errors.New("rewrite: the records path matches nothing in the body")

// Record is one record as predicates see it: a JSON record, or a table's
// row (Plan.RewriteTable: keys are column names, values strings). It is
// valid only during the predicate call; the strings of the results it gives
// share the document's memory, so copy (strings.Clone) what must outlive the
// call.
type Record struct {
	rw  *rewriter
	row *tableRow
}

// Key returns the value of Plan.Keys[i] in this record. A key that is absent,
// or present several times with different values, does not exist (so a
// condition reading it fails and hides the record).
func (r *Record) Key(i int) gjson.Result {
	if r.row != nil {
		return r.row.key(i)
	}
	rw := r.rw
	if uint(i) >= uint(len(rw.res)) {
		return gjson.Result{}
	}
	if !rw.resOK[i] {
		rw.fill(i)
	}
	return rw.res[i]
}

// Str returns the value of Plan.Keys[i] when it exists (as Key says) and
// is a JSON string: its decoded text, and true. It is Key(i).Str without
// building the whole result, for predicates that only compare strings.
func (r *Record) Str(i int) (string, bool) {
	if r.row != nil {
		return r.row.str(i)
	}
	rw := r.rw
	if uint(i) >= uint(len(rw.res)) {
		return "", false
	}
	cp := &rw.caps[i]
	if cp.n != 1 || rw.doc[cp.start] != '"' {
		return "", false
	}
	if !cp.esc {
		return rw.ds[cp.start+1 : cp.end-1], true
	}
	if !rw.resOK[i] {
		rw.fill(i)
	}
	return rw.res[i].Str, true
}

// Get reads any gjson path from the record (first match); a row is read as
// its JSON object (Raw).
func (r *Record) Get(path string) gjson.Result {
	if r.row != nil {
		return gjson.GetBytes(r.row.json(), path)
	}
	return r.rw.get(path)
}

// Raw returns the record's bytes as the upstream sent them; a row's are a
// JSON object of column name to string, in column order.
func (r *Record) Raw() []byte {
	if r.row != nil {
		return r.row.json()
	}
	return r.rw.recordRaw()
}

// Index is the record's position in its array (0 for a Single record), or
// the row's among the data rows.
func (r *Record) Index() int {
	if r.row != nil {
		return r.row.index
	}
	return r.rw.recIndex
}

// Compile checks the plan and prepares its matchers. Call it once, when the
// rules load and before the Plan is shared; it is not safe to call while
// another goroutine uses the Plan.
func (p *Plan) Compile() error {
	c, err := p.build()
	if err != nil {
		return err
	}
	p.c = c
	return nil
}

// Rewrite appends the rewritten doc to dst and returns it. A plan that
// changes nothing appends doc byte for byte. Invalid JSON anywhere in doc
// (including invalid UTF-8 in strings and trailing data) is an error, as is
// nesting deeper than MaxDepth. st may be nil.
func (p *Plan) Rewrite(dst, doc []byte, st *Stats) ([]byte, error) { return p.rewrite(dst, doc, st) }
