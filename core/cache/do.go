package cache

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
)

// FetchFunc performs the upstream request for Do. It returns the answer, and
// whether that answer may be stored (typically: it was a cacheable success).
type FetchFunc func(ctx context.Context) (e *Entry, store bool, err error)

// ErrFetchPanicked wraps a panic raised by a FetchFunc. Do recovers it because
// the fetch runs on a goroutine of its own, where an unrecovered panic would
// take down the whole daemon rather than one request.
var ErrFetchPanicked = errors.New("cache: fetch panicked")

// fetchResult carries a fetch's answer through singleflight, which only
// passes one value; the entry travels even when err is set so callers see
// whatever the fetch returned.
type fetchResult struct {
	entry *Entry
}

// Do coalesces concurrent requests for key: while one fetch for key is in
// flight, further callers wait for it instead of starting their own, and all
// get the same *Entry and error. shared is false for the caller whose fetch
// ran and true for the others, which are counted in Stats.Coalesced.
//
// Do does not look in the cache: callers that want a cached answer call Get
// first, which lets them skip the lookup (for example for Cache-Control:
// no-cache) and still coalesce. If the fetch succeeds with store set, Do
// stores the entry with Set before answering, unless its provider was purged
// while the fetch ran; the stored entry is visible to Get by the time Do
// answers. Callers that join an in-flight fetch share its store
// decision.
//
// With a remote tier (SetRemote, fleet mode), the leader of a local key
// first looks for another member's answer, or waits for another member's
// fetch of it, and shares its own answer when it fetches; followers stay
// local. A ctx marked NoRemote skips the looking and the waiting.
//
// The fetch runs with a context detached from the caller's cancellation
// (values are kept), so one caller hanging up does not fail the others;
// Close cancels it. Each caller still returns ctx.Err() as soon as its own
// ctx ends.
func (c *Cache) Do(ctx context.Context, key string, fetch FetchFunc) (e *Entry, shared bool, err error) {
	return c.do(ctx, key, nil, fetch)
}

func (c *Cache) do(ctx context.Context, key string, ahead AheadFunc, fetch FetchFunc) (e *Entry, shared bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if c.closeCtx.Err() != nil {
		return nil, false, ErrClosed
	}

	// led is set by this caller's closure, which singleflight runs only if
	// this caller started the call. It is read only after receiving the
	// result, which singleflight sends after the closure returns.
	led := false
	ch := c.group.DoChan(key, func() (any, error) {
		led = true
		return c.fetch(ctx, key, ahead, fetch)
	})
	if hook := c.testHookJoined; hook != nil {
		hook()
	}

	select {
	case r := <-ch:
		return c.answer(r.Val, r.Err, led)
	case <-ctx.Done():
		// Prefer an answer that is already there over an error.
		select {
		case r := <-ch:
			return c.answer(r.Val, r.Err, led)
		default:
			return nil, false, ctx.Err()
		}
	}
}

// answer unpacks a singleflight result for one caller.
func (c *Cache) answer(v any, err error, led bool) (*Entry, bool, error) {
	if !led {
		c.coalesced.Add(1)
	}
	var e *Entry
	if r, ok := v.(fetchResult); ok {
		e = r.entry
	}
	return e, !led, err
}

// fetch runs one fetch for Do and stores its answer if asked to.
func (c *Cache) fetch(ctx context.Context, key string, ahead AheadFunc, fetch FetchFunc) (res any, err error) {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(c.closeCtx, cancel)
	defer stop()

	// Taken before the fetch starts: a purge after this point may have
	// removed data this fetch is about to replace with an older view.
	c.mu.Lock()
	since := c.epoch
	c.mu.Unlock()

	defer func() {
		if p := recover(); p != nil {
			res, err = nil, fmt.Errorf("%w: %v\n%s", ErrFetchPanicked, p, debug.Stack())
		}
	}()
	if c.remote != nil {
		return c.fetchShared(fctx, key, since, ahead, fetch, ctx.Value(noRemote{}) == nil)
	}
	e, store, err := fetch(fctx)
	if err == nil && store && e != nil {
		c.set(key, e, since, true)
	}
	return fetchResult{entry: e}, err
}
