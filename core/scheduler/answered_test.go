package scheduler

import (
	"context"
	"testing"
	"time"
)

// TestAnsweredCountsAtTheAnswer: a grant reported answered later counts
// from then, so the next window opens a window after the answer, not after
// the send; reports that would move a grant earlier, into the future, or
// name no grant change nothing.
func TestAnsweredCountsAtTheAnswer(t *testing.T) {
	t.Parallel()
	const (
		window = 300 * time.Millisecond
		margin = 20 * time.Millisecond
		late   = 150 * time.Millisecond
	)
	tests := []struct {
		name   string
		report func(s *Scheduler, g Grant)
		// wantAfter is how long after the first grant the second may come.
		wantAfter time.Duration
	}{
		{"answered later", func(s *Scheduler, g Grant) { s.Answered("b", g.At, g.At.Add(late)) }, window + margin + late},
		{"no report", func(*Scheduler, Grant) {}, window + margin},
		{"earlier is ignored", func(s *Scheduler, g Grant) { s.Answered("b", g.At, g.At.Add(-late)) }, window + margin},
		{"unknown grant is ignored", func(s *Scheduler, g Grant) { s.Answered("b", g.At.Add(-time.Hour), g.At.Add(late)) }, window + margin},
		{"unknown bucket is ignored", func(s *Scheduler, g Grant) { s.Answered("nope", g.At, g.At.Add(late)) }, window + margin},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newTestScheduler(t, Options{StateDir: t.TempDir(), Margin: margin})
			mustConfigure(t, s, "b", Limit{Requests: 1, Window: window})
			first := mustAcquire(t, s, "b")
			// The answer arrives: wait until then so "answered later"
			// is not capped at now.
			for time.Since(first.At) < late {
				time.Sleep(time.Millisecond)
			}
			tc.report(s, first)
			second := mustAcquire(t, s, "b")
			if d := second.At.Sub(first.At); d < tc.wantAfter || d > tc.wantAfter+window {
				t.Fatalf("second grant %s after the first, want %s (or a little more)", d, tc.wantAfter)
			}
		})
	}
}

// TestAnsweredNeverInTheFuture: a report of an answer after now (a clock
// gone wrong in a plugin) counts the grant at now, no later.
func TestAnsweredNeverInTheFuture(t *testing.T) {
	t.Parallel()
	const window = 200 * time.Millisecond
	s := newTestScheduler(t, Options{Margin: 10 * time.Millisecond})
	mustConfigure(t, s, "b", Limit{Requests: 1, Window: window})
	first := mustAcquire(t, s, "b")
	s.Answered("b", first.At, first.At.Add(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.Acquire(ctx, "b", 0); err != nil {
		t.Fatalf("a grant reported answered an hour ahead blocked the bucket: %v", err)
	}
}

// TestAnsweredMovesAgain: a grant moved while its exchange is still out
// (Host.Outstanding) moves again from there, named by the time Answered
// returned or by any earlier one (a report whose reply was lost, a trailer
// written before the last move); an earlier time leaves it where it is.
func TestAnsweredMovesAgain(t *testing.T) {
	t.Parallel()
	s := newTestScheduler(t, Options{StateDir: t.TempDir(), Margin: 10 * time.Millisecond})
	mustConfigure(t, s, "b", Limit{Requests: 1, Window: time.Minute})
	g := mustAcquire(t, s, "b")
	after := func(t0 time.Time) time.Time {
		for time.Since(t0) < 5*time.Millisecond {
			time.Sleep(time.Millisecond)
		}
		return time.Now()
	}
	at1 := s.Answered("b", g.At, after(g.At))
	if !at1.After(g.At) {
		t.Fatalf("moved to %v, want after the grant's %v", at1, g.At)
	}
	at2 := s.Answered("b", at1, after(at1))
	if !at2.After(at1) {
		t.Fatalf("moved again to %v, want after %v", at2, at1)
	}
	at3 := s.Answered("b", g.At, after(at2))
	if !at3.After(at2) {
		t.Fatalf("named by its first time, moved to %v, want after %v", at3, at2)
	}
	if got := s.Answered("b", at1, at3.Add(-time.Second)); !got.Equal(at3) {
		t.Fatalf("an earlier time moved it to %v, want it left at %v", got, at3)
	}
	if got := s.Answered("b", g.At.Add(-time.Hour), time.Now()); !got.IsZero() {
		t.Fatalf("a time no grant had moved one to %v", got)
	}
	// The grant still counts once, at its last time: the next one waits.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Acquire(ctx, "b", time.Millisecond); err == nil {
		t.Fatal("a second grant within the minute: the moves counted the grant out")
	}
}
