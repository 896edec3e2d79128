package gateway

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/core/cache"
	"github.com/sluice-dev/sluice/core/pluginhost"
	"github.com/sluice-dev/sluice/core/proto"
	"github.com/sluice-dev/sluice/core/provider"
	"github.com/sluice-dev/sluice/core/scheduler"
)

// pregrant is the grant the gateway obtained for one call before opening it
// (a "pre-grant"), so the plugin's first upstream request in the operation's
// bucket needs no Host.Acquire round trip. It is a scheduler grant like any
// other and keeps counting, unless the plugin reports it unused on a call
// that ended cleanly: then it is released. A nil *pregrant is no pre-grant;
// its methods do nothing.
type pregrant struct {
	h    *pluginhost.Handle
	g    scheduler.Grant
	wait time.Duration
}

// preGrant asks for an immediate grant from the operation's bucket, if it
// declares one, and puts it on the call (c.req.Pregrant is always set or
// cleared here, so a request is never sent with an earlier call's grant).
// A bucket that cannot grant at once costs nothing: the plugin then queues
// through Host.Acquire as before (see Handle.PreGrant for the buckets that
// get none). A speculative pre-grant already taken for the call (spec) is
// used instead, if there is one; if the speculation was refused, none is
// asked for again: a bucket that would not grant speculatively is at
// least half full, and an immediate grant there would most often be
// refused too, a round trip for nothing (the plugin's Host.Acquire asks
// once anyway).
func preGrant(ctx context.Context, h *pluginhost.Handle, c *call, spec *speculation) *pregrant {
	c.req.Pregrant = nil
	bucket := c.op.GetBucket()
	if bucket == "" {
		return nil
	}
	p, refused := spec.take()
	if p == nil {
		if refused {
			return nil
		}
		start := time.Now()
		g, ok := h.PreGrant(ctx, bucket)
		if !ok {
			return nil
		}
		p = &pregrant{h: h, g: g, wait: time.Since(start)}
	}
	g := p.g
	c.req.Pregrant = &proto.Pregrant{Bucket: g.Bucket, GrantedAtUnixNs: g.At.UnixNano(), Seq: g.Seq, UseByUnixNs: provider.UseByNs(g.UseBy)}
	return p
}

// speculation is a pre-grant asked for beside a miss's fleet cache lookup
// (cache.DoAhead), so both travel to Redis in one round trip: a miss then
// costs two, not three. The lookup may find another member's answer, or
// another member fetching: the fetch then never runs, and the grant,
// never sent, is given back (drop). Only a bucket with half its limit
// free grants one (scheduler.Scheduler.AcquireSpeculative), so a grant
// taken and given back never makes another caller wait. A nil
// *speculation is none.
type speculation struct {
	h       *pluginhost.Handle
	bucket  string
	started atomic.Bool
	done    chan struct{} // closed when the asking has finished
	mu      sync.Mutex
	p       *pregrant // the grant, until taken
	refused bool      // asked, and not granted
}

// speculate returns the speculation for a cacheable miss of c, or nil
// when its bucket could get no pre-grant anyway (then nothing is asked,
// and the lookup does not wait for a partner).
func speculate(h *pluginhost.Handle, c *call) *speculation {
	bucket := c.op.GetBucket()
	if bucket == "" || !h.CanPreGrant(bucket) {
		return nil
	}
	return &speculation{h: h, bucket: bucket, done: make(chan struct{})}
}

// ahead is the cache.AheadFunc: called just before the lookup, it asks
// beside it.
func (s *speculation) ahead(ctx context.Context) func() {
	s.started.Store(true)
	go func() {
		defer close(s.done)
		start := time.Now()
		g, err := s.h.PreGrantSpeculative(ctx, s.bucket)
		// Answered without the fleet's store (a bucket too small to
		// speculate in, a local pause): the lookup goes on alone.
		cache.TogetherOf(ctx).Alone()
		s.mu.Lock()
		if err == nil {
			s.p = &pregrant{h: s.h, g: g, wait: time.Since(start)}
		} else {
			// Refused by the bucket: an ordinary immediate grant would
			// most often be refused too. Any other failure leaves the
			// ordinary pre-grant to be asked for.
			s.refused = errors.Is(err, scheduler.ErrBudget)
		}
		s.mu.Unlock()
	}()
	return s.drop
}

// aheadFunc is s.ahead, or nil for no speculation.
func (s *speculation) aheadFunc() cache.AheadFunc {
	if s == nil {
		return nil
	}
	return s.ahead
}

// take hands the fetch the speculative grant, if one was asked for and
// granted, and not dropped; refused says it was asked for and refused.
func (s *speculation) take() (p *pregrant, refused bool) {
	if s == nil || !s.started.Load() {
		return nil, false
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	p = s.p
	s.p = nil
	return p, s.refused
}

// drop gives back a speculative grant no fetch took, once it is known:
// never sent, it frees its slot at once. It does not wait, and may be
// called more than once.
func (s *speculation) drop() {
	if s == nil || !s.started.Load() {
		return
	}
	go func() {
		p, _ := s.take()
		if p != nil {
			p.h.Release(p.g)
		}
		// A fetch that follows later (after waiting for another
		// member's) asks for its pre-grant afresh: the refusal is old.
		s.mu.Lock()
		s.refused = false
		s.mu.Unlock()
	}()
}

// noteWait folds the time spent getting the pre-grant into the wait the
// plugin reports, so the request's logged wait covers every grant.
func (p *pregrant) noteWait(head *proto.ResponseHead) {
	if p == nil || head == nil {
		return
	}
	head.WaitUs += p.wait.Microseconds()
}

// settle is called once stream.Recv has returned io.EOF, and only then: the
// call ended cleanly, so its trailer is the plugin's last word. Each
// upstream exchange the plugin reports answered is counted at its answer's
// arrival (Handle.Answered). If the plugin reported the pre-grant unused
// (it can no longer use it), it is released. Any other ending (an error, a
// cancellation, a crash) never gets here: the grants may have been used and
// keep counting where they were handed out.
func settle(h *pluginhost.Handle, p *pregrant, stream proto.Provider_CallClient) {
	tr := stream.Trailer()
	for _, a := range provider.ParseAnswers(tr.Get(provider.AnsweredTrailer)) {
		h.Answered(a.Bucket, a.GrantedAt, a.Answered)
	}
	if p != nil && slices.Contains(tr.Get(provider.PregrantTrailer), provider.PregrantUnused) {
		p.h.Release(p.g)
	}
}

// maxDrain bounds how many messages drain reads past an answer the gateway
// is not relaying: a problem is a plugin's last message, so its stream ends
// at the next one.
const maxDrain = 4

// drain reads a stream whose answer already failed (a problem, typically a
// request the plugin rejected locally) to its end, so the trailer can tell
// whether the pre-grant went unused and when the answers of any upstream
// exchanges arrived.
func drain(h *pluginhost.Handle, p *pregrant, stream proto.Provider_CallClient) {
	for range maxDrain {
		_, err := stream.Recv()
		if err == io.EOF {
			settle(h, p, stream)
			return
		}
		if err != nil {
			return
		}
	}
}
