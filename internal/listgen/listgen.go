// Package listgen generates large CRM list answers as streams, for the
// tests and benchmarks of streamed rewriting: the bytes are made as they
// are read, so an answer of a gigabyte never sits in memory.
//
// Every record is a customer with the fields the example rules treat;
// records alternate between the teams "east" and "west" and the owners
// "u1" and "u9", and every one holds the phone number Phone (a value that
// must never reach a client raw).
package listgen

import (
	"fmt"
	"io"
)

// Phone is the phone number every record holds.
const Phone = "13800138000"

// Secret is the prefix of every record's secret (then its number).
const Secret = "s-"

// Format is the shape of a generated answer.
type Format int

const (
	// JSON is {"list":[records...],"total":0}.
	JSON Format = iota
	// CSV is a header row and one row per record, with CRLF line ends.
	CSV
)

// New returns a reader of a generated answer of at least size bytes (it
// ends after the record that reaches size).
func New(f Format, size int64) io.Reader {
	return &reader{f: f, size: size}
}

type reader struct {
	f     Format
	size  int64
	n     int64 // bytes made so far
	i     int   // records made so far
	buf   []byte
	done  bool
	ended bool
}

// Read makes the next records as needed.
func (r *reader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.ended {
			return 0, io.EOF
		}
		r.fill()
	}
	k := copy(p, r.buf)
	r.buf = r.buf[k:]
	return k, nil
}

// fill makes the next piece: the start, a few records, or the end.
func (r *reader) fill() {
	b := r.buf[:0]
	if r.n == 0 {
		if r.f == CSV {
			b = append(b, "id,owner,owner_id,team,name,phone,id_card,bank_account,secret,notes\r\n"...)
		} else {
			b = append(b, `{"list":[`...)
		}
	}
	for k := 0; k < 64 && !r.done; k++ {
		if r.f == JSON && r.i > 0 {
			b = append(b, ',')
		}
		b = r.record(b)
		r.i++
		if r.n+int64(len(b)) >= r.size {
			r.done = true
		}
	}
	if r.done {
		if r.f == JSON {
			b = append(b, `],"total":`...)
			b = fmt.Appendf(b, "%d}", r.i)
		}
		r.ended = true
	}
	r.n += int64(len(b))
	r.buf = b
}

// record appends record i.
func (r *reader) record(b []byte) []byte {
	i := r.i
	owner, team := "u1", "east"
	if i%2 == 1 {
		owner, team = "u9", "west"
	}
	if r.f == CSV {
		return fmt.Appendf(b, "c%09d,%s,%s,%s,\"Customer %d, Ltd.\",%s,110101199003071234,6222020200112233445,%s%d,\"called about the \"\"renewal\"\"; wants a demo\"\r\n",
			i, owner, owner, team, i, Phone, Secret, i)
	}
	return fmt.Appendf(b, `{"id":"c%09d","owner":"%s","owner_id":"%s","team":"%s","name":"Customer %d, Ltd.","phone":"%s","id_card":"110101199003071234","bank_account":"6222020200112233445","secret":"%s%d","notes":"called about the \"renewal\"; wants a demo [and a quote]","tags":["vip",{"since":2021}]}`,
		i, owner, owner, team, i, Phone, Secret, i)
}
