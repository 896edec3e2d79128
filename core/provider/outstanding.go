package provider

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-dev/sluice/core/proto"
)

// firstOutstanding bounds the wait before an unanswered exchange is first
// reported (Host.Outstanding): after it, the host's answer says when to
// report again (half of how long a grant counts). A quarter of the
// bucket's declared window keeps the first report well inside the window
// a grant counts for; the host's config may shorten the window, but only
// with fewer requests, so it stays about as long.
const firstOutstanding = 500 * time.Millisecond

// outstandingFirst returns, per bucket of desc, how long an exchange may
// run before it is first reported unanswered.
func outstandingFirst(desc *proto.Description) map[string]time.Duration {
	m := map[string]time.Duration{}
	for _, b := range desc.GetBuckets() {
		d := firstOutstanding
		if w := time.Duration(b.GetWindowMs()) * time.Millisecond / 4; w > 0 && w < d {
			d = w
		}
		m[b.GetName()] = d
	}
	return m
}

// reportAnswered reports the answered exchanges of a call whose trailer
// the host may not read (Host.Outstanding, off the caller's path): each
// grant then counts from the report, after its answer.
func (u *Upstream) reportAnswered(list []Answer) {
	if u.host == nil || len(list) == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, a := range list {
			_, _ = u.host.Outstanding(ctx, &proto.OutstandingRequest{Bucket: a.Bucket, GrantedAtUnixNs: a.GrantedAt.UnixNano()})
		}
	}()
}

// outstanding keeps a grant counting while its exchange is unanswered: a
// request slower than the window would otherwise free its slot while it
// may still be on its way, and the upstream could count it in the same
// window as the requests granted after it. Until stop, it reports the
// exchange to the host now and then, and the host moves the grant to the
// moment of each report. stop returns the grant's time in the log then,
// which the answer's report (AnsweredTrailer) names. A report whose reply
// was lost may still have moved the grant: the host follows a grant's
// moves from any time it had, so the name stays good. (A call cancelled
// before its trailer is read reports its exchanges itself: see
// reportAnswered.)
func (u *Upstream) outstanding(bucket string, at time.Time) (stop func() time.Time) {
	first := u.outstandingAfter[bucket]
	if u.host == nil || at.IsZero() || first <= 0 {
		return func() time.Time { return at }
	}
	var mu sync.Mutex
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTimer(first)
		defer t.Stop()
		period := first
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			mu.Lock()
			cur := at
			mu.Unlock()
			// Ended with the exchange: the answer is not held up by a
			// report under way.
			ctx, cancel := context.WithTimeout(context.Background(), min(2*time.Second, period))
			go func() {
				select {
				case <-done:
					cancel()
				case <-ctx.Done():
				}
			}()
			r, err := u.host.Outstanding(ctx, &proto.OutstandingRequest{Bucket: bucket, GrantedAtUnixNs: cur.UnixNano()})
			cancel()
			if status.Code(err) == codes.Unimplemented {
				return // an older host: the grant counts from its send
			}
			if err == nil {
				if ns := r.GetGrantedAtUnixNs(); ns != 0 {
					mu.Lock()
					at = time.Unix(0, ns)
					mu.Unlock()
				}
				if d := time.Duration(r.GetAgainMs()) * time.Millisecond; d > 0 {
					period = d
				}
			}
			t.Reset(period)
		}
	}()
	return func() time.Time {
		close(done)
		<-ended
		mu.Lock()
		defer mu.Unlock()
		return at
	}
}
