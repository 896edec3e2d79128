package fleet

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/core/scheduler"
	"github.com/sluice-dev/sluice/internal/testenv"
)

// TestRides: a miss's restamp waits for the member's next script (its
// cache store) and goes in the same round trip, which is how a miss costs
// three round trips, not four; with no script to ride on it lands on its
// own within moments. Either way it lands, and a release does the same.
func TestRides(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	q, err := New(Options{URL: rd.URL, Name: "rides"})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
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
			q.RestampLater("p.r", g.Member, to, func(err error) { done <- err })
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
