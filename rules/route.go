package rules

import (
	"time"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/internal/urlpath"
	"github.com/crmguard/crmguard/rules/mask"
	"github.com/crmguard/crmguard/rules/rewrite"
	"go.yaml.in/yaml/v3"
)

// The compiled parts of a rule set (its routes and the subject block): the
// loader (load_*.go) builds them, the per-request code reads them.

// route is one compiled entry of `routes`.
type route struct {
	id      string
	node    *yaml.Node
	key     string
	methods []string // upper case; nil: any method
	pattern *urlpath.Pattern
	query   []matcher
	headers []matcher
	public  bool
	anyUser bool     // allow: authenticated
	allow   []string // roles
	deny    string   // when set the route always denies, with this reason
	when    *cond.Expr
	// description and the messages are the operator's words for refusals
	// (message.go).
	description string
	message     string // any refusal of the route
	whenMessage string // `when` does not hold
	mfaMessage  string // a step-up
	mfaReq      *bool
	maxAge      time.Duration
	records     string
	record      string
	recPath     rewrite.Path // records or record, compiled
	single      bool         // record: the body is one record
	visible     *cond.Condition
	expose      []rewrite.Path
	fields      []*fieldRule
	answer      []*fieldRule // `answer`: paths from the answer's root, outside the records
	// answerHeaders are the response headers removed from every answer
	// of the route (canonical names).
	answerHeaders []string
	maxRec        int
	auditID       rewrite.Path
	keys          []rewrite.Path // record values read by native conditions
	body          []*bodyGuard
	// readsBody is true when a condition of the route reads the body's
	// values (`body`) or a bulk target reads its ids from the body.
	readsBody bool
	export    *exportSpec
	rewrites  bool // the route's answers must be buffered and rewritten

	// target is the stored record a request is judged against (target.go).
	target *targetSpec

	// auditChanges are the fields whose old and new values a write's audit
	// event records (load_audit.go); nil without `audit_changes`.
	auditChanges []auditChange
	// qguard is the route's `query` and forward its `forward_query`
	// (load_query.go, query.go).
	qguard  *querySpec
	forward []*forwardParam

	// limits are the usage limits covering the route, in file order
	// (load_limits.go).
	limits []*Limit
}

// matcher is one query or header condition of a route.
type matcher struct {
	name    string   // query key or header name, in lower case
	values  []string // any of these (exact); empty: see present
	present bool     // with no values: true = must be present, false = must be absent
}

// fieldRule is one entry of a route's `fields`.
type fieldRule struct {
	path    string
	p       rewrite.Path
	maskFn  mask.Func
	action  string // remove, mask, hash, null, replace
	mask    string
	replace []byte // JSON
	forR    []string
	except  []string
	when    *cond.Condition
	unless  *cond.Condition
	key     string
}

// bodyGuard is one entry of a route's `body`.
type bodyGuard struct {
	path     string
	segs     []string
	denyRule // denyUnless may read body (cond.BodyScope)
	// allowIf is the condition under which the request may set the field
	// (cond.WriteScope: it may read body, and record on a target route).
	allowIf *cond.Expr
	// approval names the approval policy whose grant, bound to the values
	// the body sets, lets through a value allowIf refuses.
	approval string
	node     *yaml.Node
}

// denyRule is what a body guard and a query parameter share: the roles
// that may not send the value, the condition without which nobody may,
// and the operator's words for the refusal.
type denyRule struct {
	deny       []string
	denyUnless *cond.Expr
	message    string
}

// exportSpec is a route's `export`.
type exportSpec struct {
	approval        bool
	policy          string // the approval policy that grants it ("" with approval: true)
	withoutApproval []string
	message         string
}

// subjectSpec is the compiled `subject` block.
type subjectSpec struct {
	id    *cond.Expr
	roles *cond.Expr
	attrs []namedExpr
}

type namedExpr struct {
	name string
	e    *cond.Expr
}
