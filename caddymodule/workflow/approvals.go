package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/notify"
	"github.com/crmguard/crmguard/rules"
)

// Caller is who makes a workflow request.
type Caller struct {
	// User is the user as signed in, without an elevation: approvals,
	// reviews and elevations are judged on it.
	User *rules.User
	// Effective is the user as the rules see their requests (with an
	// active elevation's roles); nil means User.
	Effective *rules.User
	// Identity is the verified identity User came from.
	Identity *authn.Identity
	// Set is the running rule set.
	Set *rules.Set
}

func (c *Caller) effective() *rules.User {
	if c.Effective != nil {
		return c.Effective
	}
	return c.User
}

// Limits on what users type.
const (
	// MaxPurpose is the longest purpose or reason, in characters.
	MaxPurpose = 500
	// MaxNote is the longest note, in characters.
	MaxNote = 2000
	// MaxTarget is the longest request target asked for, in bytes.
	MaxTarget = 4096
)

// checkText refuses text that is too long or not valid UTF-8.
func checkText(what, s string, max int) error {
	if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
		return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("The %s holds characters that are not text.", what)}
	}
	if n := utf8.RuneCountInString(s); n > max {
		return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("The %s is %d characters long; at most %d are kept.", what, n, max)}
	}
	return nil
}

// probe is a grant source that records what a decision asks for and
// holds no grant: asking for approval runs the same Decide the export
// will, so the grant is bound to exactly what the export will look for.
type probe struct{ q *rules.GrantQuery }

func (p *probe) FindGrant(_ context.Context, q rules.GrantQuery) (*rules.Grant, error) {
	p.q = &q
	return nil, nil
}

func (p *probe) UseGrant(context.Context, rules.GrantQuery, string) (*rules.Grant, error) {
	return nil, rules.ErrGrantGone
}

// Ask is what a request for approval names: the request to be approved
// and why. An export is named by its method and target; a write whose body
// sets values a body guard's approval covers (a handover) by its method,
// target and either the values its approval binds or its body.
type Ask struct {
	// Method is the request's method (GET when empty).
	Method string
	// Path is the request target: a path on this site, with its query.
	Path string
	// Purpose is what the requester needs it for.
	Purpose string
	// Values are the values a write's approval binds: a body guard's path
	// ("owner_id") to the value set, "@ids" to a bulk write's ids, as
	// rules.Decision.WriteGrantQueryValues takes them. Nil for an export.
	Values map[string]any
	// Body is the write's body as it will be sent, instead of Values; only
	// the values the approval binds are kept.
	Body []byte
	// ContentType is Body's type (default application/json).
	ContentType string
}

// write reports whether the ask names a write (values or a body).
func (k *Ask) write() bool { return k.Values != nil || len(k.Body) > 0 }

// probe finds the grant the request k names would need from the caller:
// the same Decide the request runs, asked with a source that holds no
// grant, and for a write the query the body guard's approval looks for
// (rules.Decision.WriteGrantQuery). It returns the method (upper case, GET
// when empty), the target as parsed, the query and, for a write, the
// values the grant binds. A request that needs no approval from this user
// is a 400 saying why.
func (s *Service) probe(ctx context.Context, c *Caller, k Ask) (string, *url.URL, *rules.GrantQuery, map[string]any, error) {
	target := k.Path
	if len(target) > MaxTarget || !strings.HasPrefix(target, "/") || strings.HasPrefix(target, "//") {
		return "", nil, nil, nil, &Error{Status: http.StatusBadRequest, Message: "Name the request as a path on this site, such as /api/customers/export?team=east."}
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return "", nil, nil, nil, &Error{Status: http.StatusBadRequest, Message: "The request's path cannot be read: " + err.Error()}
	}
	method := strings.ToUpper(strings.TrimSpace(k.Method))
	if method == "" {
		method = http.MethodGet
	}
	if k.Values != nil && len(k.Body) > 0 {
		return "", nil, nil, nil, &Error{Status: http.StatusBadRequest, Message: "Name the change by the values it sets or by its body, not both."}
	}
	p := &probe{}
	d := c.Set.Decide(c.effective(), &rules.Request{Method: method, URL: u, Header: http.Header{}, Now: s.opt.Now(), Grants: p, Context: ctx})
	if k.write() {
		if d.Outcome != rules.Allow {
			return "", nil, nil, nil, &Error{Status: http.StatusBadRequest, Message: "This change cannot be approved: " + d.Message}
		}
		var q *rules.GrantQuery
		if k.Values != nil {
			q, err = d.WriteGrantQueryValues(k.Values)
		} else {
			ct := k.ContentType
			if strings.TrimSpace(ct) == "" {
				ct = "application/json"
			}
			q, err = d.WriteGrantQuery(ct, k.Body)
		}
		switch {
		case err != nil:
			return "", nil, nil, nil, &Error{Status: http.StatusBadRequest, Message: "This change cannot be asked for: " + strings.TrimPrefix(err.Error(), "rules: ") + "."}
		case q == nil:
			return "", nil, nil, nil, &Error{Status: http.StatusBadRequest, Message: "This change sets no value that needs approval: send it as it is."}
		}
		return method, u, q, d.ApprovalValues(), nil
	}
	if d.Approval == "" || p.q == nil {
		msg := "This request needs no approval: send it as it is."
		switch {
		case d.Outcome != rules.Allow:
			msg = "This request cannot be approved: " + d.Message
		case method != http.MethodGet && method != http.MethodHead:
			msg += " A change whose values need approval is named with the values it sets (values) or its body (body)."
		}
		return "", nil, nil, nil, &Error{Status: http.StatusBadRequest, Message: msg}
	}
	return method, u, p.q, nil, nil
}

