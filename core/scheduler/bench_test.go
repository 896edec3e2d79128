package scheduler

import (
	"context"
	"testing"
	"time"
)

// BenchmarkAcquirePersisted measures the grant path with persistence on:
// the state dir is a real directory, and the bucket admits 1,000 grants per
// nanosecond without margin, so no Acquire ever waits and the time per op is
// the scheduler's bookkeeping plus the state write. After the first 1,024
// grants the history is at its cap (historyCap), as in a busy production
// bucket. maxWait is 0: a budget check simulates the next Requests grants,
// which costs in proportion to the limit, not to persistence.
func BenchmarkAcquirePersisted(b *testing.B) {
	s, err := New(Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.SetMargin(0)
	if err := s.Configure("bench", Limit{Requests: 1000, Window: time.Nanosecond}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		if _, err := s.Acquire(ctx, "bench", 0); err != nil {
			b.Fatal(err)
		}
	}
	if e := s.StateError(); e != "" {
		b.Fatal(e)
	}
}
