// Package session keeps crmguard's server-side sessions: the session
// cookie holds only an AES-256-GCM-sealed random id (keys derived with
// HKDF-SHA256 from a list of secrets: the first seals, all open), and the
// session data lives in the guard's state store (package store: one bbolt
// file for one instance, Redis for several), as records of the "session"
// namespace. The store is the truth: every request reads it, so a deleted
// (revoked) session stops working at once on every instance. Store is the
// typed session API over the state store; Manager ties cookie and store
// together and enforces the idle timeout and the absolute lifetime.
package session
