package rulescli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/crmguard/crmguard/rules"
)

// ExplainInput is what `crmguard rules explain` is asked about.
type ExplainInput struct {
	// RulesFile is the rule file.
	RulesFile string
	// UserJSON is the user as JSON in the test-case shape
	// ({"id":..,"roles":[..],"mfa":true}); empty: anonymous.
	UserJSON string
	// Request is "METHOD /path?query".
	Request string
	// Now is the clock (RFC 3339); empty: now.
	Now string
	// UpstreamFile, when set, is a sample CRM answer body to rewrite.
	UpstreamFile string
	// UpstreamType is the sample answer's Content-Type.
	UpstreamType string
	// HashKey is the key of the `hash` action.
	HashKey string
}

// Explain prints which route matched and why, the decision, and what the
// rules would do to a JSON answer (and, given a sample answer, the
// rewritten answer and the fields treated). It returns the exit code.
func Explain(in ExplainInput, out io.Writer) int {
	set, err := loadRules(in.RulesFile, in.HashKey)
	if err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		return 1
	}
	method, target, ok := strings.Cut(strings.TrimSpace(in.Request), " ")
	target = strings.TrimSpace(target)
	if !ok || !strings.HasPrefix(target, "/") {
		fmt.Fprintf(out, "error: the request must look like \"GET /path\", got %q\n", in.Request)
		return 2
	}
	now := time.Now()
	if in.Now != "" {
		if now, err = time.Parse(time.RFC3339, in.Now); err != nil {
			fmt.Fprintf(out, "error: --now %q is not RFC 3339: %v\n", in.Now, err)
			return 2
		}
	}
	var user *rules.User
	if strings.TrimSpace(in.UserJSON) != "" {
		var u User
		dec := json.NewDecoder(strings.NewReader(in.UserJSON))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&u); err != nil {
			fmt.Fprintf(out, "error: --user is not a user object ({\"id\":..,\"roles\":[..],\"mfa\":true}): %v\n", err)
			return 2
		}
		if user, err = u.resolve(set, now); err != nil {
			fmt.Fprintf(out, "error: %v\n", err)
			return 1
		}
	}
	req := httptest.NewRequest(strings.ToUpper(method), "http://crm.test"+target, nil)
	d := set.Decide(user, &rules.Request{Method: req.Method, URL: req.URL, Header: req.Header, Now: now})

	fmt.Fprintf(out, "request:   %s %s (normalised path %s)\n", req.Method, target, d.Path)
	if user == nil {
		fmt.Fprintln(out, "user:      anonymous")
	} else {
		fmt.Fprintf(out, "user:      %s roles=[%s] mfa=%v\n", user.ID, strings.Join(user.Roles, ","), user.MFA)
	}
	if d.RouteID == "" {
		fmt.Fprintln(out, "route:     none matched (the file's default applies)")
	} else {
		fmt.Fprintf(out, "route:     %s%s\n", d.RouteID, formatParams(d.Params))
		for _, ri := range set.Routes() {
			if ri.ID != d.RouteID {
				continue
			}
			methods := "any method"
			if len(ri.Methods) > 0 {
				methods = strings.Join(ri.Methods, ",")
			}
			fmt.Fprintf(out, "matched:   %s %s (the first route that matches wins)\n", methods, ri.Path)
			switch {
			case ri.Public:
				fmt.Fprintln(out, "allow:     public")
			case ri.Authenticated:
				fmt.Fprintln(out, "allow:     any signed-in user")
			case ri.Deny != "":
				fmt.Fprintf(out, "allow:     nobody (%s)\n", ri.Deny)
			default:
				fmt.Fprintf(out, "allow:     %s\n", strings.Join(ri.Allow, ", "))
			}
			if ri.When != "" {
				fmt.Fprintf(out, "when:      %s\n", ri.When)
			}
			switch {
			case ri.Export && ri.Approval != "":
				fmt.Fprintf(out, "export:    this route is an export: a grant of approval policy %s is needed (exempt: %s)\n", ri.Approval, orNone(ri.WithoutApproval))
			case ri.Export && ri.ApprovalNeeded:
				fmt.Fprintf(out, "export:    this route is an export: denied without a grant, and no approval policy grants one (exempt: %s)\n", orNone(ri.WithoutApproval))
			case ri.Export:
				fmt.Fprintln(out, "export:    this route is an export that needs no approval")
			}
			break
		}
	}
	fmt.Fprintf(out, "decision:  %s", outcomeName(d.Outcome))
	if d.Outcome != rules.Allow {
		fmt.Fprintf(out, " (status %d)", d.Status)
	}
	fmt.Fprintln(out)
	if d.Reason != "" {
		fmt.Fprintf(out, "why:       %s\n", d.Reason)
	}
	if d.Message != "" {
		fmt.Fprintf(out, "user sees: %s\n", d.Message)
	}
	if d.Public {
		fmt.Fprintln(out, "public:    yes, no sign-in needed")
	}
	if d.Outcome == rules.StepUp || d.Outcome == rules.SignIn {
		fmt.Fprintf(out, "sign-in:   mfa needed=%v max_age=%s acr=%v\n", d.StepUp.MFA, d.StepUp.MaxAge, d.StepUp.ACR)
	}
	if d.Shadow {
		fmt.Fprintln(out, "mode:      shadow (decided and audited, not enforced)")
	}
	explainLimits(out, set, d)
	if q, ok := d.UpstreamQuery(); ok {
		fmt.Fprintf(out, "to CRM:    the query becomes ?%s (forward_query)\n", q)
	}
	if d.Outcome != rules.Allow {
		return 0
	}
	fmt.Fprintf(out, "body:      request body %s\n", map[bool]string{true: "checked against body guards", false: "not checked"}[d.GuardsBody()])
	if t := d.Target(); t != nil && t.Bulk {
		fmt.Fprintln(out, "target:    a bulk write: every record the body names is fetched first; the request is forwarded only when the route's allow_if holds for each")
	} else if t != nil {
		fmt.Fprintf(out, "target:    the stored record is fetched first (GET %s); the request is forwarded only when the route's allow_if holds for it\n", t.Path)
	}
	ctype := in.UpstreamType
	if ctype == "" {
		ctype = "application/json"
	}
	h := http.Header{"Content-Type": []string{ctype}}
	buffer, block := d.InspectResponse(http.StatusOK, h)
	switch {
	case block != nil:
		fmt.Fprintf(out, "answer:    a 200 %s answer is refused with %d: %s\n", ctype, block.Status, block.Reason)
		return 0
	case !buffer:
		fmt.Fprintf(out, "answer:    a 200 %s answer passes unchanged (streamed)\n", ctype)
		return 0
	}
	fmt.Fprintf(out, "answer:    a 200 %s answer is buffered and rewritten\n", ctype)
	if in.UpstreamFile == "" {
		fmt.Fprintln(out, "           (give --upstream FILE with a sample answer to see the rewrite)")
		return 0
	}
	body, err := os.ReadFile(in.UpstreamFile)
	if err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		return 1
	}
	res, blk, err := d.Rewrite(nil, http.StatusOK, h, body)
	switch {
	case err != nil:
		fmt.Fprintf(out, "rewrite:   fails, the client gets 502: %v\n", err)
		return 0
	case blk != nil:
		fmt.Fprintf(out, "rewrite:   the client gets %d: %s\n", blk.Status, blk.Reason)
	default:
		var pretty bytes.Buffer
		if json.Indent(&pretty, res, "           ", "  ") == nil {
			res = pretty.Bytes()
		}
		fmt.Fprintf(out, "rewritten: %s\n", res)
	}
	a := d.Audit
	fmt.Fprintf(out, "records:   %d in, %d out %v\n", a.RecordsIn, a.RecordsOut, a.RecordIDs)
	keys := make([]string, 0, len(a.Fields))
	for k := range a.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(out, "field:     %s ×%d\n", k, a.Fields[k])
	}
	if a.Export != (rules.ExportFlags{}) {
		fmt.Fprintf(out, "export:    %+v\n", a.Export)
	}
	return 0
}

