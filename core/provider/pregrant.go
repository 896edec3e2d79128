package provider

import (
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/core/proto"
)

// PregrantTrailer is the Call trailer key under which a plugin reports what
// became of the call's pre-grant; PregrantUnused is the only value it sends:
// the grant was never used to send and never will be, so the host may
// release it. No trailer means the grant was used (or the call carried
// none), and it keeps counting.
const (
	PregrantTrailer = "sluice-pregrant"
	PregrantUnused  = "unused"
)

// Pre-grant states. A pre-grant moves out of unused exactly once: to used
// when Upstream takes it for a send, or to returned when the call ends
// without having taken it.
const (
	pregrantUnused int32 = iota
	pregrantUsed
	pregrantReturned
)

// pregrant is the host's grant carried by one call.
type pregrant struct {
	bucket string
	at     int64 // the grant's time in the scheduler's log, Unix ns
	useBy  int64 // Unix ns; 0: no bound
	state  atomic.Int32
}

func pregrantFrom(m *proto.Pregrant) *pregrant {
	if m == nil || m.GetBucket() == "" {
		return nil
	}
	return &pregrant{bucket: m.GetBucket(), at: m.GetGrantedAtUnixNs(), useBy: m.GetUseByUnixNs()}
}

// consume takes the pre-grant for one send in bucket if it is for exactly
// that bucket, still usable at now (its use-by, which the scheduler derives
// from its margin), and neither used nor returned yet. It returns the
// use-by, which the send must still meet.
func (p *pregrant) consume(bucket string, now time.Time) (grant, bool) {
	if p == nil || p.bucket != bucket || p.useBy != 0 && now.UnixNano() > p.useBy {
		return grant{}, false
	}
	if !p.state.CompareAndSwap(pregrantUnused, pregrantUsed) {
		return grant{}, false
	}
	return grant{at: unixTime(p.at), useBy: unixTime(p.useBy)}, true
}

// UseByNs puts a grant's use-by on the wire: Unix ns, 0 for none (the zero
// time). unixTime reads it back.
func UseByNs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// unixTime is the inverse of UseByNs.
func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// giveBack marks the pre-grant returned and reports whether it was unused:
// only then may the host release it. After it, consume always fails, so no
// send can follow an "unused" report.
func (p *pregrant) giveBack() bool {
	return p != nil && p.state.CompareAndSwap(pregrantUnused, pregrantReturned)
}
