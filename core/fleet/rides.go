package fleet

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/core/cache"
)

// Rides: a member's best-effort writes (a grant's restamp to its answer's
// arrival, a grant given back unused) need no answer before the caller
// goes on. Each used to cost a round trip of its own; now each waits up to
// rideWait and goes in one pipeline with the member's next script (a miss's
// restamp goes with that miss's cache store, which follows it within
// microseconds), or on its own when none comes. A miss thus costs three
// round trips, not four. Waiting a moment is safe: a restamp only ever
// moves a grant later, and until it lands the grant counts from its
// earlier time, as it did before the answer arrived; a release frees a
// slot a moment later than it could.
const rideWait = 2 * time.Millisecond

// ride is one queued write: a script and its arguments; done gets its
// outcome. keep: a write that must land however late (a restamp), kept
// and sent again with every round trip while Redis cannot be reached;
// since is when it first failed.
type ride struct {
	what   string
	script *redis.Script
	keys   []string
	args   []any
	done   func(error)
	keep   bool
	since  time.Time
}

// rides holds the writes waiting for a round trip, and the kept ones that
// failed (see keepRide).
type rides struct {
	mu      sync.Mutex
	pending []ride
	timer   *time.Timer
	failed  []ride
}

// Kept writes. A restamp that cannot reach Redis (the member's link to it
// is cut while its requests are out) would leave the fleet counting those
// grants from their send, and another member could send a window after
// the send but inside the upstream's window of a slow answer: a ban. So a
// restamp is kept and sent again, first, with this member's every round
// trip (its heartbeat's at least once a second) until it lands: it is
// idempotent (a grant only ever moves later). Its grant stays counted from
// an earlier time meanwhile, as the fleet's other members see it; past
// keptFor no window is that long, and past keptMax the oldest go (each
// logged).
const (
	keptFor = time.Hour
	keptMax = 4096
)

// later queues r for this member's next round trip, or its own within
// rideWait.
func (q *Client) later(r ride) {
	q.rides.mu.Lock()
	defer q.rides.mu.Unlock()
	q.rides.pending = append(q.rides.pending, r)
	if q.rides.timer == nil {
		q.rides.timer = time.AfterFunc(rideWait, q.flushRides)
	}
}

// laterWait is later for a caller that waits for the outcome.
func (q *Client) laterWait(ctx context.Context, r ride) error {
	ch := make(chan error, 1)
	r.done = func(err error) { ch <- err }
	q.later(r)
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// takeRides empties the queue: the kept writes first, in their order.
func (q *Client) takeRides() []ride {
	q.rides.mu.Lock()
	defer q.rides.mu.Unlock()
	rs := q.rides.pending
	if len(q.rides.failed) > 0 {
		rs = append(q.rides.failed, rs...)
		q.rides.failed = nil
	}
	q.rides.pending = nil
	if q.rides.timer != nil {
		q.rides.timer.Stop()
		q.rides.timer = nil
	}
	return rs
}

// flushRides sends the queued writes when no script came to take them.
func (q *Client) flushRides() {
	ctx, cancel := context.WithTimeout(context.Background(), q.timeout)
	defer cancel()
	q.send(ctx)
}

// run is script.Run with the queued writes in the same pipeline: one
// round trip for all of them. The writes' outcomes do not affect the
// script's.
func (q *Client) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := &pairCall{script: script, keys: keys, args: args}
	q.send(ctx, c)
	return c.cmd
}

// send runs calls' scripts (their answers in their cmd) in one pipeline
// under ctx, behind the queued writes: those go first, so a grant script
// counts a restamped grant at its answer's arrival. The writes get a
// context of their own: a caller that gives up must not take them down
// with it.
func (q *Client) send(ctx context.Context, calls ...*pairCall) {
	rs := q.takeRides()
	switch {
	case len(rs) == 0 && len(calls) == 0:
		return
	case len(rs) == 0 && len(calls) == 1:
		c := calls[0]
		c.cmd = c.script.Run(ctx, q.rdb, c.keys, c.args...)
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), q.timeout)
	defer cancel()
	pipe := q.rdb.Pipeline()
	cmds := queueRides(wctx, pipe, rs)
	for _, c := range calls {
		c.cmd = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx)
	for _, c := range calls {
		if noScript(c.cmd.Err()) {
			// Redis forgot its scripts (a restart): EVAL loads this one.
			c.cmd = c.script.Eval(ctx, q.rdb, c.keys, c.args...)
		}
	}
	q.settleRides(wctx, rs, cmds)
}

func queueRides(ctx context.Context, pipe redis.Pipeliner, rs []ride) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(rs))
	for i, r := range rs {
		cmds[i] = r.script.EvalSha(ctx, pipe, r.keys, r.args...)
	}
	return cmds
}

