// Package auditlog is the on-disk form of crm_guard's audit files: the
// keyed hash chain that makes them tamper-evident, reading plain and
// gzip-compressed files line by line, and verifying a set of files. The
// writer (caddymodule's file sink) and the `crmguard audit` commands both
// use it; it has no Caddy dependency.
//
// # The chain
//
// Every line of a chained audit file is the audit event's JSON object with
// three keys appended before its closing brace:
//
//	{...event...,"seq":N[,"chain_prev":"P"],"chain":"C"}
//
// The keys:
//   - seq counts the lines of the chain from 1, across files and restarts.
//   - chain_prev appears on the first line of each file only: P is the hex
//     link of the line before it (the last line of the previous file), or
//     "" when the chain starts there.
//   - C is the line's link: hex(HMAC-SHA256(key, prev || body)), where prev
//     is the previous line's link as 32 raw bytes (empty when the chain
//     starts) and body is the line's exact bytes up to, not including,
//     `,"chain":"`. The body holds the event as written, seq and
//     chain_prev, so none of them can change without the link failing.
//
// Removing a line breaks the link of the line after it and leaves a gap in
// seq; editing one breaks its own link; moving one breaks the links at
// both places; inserting one needs a link only the key can make. A file
// whose first lines are removed starts with a line that has no chain_prev.
// What the chain cannot show on its own is lines removed from the very end
// of the newest file, or whole files removed before the first file given
// to the verifier: Verify reports the first and last link so that they can
// be compared with a copy kept elsewhere.
//
// # Files
//
// A writer that opens an existing file reads the link and seq of its last
// line and continues the chain (a restart). A writer that starts a new
// file while it still knows the link (its own roll, or a file truncated in
// place by logrotate's copytruncate) writes chain_prev on the new file's
// first line, so a rotated set of files forms one chain. Verify orders the
// files it is given by the seq of their first line, so names do not matter,
// and reads gzip-compressed files as they are.
//
// Decisions where the issue is silent:
//   - A line cut short by a crash (not JSON, no link) followed by a line
//     that continues the chain is reported as a note, not as tampering.
//   - Several keys may be given; where one stops verifying and another
//     continues the chain (the operator changed chain_key), Verify notes
//     the change and goes on.
//   - A chain that starts anew in the middle of a set (a writer that lost
//     its link, for example after its file was renamed away and the
//     server restarted) is a problem of its own kind: "restarted".
package auditlog
