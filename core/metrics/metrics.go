// Package metrics exposes sluiced's Prometheus metrics on its own registry:
// counters and histograms the daemon observes as requests pass, plus
// collectors that read the cache, the scheduler and the plugin host at
// scrape time so the numbers can never drift from what status shows.
//
// Labels are bounded: providers and operations come from plugin
// descriptions, buckets from config; nothing a caller sends becomes a label.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluice-dev/sluice/internal/stripe"
)

// CacheStats, BucketStats and ProviderStats are the live figures the
// collectors read; the daemon adapts its components to them.
type CacheStats struct {
	Entries                            int
	Bytes, MaxBytes                    int64
	Hits, Misses, Coalesced, Evictions uint64
	// RemoteHits and RemoteErrors: the fleet's shared cache (0 on one host).
	RemoteHits, RemoteErrors uint64
}

// BucketStats describes one scheduler bucket.
type BucketStats struct {
	Name        string
	Requests    int
	Window      time.Duration
	InWindow    int
	Queued      int
	Granted     uint64
	PausedUntil time.Time
	PauseReason string
	// Held: the bucket grants nothing because grants cannot be recorded.
	Held      bool
	HeldErrno string
	// Remaining is what the bucket would grant at once now (the
	// scheduler's Budget: the fleet's in fleet mode).
	Remaining int
}

// ProviderStats describes one plugin.
type ProviderStats struct {
	Name     string
	Ready    bool
	Restarts int
}

// Sources are read at scrape time.
type Sources struct {
	Cache     func() CacheStats
	Buckets   func() []BucketStats
	Providers func() []ProviderStats
	// FleetRoundTrips is how many exchanges the daemon has had with its
	// fleet's Redis (nil on a single host).
	FleetRoundTrips func() int64
}

// Metrics is the daemon's registry and instruments.
type Metrics struct {
	reg        *prometheus.Registry
	upstream   *prometheus.HistogramVec
	wait       *prometheus.HistogramVec
	denied     *prometheus.CounterVec
	reloadOK   prometheus.Gauge
	reloadTime prometheus.Gauge

	// The instruments every cache hit adds to are striped (internal/stripe)
	// and exported by hot: as prometheus vectors they were a dozen shared
	// words written per hit, which bounds the hit rate on many cores.
	hot hot
}

// hot holds the per-request instruments: sluice_requests_total,
// sluice_request_duration_seconds, sluice_upstream_requests_saved_total
// and sluice_fast_lane_answers_total.
type hot struct {
	// series memoises the per-request series by label values.
	series    sync.Map // requestLabels → *requestSeries
	durations sync.Map // [2]string{provider, operation} → *stripe.Histogram
	saved     sync.Map // [2]string{provider, reason} → *stripe.Counter
	lane      *stripe.Counter
}

type requestLabels struct{ provider, operation, outcome string }

type requestSeries struct {
	requests *stripe.Counter
	duration *stripe.Histogram
	upstream prometheus.Observer
	// saved counts the call as an upstream request it did not need (nil
	// for outcomes that are not savings).
	saved *stripe.Counter
}

var (
	descRequests = prometheus.NewDesc("sluice_requests_total",
		"Provider calls by provider, operation and outcome (hit, miss, coalesced, bypass, rejected, failed).",
		[]string{"provider", "operation", "outcome"}, nil)
	descDuration = prometheus.NewDesc("sluice_request_duration_seconds",
		"Time to answer a provider call, queueing included.", []string{"provider", "operation"}, nil)
	descSaved = prometheus.NewDesc("sluice_upstream_requests_saved_total",
		"Provider calls answered without an upstream request of their own, by why: cache (a hit or a 304), coalesced (an identical call's request), stale (a kept answer while the budget ran out).",
		[]string{"provider", "reason"}, nil)
	descLane = prometheus.NewDesc("sluice_fast_lane_answers_total",
		"Cache hits answered by the socket's fast lane, without net/http (a part of the hits in sluice_requests_total).", nil, nil)
	durationBuckets = prometheus.ExponentialBuckets(0.0001, 4, 12)
)

func (h *hot) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descDuration, descSaved, descLane} {
		ch <- d
	}
}

func (h *hot) Collect(ch chan<- prometheus.Metric) {
	h.series.Range(func(k, v any) bool {
		l := k.(requestLabels)
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(v.(*requestSeries).requests.Load()),
			l.provider, l.operation, l.outcome)
		return true
	})
	h.durations.Range(func(k, v any) bool {
		l, s := k.([2]string), v.(*stripe.Histogram).Snapshot()
		ch <- prometheus.MustNewConstHistogram(descDuration, s.Count, s.Sum, s.Buckets, l[0], l[1])
		return true
	})
	h.saved.Range(func(k, v any) bool {
		l := k.([2]string)
		ch <- prometheus.MustNewConstMetric(descSaved, prometheus.CounterValue, float64(v.(*stripe.Counter).Load()), l[0], l[1])
		return true
	})
	ch <- prometheus.MustNewConstMetric(descLane, prometheus.CounterValue, float64(h.lane.Load()))
}

