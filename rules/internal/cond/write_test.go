package cond

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// writeExprs are conditions on a write that read the body's values next
// to the stored record; the body parts are request constants, so the
// native compiler takes them.
var writeExprs = []string{
	`record.owner_id == body.owner_id`,
	`body.owner_id == user.id && timestamp(record.last_contact_at) < now - duration("8760h")`,
	`record.team in body.teams || record.owner_id == user.id`,
	`body.size() == 1 && record.owner_id != body.owner_id`,
	`"sales_manager" in user.roles && record.team in user.attrs.teams && body.owner_id in ["zhang", "wu"]`,
	`body.amount > record.amount`,
}

var writeBodies = []string{`{"owner_id":"zhang"}`, `{"owner_id":"li","teams":["east"],"amount":100}`, `{}`, `{"owner_id":null,"amount":"x"}`}

// bothWrite compiles src as a write condition twice: natively and for CEL
// only.
func bothWrite(t testing.TB, src string) (native, cel *Condition) {
	t.Helper()
	env, err := NewEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, issues := CompileWriteCondition(env, src)
	if c == nil {
		t.Fatalf("%s does not compile: %v", src, issues)
	}
	return c, c.CELOnly()
}

// evalWrite prepares c for user zhang (roles) with the body's values and
// evaluates it on record; a body that is not a JSON object is an error
// for both paths alike.
func evalWrite(t testing.TB, c *Condition, roles []string, body, record string) (bool, error) {
	var vals map[string]any
	dec := json.NewDecoder(strings.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&vals); err != nil || vals == nil {
		return false, fmt.Errorf("not a JSON object body: %v", err)
	}
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	u := SignedInUser("zhang", roles, map[string]any{"teams": []any{"east"}}, true, time.Time{}, now)
	var r Request
	r.Init("PATCH", "/x", map[string]string{}, url.Values{}, http.Header{})
	return c.Prepare(&Activation{User: &u, Request: &r, Now: now, Body: NewBody(vals)}).EvalJSON([]byte(record))
}

func TestWriteConditionsAgreeNativelyAndInCEL(t *testing.T) {
	exprs := append([]string(nil), writeExprs...)
	for _, e := range agreementExprs {
		exprs = append(exprs, e.src)
	}
	for _, src := range exprs {
		native, cel := bothWrite(t, src)
		t.Run(src+" gives CEL's answer on every record and body", func(t *testing.T) {
			for _, body := range writeBodies {
				for _, rec := range agreementRecords {
					for _, roles := range [][]string{{"sales"}, {"sales_manager"}} {
						nOK, nErr := evalWrite(t, native, roles, body, rec)
						cOK, cErr := evalWrite(t, cel, roles, body, rec)
						if nOK != cOK || (nErr == nil) != (cErr == nil) {
							t.Fatalf("body %s record %s roles %v: native %v (%v), CEL %v (%v)", body, rec, roles, nOK, nErr, cOK, cErr)
						}
					}
				}
			}
		})
	}
	for _, src := range writeExprs {
		if native, _ := bothWrite(t, src); !native.Native() {
			t.Errorf("%s reads the body as a request constant but is not compiled natively", src)
		}
	}
}

// FuzzWriteConditionsAgree feeds arbitrary stored records and bodies to
// the write conditions: natively and in CEL they must give the same
// answer and fail alike.
func FuzzWriteConditionsAgree(f *testing.F) {
	for i, r := range agreementRecords {
		f.Add(uint8(i), writeBodies[i%len(writeBodies)], r)
	}
	type pair struct{ native, cel *Condition }
	var cases []pair
	for _, src := range writeExprs {
		n, c := bothWrite(f, src)
		cases = append(cases, pair{n, c})
	}
	f.Fuzz(func(t *testing.T, which uint8, body, record string) {
		var probe map[string]any
		if json.Unmarshal([]byte(record), &probe) != nil {
			return // a stored record is an object (target.record checks it)
		}
		p := cases[int(which)%len(cases)]
		for _, roles := range [][]string{{"sales"}, {"sales_manager"}} {
			nOK, nErr := evalWrite(t, p.native, roles, body, record)
			cOK, cErr := evalWrite(t, p.cel, roles, body, record)
			if nOK != cOK || (nErr == nil) != (cErr == nil) {
				t.Fatalf("%s on body %s record %s: native %v (%v), CEL %v (%v)", p.native.Expr().Source(), body, record, nOK, nErr, cOK, cErr)
			}
		}
	})
}
