package provider

import (
	"context"
	"fmt"
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
type turns map[string]*semaphore.Weighted

func turnsFor(desc *proto.Description) turns {
	t := turns{}
	for _, b := range desc.GetBuckets() {
		if n := b.GetMaxInFlight(); n > 0 {
			t[b.GetName()] = semaphore.NewWeighted(int64(n))
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
		return nil, nil, problem.RateLimited(time.Second,
			fmt.Sprintf("%s sends its requests one turn at a time and none came free within the max wait (%s)", bucket, maxWait))
	}
	return ctx, func() { sem.Release(1) }, nil
}
