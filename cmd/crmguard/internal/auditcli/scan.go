package auditcli

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/crmguard/crmguard/caddymodule/auditlog"
)

// Scans of inputs over progressMin bytes report their progress every
// progressEvery (variables for the tests).
var (
	progressMin   int64 = 64 << 20
	progressEvery       = 2 * time.Second
)

// scanStats counts what a scan read.
type scanStats struct {
	// Lines counts the lines read.
	Lines int64
	// Events counts the lines that held an audit event.
	Events int64
	// Bytes is the size of the input files on disk.
	Bytes int64
}

// scanFiles reads every line of files (plain or gzip-compressed, in the
// order given) and hands each audit event (the file sink's line, or the
// object under "event" of a Caddy log entry) to fn. The slice is valid
// until fn returns. Lines that hold no event are counted and skipped. On a
// large input it reports its progress on progress (nil: never) every
// progressEvery.
func scanFiles(files []string, progress io.Writer, fn func(ev []byte)) (scanStats, error) {
	var st scanStats
	for _, name := range files {
		fi, err := os.Stat(name)
		if err != nil {
			return st, fmt.Errorf("audit: %w", err)
		}
		st.Bytes += fi.Size()
	}
	if st.Bytes < progressMin {
		progress = nil
	}
	var done int64 // bytes of the files already read
	last := time.Now()
	for _, name := range files {
		r, err := auditlog.Open(name)
		if err != nil {
			return st, err
		}
		for {
			line, ok := r.Next()
			if !ok {
				break
			}
			st.Lines++
			if ev, ok := auditlog.Event(line); ok {
				st.Events++
				fn(ev)
			}
			if progress != nil && st.Lines&0xffff == 0 && time.Since(last) >= progressEvery {
				last = time.Now()
				read := done + r.Offset()
				fmt.Fprintf(progress, "audit: %d of %d MB read (%d%%), %d events\n", read>>20, st.Bytes>>20, read*100/st.Bytes, st.Events)
			}
		}
		done += r.Size()
		err = r.Err()
		r.Close()
		if err != nil {
			return st, err
		}
	}
	return st, nil
}
