package provider

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/proto"
)

// turns bounds, per bucket, how many requests are on their way at once
// (proto.Bucket.max_in_flight): a request holds its turn from before its
// grant until its answer's head is back. With a bound of 1 a 429 is always
// read, and the bucket paused, before the next request leaves, so none is
// already on the wire when the upstream starts a Retry-After. Turns are
// handed out first come, first served.
//
// In fleet mode the bound is the fleet's (takeFleet): a caller takes this
// plugin's turn first, then the fleet's.
type turns map[string]*turnSem

type turnSem struct {
	*semaphore.Weighted
	n int
}

func turnsFor(desc *proto.Description) turns {
	t := turns{}
	for _, b := range desc.GetBuckets() {
		if n := b.GetMaxInFlight(); n > 0 {
			t[b.GetName()] = &turnSem{semaphore.NewWeighted(int64(n)), int(n)}
		}
	}
	return t
}

// take waits for a turn to send in bucket, within the caller's max wait,
// and returns the context the rest of the exchange runs under (its max
// wait shortened by the time spent here) and the function that gives the
// turn back. Buckets without a bound return at once. waiting, if set, is
// called when the caller has to wait for its turn.
func (t turns) take(ctx context.Context, bucket string, waiting func()) (context.Context, func(), error) {
	sem := t[bucket]
	if sem == nil {
		return ctx, func() {}, nil
	}
	if sem.TryAcquire(1) {
		return ctx, func() { sem.Release(1) }, nil
	}
	if waiting != nil {
		waiting()
	}
	start := time.Now()
	var maxWait time.Duration
	wctx := ctx
	if r := callFrom(ctx); r != nil && r.MaxWait > 0 {
		maxWait = r.MaxWait
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, maxWait)
		defer cancel()
	}
	err := sem.Acquire(wctx, 1)
	ctx = waited(ctx, time.Since(start))
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("waiting for rate budget: %w", ctx.Err())
		}
		// How soon a turn comes free depends on answers not back yet:
		// unlike the scheduler, this cannot tell in advance, so the 429
		// comes after the max wait, with a guess.
		return nil, nil, problem.NoBudget(time.Second,
			fmt.Sprintf("%s sends its requests one turn at a time and none came free within the max wait (%s)", bucket, maxWait))
	}
	return ctx, func() { sem.Release(1) }, nil
}

// fleetTurn is a turn held fleet-wide (fleet mode): a leased lock in the
// fleet's store, held by the host for as long as the Turn stream is open.
type fleetTurn struct {
	stream proto.Host_TurnClient
	cancel context.CancelFunc
	// ended closes when the host has ended the stream: the lease is
	// released (or the stream broke, and the host released it anyway).
	ended chan struct{}
	lost  atomic.Bool
}

type fleetTurnKey struct{}

// takeFleet takes bucket's turn across the fleet, after this plugin's own
// (so one caller per host asks the fleet; the host's others queue behind
// it here), within what is left of the caller's max wait. Nothing may be
// sent without it: a fleet that cannot be reached is a 503, as for the
// quota. The returned context carries the turn, so the send can check it
// was not lost meanwhile (turnLost).
func (u *Upstream) takeFleet(ctx context.Context, bucket string, slots int) (context.Context, func(), error) {
	var maxWait time.Duration
	var id string
	if r := callFrom(ctx); r != nil {
		maxWait, id = r.MaxWait, r.ID
	}
	start := time.Now()
	sctx, cancel := context.WithCancel(ctx)
	fail := func(err error) (context.Context, func(), error) {
		cancel()
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("waiting for rate budget: %w", ctx.Err())
		}
		return nil, nil, problem.New(http.StatusServiceUnavailable, "scheduler unavailable: "+err.Error())
	}
	stream, err := u.host.Turn(sctx)
	if err != nil {
		return fail(err)
	}
	if err := stream.Send(&proto.TurnRequest{Bucket: bucket, MaxInFlight: int32(slots), MaxWaitMs: maxWait.Milliseconds(), RequestId: id}); err != nil {
		return fail(err)
	}
	first, err := stream.Recv()
	ctx = waited(ctx, time.Since(start))
	if err != nil {
		return fail(err)
	}
	if !first.GetHeld() {
		cancel()
		retry := time.Duration(first.GetRetryAfterMs()) * time.Millisecond
		if first.GetDenial() == problem.ReasonFleetUnreachable {
			return nil, nil, problem.FleetUnreachable(retry, first.GetReason())
		}
		return nil, nil, problem.NoBudget(retry, first.GetReason())
	}
	t := &fleetTurn{stream: stream, cancel: cancel, ended: make(chan struct{})}
	go func() {
		defer close(t.ended)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			if m.GetLost() {
				t.lost.Store(true)
			}
		}
	}()
	return context.WithValue(ctx, fleetTurnKey{}, t), t.giveBack, nil
}

// giveBack closes the plugin's side and waits until the host has released
// the lease, so the next caller of this host finds the turn free.
func (t *fleetTurn) giveBack() {
	_ = t.stream.CloseSend()
	select {
	case <-t.ended:
	case <-time.After(fleetReleaseWait):
		// The host will release it when the stream breaks, or the lease
		// expires by itself.
	}
	t.cancel()
}

// fleetReleaseWait bounds how long giving a turn back waits for the host.
const fleetReleaseWait = 5 * time.Second

// turnLost is the 503 for a send whose fleet turn was lost after it was
// taken (the host could not renew its lease): another member may be
// sending now. nil when ctx holds no fleet turn or it still holds.
func turnLost(ctx context.Context, bucket string) error {
	t, _ := ctx.Value(fleetTurnKey{}).(*fleetTurn)
	if t == nil || !t.lost.Load() {
		return nil
	}
	return problem.FleetUnreachable(time.Second, bucket+"'s fleet-wide turn was lost before the request was sent (the fleet's shared store did not answer), so nothing was sent")
}
