package rules

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/crmguard/crmguard/rules/rewrite"
)

// A parameter with `filters: "{expr}"` (or `sorts:`) carries a query
// language: OData's $filter and $orderby, Salesforce's SOQL in q, a
// search DSL. The guard does not parse the language; it reads every word
// that could name a field and judges each as a field the parameter filters
// on. That over-matches (a word that is no field is judged too), which
// refuses more, never less:
//
//   - text in single quotes ('...', '' inside) is a value, not a field;
//     an unclosed quote, or \' inside one (SOQL's escaped quote, OData's
//     end of the value), cannot be judged. Double quotes are no quotes
//     here: SQL reads "phone" as a field;
//   - a word is a run of letters, digits, _, $, . and /; one that starts
//     with a digit (a number or a date) is a value; / joins keys as . does
//     (OData's Owner/Phone is owner.phone);
//   - a word followed by ( is a function (contains, startswith, COUNT),
//     judged like a word of the language; OData's lambdas
//     (contacts/any(c: c/mobile eq '1')) read as the collection and its
//     elements' fields (contacts, contacts.#.mobile); $it/ and $this/ are
//     the record itself, $root/ (another entity) cannot be judged;
//   - words of the languages (and, eq, desc, ORDER, BY, TODAY,
//     LAST_N_DAYS…, see exprWords) are judged only against the route's
//     field rules, not against `expose`: a field rule on a field called
//     "order" still refuses it;
//   - SOQL: the fields listed between a leading SELECT and its FROM are
//     what the answer carries (the response rules treat them), not a
//     filter, so they are skipped at the top level when they are a plain
//     list (words and bracketed groups separated by commas; anything else
//     is read whole, FROM as a word); a sub-query in them is read. In
//     such a query the word after FROM is an object name and skipped.

// exprField is a word of an expression read as a field.
type exprField struct {
	path rewrite.Path
	word bool // a word of the language: judged against field rules only
}

// exprWords are the words of the query languages the guard knows (OData,
// SOQL and their date literals), in lower case.
var exprWords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`
		eq ne gt ge lt le and or not has in add sub mul div divby mod true false null asc desc any all
		select from where like includes excludes order by nulls first last limit offset with group
		having typeof when then else end using scope above below at above_or_below data category
		rollup cube for view reference update tracking viewstat security_enforced user_mode system_mode
		today yesterday tomorrow last_week this_week next_week last_month this_month next_month
		last_90_days next_90_days this_quarter last_quarter next_quarter this_year last_year next_year
		this_fiscal_quarter last_fiscal_quarter next_fiscal_quarter this_fiscal_year last_fiscal_year
		next_fiscal_year`) {
		exprWords[w] = true
	}
}

// isExprWord reports a word of the languages: the listed ones and SOQL's
// date literals with a count (LAST_N_DAYS, NEXT_N_FISCAL_YEARS…, which
// take :n).
func isExprWord(lower string) bool {
	if exprWords[lower] {
		return true
	}
	for _, p := range []string{"last_n_", "next_n_", "n_days_ago", "n_weeks_ago", "n_months_ago", "n_quarters_ago", "n_years_ago", "n_fiscal_quarters_ago", "n_fiscal_years_ago"} {
		if strings.HasPrefix(lower, p) {
			return true
		}
	}
	return false
}

