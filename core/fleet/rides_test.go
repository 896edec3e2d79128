package fleet

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/core/cache"
	"github.com/sluice-dev/sluice/core/scheduler"
)

// TestRides: a miss's restamp waits for the member's next script (its
// cache store) and goes in the same round trip, which is how a miss costs
// three round trips, not four; with no script to ride on it lands on its
// own within moments. Either way it lands, and a release does the same.
func TestRides(t *testing.T) {
	t.Parallel()
	q, rd := newTestClient(t, "rides")
	q.restartHold = 0
	c := q.Cache(nil)
	defer c.Close()
	admin := redis.NewClient(&redis.Options{Network: "unix", Addr: rd.Socket})
	defer admin.Close()
	ctx := context.Background()
	l := scheduler.Limit{Requests: 100, Window: time.Second}
	span := 1100 * time.Millisecond
	score := func(member string) int64 {
		t.Helper()
		f, err := admin.ZScore(ctx, q.keys("p.r")[0], member).Result()
		if err != nil {
			t.Fatalf("grant %s in the log: %v", member, err)
		}
		return int64(f)
	}

	// Redis loads each script at its first run (one more round trip):
	// load the restamp and the store's before counting.
	g := grantUntil(t, q, "p.r", l, span)
	if err := q.Restamp(ctx, "p.r", g.Member, g.At); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(ctx, "ineo:w", []byte("v"), time.Minute, time.Minute, ""); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name string
		// next is the member's next script after the restamp (nil:
		// none comes, the restamp goes on its own).
		next  func() error
		trips int64
	}{
		{"with the cache store", func() error {
			return c.Store(ctx, "ineo:k", []byte("v"), time.Minute, time.Minute, "")
		}, 1},
		{"alone", nil, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := grantUntil(t, q, "p.r", l, span)
			to := g.At.Add(50 * time.Millisecond)
			done := make(chan error, 1)
			before := q.RoundTrips()
			q.RestampLater("p.r", g.Member, to, true, func(err error) { done <- err })
			if tt.next != nil {
				if err := tt.next(); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the restamp never went")
			}
			if got := q.RoundTrips() - before; got != tt.trips {
				t.Fatalf("round trips for the restamp (and the script after it): %d, want %d", got, tt.trips)
			}
			if got, want := score(g.Member), to.UnixMicro(); got != want {
				t.Fatalf("grant's time in the log: %d, want the restamp's %d", got, want)
			}
		})
	}

	g = grantUntil(t, q, "p.r", l, span)
	if err := q.Release(ctx, "p.r", g.Member); err != nil {
		t.Fatal(err)
	}
	if err := admin.ZScore(ctx, q.keys("p.r")[0], g.Member).Err(); err != redis.Nil {
		t.Fatalf("released grant still in the log: %v", err)
	}
}

// TestPairs: a miss's cache lookup and its grant, asked together
// (cache.DoAhead), cost one round trip between them, which is how a miss
// costs two; either one alone still goes, in one round trip of its own.
func TestPairs(t *testing.T) {
	t.Parallel()
	q, _ := newTestClient(t, "pairs")
	q.restartHold = 0
	c := q.Cache(nil)
	defer c.Close()
	ctx := context.Background()
	l := scheduler.Limit{Requests: 100, Window: time.Second}
	span := 1100 * time.Millisecond
	// Redis loads each script at its first run (one more round trip).
	grantUntil(t, q, "p.p", l, span)
	if _, err := c.Lookup(ctx, "ineo:warm", false); err != nil {
		t.Fatal(err)
	}

	lookup := func(ctx context.Context, key string) error {
		f, err := c.Lookup(ctx, key, false)
		if err == nil && f.Lock == "" {
			t.Errorf("lookup of a new key took no fill lock: %+v", f)
		}
		return err
	}
	grant := func(ctx context.Context) error {
		g, err := q.GrantQueued(ctx, "p.p", l, span, "", -1, 0)
		if err == nil && !g.Granted {
			t.Errorf("not granted: %+v", g)
		}
		return err
	}
	// And the first pipeline opens a connection of its own: open it
	// before counting.
	q.pairWait = time.Minute
	pctx := cache.WithTogether(ctx)
	warm := make(chan error, 1)
	go func() { warm <- grant(pctx) }()
	if err := lookup(pctx, "ineo:warm2"); err != nil {
		t.Fatal(err)
	}
	if err := <-warm; err != nil {
		t.Fatal(err)
	}
	for i, tt := range []struct {
		name  string
		calls []func(context.Context, string) error
		// wait is how long the first waits for its partner: long for
		// a pair, so a busy machine's scheduling cannot split it.
		wait time.Duration
	}{
		{"lookup and grant", []func(context.Context, string) error{lookup, func(ctx context.Context, _ string) error { return grant(ctx) }}, time.Minute},
		{"lookup alone", []func(context.Context, string) error{lookup}, pairWait},
		{"grant alone", []func(context.Context, string) error{func(ctx context.Context, _ string) error { return grant(ctx) }}, pairWait},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q.pairWait = tt.wait
			pctx := cache.WithTogether(ctx)
			before := q.RoundTrips()
			errs := make(chan error, len(tt.calls))
			for _, call := range tt.calls {
				go func() { errs <- call(pctx, fmt.Sprintf("ineo:k%d", i)) }()
			}
			for range tt.calls {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			if got := q.RoundTrips() - before; got != 1 {
				t.Fatalf("%d round trips, want 1", got)
			}
		})
	}
}

