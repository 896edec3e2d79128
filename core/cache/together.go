package cache

import (
	"context"
	"sync"
)

// Together names a remote lookup and the one call started beside it (a
// fetch's grant, see DoAhead), so that a remote store that can send
// several commands in one exchange (fleet mode's Redis pipeline) answers
// both in one round trip. It only names the pair; the store keeps its own
// state for it in Value.
type Together struct {
	mu    sync.Mutex
	v     any
	alone chan struct{}
	once  sync.Once
}

// Alone says the call started beside the lookup will not reach the remote
// store (it was answered without it), so the lookup waits for it no
// longer. Safe on a nil *Together and more than once.
func (t *Together) Alone() {
	if t != nil {
		t.once.Do(func() { close(t.alone) })
	}
}

// AloneC is closed by Alone.
func (t *Together) AloneC() <-chan struct{} { return t.alone }

// Value returns the store's state for the pair, made by mk on first use.
func (t *Together) Value(mk func() any) any {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.v == nil {
		t.v = mk()
	}
	return t.v
}

type togetherKey struct{}

// WithTogether marks ctx's remote calls as one pair (see Together).
func WithTogether(ctx context.Context) context.Context {
	return context.WithValue(ctx, togetherKey{}, &Together{alone: make(chan struct{})})
}

// TogetherOf returns the pair ctx's calls belong to, or nil.
func TogetherOf(ctx context.Context) *Together {
	t, _ := ctx.Value(togetherKey{}).(*Together)
	return t
}

// AheadFunc starts work a fetch will need beside the remote lookup rather
// than after it: in fleet mode, the fetch's grant, whose round trip to
// Redis then travels with the lookup's. It is called just before the
// lookup and must not block (it starts its own goroutine); ctx marks the
// pair (TogetherOf) and outlives the fetch. It is called only when this
// caller leads the key's fetch and looks in the remote tier; when it was,
// the fetch may not follow, and the work is undone: the cache calls the
// drop it returns as soon as the lookup shows the fetch will not follow at
// once (the remote tier had the answer, or another member is fetching it),
// and the caller once Do returns, whatever happened (drop must be safe to
// call twice, and after the fetch took the work).
type AheadFunc func(ctx context.Context) (drop func())

// DoAhead is Do with ahead started beside the remote lookup (see
// AheadFunc). Without a remote tier, or with ctx marked NoRemote, it is
// Do, and ahead never runs.
func (c *Cache) DoAhead(ctx context.Context, key string, ahead AheadFunc, fetch FetchFunc) (e *Entry, shared bool, err error) {
	return c.do(ctx, key, ahead, fetch)
}
