package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// FileStore keeps one JSON file per session in a directory, written
// atomically (temporary file + rename), so sessions survive a restart. It
// is meant for a single proxy instance: locks, the compare-and-swap and the
// sid/sub indexes (rebuilt from the files at start) are held in this
// process. Use Redis for several instances.
type FileStore struct {
	dir   string
	mu    sync.Mutex // serialises every read-modify-write
	locks map[string]lockEntry
	// index maps "sid:<sid>" and "sub:<sub>" to session ids; meta maps a
	// session id to its two index keys. The files stay the truth.
	index map[string]map[string]struct{}
	meta  map[string][2]string
	stop  chan struct{}
	done  chan struct{}
	now   func() time.Time
}

type lockEntry struct {
	token string
	until time.Time
}

// NewFileStore opens (creating) a session directory and starts a sweeper
// that removes expired files every sweep (0: every 10 minutes).
func NewFileStore(dir string, sweep time.Duration) (*FileStore, error) {
	for _, sub := range []string{"sessions", "once"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("session: creating file store %s: %w", dir, err)
		}
	}
	if sweep <= 0 {
		sweep = 10 * time.Minute
	}
	s := &FileStore{dir: dir, locks: map[string]lockEntry{}, index: map[string]map[string]struct{}{}, meta: map[string][2]string{},
		stop: make(chan struct{}), done: make(chan struct{}), now: time.Now}
	if err := s.each(func(_ string, d *Data) error { s.addIndex(d); return nil }); err != nil {
		return nil, err
	}
	go s.sweeper(sweep)
	return s, nil
}

func indexKeys(d *Data) [2]string {
	var k [2]string
	if d.SID != "" {
		k[0] = "sid:" + d.SID
	}
	if d.Subject != "" {
		k[1] = "sub:" + d.Subject
	}
	return k
}

// addIndex and dropIndex maintain the indexes; callers hold s.mu.
func (s *FileStore) addIndex(d *Data) {
	keys := indexKeys(d)
	for _, k := range keys {
		if k == "" {
			continue
		}
		if s.index[k] == nil {
			s.index[k] = map[string]struct{}{}
		}
		s.index[k][d.ID] = struct{}{}
	}
	s.meta[d.ID] = keys
}

func (s *FileStore) dropIndex(id string) {
	for _, k := range s.meta[id] {
		if set := s.index[k]; set != nil {
			delete(set, id)
			if len(set) == 0 {
				delete(s.index, k)
			}
		}
	}
	delete(s.meta, id)
}

func (s *FileStore) sweeper(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Sweep removes expired sessions and replay markers.
func (s *FileStore) Sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	_ = s.each(func(path string, d *Data) error {
		if !now.Before(d.Deadline()) {
			_ = os.Remove(path)
			s.dropIndex(d.ID)
		}
		return nil
	})
	entries, _ := os.ReadDir(filepath.Join(s.dir, "once"))
	for _, e := range entries {
		p := filepath.Join(s.dir, "once", e.Name())
		if until, err := readOnce(p); err != nil || !now.Before(until) {
			_ = os.Remove(p)
		}
	}
}

// validID accepts only the URL-safe base64 ids this package makes, so an
// id can never name another path.
func validID(id string) bool {
	if len(id) < 16 || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (s *FileStore) path(id string) (string, error) {
	if !validID(id) {
		return "", ErrNotFound
	}
	return filepath.Join(s.dir, "sessions", id+".json"), nil
}

func (s *FileStore) read(path string) (*Data, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("session: reading %s: %w", path, err)
	}
	var d Data
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("session: %s is corrupt: %w", path, err)
	}
	return &d, nil
}

func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("session: writing %s: %w", path, err)
	}
	_, werr := tmp.Write(b)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("session: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("session: writing %s: %w", path, err)
	}
	return nil
}

func (s *FileStore) write(path string, d *Data) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("session: encoding session: %w", err)
	}
	return writeAtomic(path, b)
}

