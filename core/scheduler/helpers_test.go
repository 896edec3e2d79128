package scheduler

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// newTestScheduler creates a scheduler that is closed when the test ends.
func newTestScheduler(t *testing.T, opts Options) *Scheduler {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustConfigure(t *testing.T, s *Scheduler, name string, l Limit) {
	t.Helper()
	if err := s.Configure(name, l); err != nil {
		t.Fatalf("Configure(%q, %+v): %v", name, l, err)
	}
}

func mustAcquire(t *testing.T, s *Scheduler, name string) Grant {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g, err := s.Acquire(ctx, name, 0)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", name, err)
	}
	return g
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}

func bucketStatus(t *testing.T, s *Scheduler, name string) BucketStatus {
	t.Helper()
	for _, st := range s.Status() {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("bucket %q missing from Status", name)
	return BucketStatus{}
}

func waitQueued(t *testing.T, s *Scheduler, name string, n int) {
	t.Helper()
	waitFor(t, 15*time.Second, "queue length", func() bool { return bucketStatus(t, s, name).Queued == n })
}

// result is what a background Acquire reports.
type result struct {
	g   Grant
	err error
	at  time.Time // when Acquire returned
}

// acquireAsync starts an Acquire and returns a channel with its outcome.
func acquireAsync(ctx context.Context, s *Scheduler, name string, maxWait time.Duration) <-chan result {
	ch := make(chan result, 1)
	go func() {
		g, err := s.Acquire(ctx, name, maxWait)
		ch <- result{g: g, err: err, at: time.Now()}
	}()
	return ch
}

func receive(t *testing.T, ch <-chan result, timeout time.Duration) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(timeout):
		t.Fatalf("no result within %s", timeout)
		return result{}
	}
}

// assertSlidingWindow checks the scheduler's guarantee on a set of grant
// times: no (t − span, t] holds more than req of them.
func assertSlidingWindow(t *testing.T, at []time.Time, req int, span time.Duration) {
	t.Helper()
	for _, end := range at {
		n := 0
		for _, x := range at {
			if x.After(end.Add(-span)) && !x.After(end) {
				n++
			}
		}
		if n > req {
			t.Fatalf("%d grants in (%v − %s, %v], limit %d", n, end, span, end, req)
		}
	}
}

// recordingHandler keeps log records so tests can count warnings.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) count(level slog.Level, substr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Level == level && strings.Contains(r.Message, substr) {
			n++
		}
	}
	return n
}
