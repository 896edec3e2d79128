package metrics

import (
	"io"
	"math"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRequestInstruments: what ObserveRequest and FastLane count from many
// goroutines at once is what /metrics and Tally report, in prometheus's
// text format: per-series counters, savings by reason, the duration
// histogram's cumulative buckets, count and sum.
func TestRequestInstruments(t *testing.T) {
	m := New(Sources{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				m.ObserveRequest("spotify", "album", "hit", 50*time.Microsecond, 0)
				m.FastLane()
			}
			m.ObserveRequest("spotify", "album", "miss", 3*time.Millisecond, 2*time.Millisecond)
			m.ObserveRequest("spotify", "album", "coalesced", time.Millisecond, 0)
			m.ObserveRequest("ineo", "track", "hit", time.Millisecond, 0)
		})
	}
	wg.Wait()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`sluice_requests_total{operation="album",outcome="hit",provider="spotify"} 800`,
		`sluice_requests_total{operation="album",outcome="miss",provider="spotify"} 8`,
		`sluice_upstream_requests_saved_total{provider="spotify",reason="cache"} 800`,
		`sluice_upstream_requests_saved_total{provider="spotify",reason="coalesced"} 8`,
		`sluice_upstream_requests_saved_total{provider="ineo",reason="cache"} 8`,
		`sluice_fast_lane_answers_total 800`,
		`sluice_request_duration_seconds_bucket{operation="album",provider="spotify",le="0.0001"} 800`,
		`sluice_request_duration_seconds_bucket{operation="album",provider="spotify",le="0.0016"} 808`,
		`sluice_request_duration_seconds_bucket{operation="album",provider="spotify",le="+Inf"} 816`,
		`sluice_request_duration_seconds_count{operation="album",provider="spotify"} 816`,
		`sluice_upstream_duration_seconds_count{operation="album",provider="spotify"} 8`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// 800 × 50µs + 8 × 3ms + 8 × 1ms, give or take float rounding.
	const sumLine = `sluice_request_duration_seconds_sum{operation="album",provider="spotify"} `
	_, after, _ := strings.Cut(text, sumLine)
	line, _, _ := strings.Cut(after, "\n")
	if sum, err := strconv.ParseFloat(line, 64); err != nil || math.Abs(sum-0.072) > 1e-9 {
		t.Errorf("duration sum %q, want 0.072", line)
	}
	if calls, saved := m.Tally("spotify"); calls != 816 || saved != 808 {
		t.Errorf("spotify tally: %d calls, %d saved; want 816 and 808", calls, saved)
	}
	if t.Failed() {
		t.Log(text)
	}
}
