package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// event is n counted at a time (unix milliseconds); events of the same
// millisecond are merged.
type event struct {
	at int64
	n  int64
}

// window is one exact sliding window: its events in time order (from
// head on) and their sum.
type window struct {
	events []event
	head   int
	total  int64
	// span is the window length last used, so the sweeper and a restart
	// know when every event has expired.
	span int64
}

// prune drops the events that no longer count at now (those at or before
// now-span).
func (w *window) prune(now, span int64) {
	w.span = span
	cut := now - span
	for w.head < len(w.events) && w.events[w.head].at <= cut {
		w.total -= w.events[w.head].n
		w.head++
	}
	if w.head == len(w.events) {
		w.events, w.head = w.events[:0], 0
	} else if w.head > 64 && w.head*2 > len(w.events) {
		// Compact once most of the slice is dead, so memory stays
		// proportional to the live events.
		n := copy(w.events, w.events[w.head:])
		w.events, w.head = w.events[:n], 0
	}
}

// add counts n at now, or reports when an add of n would fit (zero: never).
func (w *window) add(now, span, n, max int64) Usage {
	w.prune(now, span)
	if max > 0 && w.total+n > max {
		u := Usage{Total: w.total}
		if n <= max {
			// The oldest events must expire until total+n <= max.
			excess := w.total + n - max
			for i := w.head; i < len(w.events); i++ {
				excess -= w.events[i].n
				if excess <= 0 {
					u.RetryAt = time.UnixMilli(w.events[i].at + span)
					break
				}
			}
		}
		return u
	}
	if n != 0 {
		if k := len(w.events); k > w.head && w.events[k-1].at == now {
			w.events[k-1].n += n
		} else {
			w.events = append(w.events, event{at: now, n: n})
		}
		w.total += n
	}
	return Usage{Total: w.total, Added: true}
}

// last is the time of the newest event (0 when empty).
func (w *window) last() int64 {
	if w.head == len(w.events) {
		return 0
	}
	return w.events[len(w.events)-1].at
}

// encode writes the window as: span, count, then each event as the delta
// of its time to the previous one and its n (all varints).
func (w *window) encode() []byte {
	live := w.events[w.head:]
	b := make([]byte, 0, 2*binary.MaxVarintLen64+len(live)*6)
	b = binary.AppendVarint(b, w.span)
	b = binary.AppendUvarint(b, uint64(len(live)))
	prev := int64(0)
	for _, e := range live {
		b = binary.AppendVarint(b, e.at-prev)
		b = binary.AppendVarint(b, e.n)
		prev = e.at
	}
	return b
}

var errCorruptWindow = errors.New("corrupt counter window")

// decodeWindow reads what encode wrote.
func decodeWindow(b []byte) (*window, error) {
	span, k := binary.Varint(b)
	if k <= 0 {
		return nil, errCorruptWindow
	}
	b = b[k:]
	count, k := binary.Uvarint(b)
	if k <= 0 || count > uint64(len(b)) {
		return nil, errCorruptWindow
	}
	b = b[k:]
	w := &window{span: span, events: make([]event, 0, count)}
	prev := int64(0)
	for range count {
		d, k := binary.Varint(b)
		if k <= 0 {
			return nil, errCorruptWindow
		}
		b = b[k:]
		n, k := binary.Varint(b)
		if k <= 0 {
			return nil, errCorruptWindow
		}
		b = b[k:]
		prev += d
		w.events = append(w.events, event{at: prev, n: n})
		w.total += n
	}
	if len(b) != 0 {
		return nil, errCorruptWindow
	}
	return w, nil
}

// windows are the counters of the embedded store, exact in memory. dirty
// names the keys changed since the last flush (nil value: reset).
type windows struct {
	mu    sync.Mutex
	m     map[string]*window
	dirty map[string]bool
}

func newWindows() *windows {
	return &windows{m: map[string]*window{}, dirty: map[string]bool{}}
}

// add is Store.Add in memory.
func (ws *windows) add(key string, now time.Time, n, max int64, span time.Duration) (Usage, error) {
	if err := checkCounter(key, n, span); err != nil {
		return Usage{}, err
	}
	ms, sp := now.UnixMilli(), span.Milliseconds()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.m[key]
	if w == nil {
		w = &window{}
		ws.m[key] = w
	}
	u := w.add(ms, sp, n, max)
	if u.Added && n != 0 {
		ws.dirty[key] = true
	}
	return u, nil
}

// count is Store.Count in memory.
func (ws *windows) count(key string, now time.Time, span time.Duration) (Usage, error) {
	if err := checkCounter(key, 0, span); err != nil {
		return Usage{}, err
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.m[key]
	if w == nil {
		return Usage{}, nil
	}
	w.prune(now.UnixMilli(), span.Milliseconds())
	return Usage{Total: w.total}, nil
}

// reset forgets key's window and reports whether there was one.
func (ws *windows) reset(key string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	delete(ws.m, key)
	delete(ws.dirty, key)
}

// takeDirty returns the changed windows encoded (nil: delete the key, its
// events have all expired) and clears the dirty set; sweep also drops the
// windows that are empty at now.
func (ws *windows) takeDirty(now time.Time, sweep bool) map[string][]byte {
	ms := now.UnixMilli()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	out := make(map[string][]byte, len(ws.dirty))
	if sweep {
		for k, w := range ws.m {
			if w.last() <= ms-w.span {
				delete(ws.m, k)
				out[k] = nil
			}
		}
	}
	for k := range ws.dirty {
		if w := ws.m[k]; w != nil {
			out[k] = w.encode()
		}
	}
	clear(ws.dirty)
	return out
}

// markDirty puts keys back into the dirty set after a failed flush.
func (ws *windows) markDirty(keys map[string][]byte) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for k := range keys {
		if _, ok := ws.m[k]; ok {
			ws.dirty[k] = true
		}
	}
}

// checkCounter validates the arguments of Add and Count.
func checkCounter(key string, n int64, span time.Duration) error {
	if err := checkKey("counter key", key); err != nil {
		return err
	}
	if span < time.Millisecond {
		return fmt.Errorf("%w: counter window %s is shorter than 1ms", ErrInvalid, span)
	}
	if n < 0 {
		return fmt.Errorf("%w: counter increment %d is negative", ErrInvalid, n)
	}
	return nil
}
