package gateway

import (
	"context"
	"io"
	"slices"
	"time"

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
// get none).
func preGrant(ctx context.Context, h *pluginhost.Handle, c *call) *pregrant {
	c.req.Pregrant = nil
	bucket := c.op.GetBucket()
	if bucket == "" {
		return nil
	}
	start := time.Now()
	g, ok := h.PreGrant(ctx, bucket)
	if !ok {
		return nil
	}
	c.req.Pregrant = &proto.Pregrant{Bucket: g.Bucket, GrantedAtUnixNs: g.At.UnixNano(), Seq: g.Seq, UseByUnixNs: provider.UseByNs(g.UseBy)}
	return &pregrant{h: h, g: g, wait: time.Since(start)}
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
