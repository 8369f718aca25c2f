// Package store is crmguard's one state store: everything that must
// outlive a request (sessions, approval requests and grants, elevations,
// usage counters, one-time markers, locks) lives in one Store, configured
// once for the whole guard. Two implementations keep one contract (tested
// by one contract test run on both):
//
//   - Bolt, the embedded default for one instance: a single file (by
//     default <caddy data dir>/crmguard/state.db) through go.etcd.io/bbolt,
//     with ACID transactions. Records, one-time markers and counter resets
//     are committed (fsync) before the call returns.
//   - Redis (or Valkey), for several instances sharing state. Every
//     read-modify-write is one Lua script, so it is atomic on the server.
//
// The primitives are few and generic, so that features keep their own
// typed API on top (package session is one) without changing the store:
//
//   - Records: versioned values in a namespace, with an optional expiry and
//     index terms. Create, Get, compare-and-swap Update (by Version),
//     Delete, List (a namespace, or the records carrying one index term)
//     and DeleteIndexed. Modify is the read-check-write loop on top of
//     Update (a one-use grant consumed by exactly one caller).
//   - Once markers (replay protection) and Locks with a time to live.
//   - Windowed counters: Add n to a sliding window unless the window's
//     total would exceed max, Count without adding, Reset.
//
// Counters are the one per-request path, and they are kept cheap: Bolt
// keeps every window exact in memory (a mutex and a map, no disk access
// on a request) and writes the windows that changed to the file in one
// transaction every FlushInterval (default 1s) and on Close, and reads
// them back when it opens. A crash (not a Close) therefore loses at most
// the counter increments of the last FlushInterval; records, markers and
// resets are never lost once the call returned. Redis counts on the
// server, exact to within the requests in flight across instances.
//
// Every failure to ask the store (a Redis server that does not answer, a
// file that cannot be written) wraps ErrUnavailable: callers answer 503
// and let nothing through that needed the store.
//
// Decisions where the design was silent:
//   - Times come from the caller's clock (Options.Now), also for Redis, so
//     every instance and every test sees the same windows and expiries;
//     instances are expected to keep their clocks in sync (NTP).
//   - A record past its Expires is gone for Get, Update, List and
//     DeleteIndexed even before it is swept (Bolt sweeps every
//     SweepInterval; Redis expires keys itself).
//   - Locks of the embedded store are held in memory: the file is open in
//     one process only (bbolt locks it), so no other instance can ask.
//   - Redis Cluster is not supported (the scripts name keys they read from
//     records); use one server, a Sentinel-managed primary, or Valkey.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors of the contract. Errors from a store wrap one of these (test with
// errors.Is) or ErrUnavailable.
var (
	// ErrNotFound: the record does not exist, or it is past its Expires.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: Create found a live record with the same key.
	ErrExists = errors.New("store: already exists")
	// ErrConflict: Update found another Version than the one it was given
	// (someone changed the record since it was read).
	ErrConflict = errors.New("store: changed concurrently")
	// ErrUnavailable: the store could not be asked (server down, disk
	// error, closed). Nothing that needed the store may pass.
	ErrUnavailable = errors.New("store: unavailable")
	// ErrInvalid: a namespace, key or index term the store does not accept.
	ErrInvalid = errors.New("store: invalid name")
)

// Record is one versioned value in a namespace.
type Record struct {
	// Key names the record in its namespace (1 to MaxKeyLength bytes).
	Key string
	// Value is the caller's data (for example JSON); the store does not
	// read it.
	Value []byte
	// Version is 1 after Create and grows by one with every Update; Update
	// compares it.
	Version int64
	// Expires is when the record is gone by itself; zero: never.
	Expires time.Time
	// Index are terms (for example "sub:zhang") by which List and
	// DeleteIndexed find the record in its namespace. Each term is 1 to
	// MaxKeyLength bytes without a NUL or newline byte.
	Index []string
}

// Usage is the state of one counter window after Add or Count.
type Usage struct {
	// Total is the window's sum after the call (n included when Added).
	Total int64
	// Added reports whether Add added n (false: it would have exceeded
	// max, and nothing was added). Count leaves it false.
	Added bool
	// RetryAt is, when Add refused, the earliest time at which an Add of
	// the same n fits the window again; zero when it never will (n > max).
	RetryAt time.Time
}

