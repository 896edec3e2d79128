package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// joinCounter installs the Do join hook and returns a channel that is closed
// once n callers have joined the singleflight call for their key.
func joinCounter(c *Cache, n int) (allJoined <-chan struct{}) {
	var joined atomic.Int64
	done := make(chan struct{})
	c.testHookJoined = func() {
		if joined.Add(1) == int64(n) {
			close(done)
		}
	}
	return done
}

func TestDoCoalesces(t *testing.T) {
	const callers = 50
	c := newCache(t, 1<<20)
	allJoined := joinCounter(c, callers)
	want := entry("p", 10, time.Hour)
	var fetches atomic.Int64
	fetch := func(ctx context.Context) (*Entry, bool, error) {
		fetches.Add(1)
		// Hold the fetch open until every caller has joined it, so the
		// test cannot pass by callers merely running one after another.
		select {
		case <-allJoined:
			return want, true, nil
		case <-time.After(5 * time.Second):
			return nil, false, errors.New("not all callers joined")
		}
	}

	type result struct {
		e      *Entry
		shared bool
		err    error
	}
	results := make(chan result, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			e, shared, err := c.Do(t.Context(), "k", fetch)
			results <- result{e, shared, err}
		})
	}
	wg.Wait()
	close(results)

	shared := 0
	for r := range results {
		if r.err != nil {
			t.Fatalf("Do: %v", r.err)
		}
		if r.e != want {
			t.Errorf("Do returned %p, want the fetched entry %p", r.e, want)
		}
		if r.shared {
			shared++
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("fetches = %d, want 1", n)
	}
	if shared != callers-1 {
		t.Errorf("shared = %d, want %d", shared, callers-1)
	}
	if st := c.Stats(); st.Coalesced != callers-1 {
		t.Errorf("Coalesced = %d, want %d", st.Coalesced, callers-1)
	}
	c.Wait()
	if got, ok := c.Get("k"); !ok || got != want {
		t.Errorf("Get after Do = %p, %v; want stored entry", got, ok)
	}
}

func TestDoCallerCancelDoesNotCancelFetch(t *testing.T) {
	c := newCache(t, 1<<20)
	allJoined := joinCounter(c, 2)
	type ctxKey struct{}
	want := entry("p", 10, time.Hour)
	release := make(chan struct{})
	fetchErr := make(chan error, 1)
	fetchStarted := make(chan struct{})
	var fetches atomic.Int64
	fetch := func(ctx context.Context) (*Entry, bool, error) {
		if fetches.Add(1) != 1 {
			return nil, false, errors.New("second fetch")
		}
		close(fetchStarted)
		if ctx.Value(ctxKey{}) != "leader" {
			t.Error("fetch context lost the leader's values")
		}
		<-release
		fetchErr <- ctx.Err()
		return want, true, nil
	}

	leaderCtx, cancelLeader := context.WithCancel(context.WithValue(t.Context(), ctxKey{}, "leader"))
	defer cancelLeader()
	leaderDone := make(chan error, 1)
	go func() {
		_, _, err := c.Do(leaderCtx, "k", fetch)
		leaderDone <- err
	}()
	type result struct {
		e      *Entry
		shared bool
		err    error
	}
	followerDone := make(chan result, 1)
	// Start the follower only once the leader's fetch is running, so the
	// follower joins it instead of becoming the leader itself.
	select {
	case <-fetchStarted:
	case <-time.After(5 * time.Second):
		t.Fatal("leader's fetch did not start")
	}
	go func() {
		e, shared, err := c.Do(t.Context(), "k", fetch)
		followerDone <- result{e, shared, err}
	}()
	select {
	case <-allJoined:
	case <-time.After(5 * time.Second):
		t.Fatal("callers did not join")
	}

	cancelLeader()
	select {
	case err := <-leaderDone:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("leader Do error = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled caller did not return while the fetch was blocked")
	}

	close(release)
	if err := <-fetchErr; err != nil {
		t.Errorf("fetch context ended with %v after the leader hung up", err)
	}
	r := <-followerDone
	if r.err != nil || r.e != want || !r.shared {
		t.Errorf("follower got %p, shared=%v, err=%v; want %p, true, nil", r.e, r.shared, r.err, want)
	}
	c.Wait()
	if _, ok := c.Get("k"); !ok {
		t.Error("answer of a fetch whose leader hung up was not stored")
	}
}

