package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// File layout (top-level buckets):
//
//	r:<ns>    record key → encodeRecord(...)
//	i:<ns>    index term, NUL, record key → empty
//	once      marker key → expiry (unix ms, 8 bytes big endian)
//	counters  counter key → window.encode()
var (
	bucketOnce     = []byte("once")
	bucketCounters = []byte("counters")
)

func recordBucket(ns string) []byte { return []byte("r:" + ns) }
func indexBucket(ns string) []byte  { return []byte("i:" + ns) }

func indexKey(term, key string) []byte {
	b := make([]byte, 0, len(term)+1+len(key))
	b = append(b, term...)
	b = append(b, 0)
	return append(b, key...)
}

// OpenTimeout is how long OpenBolt waits for another process to release
// the file before it gives up.
const OpenTimeout = 2 * time.Second

// Bolt is the embedded Store: one bbolt file, for one instance. Use
// OpenBolt; most callers open it through Open, which shares one handle per
// file among the guard's config generations.
type Bolt struct {
	db   *bolt.DB
	opt  Options
	ctrs *windows

	lockMu sync.Mutex
	locks  map[string]heldLock

	// flushMu orders counter flushes and resets, so a flush can never
	// write back a window that a reset removed.
	flushMu  sync.Mutex
	flushErr error

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

type heldLock struct {
	token string
	until time.Time
}

// OpenBolt opens (creating it and its directory) the store file at path
// and loads its counter windows. Another process holding the file makes it
// fail after OpenTimeout.
func OpenBolt(path string, opt Options) (*Bolt, error) {
	opt = opt.withDefaults()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: creating the directory of %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: OpenTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("store: %s is in use by another process (another crmguard instance?); give each instance its own store file or share a Redis store: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", path, err)
	}
	s := &Bolt{db: db, opt: opt, ctrs: newWindows(), locks: map[string]heldLock{},
		stop: make(chan struct{}), done: make(chan struct{})}
	if err := s.loadCounters(); err != nil {
		db.Close()
		return nil, err
	}
	go s.background()
	return s, nil
}

// Name implements Store: the file's path.
func (s *Bolt) Name() string { return s.db.Path() }

func (s *Bolt) now() time.Time { return s.opt.Now() }

// unavailable wraps a bbolt failure.
func (s *Bolt) unavailable(op string, err error) error {
	return fmt.Errorf("%w: %s in %s: %w", ErrUnavailable, op, s.db.Path(), err)
}

// errNoChange rolls back a write transaction that found nothing to write
// (no commit, no fsync).
var errNoChange = errors.New("no change")

// update runs fn in a write transaction; errors of the contract pass, any
// other is ErrUnavailable.
func (s *Bolt) update(op string, fn func(tx *bolt.Tx) error) error {
	err := s.db.Update(fn)
	switch {
	case err == nil || errors.Is(err, errNoChange):
		return nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrExists), errors.Is(err, ErrConflict), errors.Is(err, ErrInvalid):
		return err
	}
	return s.unavailable(op, err)
}

func (s *Bolt) view(op string, fn func(tx *bolt.Tx) error) error {
	err := s.db.View(fn)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrInvalid):
		return err
	}
	return s.unavailable(op, err)
}

// encodeRecord lays a record out as: format byte 1, version, expiry (unix
// ms, 0: never), the number of index terms and each term with its length
// (varints), then the value.
func encodeRecord(r *Record) []byte {
	n := 1 + 3*binary.MaxVarintLen64 + len(r.Value)
	for _, t := range r.Index {
		n += binary.MaxVarintLen64 + len(t)
	}
	b := make([]byte, 0, n)
	b = append(b, 1)
	b = binary.AppendVarint(b, r.Version)
	var exp int64
	if !r.Expires.IsZero() {
		exp = r.Expires.UnixMilli()
	}
	b = binary.AppendVarint(b, exp)
	b = binary.AppendUvarint(b, uint64(len(r.Index)))
	for _, t := range r.Index {
		b = binary.AppendUvarint(b, uint64(len(t)))
		b = append(b, t...)
	}
	return append(b, r.Value...)
}

var errCorruptRecord = errors.New("corrupt record")