// Store is the guard's state store. Implementations are safe for
// concurrent use; every read-modify-write is atomic, also across the
// instances sharing a Redis server.
type Store interface {
	// Create stores r as a new record of namespace ns and sets r.Version
	// to 1. ErrExists when a live record has the same key.
	Create(ctx context.Context, ns string, r *Record) error
	// Get returns the record, or ErrNotFound (also when it has expired).
	Get(ctx context.Context, ns, key string) (*Record, error)
	// Update replaces the record r.Key if its stored version equals
	// r.Version, then increments r.Version (compare-and-swap). ErrConflict
	// when the versions differ, ErrNotFound when the record is gone. The
	// new Expires and Index replace the old ones.
	Update(ctx context.Context, ns string, r *Record) error
	// Delete removes the record (no error when it is already gone).
	Delete(ctx context.Context, ns, key string) error
	// List returns the live records of ns carrying the index term, or all
	// of them when term is "", ordered by key.
	List(ctx context.Context, ns, term string) ([]*Record, error)
	// DeleteIndexed removes every record of ns carrying the index term and
	// returns how many live ones there were.
	DeleteIndexed(ctx context.Context, ns, term string) (int, error)

	// Once records key for ttl and reports whether it was new: true for
	// the first caller only, until ttl has passed (replay protection).
	Once(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// Lock takes the lock name for at most ttl. ok is false when someone
	// else holds it; release frees it if this caller still holds it.
	Lock(ctx context.Context, name string, ttl time.Duration) (release func(), ok bool, err error)

	// Add adds n to the sliding window of length window kept under key,
	// unless max > 0 and the window's total would then exceed max; then
	// nothing is added and Usage.RetryAt says when it would fit. An event
	// counts while less than window has passed since it was added.
	Add(ctx context.Context, key string, n, max int64, window time.Duration) (Usage, error)
	// Count returns the window's total without adding to it.
	Count(ctx context.Context, key string, window time.Duration) (Usage, error)
	// Reset empties the window under key (a fresh window starts).
	Reset(ctx context.Context, key string) error

	// Name says where the store lives (a file path, or a Redis address
	// without its password), for logs and messages.
	Name() string
	// Ping reports whether the store answers (ErrUnavailable when not).
	Ping(ctx context.Context) error
	// Close releases the store; for Bolt it also writes the counters.
	Close() error
}

// Options are settings shared by both implementations.
type Options struct {
	// Now is the clock for expiries and counter windows (nil: time.Now).
	Now func() time.Time
	// FlushInterval is how often Bolt writes changed counter windows to
	// its file (0: DefaultFlushInterval). A crash loses at most this much
	// of counter increments. Redis ignores it.
	FlushInterval time.Duration
	// SweepInterval is how often Bolt removes expired records, markers and
	// empty windows from its file (0: DefaultSweepInterval). Redis ignores
	// it (keys expire on the server).
	SweepInterval time.Duration
}

// Defaults for Options.
const (
	// DefaultFlushInterval is how often Bolt persists counter windows.
	DefaultFlushInterval = time.Second
	// DefaultSweepInterval is how often Bolt sweeps expired entries.
	DefaultSweepInterval = 10 * time.Minute
)

func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	return o
}

// Limits on names.
const (
	// MaxKeyLength is the longest record key, index term, marker, lock or
	// counter key, in bytes.
	MaxKeyLength = 1024
	// MaxNamespaceLength is the longest namespace, in bytes.
	MaxNamespaceLength = 64
)

// checkNS accepts namespaces of lower-case letters, digits, '_', '-' and
// '.', so they can be part of Redis key names and bbolt bucket names.
func checkNS(ns string) error {
	if ns == "" || len(ns) > MaxNamespaceLength {
		return fmt.Errorf("%w: namespace %q must be 1 to %d bytes", ErrInvalid, ns, MaxNamespaceLength)
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("%w: namespace %q may hold only a-z, 0-9, _, - and .", ErrInvalid, ns)
		}
	}
	return nil
}

// checkKey accepts 1 to MaxKeyLength bytes without NUL or newline (the
// separators of the stores' own key layouts).
func checkKey(what, k string) error {
	if k == "" || len(k) > MaxKeyLength {
		return fmt.Errorf("%w: %s must be 1 to %d bytes, got %d", ErrInvalid, what, MaxKeyLength, len(k))
	}
	if strings.ContainsAny(k, "\x00\n") {
		return fmt.Errorf("%w: %s %.40q holds a NUL or newline byte", ErrInvalid, what, k)
	}
	return nil
}

// checkRecord validates a record about to be written.
func checkRecord(ns string, r *Record) error {
	if err := checkNS(ns); err != nil {
		return err
	}
	if r == nil {
		return fmt.Errorf("%w: nil record", ErrInvalid)
	}
	if err := checkKey("record key", r.Key); err != nil {
		return err
	}
	for _, t := range r.Index {
		if err := checkKey("index term", t); err != nil {
			return err
		}
	}
	return nil
}

// uniqueTerms returns the index terms without repeats, in order.
func uniqueTerms(terms []string) []string {
	if len(terms) < 2 {
		return terms
	}
	out := make([]string, 0, len(terms))
	for _, t := range terms {
		dup := false
		for _, o := range out {
			if o == t {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, t)
		}
	}
	return out
}

// live reports whether a record with this expiry exists at now.
func live(expires, now time.Time) bool { return expires.IsZero() || now.Before(expires) }

// DefaultModifyAttempts bounds Modify's compare-and-swap retries.
const DefaultModifyAttempts = 100

// Modify reads the record ns/key, calls change with it and writes the
// result with a compare-and-swap Update, trying again (with a fresh read)
// when someone else changed the record in between. change may refuse by
// returning an error (for example "no uses left"), which Modify returns
// as is; it may run several times and must not have side effects. The
// record written is the one change returned (its Version is ignored). On
// success Modify returns the record as stored.
//
// Consuming a one-use grant is Modify with a change that refuses when no
// use is left: of any number of concurrent callers exactly one succeeds.
func Modify(ctx context.Context, s Store, ns, key string, change func(cur *Record) (*Record, error)) (*Record, error) {
	for range DefaultModifyAttempts {
		cur, err := s.Get(ctx, ns, key)
		if err != nil {
			return nil, err
		}
		next, err := change(cur)
		if err != nil {
			return nil, err
		}
		if next == nil {
			return nil, fmt.Errorf("store: modify %s/%s: change returned no record", ns, key)
		}
		w := *next
		w.Key, w.Version = key, cur.Version
		switch err := s.Update(ctx, ns, &w); {
		case err == nil:
			return &w, nil
		case !errors.Is(err, ErrConflict):
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("store: modify %s/%s: %w", ns, key, err)
		}
	}
	return nil, fmt.Errorf("store: modify %s/%s: %w %d times in a row", ns, key, ErrConflict, DefaultModifyAttempts)
}
