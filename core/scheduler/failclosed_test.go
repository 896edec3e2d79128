package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// breakDir replaces the state dir by a regular file: every write fails,
// even for root, with ENOTDIR.
func breakDir(t *testing.T, dir string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestGroupWriteFailureHandsOutNothing: many callers granted in one dispatch
// share one write; when it fails, every one of them must see it (not only
// the caller that made the attempt) and none may be handed its grant.
func TestGroupWriteFailureHandsOutNothing(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	s := newTestScheduler(t, Options{StateDir: dir, Margin: 200 * time.Millisecond})
	mustConfigure(t, s, "b", Limit{Requests: 100, Window: time.Minute})
	breakDir(t, dir)
	const n = 20
	var wg sync.WaitGroup
	var handed atomic.Int32
	for range n {
		wg.Go(func() {
			_, err := s.Acquire(context.Background(), "b", 0)
			if err == nil {
				handed.Add(1)
				return
			}
			if !errors.Is(err, ErrStateUnwritable) {
				t.Errorf("Acquire: %v, want ErrStateUnwritable", err)
			}
		})
	}
	wg.Wait()
	if got := handed.Load(); got != 0 {
		t.Fatalf("%d grants handed out while no record could be written", got)
	}
	if st := bucketStatus(t, s, "b"); st.Granted != 0 || st.InWindow != 0 || st.Held == "" {
		t.Fatalf("status %+v: want nothing granted, held", st)
	}
}

// TestHoldFailsQueuedWaiters: a caller already waiting (no max wait) when
// the hold starts is told at once, not left waiting on a disk that may stay
// full. The write that fails here is a pause's, which must hold too.
func TestHoldFailsQueuedWaiters(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	s := newTestScheduler(t, Options{StateDir: dir, Margin: 10 * time.Millisecond})
	mustConfigure(t, s, "b", Limit{Requests: 1, Window: time.Hour})
	mustConfigure(t, s, "other", Limit{Requests: 1, Window: time.Hour})
	mustAcquire(t, s, "b")
	ch := acquireAsync(context.Background(), s, "b", 0)
	waitQueued(t, s, "b", 1)
	breakDir(t, dir)
	s.Pause("other", time.Now().Add(time.Minute), "429")
	r := receive(t, ch, 10*time.Second)
	if !errors.Is(r.err, ErrStateUnwritable) {
		t.Fatalf("queued caller: %v, want ErrStateUnwritable", r.err)
	}
	if st := bucketStatus(t, s, "other"); st.PausedUntil.IsZero() || st.Held == "" {
		t.Fatalf("status %+v: the pause holds in memory and the bucket is held", st)
	}
}

// TestAnsweredUnwritableHolds: moving a grant to its answer's arrival is a
// record too; when it cannot be written the buckets are held until it is.
func TestAnsweredUnwritableHolds(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	s := newTestScheduler(t, Options{StateDir: dir, Margin: 10 * time.Millisecond})
	mustConfigure(t, s, "b", Limit{Requests: 10, Window: time.Minute})
	g := mustAcquire(t, s, "b")
	breakDir(t, dir)
	s.Answered("b", g.At, time.Now())
	waitFor(t, 10*time.Second, "the hold", func() bool { return bucketStatus(t, s, "b").Held != "" })
	if _, err := s.Acquire(context.Background(), "b", 0); !errors.Is(err, ErrStateUnwritable) {
		t.Fatalf("Acquire: %v, want ErrStateUnwritable", err)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the hold to end", func() bool { return bucketStatus(t, s, "b").Held == "" })
	mustAcquire(t, s, "b")
}

// TestClockBehindSavedState: a state whose newest record lies in the future
// was written by a clock ahead of today's (the clock went back across the
// restart): how recent the grants were is unknown, so every bucket is held
// for one window, and status says why.
func TestClockBehindSavedState(t *testing.T) {
	t.Parallel()
	const (
		window = 300 * time.Millisecond
		margin = 20 * time.Millisecond
	)
	dir := t.TempDir()
	future := time.Now().Add(time.Hour).UnixNano()
	st := diskState{Version: stateVersion, SavedAt: future - 1, Buckets: map[string]diskBucket{"b": {Grants: []int64{future - 2}}}}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, StateFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	s := newTestScheduler(t, Options{StateDir: dir, Margin: margin})
	mustConfigure(t, s, "b", Limit{Requests: 5, Window: window})
	mustConfigure(t, s, "fresh", Limit{Requests: 5, Window: window})
	for _, name := range []string{"b", "fresh"} {
		if st := bucketStatus(t, s, name); !strings.Contains(st.PauseReason, "clock") {
			t.Fatalf("bucket %s: status %+v, want a hold naming the clock", name, st)
		}
	}
	g := mustAcquire(t, s, "fresh")
	if d := g.At.Sub(before); d < window+margin {
		t.Fatalf("first grant %s after startup, want ≥ %s", d, window+margin)
	}
}

// TestClockStepBackHolds: the wall clock jumping back while running holds
// every bucket for one window + margin on the monotonic clock.
func TestClockStepBackHolds(t *testing.T) {
	t.Parallel()
	var offset atomic.Int64
	wall := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	s := newTestScheduler(t, Options{StateDir: t.TempDir(), Margin: 20 * time.Millisecond, wallClock: wall})
	const window = 2 * time.Second
	mustConfigure(t, s, "b", Limit{Requests: 5, Window: window})
	mustAcquire(t, s, "b")
	offset.Store(int64(-time.Hour))
	stepped := time.Now()
	waitFor(t, 10*time.Second, "the hold", func() bool {
		return strings.Contains(bucketStatus(t, s, "b").PauseReason, "stepped back")
	})
	st := bucketStatus(t, s, "b")
	if d := st.PausedUntil.Sub(stepped); d < window {
		t.Fatalf("held until %s after the step, want at least one window (%s)", d, window)
	}
	if _, err := s.Acquire(context.Background(), "b", -1); !errors.Is(err, ErrBudget) {
		t.Fatalf("Acquire during the hold: %v, want a budget error", err)
	}
}
