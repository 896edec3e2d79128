package cache

import (
	"bytes"
	"sync/atomic"
)

// One cache, one budget: an answer must not be stored once per name a
// caller gives the host (Host: sluice, localhost, 127.0.0.1:PORT, an
// absolute-form target). Yet some answers carry links back to sluice
// (Spotify's href, next and previous), and each caller must get links it
// can follow. So such an answer is stored once, its links written under a
// marker base that no upstream writes, with the offsets of the marker;
// serving splices the caller's own base in. Answers without links are
// served as they are, and the last base an entry was served with is
// memoised, so a hit from the usual host stays a byte copy.

// basedBody is Body with base spliced in at every marker.
type basedBody struct {
	base string
	body []byte
	etag atomic.Pointer[string]
}

// MarkBase records where marker occurs in e.Body, to be replaced by the
// caller's base when served (BodyFor). Call it before the entry is stored
// or shared; a marker that does not occur changes nothing.
func (e *Entry) MarkBase(marker string) {
	if marker == "" {
		return
	}
	var at []int
	for i := 0; ; {
		j := bytes.Index(e.Body[i:], []byte(marker))
		if j < 0 {
			break
		}
		at = append(at, i+j)
		i += j + len(marker)
	}
	if len(at) > 0 {
		e.marker, e.baseAt = marker, at
	}
}

// HasBase reports whether the body carries links whose base BodyFor fills.
func (e *Entry) HasBase() bool { return len(e.baseAt) > 0 }

// BodyFor returns the body with base at every marked offset: Body itself
// when it has no marked links.
func (e *Entry) BodyFor(base string) []byte {
	if len(e.baseAt) == 0 {
		return e.Body
	}
	if b := e.based.Load(); b != nil && b.base == base {
		return b.body
	}
	out := make([]byte, 0, len(e.Body)+len(e.baseAt)*(len(base)-len(e.marker)))
	prev := 0
	for _, at := range e.baseAt {
		out = append(out, e.Body[prev:at]...)
		out = append(out, base...)
		prev = at + len(e.marker)
	}
	out = append(out, e.Body[prev:]...)
	e.based.Store(&basedBody{base: base, body: out})
	return out
}

// ETagFor returns tag(BodyFor(base)), memoised with the body for the last
// base.
func (e *Entry) ETagFor(base string, tag func([]byte) string) string {
	body := e.BodyFor(base)
	b := e.based.Load()
	if b == nil || b.base != base {
		return tag(body) // another base raced in; compute without memo
	}
	if t := b.etag.Load(); t != nil {
		return *t
	}
	t := tag(body)
	b.etag.Store(&t)
	return t
}