// RequestExport asks for a grant to send method target (a path with an
// optional query) with the given purpose: RequestApproval of an export.
func (s *Service) RequestExport(ctx context.Context, c *Caller, method, target, purpose string) (*Approval, *Audit, error) {
	return s.RequestApproval(ctx, c, Ask{Method: method, Path: target, Purpose: purpose})
}

// RequestApproval asks for a grant of the export or write k names, with
// its purpose. It is refused with 400 when the request needs no approval
// from this user, or the purpose is missing. A write's grant is bound to
// the values the approval covers: approval to hand customer 7 to wang
// never hands it to li.
func (s *Service) RequestApproval(ctx context.Context, c *Caller, k Ask) (*Approval, *Audit, error) {
	purpose := strings.TrimSpace(k.Purpose)
	if err := checkText("purpose", purpose, MaxPurpose); err != nil {
		return nil, nil, err
	}
	method, u, q, values, err := s.probe(ctx, c, k)
	if err != nil {
		return nil, nil, err
	}
	now := s.opt.Now()
	pol, ok := c.Set.ApprovalPolicy(q.Policy)
	if !ok {
		return nil, nil, &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("The approval policy %s is not in the rule file.", q.Policy)}
	}
	if err := pol.CheckPurpose(purpose); err != nil {
		return nil, nil, err
	}
	kind := KindExport
	if k.write() {
		kind = KindWrite
	}
	a := &approvalRecord{
		Approval: Approval{
			ID: newID("ap-"), Kind: kind, Status: StatusPending, Requester: c.User.ID, Policy: pol.Name,
			Route: q.Route, Method: method, Path: u.RequestURI(), Request: q.Request, Values: values, Purpose: purpose,
			Steps: stepsOf(pol), Uses: pol.Uses, UsesLeft: pol.Uses, Created: now, Expires: now.Add(PendingFor),
		},
		RequesterRoles: c.User.Roles, RequesterAttrs: c.User.Attrs,
	}
	if err := s.createApproval(ctx, a); err != nil {
		return nil, nil, err
	}
	s.notifyWaiting(&a.Approval)
	return s.view(&a.Approval), &Audit{Kind: "approval", ID: a.ID, Action: "requested", Status: a.Status, Policy: a.Policy,
		Requester: a.Requester, By: a.Requester, Route: a.Route, Request: a.Request, Purpose: a.Purpose}, nil
}

// stepsOf copies a policy's steps, the first one waiting.
func stepsOf(pol *rules.ApprovalPolicy) []Step {
	out := make([]Step, len(pol.Steps))
	for i, st := range pol.Steps {
		out[i] = Step{Name: st.Name, Description: st.Description, Approvers: slices.Clone(st.Approvers), Status: StepLater}
	}
	if len(out) > 0 {
		out[0].Status = StepWaiting
	}
	return out
}