// decodeRecord reads what encodeRecord wrote (copying: bbolt's bytes are
// valid only inside the transaction).
func decodeRecord(key string, b []byte) (*Record, error) {
	if len(b) == 0 || b[0] != 1 {
		return nil, errCorruptRecord
	}
	b = b[1:]
	r := &Record{Key: key}
	var k int
	if r.Version, k = binary.Varint(b); k <= 0 {
		return nil, errCorruptRecord
	}
	b = b[k:]
	exp, k := binary.Varint(b)
	if k <= 0 {
		return nil, errCorruptRecord
	}
	b = b[k:]
	if exp != 0 {
		r.Expires = time.UnixMilli(exp)
	}
	nt, k := binary.Uvarint(b)
	if k <= 0 || nt > uint64(len(b)) {
		return nil, errCorruptRecord
	}
	b = b[k:]
	for range nt {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, errCorruptRecord
		}
		r.Index = append(r.Index, string(b[k:k+int(l)]))
		b = b[k+int(l):]
	}
	r.Value = bytes.Clone(b)
	if r.Value == nil {
		r.Value = []byte{}
	}
	return r, nil
}

// getIn reads ns/key inside tx; nil when absent.
func getIn(tx *bolt.Tx, ns, key string) (*Record, error) {
	b := tx.Bucket(recordBucket(ns))
	if b == nil {
		return nil, nil
	}
	v := b.Get([]byte(key))
	if v == nil {
		return nil, nil
	}
	r, err := decodeRecord(key, v)
	if err != nil {
		return nil, fmt.Errorf("record %s/%.40q: %w", ns, key, err)
	}
	return r, nil
}

// putIn writes r and its index entries, removing the index entries of old
// (the record it replaces, nil for none).
func putIn(tx *bolt.Tx, ns string, r, old *Record) error {
	rb, err := tx.CreateBucketIfNotExists(recordBucket(ns))
	if err != nil {
		return err
	}
	if err := rb.Put([]byte(r.Key), encodeRecord(r)); err != nil {
		return err
	}
	if old == nil && len(r.Index) == 0 {
		return nil
	}
	ib, err := tx.CreateBucketIfNotExists(indexBucket(ns))
	if err != nil {
		return err
	}
	if old != nil {
		for _, t := range old.Index {
			if err := ib.Delete(indexKey(t, r.Key)); err != nil {
				return err
			}
		}
	}
	for _, t := range r.Index {
		if err := ib.Put(indexKey(t, r.Key), nil); err != nil {
			return err
		}
	}
	return nil
}

