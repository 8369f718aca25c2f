package auditlog

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"strconv"
)

// LinkSize is the size of a link in bytes (HMAC-SHA256).
const LinkSize = sha256.Size

const (
	chainKey  = `,"chain":"`
	prevKey   = `,"chain_prev":"`
	seqKey    = `,"seq":`
	suffixLen = len(chainKey) + 2*LinkSize + len(`"}`)
)

// State is where a chain stands: the last line's seq and link.
type State struct {
	// Seq is the seq of the last line (0: no line yet).
	Seq uint64
	// Link is the last line's link; nil when the next line starts a chain.
	Link []byte
}

// Chain seals audit events into chained lines. It is not safe for
// concurrent use: the writer holds its own lock around it.
type Chain struct {
	mac     hash.Hash
	sum     []byte // the link being made (kept: a local would escape through hash.Hash)
	prev    [LinkSize]byte
	hasPrev bool
	seq     uint64
}

// NewChain returns a chain keyed with key that continues from st.
func NewChain(key []byte, st State) *Chain {
	c := &Chain{mac: hmac.New(sha256.New, key), seq: st.Seq}
	if len(st.Link) == LinkSize {
		copy(c.prev[:], st.Link)
		c.hasPrev = true
	}
	return c
}

// SetKey changes the key of the links that follow; the chain continues.
func (c *Chain) SetKey(key []byte) { c.mac = hmac.New(sha256.New, key) }

// State returns where the chain stands.
func (c *Chain) State() State {
	st := State{Seq: c.seq}
	if c.hasPrev {
		st.Link = append([]byte(nil), c.prev[:]...)
	}
	return st
}

// Break makes the next line start a new chain (after lines were written
// without a link, for example).
func (c *Chain) Break() { c.hasPrev = false }

// Append appends event, a JSON object, as one chained line ending in a
// newline to dst. fileStart says the line is the first of its file: it then
// carries chain_prev, as does a line that starts the chain.
func (c *Chain) Append(dst, event []byte, fileStart bool) []byte {
	start := len(dst)
	return c.seal(append(dst, event...), start, fileStart)
}

// Seal turns event, a JSON object, into its chained line in place
// (growing it as append does) and returns the line.
func (c *Chain) Seal(event []byte, fileStart bool) []byte {
	return c.seal(event, 0, fileStart)
}

func (c *Chain) seal(b []byte, start int, fileStart bool) []byte {
	for len(b) > start && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	b = b[:len(b)-1]       // the closing brace
	if len(b)-start == 1 { // "{}": no member before seq
		b = append(b, seqKey[1:]...)
	} else {
		b = append(b, seqKey...)
	}
	c.seq++
	b = strconv.AppendUint(b, c.seq, 10)
	if fileStart || !c.hasPrev {
		b = append(b, prevKey...)
		if c.hasPrev {
			b = hex.AppendEncode(b, c.prev[:])
		}
		b = append(b, '"')
	}
	c.sum = c.link(c.sum[:0], c.prevBytes(), b[start:])
	copy(c.prev[:], c.sum)
	c.hasPrev = true
	b = append(b, chainKey...)
	b = hex.AppendEncode(b, c.sum)
	return append(b, '"', '}', '\n')
}

func (c *Chain) prevBytes() []byte {
	if !c.hasPrev {
		return nil
	}
	return c.prev[:]
}

// link appends HMAC(key, prev || body) to dst.
func (c *Chain) link(dst, prev, body []byte) []byte {
	c.mac.Reset()
	c.mac.Write(prev)
	c.mac.Write(body)
	return c.mac.Sum(dst)
}

// Line is a chained line taken apart.
type Line struct {
	// Body is the part of the line the link covers.
	Body []byte
	// Seq is the line's seq.
	Seq uint64
	// HasPrev is true when the line carries chain_prev (a file's first
	// line, or the start of a chain).
	HasPrev bool
	// Prev is chain_prev decoded (nil: the chain starts here).
	Prev []byte
	// Link is the line's own link.
	Link [LinkSize]byte
}

// ParseLine takes a chained line (without its newline) apart. ok is false
// when the line does not end the way the writer ends chained lines.
func ParseLine(line []byte) (l Line, ok bool) {
	line = bytes.TrimRight(line, "\r\n")
	n := len(line)
	if n < suffixLen+len(seqKey) || line[n-1] != '}' || line[n-2] != '"' {
		return l, false
	}
	cut := n - suffixLen
	if string(line[cut:cut+len(chainKey)]) != chainKey {
		return l, false
	}
	if _, err := hex.Decode(l.Link[:], line[cut+len(chainKey):n-2]); err != nil {
		return l, false
	}
	l.Body = line[:cut]
	rest := l.Body
	if len(rest) > 0 && rest[len(rest)-1] == '"' {
		// ,"chain_prev":"" or ,"chain_prev":"<hex>"
		var hexPart []byte
		switch {
		case bytes.HasSuffix(rest, []byte(prevKey+`"`)):
			rest = rest[:len(rest)-len(prevKey)-1]
		case len(rest) >= len(prevKey)+2*LinkSize+1 && string(rest[len(rest)-1-2*LinkSize-len(prevKey):len(rest)-1-2*LinkSize]) == prevKey:
			hexPart = rest[len(rest)-1-2*LinkSize : len(rest)-1]
			rest = rest[:len(rest)-1-2*LinkSize-len(prevKey)]
		default:
			return l, false
		}
		l.HasPrev = true
		if hexPart != nil {
			l.Prev = make([]byte, LinkSize)
			if _, err := hex.Decode(l.Prev, hexPart); err != nil {
				return l, false
			}
		}
	}
	i := len(rest)
	for i > 0 && rest[i-1] >= '0' && rest[i-1] <= '9' {
		i--
	}
	if i == len(rest) {
		return l, false
	}
	seq, err := strconv.ParseUint(string(rest[i:]), 10, 64)
	if err != nil {
		return l, false
	}
	switch {
	case bytes.HasSuffix(rest[:i], []byte(seqKey)):
	case bytes.HasSuffix(rest[:i], []byte(`{"seq":`)):
	default:
		return l, false
	}
	l.Seq = seq
	return l, true
}

// Verifier checks links with one key. It is not safe for concurrent use.
type Verifier struct {
	mac hash.Hash
	sum []byte
}

// NewVerifier returns a verifier for links made with key.
func NewVerifier(key []byte) *Verifier { return &Verifier{mac: hmac.New(sha256.New, key)} }

// Check reports whether l's link is HMAC(key, prev || body).
func (v *Verifier) Check(prev []byte, l *Line) bool {
	v.mac.Reset()
	v.mac.Write(prev)
	v.mac.Write(l.Body)
	v.sum = v.mac.Sum(v.sum[:0])
	return hmac.Equal(v.sum, l.Link[:])
}
