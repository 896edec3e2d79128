package fleet

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/scheduler"
	"github.com/sluice-dev/sluice/internal/testenv"
)

// fleetMember connects one fleet member with a short restart hold (the unit
// tests' windows are short; the rule is the same).
func fleetMember(t *testing.T, rd *testenv.Redis, name, version string) *Client {
	t.Helper()
	q, err := New(Options{URL: rd.URL, Name: name, Version: version, Host: "h-" + name})
	if err != nil {
		t.Fatal(err)
	}
	q.restartHold = 0
	t.Cleanup(func() { q.Close() })
	return q
}

func beat(t *testing.T, q *Client, b string, l scheduler.Limit) scheduler.BeatResult {
	t.Helper()
	r, err := q.Beat(context.Background(), map[string]scheduler.Limit{b: l})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestOneLimit: the fleet keeps a bucket to one limit. A member whose
// limit differs is refused (Mismatch, nothing granted) while a live member
// still holds the fleet's; status flags it on both sides; a reload on
// every member moves the fleet to the new limit (each member's limit
// replaces the stored one once no other live member holds that); a fresh
// store takes the limit most live members hold, the stricter on a tie.
func TestOneLimit(t *testing.T) {
	rd := testenv.StartRedis(t)
	ctx := context.Background()
	l6 := scheduler.Limit{Requests: 6, Window: 300 * time.Millisecond}
	l5 := scheduler.Limit{Requests: 5, Window: 300 * time.Millisecond}
	span := 400 * time.Millisecond
	a, b, c := fleetMember(t, rd, "lim", "1"), fleetMember(t, rd, "lim", "1"), fleetMember(t, rd, "lim", "2")
	beat(t, a, "p.b", l6)
	beat(t, b, "p.b", l6)
	beat(t, c, "p.b", l5)

	// The majority's limit, though the odd member asks first.
	g := decided(t, c, "p.b", l5, span)
	if !g.Mismatch || g.FleetLimit != l6 || g.Granted {
		t.Fatalf("the odd member's grant: %+v; want a mismatch naming 6 per 300ms", g)
	}
	grantUntil(t, a, "p.b", l6, span)
	if g, _ := c.Grant(ctx, "p.b", l5, span); !g.Mismatch {
		t.Fatalf("the odd member was granted with another limit: %+v", g)
	}

	st := c.Status(ctx, map[string]scheduler.Limit{"p.b": l5})
	if !st.Reachable || len(st.Members) != 3 || len(st.Mismatches) != 1 || st.Mismatches[0].Bucket != "p.b" || LimitText(st.Mismatches[0].Fleet) != "6 per 300ms" {
		t.Fatalf("odd member's status: %+v", st)
	}
	st = a.Status(ctx, map[string]scheduler.Limit{"p.b": l6})
	if len(st.Mismatches) != 0 {
		t.Fatalf("an agreeing member reports a mismatch: %+v", st.Mismatches)
	}
	for _, m := range st.Members {
		odd := m.ID == c.me.ID
		if odd != slices.Equal(m.LimitsDisagree, []string{"p.b"}) || odd != m.VersionDisagrees || m.Self != (m.ID == a.me.ID) {
			t.Errorf("member %s (%s): disagrees %v, version %v, self %v", m.ID, m.Host, m.LimitsDisagree, m.VersionDisagrees, m.Self)
		}
	}

	// The fleet moves to 5: one member reloaded is not enough (another
	// live one holds 6), all of them are.
	beat(t, a, "p.b", l5)
	if g, _ := a.Grant(ctx, "p.b", l5, span); !g.Mismatch {
		t.Fatalf("a limit changed while another live member still holds the old one: %+v", g)
	}
	beat(t, b, "p.b", l5)
	g = decided(t, c, "p.b", l5, span)
	if g.Mismatch {
		t.Fatal("no grant after every member agreed")
	}
	if g, _ := a.Grant(ctx, "p.b", l6, span); !g.Mismatch {
		t.Fatalf("the old limit still granted after the fleet moved: %+v", g)
	}

	// A tie on a fresh store goes to the stricter limit, whoever asks.
	x, y := fleetMember(t, rd, "tie", "1"), fleetMember(t, rd, "tie", "1")
	beat(t, x, "p.t", l6)
	beat(t, y, "p.t", l5)
	if g := decided(t, x, "p.t", l6, span); !g.Mismatch || g.FleetLimit != l5 {
		t.Fatalf("a tie between 6 and 5 per 300ms: %+v; want the fleet at 5", g)
	}

	// A member that left holds nothing: c alone at 4 takes the bucket.
	l4 := scheduler.Limit{Requests: 4, Window: 300 * time.Millisecond}
	a.Close()
	b.Close()
	beat(t, c, "p.b", l4)
	if g := decided(t, c, "p.b", l4, span); g.Mismatch {
		t.Fatal("a limit held only by members that left still binds")
	}
}

// decided asks until the store grants or refuses for a mismatch.
func decided(t *testing.T, q *Client, bucket string, l scheduler.Limit, span time.Duration) scheduler.SharedGrant {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, err := q.Grant(context.Background(), bucket, l, span)
		if err != nil {
			t.Fatal(err)
		}
		if g.Granted || g.Mismatch {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing decided within 10 s: %+v", g)
		}
		time.Sleep(g.Wait) // the store's own answer
	}
}