// policyFor returns the request's policy as the running rule file has
// it, refusing when its steps changed since the request was made.
func policyFor(set *rules.Set, a *approvalRecord) (*rules.ApprovalPolicy, error) {
	pol, ok := set.ApprovalPolicy(a.Policy)
	changed := !ok || len(pol.Steps) != len(a.Steps)
	for i := 0; !changed && i < len(a.Steps); i++ {
		changed = pol.Steps[i].Name != a.Steps[i].Name
	}
	if changed {
		return nil, &Error{Status: http.StatusConflict, Message: fmt.Sprintf("The approval policy %s changed since this request was made; ask again.", a.Policy)}
	}
	return pol, nil
}

// othersThan returns who approved the steps other than i.
func othersThan(a *Approval, i int) []string {
	var out []string
	for j, st := range a.Steps {
		if j != i && st.Status == StepApproved {
			out = append(out, st.By)
		}
	}
	return out
}

// mayAct reports whether u may approve or deny the waiting step of a,
// leaving out the freshness of u's sign-in.
func mayAct(pol *rules.ApprovalPolicy, a *approvalRecord, u *rules.User, now time.Time) bool {
	i := a.current()
	if a.Status != StatusPending || i < 0 || i >= len(pol.Steps) || u.ID == a.Requester || slices.Contains(othersThan(&a.Approval, i), u.ID) {
		return false
	}
	ok, _ := pol.Steps[i].Permits(u, a.requester(), now)
	return ok
}

// responsible reports whether u may approve some step of a's policy (and
// so may see and revoke it).
func responsible(pol *rules.ApprovalPolicy, a *approvalRecord, u *rules.User, now time.Time) bool {
	for _, st := range pol.Steps {
		if ok, _ := st.Permits(u, a.requester(), now); ok {
			return true
		}
	}
	return false
}