func TestDoStoreDecision(t *testing.T) {
	errUpstream := errors.New("upstream down")
	tests := []struct {
		name      string
		e         *Entry
		store     bool
		err       error
		wantStore bool
	}{
		{"store", entry("p", 10, time.Hour), true, nil, true},
		{"no store", entry("p", 10, time.Hour), false, nil, false},
		{"error", entry("p", 10, time.Hour), true, errUpstream, false},
		{"nil entry", nil, true, nil, false},
		{"expired entry", entry("p", 10, -time.Second), true, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(t, 1<<20)
			e, shared, err := c.Do(t.Context(), "k", func(context.Context) (*Entry, bool, error) {
				return tt.e, tt.store, tt.err
			})
			if !errors.Is(err, tt.err) {
				t.Errorf("err = %v, want %v", err, tt.err)
			}
			if e != tt.e || shared {
				t.Errorf("Do = %p, shared=%v; want %p, false", e, shared, tt.e)
			}
			c.Wait()
			if _, ok := c.Get("k"); ok != tt.wantStore {
				t.Errorf("stored = %v, want %v", ok, tt.wantStore)
			}
		})
	}
}

func TestDoDoesNotReadCache(t *testing.T) {
	c := newCache(t, 1<<20)
	mustStore(t, c, "k", entry("p", 10, time.Hour))
	fresh := entry("p", 20, time.Hour)
	e, _, err := c.Do(t.Context(), "k", func(context.Context) (*Entry, bool, error) {
		return fresh, true, nil
	})
	if err != nil || e != fresh {
		t.Fatalf("Do = %p, %v; want a fresh fetch", e, err)
	}
	c.Wait()
	if got, ok := c.Get("k"); !ok || got != fresh {
		t.Errorf("Get = %p, %v; want the refreshed entry", got, ok)
	}
}

func TestDoPurgeDuringFetch(t *testing.T) {
	c := newCache(t, 1<<20)
	started := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, _, err := c.Do(t.Context(), "k", func(context.Context) (*Entry, bool, error) {
			close(started)
			<-release
			return entry("p", 10, time.Hour), true, nil
		})
		done <- err
	}()
	<-started
	c.Purge("p")
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if _, ok := c.Get("k"); ok {
		t.Error("answer fetched before Purge was stored after it")
	}

	// A fetch that starts after the purge stores normally.
	if _, _, err := c.Do(t.Context(), "k", func(context.Context) (*Entry, bool, error) {
		return entry("p", 10, time.Hour), true, nil
	}); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if _, ok := c.Get("k"); !ok {
		t.Error("answer fetched after Purge was not stored")
	}
}

func TestDoCancelledBeforeStart(t *testing.T) {
	c := newCache(t, 1<<20)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, err := c.Do(ctx, "k", func(context.Context) (*Entry, bool, error) {
		t.Error("fetch ran for a cancelled caller")
		return nil, false, nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestDoRecoversPanic(t *testing.T) {
	c := newCache(t, 1<<20)
	_, _, err := c.Do(t.Context(), "k", func(context.Context) (*Entry, bool, error) {
		panic("boom")
	})
	if !errors.Is(err, ErrFetchPanicked) {
		t.Errorf("err = %v, want ErrFetchPanicked", err)
	}
}

func TestCloseCancelsFetch(t *testing.T) {
	c, err := New(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, _, err := c.Do(context.Background(), "k", func(ctx context.Context) (*Entry, bool, error) {
			close(started)
			<-ctx.Done()
			return nil, false, ctx.Err()
		})
		done <- err
	}()
	<-started
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not cancel the in-flight fetch")
	}
	if _, _, err := c.Do(context.Background(), "k", func(context.Context) (*Entry, bool, error) {
		t.Error("fetch ran after Close")
		return nil, false, nil
	}); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: err = %v, want ErrClosed", err)
	}
}

// TestDoAnswerIsVisible: once Do has answered with a stored entry, a Get
// finds it at once. ristretto applies writes on a goroutine of its own; a
// client that repeats a request right after its miss must not miss again
// (the socket's fast lane found exactly that gap under load).
func TestDoAnswerIsVisible(t *testing.T) {
	c := newCache(t, 64<<20)
	for i := range 2000 {
		key := fmt.Sprint("k", i)
		e, _, err := c.Do(t.Context(), key, func(context.Context) (*Entry, bool, error) {
			return entry("p", 10, time.Hour), true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := c.Get(key); !ok || got != e {
			t.Fatalf("Get(%q) right after Do = %v; want the stored answer", key, ok)
		}
	}
}
