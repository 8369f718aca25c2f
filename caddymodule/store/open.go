package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Location is where a store lives: a bbolt file or a Redis server.
type Location struct {
	// Path is the absolute path of the bbolt file ("" for Redis).
	Path string
	// URL is the redis://, rediss:// or unix:// URL ("" for a file).
	URL string
}

// DefaultPath is the embedded store's file under Caddy's data directory.
func DefaultPath(dataDir string) string {
	return filepath.Join(dataDir, "crmguard", "state.db")
}

// ParseLocation reads a `store` setting:
//
//	""  or "file"          the default file, DefaultPath(dataDir)
//	"file:<dir>"           <dir>/state.db (the former `session { store
//	                       file <dir> }`, which named a directory)
//	redis://... rediss://... unix://...
//	                       a Redis (or Valkey) server
//	anything else          the path of the file (relative: to the
//	                       working directory)
func ParseLocation(spec, dataDir string) (Location, error) {
	switch {
	case spec == "" || spec == "file":
		return fileLocation(DefaultPath(dataDir))
	case strings.HasPrefix(spec, "file:"):
		dir := strings.TrimPrefix(spec, "file:")
		if dir == "" {
			return Location{}, fmt.Errorf("store: %q names no directory", spec)
		}
		return fileLocation(filepath.Join(dir, "state.db"))
	case strings.HasPrefix(spec, "redis://"), strings.HasPrefix(spec, "rediss://"), strings.HasPrefix(spec, "unix://"):
		if _, err := parseRedisURL(spec); err != nil {
			return Location{}, err
		}
		return Location{URL: spec}, nil
	case strings.Contains(spec, "://"):
		return Location{}, fmt.Errorf("store: unknown store %q (want a file path, redis://, rediss:// or unix://)", redactURL(spec))
	}
	return fileLocation(spec)
}

func fileLocation(p string) (Location, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return Location{}, fmt.Errorf("store: file %s: %w", p, err)
	}
	if fi, err := os.Stat(abs); err == nil && fi.IsDir() {
		return Location{}, fmt.Errorf("store: %s is a directory; name the store's file, e.g. %s", abs, filepath.Join(abs, "state.db"))
	}
	return Location{Path: abs}, nil
}

// String names the location for messages (a Redis password is hidden).
func (l Location) String() string {
	if l.URL != "" {
		return redactURL(l.URL)
	}
	return l.Path
}

// IsZero reports whether l names no store.
func (l Location) IsZero() bool { return l.Path == "" && l.URL == "" }

func (l Location) key() string {
	if l.URL != "" {
		return "redis:" + l.URL
	}
	return "file:" + l.Path
}

// open makes a new, unshared store at l.
func (l Location) open(opt Options) (Store, error) {
	switch {
	case l.URL != "":
		return OpenRedis(l.URL, opt)
	case l.Path != "":
		return OpenBolt(l.Path, opt)
	}
	return nil, fmt.Errorf("store: no location")
}

// pool shares one store per location among the guard's config
// generations: bbolt locks its file, so a config reload must not open it
// a second time, and a Redis pool is not worth repeating.
var pool = caddy.NewUsagePool()

type pooled struct{ Store }

// Destruct closes the store when its last user is gone.
func (p pooled) Destruct() error { return p.Store.Close() }

// shared is one use of a pooled store; Close ends this use.
type shared struct {
	Store
	key  string
	once sync.Once
}

// Close releases this use; the last use closes the store.
func (s *shared) Close() error {
	var err error
	s.once.Do(func() { _, err = pool.Delete(s.key) })
	return err
}

func openShared(l Location, opt Options) (*shared, error) {
	if l.IsZero() {
		return nil, fmt.Errorf("store: no location")
	}
	v, _, err := pool.LoadOrNew(l.key(), func() (caddy.Destructor, error) {
		s, err := l.open(opt)
		if err != nil {
			return nil, err
		}
		return pooled{s}, nil
	})
	if err != nil {
		return nil, err
	}
	return &shared{Store: v.(pooled).Store, key: l.key()}, nil
}

