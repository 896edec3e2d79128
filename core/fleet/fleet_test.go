package fleet

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/scheduler"
	"github.com/sluice-dev/sluice/internal/testenv"
)

// grantUntil asks until granted or the deadline passes, sleeping the wait
// the store names (as the scheduler does).
func grantUntil(t *testing.T, q *Client, bucket string, l scheduler.Limit, span time.Duration) scheduler.SharedGrant {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, err := q.Grant(context.Background(), bucket, l, span)
		if err != nil {
			t.Fatal(err)
		}
		if g.Granted {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("no grant within 10 s: %+v", g)
		}
		time.Sleep(g.Wait) // the store's own answer, not a guess
	}
}

// TestQuotaWindow: the store's window is the scheduler's (at most limit
// grants in any span), a new store holds one span (at least restartHold)
// first, a pause holds
// every member, and a released grant frees its slot.
func TestQuotaWindow(t *testing.T) {
	rd := testenv.StartRedis(t)
	q, err := New(Options{URL: rd.URL, Name: "unit"})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	l := scheduler.Limit{Requests: 3, Window: 300 * time.Millisecond}
	span := 400 * time.Millisecond
	ctx := context.Background()

	g, err := q.Grant(ctx, "p.b", l, span)
	if err != nil || g.Granted || g.Wait <= 0 || g.Wait > max(span, restartHold) {
		t.Fatalf("first grant on an empty store: %+v, %v; want held for at most one span (or the restart hold)", g, err)
	}
	var at []time.Time
	for range 9 {
		at = append(at, grantUntil(t, q, "p.b", l, span).At)
	}
	for i := l.Requests; i < len(at); i++ {
		if d := at[i].Sub(at[i-l.Requests]); d < span {
			t.Fatalf("grants %d and %d %s apart: %d in one span", i-l.Requests, i, d, l.Requests+1)
		}
	}
	if err := q.Pause(ctx, "p.b", time.Now().Add(time.Hour), "429"); err != nil {
		t.Fatal(err)
	}
	if g, _ := q.Grant(ctx, "p.b", l, span); g.Granted || g.Wait < 59*time.Minute {
		t.Fatalf("grant during a pause: %+v", g)
	}

	other := grantUntil(t, q, "p.c", l, span)
	grantUntil(t, q, "p.c", l, span)
	grantUntil(t, q, "p.c", l, span)
	if g, _ := q.Grant(ctx, "p.c", l, span); g.Granted {
		t.Fatal("a 4th grant within the span")
	}
	if err := q.Release(ctx, "p.c", other.Member); err != nil {
		t.Fatal(err)
	}
	if g, _ := q.Grant(ctx, "p.c", l, span); !g.Granted {
		t.Fatalf("no grant after a release freed a slot: %+v", g)
	}
}