// TestBeatNoticesEmptyRestart: a member's first beat asks it to publish its
// pauses (the store never had them); a Redis restarted empty is noticed at
// the next beat (Forgot: republish, reseed), and not otherwise.
func TestBeatNoticesEmptyRestart(t *testing.T) {
	rd := testenv.StartRedis(t)
	q := fleetMember(t, rd, "ep", "1")
	l := scheduler.Limit{Requests: 1, Window: time.Second}
	if r := beat(t, q, "p.b", l); !r.Republish || r.Forgot || r.Next <= 0 {
		t.Fatalf("first beat: %+v", r)
	}
	if r := beat(t, q, "p.b", l); r.Republish || r.Forgot {
		t.Fatalf("second beat, nothing happened: %+v", r)
	}
	rd.Kill()
	if _, err := q.Beat(context.Background(), map[string]scheduler.Limit{"p.b": l}); err == nil {
		t.Fatal("a beat with Redis gone succeeded")
	}
	rd.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := q.Beat(context.Background(), map[string]scheduler.Limit{"p.b": l})
		if err == nil {
			if !r.Republish || !r.Forgot {
				t.Fatalf("beat after an empty restart: %+v", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the client reconnecting
	}
}

// TestRepublishedPauseHoldsFleet: member A holds a pause; Redis restarts
// empty; A's heartbeat writes the pause again, so member B is granted
// nothing until it ends, though the store forgot it (before: B granted
// once the restart hold was over, inside A's pause: an iNeo ban).
func TestRepublishedPauseHoldsFleet(t *testing.T) {
	rd := testenv.StartRedis(t)
	l := scheduler.Limit{Requests: 3, Window: 300 * time.Millisecond}
	mk := func() *scheduler.Scheduler {
		q := fleetMember(t, rd, "rp", "1")
		q.restartHold = restartHold // the real rule: long enough for every member's next beat
		s, err := scheduler.New(scheduler.Options{Shared: q, Margin: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		if err := s.Configure("p.b", l); err != nil {
			t.Fatal(err)
		}
		return s
	}
	sA, sB := mk(), mk()
	ctx := context.Background()
	if _, err := sB.Acquire(ctx, "p.b", 0); err != nil {
		t.Fatal(err)
	}
	pauseEnd := time.Now().Add(restartHold + 3*time.Second)
	sA.Pause("p.b", pauseEnd, "test stop code")
	rd.Kill()
	rd.Start()
	for {
		g, err := sB.Acquire(ctx, "p.b", 0)
		if err == nil {
			if g.At.Before(pauseEnd) {
				t.Fatalf("granted %s before the end of a pause the store forgot and A held", pauseEnd.Sub(g.At).Round(time.Millisecond))
			}
			return
		}
		if time.Now().After(pauseEnd.Add(20 * time.Second)) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the clients reconnecting (fleet unreachable)
	}
}

// TestJoinSeedsLocalGrants: a daemon that ran alone and restarts into fleet
// mode mid-window counts its recent grants in the fleet's window: a member
// already serving is granted nothing more until they leave it. (Before:
// the fleet granted a full window on top of them.)
func TestJoinSeedsLocalGrants(t *testing.T) {
	rd := testenv.StartRedis(t)
	l := scheduler.Limit{Requests: 3, Window: time.Second}
	margin := 50 * time.Millisecond
	span := l.Window + margin
	ctx := context.Background()

	other, err := scheduler.New(scheduler.Options{Shared: fleetMember(t, rd, "join", "1"), Margin: margin})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Configure("p.b", l); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Acquire(ctx, "p.b", 0); err != nil { // past the fresh store's hold
		t.Fatal(err)
	}
	time.Sleep(span) // let the window empty (setup only)

	dir := filepath.Join(t.TempDir(), "state")
	alone, err := scheduler.New(scheduler.Options{StateDir: dir, Margin: margin})
	if err != nil {
		t.Fatal(err)
	}
	if err := alone.Configure("p.b", l); err != nil {
		t.Fatal(err)
	}
	var sent []time.Time
	for range l.Requests {
		g, err := alone.Acquire(ctx, "p.b", 0)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, g.At)
	}
	if err := alone.Close(); err != nil {
		t.Fatal(err)
	}
	joined, err := scheduler.New(scheduler.Options{StateDir: dir, Shared: fleetMember(t, rd, "join", "1"), Margin: margin})
	if err != nil {
		t.Fatal(err)
	}
	defer joined.Close()
	if err := joined.Configure("p.b", l); err != nil {
		t.Fatal(err)
	}
	g, err := other.Acquire(ctx, "p.b", 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := g.At.Sub(sent[0]); d < span {
		t.Fatalf("the fleet granted %s after the joining daemon's first of %d grants, within one span (%s): %d in one window",
			d.Round(time.Millisecond), l.Requests, span, l.Requests+1)
	}
}

// TestSeenPauseOutlivesItsMember: a member that was refused a grant for
// another member's pause writes that pause back after an empty restart,
// though the member that saw the 429 is gone: a third member is granted
// nothing until it ends. (Before: the pause died with its member.)
func TestSeenPauseOutlivesItsMember(t *testing.T) {
	rd := testenv.StartRedis(t)
	l := scheduler.Limit{Requests: 3, Window: 300 * time.Millisecond}
	mk := func() *scheduler.Scheduler {
		q := fleetMember(t, rd, "seen", "1")
		q.restartHold = restartHold
		s, err := scheduler.New(scheduler.Options{Shared: q, Margin: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		if err := s.Configure("p.b", l); err != nil {
			t.Fatal(err)
		}
		return s
	}
	sA, sB := mk(), mk()
	ctx := context.Background()
	if _, err := sB.Acquire(ctx, "p.b", 0); err != nil {
		t.Fatal(err)
	}
	pauseEnd := time.Now().Add(restartHold + 3*time.Second)
	sA.Pause("p.b", pauseEnd, "test stop code")
	if _, err := sB.Acquire(ctx, "p.b", -1); err == nil {
		t.Fatal("granted during a fleet pause")
	}
	sA.Close()
	rd.Kill()
	rd.Start()
	sC := mk()
	for {
		g, err := sC.Acquire(ctx, "p.b", 0)
		if err == nil {
			if g.At.Before(pauseEnd) {
				t.Fatalf("granted %s before the end of a pause only a surviving member had seen", pauseEnd.Sub(g.At).Round(time.Millisecond))
			}
			return
		}
		if time.Now().After(pauseEnd.Add(20 * time.Second)) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the clients reconnecting (fleet unreachable)
	}
}
