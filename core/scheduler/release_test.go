package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// TestRelease: a released grant frees its slot at once, for this run and,
// through the journal, for the next; releasing it twice or releasing an
// unknown grant changes nothing.
func TestRelease(t *testing.T) {
	dir := t.TempDir()
	s := newTestScheduler(t, Options{StateDir: dir, Margin: 100 * time.Millisecond})
	mustConfigure(t, s, "p.b", Limit{Requests: 2, Window: time.Hour})
	g1 := mustAcquire(t, s, "p.b")
	g2 := mustAcquire(t, s, "p.b")
	if _, err := s.Acquire(context.Background(), "p.b", -1); !errors.Is(err, ErrBudget) {
		t.Fatalf("third grant within the hour: %v, want a budget error", err)
	}
	s.Release(g1)
	s.Release(g1)
	s.Release(Grant{Bucket: "p.b", At: time.Now()})
	s.Release(Grant{Bucket: "other", At: g2.At})
	if st := bucketStatus(t, s, "p.b"); st.InWindow != 1 || st.Granted != 1 {
		t.Fatalf("after release: in window %d, granted %d; want 1, 1", st.InWindow, st.Granted)
	}
	g3, err := s.Acquire(context.Background(), "p.b", -1)
	if err != nil {
		t.Fatalf("grant after release: %v", err)
	}
	s.Release(g3) // journaled with the next write, here Close's
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := newTestScheduler(t, Options{StateDir: dir, Margin: 100 * time.Millisecond})
	mustConfigure(t, s2, "p.b", Limit{Requests: 2, Window: time.Hour})
	if got := bucketStatus(t, s2, "p.b").InWindow; got != 1 {
		t.Fatalf("in window after restart: %d, want 1 (only g2)", got)
	}
}

// TestLateHandOutRequeues: a grant whose hand-out comes later than half the
// margin after it was granted (a starved process) is not handed out: it is
// withdrawn, never having been sent, and the caller gets a fresh grant with
// a UseBy ahead of it.
func TestLateHandOutRequeues(t *testing.T) {
	margin := 40 * time.Millisecond
	s := newTestScheduler(t, Options{Margin: margin})
	mustConfigure(t, s, "p.b", Limit{Requests: 100, Window: time.Hour})
	var calls atomic.Int32
	s.beforeHandOut = func() {
		if calls.Add(1) == 1 {
			time.Sleep(margin) // simulates the stall, not synchronisation
		}
	}
	g := mustAcquire(t, s, "p.b")
	if calls.Load() != 2 {
		t.Fatalf("hand-out attempts: %d, want 2 (the late one queued again)", calls.Load())
	}
	st := bucketStatus(t, s, "p.b")
	if st.Granted != 1 || st.InWindow != 1 || st.Late != 1 {
		t.Errorf("granted %d, in window %d, late %d: the late grant, never sent, must be withdrawn", st.Granted, st.InWindow, st.Late)
	}
	if g.Seq != 2 || !g.UseBy.After(g.At) || g.UseBy.Sub(g.At) > margin*3/4 {
		t.Errorf("grant %+v: want the second, usable until at most 3/4 margin after it", g)
	}
}

// TestLateHandOutKeepsItsPlace: a caller whose grant was handed out too
// late queues again at the head, ahead of a caller that arrived meanwhile.
func TestLateHandOutKeepsItsPlace(t *testing.T) {
	margin := 40 * time.Millisecond
	s := newTestScheduler(t, Options{Margin: margin})
	// A long window: the late caller must be back in line well before the
	// next slot, even on a starved machine.
	mustConfigure(t, s, "p.b", Limit{Requests: 1, Window: 500 * time.Millisecond})
	var calls atomic.Int32
	later := make(chan Grant, 1)
	s.beforeHandOut = func() {
		if calls.Add(1) != 1 {
			return
		}
		go func() { later <- mustAcquire(t, s, "p.b") }()
		deadline := time.Now().Add(5 * time.Second)
		for bucketStatus(t, s, "p.b").Queued != 1 {
			if time.Now().After(deadline) {
				t.Error("the second caller never queued")
				return
			}
			time.Sleep(time.Millisecond) // polling with a deadline
		}
		time.Sleep(margin) // the stall
	}
	first := mustAcquire(t, s, "p.b")
	second := <-later
	if !first.At.Before(second.At) {
		t.Fatalf("the late caller was granted at %s, the newcomer at %s: want the late caller first",
			first.At.Format(time.StampMicro), second.At.Format(time.StampMicro))
	}
}

// TestAcquireSpeculative: a speculative grant is made only while half the
// bucket's limit stays free after it, and never in a bucket too small for
// that to leave a slot (a limit-1 bucket's one slot, held for a moment,
// would send a caller arriving meanwhile to sleep a whole window).
func TestAcquireSpeculative(t *testing.T) {
	for _, tt := range []struct {
		limit int
		// grants is how many speculative grants in a row are made.
		grants int
		small  bool
	}{
		{limit: 1, small: true},
		{limit: 3, small: true},
		{limit: 4, grants: 2},
		{limit: 6, grants: 3},
	} {
		t.Run(fmt.Sprint(tt.limit), func(t *testing.T) {
			s := newTestScheduler(t, Options{StateDir: t.TempDir()})
			mustConfigure(t, s, "p.b", Limit{Requests: tt.limit, Window: time.Hour})
			for i := range tt.grants {
				if _, err := s.AcquireSpeculative(context.Background(), "p.b"); err != nil {
					t.Fatalf("speculative grant %d: %v", i+1, err)
				}
			}
			_, err := s.AcquireSpeculative(context.Background(), "p.b")
			want := ErrBudget
			if tt.small {
				want = ErrNoSpeculation
			}
			if !errors.Is(err, want) {
				t.Fatalf("speculative grant %d: %v, want %v", tt.grants+1, err, want)
			}
			// Ordinary grants still fill the bucket.
			for range tt.limit - tt.grants {
				mustAcquire(t, s, "p.b")
			}
		})
	}
}
