package stripe

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestCounterLosesNothing: adds from many goroutines at once all count.
func TestCounterLosesNothing(t *testing.T) {
	c := NewCounter()
	const workers, each = 32, 1000
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				c.Inc()
			}
		})
	}
	wg.Wait()
	if got := c.Load(); got != workers*each {
		t.Fatalf("count %d, want %d", got, workers*each)
	}
}

// TestHistogramBuckets: cumulative buckets, count and sum as prometheus
// defines them, from concurrent observations.
func TestHistogramBuckets(t *testing.T) {
	h := NewHistogram([]float64{1, 2, 4})
	values := []float64{0.5, 1, 1.5, 3, 10}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for _, v := range values {
				h.Observe(v)
			}
		})
	}
	wg.Wait()
	s := h.Snapshot()
	want := map[float64]uint64{1: 20, 2: 30, 4: 40}
	for b, n := range want {
		if s.Buckets[b] != n {
			t.Errorf("bucket ≤%g: %d, want %d", b, s.Buckets[b], n)
		}
	}
	if s.Count != 50 || s.Sum != 160 {
		t.Errorf("count %d sum %g, want 50 and 160", s.Count, s.Sum)
	}
}

// TestRWMutexExcludesWriter: readers on any slot never overlap the writer.
func TestRWMutexExcludesWriter(t *testing.T) {
	m := NewRWMutex()
	var shared int // written under Lock, read under RLock: -race checks it
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 500 {
				i := m.RLock()
				_ = shared
				m.RUnlock(i)
			}
		})
	}
	for range 100 {
		m.Lock()
		shared++
		m.Unlock()
	}
	wg.Wait()
	if shared != 100 {
		t.Fatal(shared)
	}
}

// BenchmarkCounter compares the striped counter with one shared word
// (go test -bench . -cpu 1,2,4,16).
func BenchmarkCounter(b *testing.B) {
	b.Run("striped", func(b *testing.B) {
		c := NewCounter()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c.Inc()
			}
		})
	})
	b.Run("shared", func(b *testing.B) {
		var v atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				v.Add(1)
			}
		})
	})
}
