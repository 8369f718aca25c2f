package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/crmguard/crmguard/caddymodule/auditlog"
)

// fileSink appends one JSON line per event to a file. One write call per
// line under a mutex keeps lines whole under concurrency. With a chain
// key every line is sealed into the file's hash chain (package auditlog);
// with a roll size the file is renamed aside once it is that big and a new
// one is started, the chain running on across the files.
type fileSink struct {
	path string
	log  *zap.Logger

	mu        sync.Mutex
	f         *os.File
	size      int64           // bytes in the file as far as this sink knows
	chain     *auditlog.Chain // nil: lines are written without a link
	state     auditlog.State  // where the chain stands when chain is nil
	fileStart bool            // the next line is the first of its file
	rollSize  int64
	now       func() time.Time
}

// auditFileOptions are the options of an audit file that a configuration
// may change while the file stays open.
type auditFileOptions struct {
	// ChainKey keys the hash chain; nil writes lines without links.
	ChainKey []byte
	// RollSize rolls the file once it has reached this many bytes; 0
	// never rolls.
	RollSize int64
}

// configure applies the options of the configuration being provisioned.
// A changed key takes effect on the next line; the chain runs on.
func (s *fileSink) configure(o auditFileOptions, log *zap.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rollSize = o.RollSize
	if log != nil {
		s.log = log
	}
	switch {
	case o.ChainKey == nil && s.chain != nil:
		s.state = s.chain.State()
		s.chain = nil
	case o.ChainKey != nil && s.chain == nil:
		s.chain = auditlog.NewChain(o.ChainKey, s.state)
	case o.ChainKey != nil:
		s.chain.SetKey(o.ChainKey)
	}
}

// Write appends ev as one line.
func (s *fileSink) Write(ev *AuditEvent) error {
	bp := linePool.Get().(*[]byte)
	event := ev.appendJSON((*bp)[:0])
	s.mu.Lock()
	defer s.mu.Unlock()
	line := event
	if s.f == nil {
		return s.release(bp, line, fmt.Errorf("caddymodule: audit file %s is closed", s.path))
	}
	if s.chain != nil {
		s.noticeTruncation()
	}
	if s.rollSize > 0 && s.size >= s.rollSize {
		s.roll()
	}
	if s.chain != nil {
		line = s.chain.Seal(event, s.fileStart)
	} else {
		line = append(event, '\n')
		s.state = auditlog.State{Seq: s.state.Seq} // a line without a link breaks the chain
	}
	n, err := s.f.Write(line)
	s.size += int64(n)
	if err != nil {
		return s.release(bp, line, fmt.Errorf("caddymodule: writing audit event to %s: %w", s.path, err))
	}
	s.fileStart = false
	return s.release(bp, line, nil)
}

func (s *fileSink) release(bp *[]byte, b []byte, err error) error {
	*bp = b[:0]
	linePool.Put(bp)
	return err
}

// noticeTruncation starts a new file in the chain when the file was
// truncated in place (logrotate's copytruncate): the next line carries
// chain_prev so the copy and the file chain on.
// (Seek to the end tells the size without the allocation of Stat; writes
// append whatever the offset.)
func (s *fileSink) noticeTruncation() {
	size, err := s.f.Seek(0, io.SeekEnd)
	if err != nil || size >= s.size {
		return
	}
	s.size = size
	s.fileStart = true
}

// roll renames the file aside (name-2006-01-02T15-04-05.000.ext, as
// Caddy's own log rolling names files) and starts a new one. If that
// fails the sink keeps writing to the file it has and says so on its log.
func (s *fileSink) roll() {
	rolled := rolledName(s.path, s.now().UTC())
	for i := 1; ; i++ {
		if _, err := os.Lstat(rolled); errors.Is(err, fs.ErrNotExist) {
			break
		}
		rolled = rolledName(s.path, s.now().UTC()) + fmt.Sprintf(".%d", i)
	}
	if err := os.Rename(s.path, rolled); err != nil {
		s.log.Error("could not roll the audit file; writing on to it", zap.String("file", s.path), zap.Error(err))
		return
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		s.log.Error("could not open a new audit file after rolling; writing on to the rolled one",
			zap.String("file", s.path), zap.String("rolled", rolled), zap.Error(err))
		return
	}
	_ = s.f.Close()
	s.f, s.size, s.fileStart = f, 0, true
}

// rolledName is the name a rolled file gets: the time before the
// extension.
func rolledName(path string, t time.Time) string {
	dir, base := filepath.Split(path)
	ext := filepath.Ext(base)
	name := strings.TrimSuffix(base, ext)
	return filepath.Join(dir, name+"-"+t.Format("2006-01-02T15-04-05.000")+ext)
}

// Destruct closes the file when the last configuration using it is gone.
func (s *fileSink) Destruct() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// auditFiles shares one open file per path across config reloads.
var auditFiles = caddy.NewUsagePool()

// openAuditFile returns the shared sink for path, opening the file for
// appending (created with mode 0600, parent directories 0700) on first use.
// An existing file's last line tells where its chain stands, so a restart
// continues the chain; a last line cut short by a crash is ended first.
func openAuditFile(path string) (*fileSink, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("caddymodule: audit file %q: %w", path, err)
	}
	v, _, err := auditFiles.LoadOrNew(abs, func() (caddy.Destructor, error) {
		if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
			return nil, fmt.Errorf("caddymodule: creating the audit directory: %w", err)
		}
		f, err := os.OpenFile(abs, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("caddymodule: opening audit file: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("caddymodule: audit file %s: %w", abs, err)
		}
		st, cut, err := auditlog.ReadState(f, fi.Size())
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("caddymodule: audit file %s: %w", abs, err)
		}
		size := fi.Size()
		if cut {
			if _, err := f.Write([]byte{'\n'}); err != nil {
				f.Close()
				return nil, fmt.Errorf("caddymodule: ending the cut last line of audit file %s: %w", abs, err)
			}
			size++
		}
		return &fileSink{path: abs, f: f, size: size, state: st, fileStart: size == 0, log: zap.NewNop(), now: time.Now}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*fileSink), nil
}

// releaseAuditFile drops one use of the file at path.
func releaseAuditFile(path string) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return
	}
	_, _ = auditFiles.Delete(abs)
}