// TestSpeculativeGrant: a speculative grant (spare > 0) is made only while
// spare slots stay free after it, so one given back never made anyone
// wait; ordinary grants still fill the bucket.
func TestSpeculativeGrant(t *testing.T) {
	t.Parallel()
	q, rd := newTestClient(t, "spec")
	q.restartHold = 0
	ctx := context.Background()
	l := scheduler.Limit{Requests: 6, Window: time.Hour}
	span := time.Hour
	// A store that has known the bucket for long: no hold of a new one.
	admin := redis.NewClient(&redis.Options{Network: "unix", Addr: rd.Socket})
	defer admin.Close()
	if err := admin.Set(ctx, q.keys("p.s")[3], 0, 0).Err(); err != nil {
		t.Fatal(err)
	}
	ask := func(spare int) bool {
		t.Helper()
		g, err := q.GrantQueued(ctx, "p.s", l, span, "", -1, spare)
		if err != nil {
			t.Fatal(err)
		}
		return g.Granted
	}
	// Speculative grants while 3 stay free after them.
	for i, want := range []bool{true, true, true, false} {
		if got := ask(3); got != want {
			t.Fatalf("speculative grant %d (with %d in the window): granted %v, want %v", i+1, i, got, want)
		}
	}
	// Refused while a slot is free now, a speculative asker with a
	// ticket must not be queued (told a wait of 0, it would stand ahead
	// of real waiters until it gave its place up).
	if g, err := q.GrantQueued(ctx, "p.s", l, span, "spec", 0, 3); err != nil || g.Granted || g.Queued {
		t.Fatalf("speculative ask with a ticket: %+v, %v; want refused, not queued", g, err)
	}
	if n, err := admin.ZCard(ctx, q.keys("p.s")[7]).Result(); err != nil || n != 0 {
		t.Fatalf("%d waiters queued after a speculative ask (%v), want 0", n, err)
	}
	for i, want := range []bool{true, true, true, false} {
		if got := ask(0); got != want {
			t.Fatalf("ordinary grant %d (with %d in the window): granted %v, want %v", i+1, i+3, got, want)
		}
	}
}

// TestOutstandingRestampTeachesNothing: a restamp to a moment an exchange
// was still out (Host.Outstanding) moves the grant but is no answer, so
// the fleet's estimate of how long answers take stays as it was; a
// restamp to an answer teaches it.
func TestOutstandingRestampTeachesNothing(t *testing.T) {
	t.Parallel()
	q, rd := newTestClient(t, "outstanding")
	admin := redis.NewClient(&redis.Options{Network: "unix", Addr: rd.Socket})
	defer admin.Close()
	ctx := context.Background()
	l := scheduler.Limit{Requests: 100, Window: time.Second}
	span := 1100 * time.Millisecond
	estimate := func() string {
		t.Helper()
		v, err := admin.HGet(ctx, q.keys("p.o")[9], "avg").Result()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		return v
	}
	restamp := func(answer bool) (moved bool) {
		t.Helper()
		g := grantUntil(t, q, "p.o", l, span)
		done := make(chan error, 1)
		q.RestampLater("p.o", g.Member, g.At.Add(400*time.Millisecond), answer, func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		f, err := admin.ZScore(ctx, q.keys("p.o")[0], g.Member).Result()
		if err != nil {
			t.Fatal(err)
		}
		return int64(f) >= g.At.Add(400*time.Millisecond).UnixMicro()-1
	}
	before := estimate()
	if !restamp(false) {
		t.Fatal("an outstanding report did not move the grant")
	}
	if got := estimate(); got != before {
		t.Fatalf("an outstanding report taught the answer delay: %q, was %q", got, before)
	}
	if !restamp(true) {
		t.Fatal("an answer did not move the grant")
	}
	if got := estimate(); got == before {
		t.Fatalf("an answer taught nothing: the estimate is still %q", got)
	}
}