// settleRides reports each write's outcome, running again on its own any
// whose script Redis had forgotten.
func (q *Client) settleRides(ctx context.Context, rs []ride, cmds []*redis.Cmd) {
	for i, r := range rs {
		err := cmds[i].Err()
		if noScript(err) {
			err = r.script.Eval(ctx, q.rdb, r.keys, r.args...).Err()
		}
		if errors.Is(err, redis.Nil) {
			err = nil
		}
		if err != nil && ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			// The pipeline ended with its script's caller: the write
			// did not fail, it waits for the next round trip (each is
			// idempotent, should it have landed after all).
			q.later(r)
			continue
		}
		if err != nil && r.keep && !isRedisError(err) {
			q.keepRide(r, err)
			continue
		}
		if err != nil {
			err = errors.New("fleet: " + r.what + ": " + err.Error())
		}
		if !r.since.IsZero() && err == nil {
			q.log.Info("fleet: a kept write landed", "write", r.what, "late", time.Since(r.since).Round(time.Millisecond))
		}
		if r.done != nil {
			r.done(err)
		}
	}
}

// keepRide keeps a write that could not reach Redis, to send again with
// the next round trip (see keptFor).
func (q *Client) keepRide(r ride, err error) {
	now := time.Now()
	if r.since.IsZero() {
		r.since = now
		q.log.Warn("fleet: a write could not reach Redis; it is sent again with every round trip until it lands", "write", r.what, "err", err)
	}
	q.rides.mu.Lock()
	defer q.rides.mu.Unlock()
	if now.Sub(r.since) > keptFor {
		q.log.Error("fleet: a kept write is dropped after an hour without Redis", "write", r.what)
		return
	}
	q.rides.failed = append(q.rides.failed, r)
	if n := len(q.rides.failed) - keptMax; n > 0 {
		q.log.Error("fleet: kept writes dropped, too many waiting for Redis", "dropped", n)
		q.rides.failed = slices.Delete(q.rides.failed, 0, n)
	}
}

// isRedisError: Redis answered with an error (its script refused): sending
// it again would not help.
func isRedisError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.ErrClosed)
}

func noScript(err error) bool { return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") }

// roundTrips counts every exchange with Redis: one per command, one per
// pipeline (what sluice_fleet_redis_round_trips_total reports).
type roundTrips struct{ c *Client }

func (h roundTrips) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.c.trips.Add(1)
		return next(ctx, cmd)
	}
}

func (h roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.c.trips.Add(1)
		return next(ctx, cmds)
	}
}

// RoundTrips is how many exchanges this member has had with Redis: a
// command, or a pipeline of them, each.
func (q *Client) RoundTrips() int64 { return q.trips.Load() }

// Pairs: a miss's cache lookup and its grant, started together by the
// cache (cache.DoAhead), go in one pipeline, so a miss costs two round
// trips (lookup and grant; then the store, with the restamp riding). The
// first of the two to arrive waits up to pairWait for the other; either
// goes alone if the other does not come (the grant may not be asked for
// at all: a bucket that cannot grant speculatively).
const pairWait = 2 * time.Millisecond

// pair is the fleet's state for one cache.Together.
type pair struct {
	mu    sync.Mutex
	first *pairCall
	sent  bool
}

// pairCall is one script call (of a pair: answered in cmd when done
// closes).
type pairCall struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	done   chan struct{}
}

// runPaired is run for the calls cache.DoAhead pairs (see pairWait);
// other calls are run as they are.
func (q *Client) runPaired(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	t := cache.TogetherOf(ctx)
	if t == nil {
		return q.run(ctx, script, keys, args...)
	}
	p := t.Value(func() any { return &pair{} }).(*pair)
	me := &pairCall{ctx: ctx, script: script, keys: keys, args: args, done: make(chan struct{})}
	p.mu.Lock()
	if p.sent {
		p.mu.Unlock()
		return q.run(ctx, script, keys, args...)
	}
	if first := p.first; first != nil {
		p.sent = true
		p.mu.Unlock()
		q.runBoth(ctx, first, me)
		close(first.done)
		return me.cmd
	}
	p.first = me
	p.mu.Unlock()
	t0 := time.NewTimer(q.pairWait)
	defer t0.Stop()
	select {
	case <-me.done:
		return me.cmd
	case <-t0.C:
	case <-t.AloneC():
	case <-ctx.Done():
	}
	p.mu.Lock()
	if p.sent {
		// The partner came at the last moment and is sending both.
		p.mu.Unlock()
		<-me.done
		return me.cmd
	}
	p.sent = true
	p.mu.Unlock()
	return q.run(ctx, script, keys, args...)
}

// runBoth sends a pair's two scripts, and any queued rides, in one
// pipeline. It runs under neither caller's cancellation (the other's
// answer is in it), bounded by the earlier of their deadlines (a lookup's
// is short: a fleet cache that does not answer is soon a miss) and the
// fleet's timeout.
func (q *Client) runBoth(ctx context.Context, a, b *pairCall) {
	end := time.Now().Add(q.timeout)
	for _, c := range []*pairCall{a, b} {
		if d, ok := c.ctx.Deadline(); ok && d.Before(end) {
			end = d
		}
	}
	pctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), end)
	defer cancel()
	q.send(pctx, a, b)
}