// savedReason maps an outcome to why no upstream request was needed ("" if
// one was).
func savedReason(outcome string) string {
	switch outcome {
	case "hit", "not-modified":
		return "cache"
	case "coalesced":
		return "coalesced"
	case "stale":
		return "stale"
	}
	return ""
}

// New registers every metric.
func New(src Sources) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_upstream_duration_seconds",
			Help: "Upstream exchange time up to the response head, summed over attempts.", Buckets: prometheus.ExponentialBuckets(0.001, 3, 10)},
			[]string{"provider", "operation"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_scheduler_wait_seconds",
			Help: "Time a request waited for a grant from its bucket.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12)},
			[]string{"bucket"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_access_denied_total",
			Help: "Requests refused for lack of permission, by the level they needed."}, []string{"needed"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_config_last_reload_successful",
			Help: "Whether the last config reload succeeded (1) or failed (0)."}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_config_last_reload_success_timestamp_seconds",
			Help: "Time of the last successful config load."}),
	}
	m.hot.lane = stripe.NewCounter()
	m.reloadOK.Set(1)
	m.reloadTime.SetToCurrentTime()
	reg.MustRegister(&m.hot, m.upstream, m.wait, m.denied, m.reloadOK, m.reloadTime,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&live{src: src})
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ObserveRequest records one provider call.
func (m *Metrics) ObserveRequest(provider, operation, outcome string, took, upstream time.Duration) {
	l := requestLabels{provider, operation, outcome}
	v, ok := m.hot.series.Load(l)
	if !ok {
		s := &requestSeries{
			requests: stripe.NewCounter(),
			duration: loadOrNew(&m.hot.durations, [2]string{provider, operation}, func() *stripe.Histogram { return stripe.NewHistogram(durationBuckets) }),
			upstream: m.upstream.WithLabelValues(provider, operation),
		}
		if reason := savedReason(outcome); reason != "" {
			s.saved = loadOrNew(&m.hot.saved, [2]string{provider, reason}, stripe.NewCounter)
		}
		v, _ = m.hot.series.LoadOrStore(l, s)
	}
	s := v.(*requestSeries)
	s.requests.Inc()
	if s.saved != nil {
		s.saved.Inc()
	}
	s.duration.Observe(took.Seconds())
	if upstream > 0 {
		s.upstream.Observe(upstream.Seconds())
	}
}

func loadOrNew[T any](m *sync.Map, key any, mk func() T) T {
	if v, ok := m.Load(key); ok {
		return v.(T)
	}
	v, _ := m.LoadOrStore(key, mk())
	return v.(T)
}

// Tally is provider's calls and the upstream requests the cache,
// coalescing and stale answers saved it, since start, for status: read
// from the same counters as /metrics, so the two never disagree.
func (m *Metrics) Tally(provider string) (calls, saved uint64) {
	m.hot.series.Range(func(k, v any) bool {
		if k.(requestLabels).provider == provider {
			calls += v.(*requestSeries).requests.Load()
		}
		return true
	})
	m.hot.saved.Range(func(k, v any) bool {
		if k.([2]string)[0] == provider {
			saved += v.(*stripe.Counter).Load()
		}
		return true
	})
	return calls, saved
}

// ObserveWait records one scheduler wait.
func (m *Metrics) ObserveWait(bucket string, d time.Duration) {
	m.wait.WithLabelValues(bucket).Observe(d.Seconds())
}

// FastLane counts a hit the socket's fast lane answered.
func (m *Metrics) FastLane() { m.hot.lane.Inc() }

// Denied counts a refused request.
func (m *Metrics) Denied(needed string) { m.denied.WithLabelValues(needed).Inc() }

// Reloaded records a reload attempt.
func (m *Metrics) Reloaded(ok bool) {
	if ok {
		m.hot.lane = stripe.NewCounter()
		m.reloadOK.Set(1)
		m.reloadTime.SetToCurrentTime()
		return
	}
	m.reloadOK.Set(0)
}

// live reads current figures at scrape time.
type live struct{ src Sources }