// deleteIn removes r and its index entries.
func deleteIn(tx *bolt.Tx, ns string, r *Record) error {
	if b := tx.Bucket(recordBucket(ns)); b != nil {
		if err := b.Delete([]byte(r.Key)); err != nil {
			return err
		}
	}
	if ib := tx.Bucket(indexBucket(ns)); ib != nil {
		for _, t := range r.Index {
			if err := ib.Delete(indexKey(t, r.Key)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Create implements Store.
func (s *Bolt) Create(_ context.Context, ns string, r *Record) error {
	if err := checkRecord(ns, r); err != nil {
		return err
	}
	now := s.now()
	w := *r
	w.Version, w.Index = 1, uniqueTerms(r.Index)
	err := s.update("create", func(tx *bolt.Tx) error {
		old, err := getIn(tx, ns, r.Key)
		if err != nil {
			return err
		}
		if old != nil && live(old.Expires, now) {
			return fmt.Errorf("%w: %s/%.40q", ErrExists, ns, r.Key)
		}
		return putIn(tx, ns, &w, old)
	})
	if err == nil {
		r.Version = 1
	}
	return err
}

// Get implements Store.
func (s *Bolt) Get(_ context.Context, ns, key string) (*Record, error) {
	if err := checkNS(ns); err != nil {
		return nil, err
	}
	var r *Record
	err := s.view("get", func(tx *bolt.Tx) error {
		var err error
		r, err = getIn(tx, ns, key)
		return err
	})
	if err != nil {
		return nil, err
	}
	if r == nil || !live(r.Expires, s.now()) {
		return nil, ErrNotFound
	}
	return r, nil
}

// Update implements Store.
func (s *Bolt) Update(_ context.Context, ns string, r *Record) error {
	if err := checkRecord(ns, r); err != nil {
		return err
	}
	now := s.now()
	w := *r
	w.Version, w.Index = r.Version+1, uniqueTerms(r.Index)
	err := s.update("update", func(tx *bolt.Tx) error {
		old, err := getIn(tx, ns, r.Key)
		if err != nil {
			return err
		}
		if old == nil || !live(old.Expires, now) {
			return ErrNotFound
		}
		if old.Version != r.Version {
			return ErrConflict
		}
		return putIn(tx, ns, &w, old)
	})
	if err == nil {
		r.Version = w.Version
	}
	return err
}

// Delete implements Store.
func (s *Bolt) Delete(_ context.Context, ns, key string) error {
	if err := checkNS(ns); err != nil {
		return err
	}
	return s.update("delete", func(tx *bolt.Tx) error {
		old, err := getIn(tx, ns, key)
		if err != nil {
			return err
		}
		if old == nil {
			return errNoChange
		}
		return deleteIn(tx, ns, old)
	})
}

// indexed returns the records of ns carrying term (all when term is "").
func indexed(tx *bolt.Tx, ns, term string) ([]*Record, error) {
	var out []*Record
	if term == "" {
		b := tx.Bucket(recordBucket(ns))
		if b == nil {
			return nil, nil
		}
		err := b.ForEach(func(k, v []byte) error {
			r, err := decodeRecord(string(k), v)
			if err != nil {
				return fmt.Errorf("record %s/%.40q: %w", ns, k, err)
			}
			out = append(out, r)
			return nil
		})
		return out, err
	}
	ib := tx.Bucket(indexBucket(ns))
	if ib == nil {
		return nil, nil
	}
	prefix := indexKey(term, "")
	c := ib.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		r, err := getIn(tx, ns, string(k[len(prefix):]))
		if err != nil {
			return nil, err
		}
		if r != nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// List implements Store.
func (s *Bolt) List(_ context.Context, ns, term string) ([]*Record, error) {
	if err := checkNS(ns); err != nil {
		return nil, err
	}
	if term != "" {
		if err := checkKey("index term", term); err != nil {
			return nil, err
		}
	}
	now := s.now()
	var out []*Record
	err := s.view("list", func(tx *bolt.Tx) error {
		all, err := indexed(tx, ns, term)
		for _, r := range all {
			if live(r.Expires, now) {
				out = append(out, r)
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteIndexed implements Store.
func (s *Bolt) DeleteIndexed(_ context.Context, ns, term string) (int, error) {
	if err := checkNS(ns); err != nil {
		return 0, err
	}
	if err := checkKey("index term", term); err != nil {
		return 0, err
	}
	now := s.now()
	n := 0
	err := s.update("delete indexed", func(tx *bolt.Tx) error {
		n = 0
		all, err := indexed(tx, ns, term)
		if err != nil {
			return err
		}
		if len(all) == 0 {
			return errNoChange
		}
		for _, r := range all {
			if err := deleteIn(tx, ns, r); err != nil {
				return err
			}
			if live(r.Expires, now) {
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Once implements Store; markers are in the file, so they survive a
// restart.
func (s *Bolt) Once(_ context.Context, key string, ttl time.Duration) (bool, error) {
	if err := checkKey("marker key", key); err != nil {
		return false, err
	}
	now := s.now()
	first := false
	err := s.update("once", func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketOnce)
		if err != nil {
			return err
		}
		if v := b.Get([]byte(key)); len(v) == 8 && now.UnixMilli() < int64(binary.BigEndian.Uint64(v)) {
			return errNoChange
		}
		first = true
		return b.Put([]byte(key), binary.BigEndian.AppendUint64(nil, uint64(now.Add(ttl).UnixMilli())))
	})
	return first && err == nil, err
}

// Lock implements Store. The locks are in this process's memory: bbolt
// lets one process open the file, so no other instance shares the store.
func (s *Bolt) Lock(_ context.Context, name string, ttl time.Duration) (func(), bool, error) {
	if err := checkKey("lock name", name); err != nil {
		return func() {}, false, err
	}
	s.lockMu.Lock()
	defer s.lockMu.Unlock()
	now := s.now()
	if l, ok := s.locks[name]; ok && now.Before(l.until) {
		return func() {}, false, nil
	}
	token := randomToken()
	s.locks[name] = heldLock{token: token, until: now.Add(ttl)}
	return func() {
		s.lockMu.Lock()
		defer s.lockMu.Unlock()
		if l, ok := s.locks[name]; ok && l.token == token {
			delete(s.locks, name)
		}
	}, true, nil
}

// randomToken names one holder of a lock or one counter event.
func randomToken() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic("store: no randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Add implements Store: exact in memory, persisted every FlushInterval.
func (s *Bolt) Add(_ context.Context, key string, n, max int64, window time.Duration) (Usage, error) {
	return s.ctrs.add(key, s.now(), n, max, window)
}

// Count implements Store.
func (s *Bolt) Count(_ context.Context, key string, window time.Duration) (Usage, error) {
	return s.ctrs.count(key, s.now(), window)
}

// Reset implements Store; the reset is committed to the file before it
// returns.
func (s *Bolt) Reset(_ context.Context, key string) error {
	if err := checkKey("counter key", key); err != nil {
		return err
	}
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.ctrs.reset(key)
	return s.update("reset", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCounters)
		if b == nil || b.Get([]byte(key)) == nil {
			return errNoChange
		}
		return b.Delete([]byte(key))
	})
}

// loadCounters reads the persisted windows into memory (at open).
func (s *Bolt) loadCounters() error {
	now := s.now().UnixMilli()
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCounters)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			w, err := decodeWindow(v)
			if err != nil {
				return fmt.Errorf("store: counter %.40q in %s: %w", k, s.db.Path(), err)
			}
			w.prune(now, w.span)
			if w.total != 0 {
				s.ctrs.m[string(k)] = w
			}
			return nil
		})
	})
}

// Flush writes the counter windows changed since the last flush to the
// file in one transaction. It runs every FlushInterval and at Close.
func (s *Bolt) Flush() error { return s.flush(false) }

func (s *Bolt) flush(sweep bool) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	changed := s.ctrs.takeDirty(s.now(), sweep)
	if len(changed) == 0 {
		return nil
	}
	err := s.update("flush counters", func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketCounters)
		if err != nil {
			return err
		}
		for k, v := range changed {
			if v == nil {
				err = b.Delete([]byte(k))
			} else {
				err = b.Put([]byte(k), v)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.ctrs.markDirty(changed)
	}
	s.flushErr = err
	return err
}

// Sweep removes expired records (with their index entries), expired
// markers and empty counter windows. It runs every SweepInterval.
func (s *Bolt) Sweep() error {
	now := s.now()
	err := s.update("sweep", func(tx *bolt.Tx) error {
		changed := false
		err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			switch {
			case bytes.HasPrefix(name, []byte("r:")):
				ns := string(name[2:])
				var dead []*Record
				err := b.ForEach(func(k, v []byte) error {
					r, err := decodeRecord(string(k), v)
					if err == nil && !live(r.Expires, now) {
						dead = append(dead, r)
					}
					return nil
				})
				if err != nil {
					return err
				}
				for _, r := range dead {
					if err := deleteIn(tx, ns, r); err != nil {
						return err
					}
				}
				changed = changed || len(dead) > 0
			case bytes.Equal(name, bucketOnce):
				var dead [][]byte
				_ = b.ForEach(func(k, v []byte) error {
					if len(v) != 8 || now.UnixMilli() >= int64(binary.BigEndian.Uint64(v)) {
						dead = append(dead, bytes.Clone(k))
					}
					return nil
				})
				for _, k := range dead {
					if err := b.Delete(k); err != nil {
						return err
					}
				}
				changed = changed || len(dead) > 0
			}
			return nil
		})
		if err == nil && !changed {
			return errNoChange
		}
		return err
	})
	if err != nil {
		return err
	}
	return s.flush(true)
}

// background flushes counters and sweeps until Close.
func (s *Bolt) background() {
	defer close(s.done)
	flush := time.NewTicker(s.opt.FlushInterval)
	defer flush.Stop()
	sweep := time.NewTicker(s.opt.SweepInterval)
	defer sweep.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-flush.C:
			_ = s.Flush()
		case <-sweep.C:
			_ = s.Sweep()
		}
	}
}

// Ping implements Store: it fails when the file is closed or the last
// counter flush failed.
func (s *Bolt) Ping(context.Context) error {
	s.flushMu.Lock()
	ferr := s.flushErr
	s.flushMu.Unlock()
	if ferr != nil {
		return ferr
	}
	return s.view("ping", func(*bolt.Tx) error { return nil })
}

// Close implements Store: it stops the background work, writes the
// counters and closes the file. Calling it again does nothing.
func (s *Bolt) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		ferr := s.Flush()
		s.closeErr = errors.Join(ferr, s.db.Close())
	})
	return s.closeErr
}

// Interface guard.
var _ Store = (*Bolt)(nil)
