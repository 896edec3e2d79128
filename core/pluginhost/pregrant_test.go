package pluginhost

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/proto"
	"github.com/sluice-dev/sluice/core/scheduler"
)

// fakeScheduler records what PreGrant and Release ask of the scheduler.
type fakeScheduler struct {
	mu       sync.Mutex
	refuse   bool
	acquires []time.Duration // maxWait of each Acquire
	released []scheduler.Grant
}

func (f *fakeScheduler) Acquire(_ context.Context, bucket string, maxWait time.Duration) (scheduler.Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acquires = append(f.acquires, maxWait)
	if f.refuse {
		return scheduler.Grant{}, &scheduler.BudgetError{Bucket: bucket, RetryAfter: time.Second}
	}
	return scheduler.Grant{Bucket: bucket, At: time.Now(), Seq: uint64(len(f.acquires))}, nil
}

// AcquireSpeculative is recorded as an Acquire that would not wait.
func (f *fakeScheduler) AcquireSpeculative(ctx context.Context, bucket string) (scheduler.Grant, error) {
	return f.Acquire(ctx, bucket, -1)
}

func (f *fakeScheduler) Pause(string, time.Time, string) {}
func (f *fakeScheduler) Answered(string, time.Time, time.Time) time.Time {
	return time.Time{}
}
func (f *fakeScheduler) Outstanding(string, time.Time) time.Time { return time.Time{} }
func (f *fakeScheduler) Span(string) time.Duration               { return 0 }
func (f *fakeScheduler) Predict(string) (int, time.Time, bool)   { return 0, time.Time{}, false }
func (f *fakeScheduler) Configure(string, scheduler.Limit) error { return nil }
func (f *fakeScheduler) Release(g scheduler.Grant) {
	f.mu.Lock()
	f.released = append(f.released, g)
	f.mu.Unlock()
}
func (f *fakeScheduler) counts() (acquires, released int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.acquires), len(f.released)
}

// handleFor is the ineo provider's handle on a host with opts, its plugin
// ready or still starting (no process either way).
func handleFor(opts Options, ready bool) *Handle {
	sup := newSupervisor(&Host{opts: opts, log: slog.New(slog.DiscardHandler)}, Spec{Name: "ineo"})
	if ready {
		sup.setState(StateReady, &instance{}, "")
	}
	sup.lastDesc.Store(&proto.Description{Name: "ineo", Buckets: []*proto.Bucket{
		{Name: "ineo.spotify", Requests: 6, WindowMs: 7000},
		{Name: "ineo.turns", Requests: 6, WindowMs: 7000, MaxInFlight: 1},
	}})
	return &Handle{s: sup}
}

func TestPreGrant(t *testing.T) {
	cases := []struct {
		name     string
		bucket   string
		ready    bool
		refuse   bool
		granted  bool
		acquires int
	}{
		{"own bucket, free", "ineo.spotify", true, false, true, 1},
		{"own bucket, cannot grant at once", "ineo.spotify", true, true, false, 1},
		{"another provider's bucket", "hellorf.api", true, false, false, 0},
		{"name prefix is not ownership", "ineox.spotify", true, false, false, 0},
		{"bare provider name", "ineo", true, false, false, 0},
		{"plugin not ready", "ineo.spotify", false, false, false, 0},
		{"bucket taking turns (max_in_flight)", "ineo.turns", true, false, false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sched := &fakeScheduler{refuse: tc.refuse}
			var observed []string
			h := handleFor(Options{Scheduler: sched, ObserveWait: func(b string, _ time.Duration) { observed = append(observed, b) }}, tc.ready)
			g, ok := h.PreGrant(context.Background(), tc.bucket)
			if ok != tc.granted {
				t.Fatalf("granted %v, want %v", ok, tc.granted)
			}
			if ok && g.Bucket != tc.bucket {
				t.Fatalf("grant for %q", g.Bucket)
			}
			if n, _ := sched.counts(); n != tc.acquires {
				t.Fatalf("%d scheduler Acquires, want %d", n, tc.acquires)
			}
			for _, w := range sched.acquires {
				if w >= 0 {
					t.Fatalf("Acquire with maxWait %s: a pre-grant must accept only an immediate grant", w)
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tc.granted]; len(observed) != want {
				t.Fatalf("ObserveWait called %d times, want %d", len(observed), want)
			}
		})
	}
}

func TestPreGrantRelease(t *testing.T) {
	sched := &fakeScheduler{}
	h := handleFor(Options{Scheduler: sched}, true)
	g, ok := h.PreGrant(context.Background(), "ineo.spotify")
	if !ok {
		t.Fatal("no pre-grant")
	}
	h.Release(g)
	h.Release(scheduler.Grant{Bucket: "hellorf.api", At: time.Now(), Seq: 1})
	if _, n := sched.counts(); n != 1 || sched.released[0] != g {
		t.Fatalf("released %v, want only %v", sched.released, g)
	}
}