// Open returns the store at l, shared with every other Open of the same
// location in this process (the Options of the first one apply). Close
// releases this use; the last one closes the store (for Bolt: writes the
// counters and releases the file).
func Open(l Location, opt Options) (Store, error) {
	s, err := openShared(l, opt)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// LazyRetry is how long a Lazy store that failed to open answers with
// that failure before it tries again.
const LazyRetry = 5 * time.Second

// Lazy returns a Store that opens l (as Open does) at its first use, not
// now: a guard whose configuration and rules never need state does not
// create or lock the file. A failure to open is ErrUnavailable, tried
// again after LazyRetry.
func Lazy(l Location, opt Options) Store {
	return &lazy{loc: l, opt: opt}
}

type lazy struct {
	loc Location
	opt Options
	s   atomic.Pointer[shared]

	mu     sync.Mutex
	err    error
	retry  time.Time
	closed bool
}

func (l *lazy) get() (Store, error) {
	if s := l.s.Load(); s != nil {
		return s, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.s.Load(); s != nil {
		return s, nil
	}
	if l.closed {
		return nil, fmt.Errorf("%w: %s is closed", ErrUnavailable, l.loc)
	}
	if l.err != nil && time.Now().Before(l.retry) {
		return nil, l.err
	}
	s, err := openShared(l.loc, l.opt)
	if err != nil {
		l.err, l.retry = fmt.Errorf("%w: opening %s: %w", ErrUnavailable, l.loc, err), time.Now().Add(LazyRetry)
		return nil, l.err
	}
	l.err = nil
	l.s.Store(s)
	return s, nil
}

func (l *lazy) Create(ctx context.Context, ns string, r *Record) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.Create(ctx, ns, r)
}

func (l *lazy) Get(ctx context.Context, ns, key string) (*Record, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.Get(ctx, ns, key)
}

func (l *lazy) Update(ctx context.Context, ns string, r *Record) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.Update(ctx, ns, r)
}

func (l *lazy) Delete(ctx context.Context, ns, key string) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.Delete(ctx, ns, key)
}

func (l *lazy) List(ctx context.Context, ns, term string) ([]*Record, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.List(ctx, ns, term)
}

func (l *lazy) DeleteIndexed(ctx context.Context, ns, term string) (int, error) {
	s, err := l.get()
	if err != nil {
		return 0, err
	}
	return s.DeleteIndexed(ctx, ns, term)
}

func (l *lazy) Once(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	s, err := l.get()
	if err != nil {
		return false, err
	}
	return s.Once(ctx, key, ttl)
}

func (l *lazy) Lock(ctx context.Context, name string, ttl time.Duration) (func(), bool, error) {
	s, err := l.get()
	if err != nil {
		return func() {}, false, err
	}
	return s.Lock(ctx, name, ttl)
}

func (l *lazy) Add(ctx context.Context, key string, n, max int64, window time.Duration) (Usage, error) {
	s, err := l.get()
	if err != nil {
		return Usage{}, err
	}
	return s.Add(ctx, key, n, max, window)
}

func (l *lazy) Count(ctx context.Context, key string, window time.Duration) (Usage, error) {
	s, err := l.get()
	if err != nil {
		return Usage{}, err
	}
	return s.Count(ctx, key, window)
}

func (l *lazy) Reset(ctx context.Context, key string) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.Reset(ctx, key)
}

// Name is the location, without opening the store.
func (l *lazy) Name() string { return l.loc.String() }

func (l *lazy) Ping(ctx context.Context) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.Ping(ctx)
}

// Close releases the store if it was opened; later calls fail.
func (l *lazy) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if s := l.s.Swap(nil); s != nil {
		return s.Close()
	}
	return nil
}

// Interface guards.
var (
	_ Store = (*shared)(nil)
	_ Store = (*lazy)(nil)
)