// exprFields reads the words of an expression that may name fields. bad
// says why the expression cannot be read.
func exprFields(expr string) (fields []exprField, bad string) {
	if !utf8.ValidString(expr) {
		return nil, "is not valid UTF-8"
	}
	type tok struct {
		text  string
		isStr bool
		punct byte
	}
	var toks []tok
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c < 0x20 && c != '\t' && c != '\n' && c != '\r' || c == 0x7f:
			return nil, "holds a control character"
		case c == '\'':
			j, closed := i+1, false
			for j < len(expr) && !closed {
				switch {
				case expr[j] == '\\' && j+1 < len(expr) && expr[j+1] == '\'':
					return nil, "has \\' in a quoted value, which SOQL reads as a quote inside the value and OData as its end"
				case expr[j] == '\'' && j+1 < len(expr) && expr[j+1] == '\'':
					j += 2
				case expr[j] == '\'':
					closed = true
				default:
					j++
				}
			}
			if !closed {
				return nil, "has a quote that is never closed"
			}
			toks = append(toks, tok{isStr: true})
			i = j + 1
		case isWordByte(expr, i):
			j := i
			for j < len(expr) && isWordByte(expr, j) {
				_, n := utf8.DecodeRuneInString(expr[j:])
				j += n
			}
			toks = append(toks, tok{text: expr[i:j]})
			i = j
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		default:
			toks = append(toks, tok{punct: c})
			_, n := utf8.DecodeRuneInString(expr[i:])
			i += n
		}
	}
	// SOQL's leading select list is skipped when it is one: SELECT, then
	// items (a word, a word with a bracketed group, a group) separated by
	// commas, then FROM, all at depth 0. Anything else (a value, two words
	// in a row, no FROM) is read whole, SELECT included.
	selectList := func() bool {
		if len(toks) == 0 || !strings.EqualFold(toks[0].text, "select") {
			return false
		}
		const (
			wantItem = iota
			afterWord
			afterGroup
		)
		state, depth := wantItem, 0
		for _, t := range toks[1:] {
			if depth > 0 {
				switch t.punct {
				case '(':
					depth++
				case ')':
					depth--
					if depth == 0 {
						state = afterGroup
					}
				}
				continue
			}
			switch {
			case strings.EqualFold(t.text, "from"):
				return state != wantItem
			case t.text != "" && state == wantItem:
				state = afterWord
			case t.punct == '(' && state != afterGroup:
				depth = 1
			case t.punct == ',' && state != wantItem:
				state = wantItem
			default:
				return false
			}
		}
		return false
	}
	soql := selectList()
	skipUntilFrom := soql
	depth := 0
	vars := map[string]string{} // OData lambda variables: c -> contacts.#
	add := func(text string, word bool) string {
		name := strings.Trim(strings.ReplaceAll(text, "/", "."), ".")
		head, rest, _ := strings.Cut(name, ".")
		lh := strings.ToLower(head)
		switch {
		case vars[head] != "":
			name = vars[head] + "." + rest
			if rest == "" {
				name = vars[head]
			}
		case lh == "$it" || lh == "$this":
			name = rest
		case lh == "$root":
			return fmt.Sprintf("names %q, which reaches other records", text)
		}
		if name == "" {
			return ""
		}
		p, err := rewrite.ParsePath(name)
		if err != nil {
			return fmt.Sprintf("names %q, which is not a field path", text)
		}
		fields = append(fields, exprField{path: p, word: word})
		return ""
	}
	for k := 0; k < len(toks); k++ {
		t := toks[k]
		switch {
		case t.punct == '(':
			depth++
			continue
		case t.punct == ')':
			depth--
			continue
		case t.text == "":
			continue
		}
		lower := strings.ToLower(t.text)
		if soql && lower == "from" {
			if depth == 0 {
				skipUntilFrom = false
			}
			continue
		}
		if skipUntilFrom && depth == 0 {
			continue
		}
		if soql && k > 0 && strings.EqualFold(toks[k-1].text, "from") {
			continue // an object name
		}
		first, _ := utf8.DecodeRuneInString(t.text)
		if unicode.IsDigit(first) {
			continue // a number or a date
		}
		if k+1 < len(toks) && toks[k+1].punct == '(' {
			// A function, or OData's lambda: contacts/any(c: c/mobile eq '1').
			if coll, ok := lambdaOf(t.text); ok {
				if why := add(coll, false); why != "" {
					return nil, why
				}
				if k+3 < len(toks) && toks[k+2].text != "" && toks[k+3].punct == ':' {
					vars[toks[k+2].text] = strings.Trim(strings.ReplaceAll(coll, "/", "."), ".") + ".#"
					k += 3
				}
				continue
			}
			if why := add(t.text, true); why != "" { // judged against field rules
				return nil, why
			}
			continue
		}
		if why := add(t.text, isExprWord(lower)); why != "" {
			return nil, why
		}
	}
	return fields, ""
}

// isWordByte reports whether the rune at expr[i] belongs to a word.
func isWordByte(expr string, i int) bool {
	r, _ := utf8.DecodeRuneInString(expr[i:])
	return r == '_' || r == '$' || r == '.' || r == '/' || unicode.IsLetter(r) || unicode.IsDigit(r)
}

// lambdaOf reads OData's collection/any and collection/all: the
// collection the lambda ranges over.
func lambdaOf(word string) (string, bool) {
	i := strings.LastIndexAny(word, "/.")
	if i <= 0 {
		return "", false
	}
	switch strings.ToLower(word[i+1:]) {
	case "any", "all":
		return word[:i], true
	}
	return "", false
}