// Create implements Store.
func (s *FileStore) Create(_ context.Context, d *Data) error {
	p, err := s.path(d.ID)
	if err != nil {
		return fmt.Errorf("session: invalid session id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(p); err == nil {
		return fmt.Errorf("session: session id already exists")
	}
	d.Version = 1
	if err := s.write(p, d); err != nil {
		return err
	}
	s.addIndex(d)
	return nil
}

// Get implements Store.
func (s *FileStore) Get(_ context.Context, id string) (*Data, error) {
	p, err := s.path(id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.read(p)
	if err != nil {
		return nil, err
	}
	if !s.now().Before(d.Deadline()) {
		_ = os.Remove(p)
		s.dropIndex(id)
		return nil, ErrNotFound
	}
	return d, nil
}

// Update implements Store.
func (s *FileStore) Update(_ context.Context, d *Data) error {
	p, err := s.path(d.ID)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.read(p)
	if err != nil {
		return err
	}
	if cur.Version != d.Version {
		return ErrConflict
	}
	d.Version++
	if err := s.write(p, d); err != nil {
		d.Version--
		return err
	}
	return nil
}

// Delete implements Store.
func (s *FileStore) Delete(_ context.Context, id string) error {
	p, err := s.path(id)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("session: deleting session: %w", err)
	}
	s.dropIndex(id)
	return nil
}

// each calls fn for every readable session file. Callers hold s.mu.
func (s *FileStore) each(fn func(path string, d *Data) error) error {
	entries, err := os.ReadDir(filepath.Join(s.dir, "sessions"))
	if err != nil {
		return fmt.Errorf("session: listing %s: %w", s.dir, err)
	}
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".json" {
			continue
		}
		p := filepath.Join(s.dir, "sessions", e.Name())
		d, err := s.read(p)
		if err != nil {
			continue
		}
		if err := fn(p, d); err != nil {
			return err
		}
	}
	return nil
}

// deleteIndexed removes the sessions listed under index key k whose file
// still matches (the file is the truth).
func (s *FileStore) deleteIndexed(k string, match func(*Data) bool) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id := range s.index[k] {
		p, err := s.path(id)
		if err != nil {
			s.dropIndex(id)
			continue
		}
		d, err := s.read(p)
		if errors.Is(err, ErrNotFound) {
			s.dropIndex(id)
			continue
		}
		if err != nil || !match(d) {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("session: deleting session: %w", err)
		}
		s.dropIndex(id)
		n++
	}
	return n, nil
}

// DeleteBySID implements Store.
func (s *FileStore) DeleteBySID(_ context.Context, sid string) (int, error) {
	if sid == "" {
		return 0, nil
	}
	return s.deleteIndexed("sid:"+sid, func(d *Data) bool { return d.SID == sid })
}

// DeleteBySubject implements Store.
func (s *FileStore) DeleteBySubject(_ context.Context, sub string) (int, error) {
	if sub == "" {
		return 0, nil
	}
	return s.deleteIndexed("sub:"+sub, func(d *Data) bool { return d.Subject == sub })
}

// Lock implements Store (in-process).
func (s *FileStore) Lock(_ context.Context, name string, ttl time.Duration) (func(), bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if l, ok := s.locks[name]; ok && now.Before(l.until) {
		return func() {}, false, nil
	}
	token := RandomID(12)
	s.locks[name] = lockEntry{token: token, until: now.Add(ttl)}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if l, ok := s.locks[name]; ok && l.token == token {
			delete(s.locks, name)
		}
	}, true, nil
}

func readOnce(p string) (time.Time, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return time.Time{}, err
	}
	var until time.Time
	err = until.UnmarshalText(b)
	return until, err
}

// Once implements Store; markers are files so they survive a restart.
func (s *FileStore) Once(_ context.Context, key string, ttl time.Duration) (bool, error) {
	sum := sha256.Sum256([]byte(key))
	p := filepath.Join(s.dir, "once", hex.EncodeToString(sum[:]))
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if until, err := readOnce(p); err == nil && now.Before(until) {
		return false, nil
	}
	b, _ := now.Add(ttl).MarshalText()
	if err := writeAtomic(p, b); err != nil {
		return false, err
	}
	return true, nil
}

// Close stops the sweeper.
func (s *FileStore) Close() error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	return nil
}

var _ Store = (*FileStore)(nil)