// Decide approves (approve true) or denies the waiting step of request id
// as the caller, with a note. Approving checks every rule of the policy
// (rules.ApprovalPolicy.MayApprove): 403 for the requester, for someone
// without the step's role or condition, or who approved another step;
// 401 with a step-up need when the sign-in is too old. The last approval
// makes the grant (or starts the elevation asked for).
func (s *Service) Decide(ctx context.Context, c *Caller, id string, approve bool, note string) (*Approval, *Audit, error) {
	note = strings.TrimSpace(note)
	if err := checkText("note", note, MaxNote); err != nil {
		return nil, nil, err
	}
	a, err := s.getApproval(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	pol, perr := policyFor(c.Set, a)
	now := s.opt.Now()
	if a.Status != StatusPending {
		return nil, nil, &Error{Status: http.StatusConflict, Message: fmt.Sprintf("This request is %s already; there is nothing to decide.", a.Status)}
	}
	if perr != nil {
		return nil, nil, perr
	}
	u := c.User
	check := func(cur *approvalRecord) (int, error) {
		i := cur.current()
		if cur.Status != StatusPending || i < 0 {
			return i, &Error{Status: http.StatusConflict, Message: fmt.Sprintf("This request is %s already; there is nothing to decide.", cur.Status)}
		}
		if approve {
			return i, pol.MayApprove(i, u, cur.requester(), othersThan(&cur.Approval, i), now)
		}
		if u.ID == cur.Requester {
			return i, &rules.WorkflowError{Status: http.StatusForbidden, Message: "Nobody decides their own request; revoke it instead."}
		}
		if !mayAct(pol, cur, u, now) {
			return i, &rules.WorkflowError{Status: http.StatusForbidden, Message: fmt.Sprintf("You may not decide the step %q (%s).", pol.Steps[i].Name, pol.Steps[i].Description)}
		}
		return i, nil
	}
	if _, err := check(a); err != nil {
		return nil, nil, err
	}
	var step string
	var final bool
	b, err := s.modifyApproval(ctx, id, func(cur *approvalRecord) error {
		i, err := check(cur)
		if err != nil {
			return err
		}
		step, final = cur.Steps[i].Name, false
		cur.Steps[i].By, cur.Steps[i].At, cur.Steps[i].Note = u.ID, now, note
		if !approve {
			cur.Steps[i].Status = StepDenied
			cur.Status, cur.Ended, cur.EndedBy, cur.Note = StatusDenied, now, u.ID, note
			return nil
		}
		cur.Steps[i].Status = StepApproved
		if i+1 < len(cur.Steps) {
			cur.Steps[i+1].Status = StepWaiting
			return nil
		}
		final = true
		cur.Status, cur.Approved, cur.Expires = StatusApproved, now, now.Add(pol.ValidFor)
		if cur.Kind == KindElevation {
			// The approval is used at once: it starts the elevation.
			cur.Status, cur.UsesLeft, cur.Ended = StatusUsed, 0, now
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	action := "approved"
	if !approve {
		action = "denied"
	}
	au := &Audit{Kind: "approval", ID: b.ID, Action: action, Status: b.Status, Policy: b.Policy, Step: step, Requester: b.Requester,
		By: u.ID, Route: b.Route, Request: b.Request, Purpose: b.Purpose, Note: note}
	switch {
	case !approve:
		s.notifyDecided(&b.Approval, false)
		if b.Kind == KindElevation {
			s.elevationDenied(ctx, b)
		}
	case !final:
		s.notifyWaiting(&b.Approval)
	case b.Kind == KindElevation:
		s.elevationApproved(ctx, b)
	default:
		s.notifyDecided(&b.Approval, true)
	}
	return s.view(&b.Approval), au, nil
}

// Revoke ends a pending request or a grant, as its requester or as
// someone responsible for one of its steps.
func (s *Service) Revoke(ctx context.Context, c *Caller, id, note string) (*Approval, *Audit, error) {
	note = strings.TrimSpace(note)
	if err := checkText("note", note, MaxNote); err != nil {
		return nil, nil, err
	}
	a, err := s.getApproval(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	now := s.opt.Now()
	pol, _ := c.Set.ApprovalPolicy(a.Policy)
	if !s.visible(c, a, pol, now) {
		return nil, nil, &Error{Status: http.StatusNotFound, Message: "There is no approval request with this id."}
	}
	if c.User.ID != a.Requester && (pol == nil || !responsible(pol, a, c.User, now)) {
		return nil, nil, &rules.WorkflowError{Status: http.StatusForbidden, Message: "Only the requester and those who approve it may revoke this request."}
	}
	b, err := s.modifyApproval(ctx, id, func(cur *approvalRecord) error {
		if !cur.open() {
			return &Error{Status: http.StatusConflict, Message: fmt.Sprintf("This request is %s already.", cur.Status)}
		}
		cur.Status, cur.Ended, cur.EndedBy, cur.Note = StatusRevoked, now, c.User.ID, note
		for i := range cur.Steps {
			if cur.Steps[i].Status == StepWaiting {
				cur.Steps[i].Status = StepLater
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if b.Kind == KindElevation && b.Elevation != "" {
		if _, err := s.modifyElevation(ctx, b.Elevation, func(e *elevationRecord) error {
			if e.Status != StatusPending {
				return errSettled
			}
			e.Status, e.Ended, e.EndReason = StatusEnded, now, "withdrawn"
			return nil
		}); err != nil && !errors.Is(err, errSettled) {
			return nil, nil, err
		}
	}
	return s.view(&b.Approval), &Audit{Kind: "approval", ID: b.ID, Action: "revoked", Status: b.Status, Policy: b.Policy, Requester: b.Requester,
		By: c.User.ID, Route: b.Route, Request: b.Request, Purpose: b.Purpose, Note: note}, nil
}

// visible reports whether the caller may see a: the requester, whoever
// acted on it, and whoever may approve one of its steps.
func (s *Service) visible(c *Caller, a *approvalRecord, pol *rules.ApprovalPolicy, now time.Time) bool {
	u := c.User
	if u.ID == a.Requester || u.ID == a.EndedBy {
		return true
	}
	for _, st := range a.Steps {
		if st.By == u.ID {
			return true
		}
	}
	return pol != nil && responsible(pol, a, u, now)
}

// GetApproval returns one request the caller may see.
func (s *Service) GetApproval(ctx context.Context, c *Caller, id string) (*Approval, error) {
	a, err := s.getApproval(ctx, id)
	if err != nil {
		return nil, err
	}
	pol, _ := c.Set.ApprovalPolicy(a.Policy)
	if !s.visible(c, a, pol, s.opt.Now()) {
		return nil, &Error{Status: http.StatusNotFound, Message: "There is no approval request with this id."}
	}
	return s.view(&a.Approval), nil
}

// ApprovalLists are what GET /.crmguard/approvals answers.
type ApprovalLists struct {
	// Mine are the caller's own requests, newest first.
	Mine []*Approval `json:"mine"`
	// Waiting are the requests whose waiting step the caller may decide,
	// oldest first.
	Waiting []*Approval `json:"waiting"`
}

// ListApprovals returns the caller's requests and those waiting for them.
func (s *Service) ListApprovals(ctx context.Context, c *Caller) (*ApprovalLists, error) {
	mine, err := s.listApprovals(ctx, "by:"+c.User.ID)
	if err != nil {
		return nil, err
	}
	pending, err := s.listApprovals(ctx, "pending")
	if err != nil {
		return nil, err
	}
	now := s.opt.Now()
	out := &ApprovalLists{Mine: []*Approval{}, Waiting: []*Approval{}}
	for _, a := range mine {
		out.Mine = append(out.Mine, s.view(&a.Approval))
	}
	slices.SortFunc(out.Mine, func(x, y *Approval) int { return y.Created.Compare(x.Created) })
	for _, a := range pending {
		pol, err := policyFor(c.Set, a)
		if err != nil || !mayAct(pol, a, c.User, now) {
			continue
		}
		out.Waiting = append(out.Waiting, s.view(&a.Approval))
	}
	slices.SortFunc(out.Waiting, func(x, y *Approval) int { return x.Created.Compare(y.Created) })
	return out, nil
}

// view returns a copy of a for the API.
func (s *Service) view(a *Approval) *Approval {
	cp := *a
	cp.Steps = slices.Clone(a.Steps)
	return &cp
}

// --- notifications ---

func approvalLink(id string) string { return "/.crmguard/approvals/" + id }

// what says in words what a request asks for.
func what(a *Approval) string {
	switch a.Kind {
	case KindElevation:
		return "temporary access"
	case KindWrite:
		return fmt.Sprintf("a change (%s %s setting %s)", a.Method, a.Path, setting(a.Values))
	}
	return fmt.Sprintf("an export (%s %s)", a.Method, a.Path)
}

// setting says the values a write's approval binds: `owner_id "wang"`,
// keys sorted; "@ids" as "records 2, 5".
func setting(values map[string]any) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(values)) {
		v := values[k]
		if k == "@ids" {
			if ids, ok := v.([]any); ok {
				s := make([]string, len(ids))
				for i, id := range ids {
					s[i] = fmt.Sprint(id)
				}
				parts = append(parts, "records "+strings.Join(s, ", "))
				continue
			}
			if ids, ok := v.([]string); ok {
				parts = append(parts, "records "+strings.Join(ids, ", "))
				continue
			}
		}
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if enc.Encode(v) != nil {
			b.Reset()
			b.WriteString("(a value)")
		}
		parts = append(parts, k+" "+strings.TrimSpace(b.String()))
	}
	return strings.Join(parts, ", ")
}

// notifyWaiting tells the waiting step's approvers.
func (s *Service) notifyWaiting(a *Approval) {
	i := a.current()
	if i < 0 {
		return
	}
	st := a.Steps[i]
	text := fmt.Sprintf("%s asks for %s and it waits for your approval (step %q). Purpose: %s", a.Requester, what(a), st.Name, a.Purpose)
	s.notify(notify.Event{Type: notify.ApprovalWaiting, Text: text, ID: a.ID, Link: approvalLink(a.ID),
		To:   notify.Recipients{Roles: slices.Clone(st.Approvers)},
		Data: map[string]string{"requester": a.Requester, "policy": a.Policy, "step": st.Name, "kind": a.Kind}})
}

// notifyDecided tells the requester that their request was approved or
// denied.
func (s *Service) notifyDecided(a *Approval, approved bool) {
	typ, text := notify.ApprovalApproved, fmt.Sprintf("Your request for %s was approved; it is valid until %s.", what(a), a.Expires.UTC().Format("2006-01-02 15:04 MST"))
	if !approved {
		typ, text = notify.ApprovalDenied, fmt.Sprintf("Your request for %s was denied by %s.", what(a), a.EndedBy)
	}
	s.notify(notify.Event{Type: typ, Text: text, ID: a.ID, Link: approvalLink(a.ID), To: notify.Recipients{Users: []string{a.Requester}},
		Data: map[string]string{"policy": a.Policy, "kind": a.Kind}})
}
