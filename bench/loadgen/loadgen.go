// Package loadgen is the bench's closed-loop HTTP/1.1 load generator. It is
// a package of its own so the same generator (and the same percentile
// arithmetic) drives every server the bench compares: sluiced, a bare Go
// server and nginx all see identical clients.
//
// Closed loop means each client sends its next request only when the
// previous answer has been read in full, so the offered load adapts to the
// server and latency is never inflated by an unbounded queue inside the
// generator. Percentiles are exact: every sample is kept and sorted.
package loadgen

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// UnixClient returns a client that sends every request, whatever its URL's
// host, over the Unix socket at path, keeping up to conns idle keep-alive
// connections so that conns concurrent clients never re-dial.
func UnixClient(socket string, conns int) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     time.Minute,
		// Compression would add work on both sides that none of the
		// compared servers is asked to do.
		DisableCompression: true,
	}
	return &http.Client{Transport: tr}
}

// TCPClient is UnixClient's counterpart for a TCP server such as the iNeo
// simulator.
func TCPClient(conns int) *http.Client {
	tr := &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr}
}

// Check validates one answer after its body has been read; a non-nil error
// counts the request as failed and keeps its latency out of the samples.
type Check func(resp *http.Response, body []byte) error

// OK accepts any 200 answer.
func OK(resp *http.Response, _ []byte) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// Once sends one GET and reads the whole answer. The latency covers sending
// the request through reading the last body byte, which is what a caller
// waits for.
func Once(ctx context.Context, c *http.Client, url string, h http.Header, check Check) (time.Duration, *http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return d, resp, body, err
	}
	if check == nil {
		check = OK
	}
	return d, resp, body, check(resp, body)
}

// Config is one closed-loop run.
type Config struct {
	Client      *http.Client
	Concurrency int
	// Warmup runs the full load without recording, so connection set-up,
	// lazily grown buffers and the like are not measured.
	Warmup time.Duration
	// Duration is the measured part.
	Duration time.Duration
	// URL returns the URL of client c's n-th request. It is called only
	// from client c's own goroutine, so it may use per-client state
	// without locking.
	URL    func(c, n int) string
	Header http.Header
	// Check validates each answer; nil means OK.
	Check Check
}

// Result is the outcome of a Run.
type Result struct {
	Concurrency int
	// Elapsed runs from the end of the warm-up to the last measured
	// answer.
	Elapsed time.Duration
	// Latencies of the measured successful requests, sorted ascending.
	Latencies []time.Duration
	Errors    int
	FirstErr  error
	// Sent counts every request attempted, warm-up included: what a
	// server did work for.
	Sent int
}

// Throughput is measured successful requests per second.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(len(r.Latencies)) / r.Elapsed.Seconds()
}

// Summary of the latencies.
func (r Result) Summary() Summary { return Summarize(r.Latencies) }

// Run drives cfg.Concurrency clients in a closed loop for Warmup+Duration.
// A request counts as measured when it was sent after the warm-up ended;
// no request is sent after the deadline, and requests in flight then are
// waited for, so every measured request completes.
func Run(ctx context.Context, cfg Config) Result {
	check := cfg.Check
	if check == nil {
		check = OK
	}
	return drive(ctx, cfg.Concurrency, cfg.Warmup, cfg.Duration, func(c int) (func(int) (time.Duration, error), func()) {
		return func(n int) (time.Duration, error) {
			d, _, _, err := Once(ctx, cfg.Client, cfg.URL(c, n), cfg.Header, check)
			return d, err
		}, func() {}
	})
}

// drive runs concurrency closed-loop clients, the rules of Run for every
// generator. Client c sends its n-th request with send(n), which returns
// the request's latency; done runs when the client stops.
func drive(ctx context.Context, concurrency int, warmup, duration time.Duration,
	client func(c int) (send func(n int) (time.Duration, error), done func())) Result {
	measureFrom := time.Now().Add(warmup)
	deadline := measureFrom.Add(duration)
	results := make([]clientResult, concurrency)
	var wg sync.WaitGroup
	for c := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			send, done := client(c)
			defer done()
			cr := &results[c]
			// Preallocating keeps slice growth (and its GC work) out of
			// the measured loop for typical rates.
			cr.lat = make([]time.Duration, 0, 4096)
			for n := 0; ctx.Err() == nil; n++ {
				sent := time.Now()
				if !sent.Before(deadline) {
					return
				}
				d, err := send(n)
				cr.sent++
				cr.record(sent, d, err, measureFrom)
			}
		}()
	}
	wg.Wait()
	return collect(ctx, concurrency, measureFrom, results)
}

// clientResult is what one closed-loop client of a run recorded.
type clientResult struct {
	lat      []time.Duration
	sent     int
	errs     int
	firstErr error
	last     time.Time
}

// record counts one answer sent at sent that took d; only answers to
// requests sent after the warm-up are measured.
func (cr *clientResult) record(sent time.Time, d time.Duration, err error, measureFrom time.Time) {
	if sent.Before(measureFrom) {
		return
	}
	cr.last = sent.Add(d)
	if err != nil {
		cr.errs++
		if cr.firstErr == nil {
			cr.firstErr = err
		}
		return
	}
	cr.lat = append(cr.lat, d)
}

// collect pools a run's clients into its Result.
func collect(ctx context.Context, concurrency int, measureFrom time.Time, results []clientResult) Result {
	res := Result{Concurrency: concurrency}
	var last time.Time
	for _, cr := range results {
		res.Latencies = append(res.Latencies, cr.lat...)
		res.Errors += cr.errs
		res.Sent += cr.sent
		if res.FirstErr == nil {
			res.FirstErr = cr.firstErr
		}
		if cr.last.After(last) {
			last = cr.last
		}
	}
	if err := ctx.Err(); err != nil && res.FirstErr == nil {
		res.FirstErr = err
	}
	if !last.IsZero() {
		res.Elapsed = last.Sub(measureFrom)
	}
	slices.Sort(res.Latencies)
	return res
}

// Merge combines runs of the same cell (e.g. rounds interleaved with other
// servers' rounds, so background noise on a shared machine falls on every
// server alike): samples are pooled and elapsed times added, so Throughput
// is total requests over total measured time.
func Merge(rs ...Result) Result {
	var m Result
	for _, r := range rs {
		m.Concurrency = r.Concurrency
		m.Elapsed += r.Elapsed
		m.Latencies = append(m.Latencies, r.Latencies...)
		m.Errors += r.Errors
		m.Sent += r.Sent
		if m.FirstErr == nil {
			m.FirstErr = r.FirstErr
		}
	}
	slices.Sort(m.Latencies)
	return m
}

// Summary is the usual description of a latency distribution.
type Summary struct {
	N                        int
	Mean, P50, P90, P99, Max time.Duration
}

// Summarize describes samples, which must be sorted ascending.
func Summarize(sorted []time.Duration) Summary {
	s := Summary{N: len(sorted)}
	if s.N == 0 {
		return s
	}
	var sum time.Duration
	for _, d := range sorted {
		sum += d
	}
	s.Mean = sum / time.Duration(s.N)
	s.P50 = Percentile(sorted, 0.50)
	s.P90 = Percentile(sorted, 0.90)
	s.P99 = Percentile(sorted, 0.99)
	s.Max = sorted[s.N-1]
	return s
}

// Percentile is the exact nearest-rank percentile (0 < p ≤ 1) of sorted
// samples: the smallest sample with at least p of all samples at or below
// it. No interpolation, so it is always a latency that really occurred.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
