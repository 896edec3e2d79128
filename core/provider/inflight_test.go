package provider

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/proto"
)

// oneAtATime is a description whose bucket "p.a" takes turns.
var oneAtATime = &proto.Description{Buckets: []*proto.Bucket{{Name: "p.a", Requests: 100, WindowMs: 1000, MaxInFlight: 1}}}

// TestTurnsOneAtATime: with max_in_flight 1, concurrent callers' requests
// reach the upstream one at a time; a 429's Retry-After is waited out by
// every later request; and nobody spends a grant inside the pause.
func TestTurnsOneAtATime(t *testing.T) {
	var (
		mu          sync.Mutex
		inFlight    int
		maxInFlight int
		pausedUntil time.Time
		during      int
		n           atomic.Int32
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		maxInFlight = max(maxInFlight, inFlight)
		if time.Now().Before(pausedUntil) {
			during++
		}
		first := n.Add(1) == 1
		if first {
			pausedUntil = time.Now().Add(time.Second)
		}
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // an upstream that takes its time
		mu.Lock()
		inFlight--
		mu.Unlock()
		if first {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	host := &fakeHost{}
	u := newUpstream(host, oneAtATime)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, r := callWith(nil)
			r.MaxWait = 5 * time.Second
			resp, err := u.Do(ctx, "p.a", func(ctx context.Context) (*http.Request, error) {
				return http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			})
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if maxInFlight != 1 {
		t.Errorf("%d requests at the upstream at once, want 1", maxInFlight)
	}
	if during != 0 {
		t.Errorf("%d requests arrived inside the Retry-After", during)
	}
	if got, sent := host.acquires.Load(), n.Load(); got != sent {
		t.Errorf("%d grants for %d requests: a grant was spent inside the pause", got, sent)
	}
}

// TestTurnsMaxWait: a caller that cannot get a turn within its max wait
// gets a 429 problem, and the wait for a turn comes off the max wait the
// scheduler is then asked for.
func TestTurnsMaxWait(t *testing.T) {
	host := &fakeHost{}
	u := newUpstream(host, oneAtATime)
	ctx, _ := callWith(nil)
	ctx = LimitWait(ctx, 200*time.Millisecond)
	_, done, err := u.take(ctx, "p.a") // held: nobody else gets a turn
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, err = u.take(ctx, "p.a")
	var p *problem.Problem
	if !errors.As(err, &p) || p.Status != http.StatusTooManyRequests {
		t.Fatalf("take with no turn free = %v, want a 429 problem", err)
	}
	if took := time.Since(start); took < 200*time.Millisecond || took > 2*time.Second {
		t.Fatalf("gave up after %s, want the 200 ms max wait", took)
	}

	// A turn that comes free after 100 ms or more leaves the scheduler at
	// most the rest of the caller's second.
	ctx, _ = callWith(nil) // max wait 1 s
	time.AfterFunc(100*time.Millisecond, done)
	ctx2, done2, err := u.take(ctx, "p.a")
	if err != nil {
		t.Fatal(err)
	}
	defer done2()
	if left := callFrom(ctx2).MaxWait; left > 900*time.Millisecond || left <= 0 {
		t.Fatalf("max wait left after waiting for a turn: %s, want at most 900 ms", left)
	}
	if w := time.Duration(callFrom(ctx2).stats.waitNs.Load()); w < 90*time.Millisecond {
		t.Fatalf("logged wait %s, want the time spent waiting for turns", w)
	}
}

// TestTurnsUnbounded: buckets without max_in_flight take no turns.
func TestTurnsUnbounded(t *testing.T) {
	u := newUpstream(&fakeHost{}, oneAtATime)
	ctx, _ := callWith(nil)
	var dones []func()
	for range 3 {
		_, done, err := u.take(ctx, "p.other")
		if err != nil {
			t.Fatal(err)
		}
		dones = append(dones, done)
	}
	for _, d := range dones {
		d()
	}
}
