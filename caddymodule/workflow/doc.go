// Package workflow is the guard side of approvals and temporary access
// (break-glass elevations): the requests, grants and elevations kept in
// the guard's state store (package store), the export grant source the
// rules ask (rules.GrantSource), the active elevation of a session, and
// the JSON API and HTML pages at /.crmguard/approvals and
// /.crmguard/elevations (docs/workflows.md). The rule file says who may
// approve and who may elevate (rules.ApprovalPolicy, rules.Elevation);
// this package keeps the state and enforces the order of things.
//
// How it works:
//
//   - An approval request is one record in the namespace "approvals",
//     JSON, changed only with compare-and-swap (store.Modify): two
//     approvers approving at the same moment both count, in order; a grant
//     of one use is used by exactly one request, across every instance
//     sharing the store. A request becomes the grant once every step is
//     approved; its id is the grant id.
//   - An elevation is one record in "elevations"; while it is active, a
//     second small record in "elevation_sessions", keyed by the session it
//     is bound to and expiring with it, is what the guard reads on a
//     request (one Get, only for users who hold a role that may elevate).
//     Ending an elevation deletes that record first, then marks the
//     elevation ended.
//   - Every state change returns (or, for changes made by the clock,
//     sends to Options.Audit) an Audit record: the guard writes it as the
//     audit event's `workflow` member. Notifications go to the notifier
//     after the state change is stored.
//
// Decisions where the design was silent:
//   - A pending request expires after PendingFor (7 days) without a
//     decision; a grant expires valid_for after its last approval.
//   - Records stay readable for Options.Retention (default 90 days) after
//     they end, so the lists show history; the audit trail is the lasting
//     record.
//   - Revoking a request or grant is open to its requester and to every
//     user who may approve one of its steps (the people responsible for
//     it: the requester's manager, IT security).
//   - Approving, denying and starting use the roles of the current sign-in
//     without any active elevation: temporary access never lets anyone
//     approve.
//   - An elevation is bound to the browser session that started it; an
//     API client with a bearer token cannot start one (there is no session
//     to end at logout). One elevation may be active per session.
//   - An elevation that needs approval starts when its last step is
//     approved, for the duration asked, bound to the session that asked.
//   - A reviewer reviews only finished elevations, never their own.
package workflow