var (
	descCacheEntries   = prometheus.NewDesc("sluice_cache_entries", "Answers in the cache.", nil, nil)
	descCacheBytes     = prometheus.NewDesc("sluice_cache_bytes", "Bytes of cached answers.", nil, nil)
	descCacheMax       = prometheus.NewDesc("sluice_cache_max_bytes", "Configured cache size.", nil, nil)
	descCacheHits      = prometheus.NewDesc("sluice_cache_hits_total", "Cache hits.", nil, nil)
	descCacheMisses    = prometheus.NewDesc("sluice_cache_misses_total", "Cache misses.", nil, nil)
	descCacheCoalesced = prometheus.NewDesc("sluice_cache_coalesced_total", "Requests merged into another caller's upstream request.", nil, nil)
	descCacheEvictions = prometheus.NewDesc("sluice_cache_evictions_total", "Live answers evicted for space.", nil, nil)
	descCacheRemote    = prometheus.NewDesc("sluice_cache_remote_hits_total", "Misses answered from the fleet's shared cache (another member's answer).", nil, nil)
	descCacheRemoteErr = prometheus.NewDesc("sluice_cache_remote_errors_total", "Failed round trips to the fleet's shared cache (each treated as a miss).", nil, nil)
	descQueue          = prometheus.NewDesc("sluice_scheduler_queue_depth", "Requests waiting for a grant.", []string{"bucket"}, nil)
	descRemaining      = prometheus.NewDesc("sluice_scheduler_remaining_requests", "Requests the bucket would grant at once now (0 while paused or held).", []string{"bucket"}, nil)
	descInWindow       = prometheus.NewDesc("sluice_scheduler_in_window", "Grants in the current sliding window.", []string{"bucket"}, nil)
	descLimit          = prometheus.NewDesc("sluice_scheduler_limit_requests", "Requests allowed per window.", []string{"bucket"}, nil)
	descWindow         = prometheus.NewDesc("sluice_scheduler_window_seconds", "Window length.", []string{"bucket"}, nil)
	descGrants         = prometheus.NewDesc("sluice_scheduler_grants_total", "Grants since start.", []string{"bucket"}, nil)
	descPaused         = prometheus.NewDesc("sluice_scheduler_paused", "1 while the bucket is paused, with the reason.", []string{"bucket", "reason"}, nil)
	descHeld           = prometheus.NewDesc("sluice_scheduler_held", "1 while the bucket grants nothing because the scheduler cannot record grants (fail closed), with the reason and errno.", []string{"bucket", "reason", "errno"}, nil)
	descPausedUntil    = prometheus.NewDesc("sluice_scheduler_paused_until_timestamp_seconds", "End of the current pause.", []string{"bucket"}, nil)
	descFleetTrips     = prometheus.NewDesc("sluice_fleet_redis_round_trips_total", "Exchanges with the fleet's Redis: a command, or a pipeline of them, each.", nil, nil)
	descPluginUp       = prometheus.NewDesc("sluice_plugin_ready", "1 when the provider's plugin is ready.", []string{"provider"}, nil)
	descRestarts       = prometheus.NewDesc("sluice_plugin_restarts_total", "Plugin restarts.", []string{"provider"}, nil)
)

func (l *live) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCacheEntries, descCacheBytes, descCacheMax, descCacheHits, descCacheMisses,
		descCacheCoalesced, descCacheEvictions, descCacheRemote, descCacheRemoteErr, descQueue, descInWindow, descLimit, descWindow, descGrants, descPaused,
		descPausedUntil, descHeld, descRemaining, descPluginUp, descRestarts, descFleetTrips} {
		ch <- d
	}
}

func (l *live) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	if l.src.Cache != nil {
		c := l.src.Cache()
		gauge(descCacheEntries, float64(c.Entries))
		gauge(descCacheBytes, float64(c.Bytes))
		gauge(descCacheMax, float64(c.MaxBytes))
		counter(descCacheHits, float64(c.Hits))
		counter(descCacheMisses, float64(c.Misses))
		counter(descCacheCoalesced, float64(c.Coalesced))
		counter(descCacheEvictions, float64(c.Evictions))
		counter(descCacheRemote, float64(c.RemoteHits))
		counter(descCacheRemoteErr, float64(c.RemoteErrors))
	}
	if l.src.FleetRoundTrips != nil {
		counter(descFleetTrips, float64(l.src.FleetRoundTrips()))
	}
	if l.src.Buckets != nil {
		now := time.Now()
		for _, b := range l.src.Buckets() {
			gauge(descQueue, float64(b.Queued), b.Name)
			gauge(descInWindow, float64(b.InWindow), b.Name)
			gauge(descRemaining, float64(b.Remaining), b.Name)
			gauge(descLimit, float64(b.Requests), b.Name)
			gauge(descWindow, b.Window.Seconds(), b.Name)
			counter(descGrants, float64(b.Granted), b.Name)
			if b.Held {
				gauge(descHeld, 1, b.Name, "state_unwritable", b.HeldErrno)
			}
			if b.PausedUntil.After(now) {
				gauge(descPaused, 1, b.Name, b.PauseReason)
				gauge(descPausedUntil, float64(b.PausedUntil.Unix()), b.Name)
			}
		}
	}
	if l.src.Providers != nil {
		for _, p := range l.src.Providers() {
			up := 0.0
			if p.Ready {
				up = 1
			}
			gauge(descPluginUp, up, p.Name)
			counter(descRestarts, float64(p.Restarts), p.Name)
		}
	}
}