// explainLimits names the usage limits that apply to the request (its
// route, the user's roles, their `when` at the given time).
func explainLimits(out io.Writer, set *rules.Set, d *rules.Decision) {
	lims := d.Limits()
	if len(lims) == 0 {
		if len(set.Limits()) > 0 {
			fmt.Fprintln(out, "limits:    none applies to this user on this request")
		}
		return
	}
	for _, lim := range lims {
		fmt.Fprintf(out, "limit:     %s: %s", lim.ID, limitText(lim.Count, lim.Max, lim.Per, lim.Key, lim.Action))
		if lim.When != "" {
			fmt.Fprintf(out, "; when %s holds now", lim.When)
		}
		fmt.Fprintln(out)
	}
}

// limitText says what a usage limit counts and what a hit does, for
// explain and the matrix: "at most 300 records in 10m0s, counted per user;
// past that, refused with 429 until the window allows (block)".
func limitText(count rules.LimitCount, max int64, per time.Duration, key rules.LimitKey, action rules.LimitAction) string {
	by := "per user"
	if key == rules.LimitKeyUserRoute {
		by = "per user and route"
	}
	then := map[rules.LimitAction]string{
		rules.ActionBlock:  "refused with 429 until the window allows",
		rules.ActionStepUp: "refused until a fresh sign-in with MFA",
		rules.ActionAlert:  "passes and raises an alert",
	}[action]
	return fmt.Sprintf("at most %d %s in %s, counted %s; past that, %s (%s)", max, count, per, by, then, action)
}

// orNone lists roles, or says none.
func orNone(roles []string) string {
	if len(roles) == 0 {
		return "none"
	}
	return strings.Join(roles, ", ")
}

func formatParams(p map[string]string) string {
	if len(p) == 0 {
		return ""
	}
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + p[k]
	}
	return " (params " + strings.Join(parts, ", ") + ")"
}

func outcomeName(o rules.Outcome) string {
	switch o {
	case rules.Allow:
		return "allow"
	case rules.Deny:
		return "deny"
	case rules.SignIn:
		return "sign-in needed"
	case rules.StepUp:
		return "step-up sign-in needed"
	}
	return fmt.Sprintf("outcome %d", int(o))
}
