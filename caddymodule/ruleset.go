package caddymodule

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/crmguard/crmguard/rules"
)

// LoadFunc compiles a rule file's bytes; name is used in error messages.
type LoadFunc func(name string, data []byte) (*rules.Set, error)

// ruleSource holds the running rule set of one rules file and replaces it
// when the file changes and compiles. Readers call Current, which is one
// atomic load: a request sees either the old or the new set, never a mix.
type ruleSource struct {
	path     string
	load     LoadFunc
	interval time.Duration

	cur atomic.Pointer[rules.Set]

	mu      sync.Mutex // serialises reloads
	sum     [sha256.Size]byte
	log     atomic.Pointer[zap.Logger]
	lastErr string

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	// listeners are told of every new set installed (audit_version.go).
	listeners reloadListeners
}

// newRuleSource reads and compiles path; it fails when the file cannot be
// read or does not compile.
func newRuleSource(path string, load LoadFunc, interval time.Duration, log *zap.Logger) (*ruleSource, error) {
	if load == nil {
		load = func(name string, data []byte) (*rules.Set, error) { return rules.Load(name, data) }
	}
	s := &ruleSource{path: path, load: load, interval: interval}
	s.log.Store(log)
	if _, err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Current returns the running rule set.
func (s *ruleSource) Current() *rules.Set { return s.cur.Load() }

// reload reads the file and, when its content changed and compiles,
// replaces the running set. changed is true when a new set was installed.
// On a compile error the running set stays and the error is returned.
func (s *ruleSource) reload() (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.path)
	if err != nil {
		return false, fmt.Errorf("caddymodule: reading rules file: %w", err)
	}
	sum := sha256.Sum256(data)
	if s.cur.Load() != nil && sum == s.sum {
		return false, nil
	}
	set, err := s.load(s.path, data)
	if err != nil {
		// Remember the bad content so a broken file is reported once,
		// not on every poll; fixing it changes the sum again.
		s.sum = sum
		return false, err
	}
	if set == nil {
		s.sum = sum
		return false, fmt.Errorf("caddymodule: rules file %s compiled to no rule set", s.path)
	}
	s.sum = sum
	old := s.cur.Swap(set)
	if old != nil {
		s.listeners.notify(s.path, old, set)
	}
	return true, nil
}

// check is one poll of the watcher: it reloads and logs the outcome.
func (s *ruleSource) check() {
	changed, err := s.reload()
	log := s.log.Load()
	switch {
	case err != nil:
		msg := err.Error()
		if msg != s.lastErr {
			s.lastErr = msg
			log.Error("rules file did not load; the running rules stay in force",
				zap.String("file", s.path), zap.Error(err))
		}
	case changed:
		s.lastErr = ""
		set := s.Current()
		fields := []zap.Field{zap.String("file", s.path)}
		if ws := set.Warnings(); len(ws) > 0 {
			fields = append(fields, zap.Int("warnings", len(ws)))
		}
		log.Info("rules file reloaded", fields...)
	}
}

// watch polls the file until Destruct. Polling (content hash every
// interval) needs no new dependency and sees edits made by renaming a new
// file over the old one, which inotify watches on the file itself miss.
func (s *ruleSource) watch() {
	s.stop = make(chan struct{})
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		t := time.NewTicker(s.interval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.check()
			}
		}
	}()
}

// Destruct stops the watcher (the last configuration using the file is gone).
func (s *ruleSource) Destruct() error {
	s.stopOnce.Do(func() {
		if s.stop != nil {
			close(s.stop)
			<-s.done
		}
	})
	return nil
}

// ruleSources shares one watcher and running set per rules file across
// configuration reloads.
var ruleSources = caddy.NewUsagePool()

// ruleSourceKey names a rules file in ruleSources.
// suffix tells apart the same file loaded with different options.
func ruleSourceKey(path, suffix string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("caddymodule: rules file %q: %w", path, err)
	}
	return "rules:" + abs + suffix, nil
}

// acquireRuleSource returns the shared source for path, starting its
// watcher on first use. On a configuration reload (the source exists
// already) the file is read again now, so `caddy reload` applies the file
// at once and is refused when the file does not compile.
func acquireRuleSource(path, keySuffix string, load LoadFunc, interval time.Duration, log *zap.Logger) (*ruleSource, string, error) {
	key, err := ruleSourceKey(path, keySuffix)
	if err != nil {
		return nil, "", err
	}
	v, loaded, err := ruleSources.LoadOrNew(key, func() (caddy.Destructor, error) {
		s, err := newRuleSource(path, load, interval, log)
		if err != nil {
			return nil, err
		}
		if interval > 0 {
			s.watch()
		}
		return s, nil
	})
	if err != nil {
		return nil, "", err
	}
	s := v.(*ruleSource)
	if loaded {
		s.log.Store(log)
		if _, err := s.reload(); err != nil {
			_, _ = ruleSources.Delete(key)
			return nil, "", err
		}
	}
	return s, key, nil
}

// errNoRules is returned when the handler has no rules file.
var errNoRules = errors.New("caddymodule: crm_guard needs a rules file (the `rules` subdirective)")
