package e2e

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// TestNonOKHTTPStatusPausesEveryCaller: iNeo's HTTP status is only
// "usually" 200. A stop signal under another HTTP status (a bare 429 with
// Retry-After, a ban envelope under HTTP 403, a bare 503) still pauses the
// bucket in the daemon for every caller: the next caller with a short
// Sluice-Max-Wait gets 429 at once and the upstream sees nothing more.
func TestNonOKHTTPStatusPausesEveryCaller(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, 2*time.Minute)
	tmanage := func(hdr http.Header) (*client.Response, error) {
		return env.Client.Call(ctx, http.MethodGet, "/v1/ineo/tmanage-v2.php",
			url.Values{"action": {"sendcode"}, "phone": {"989012345678"}}, nil, hdr)
	}
	spotify := func(hdr http.Header) (*client.Response, error) {
		return track(ctx, env.Client, "6fx5VOjqYNBHcDf5GIF5g5", hdr)
	}
	short := http.Header{"Sluice-Max-Wait": {"1s"}}

	// 1. A bare HTTP 429 with Retry-After: 8 (no envelope). The caller gets
	// a 502 saying how long to wait, and the daemon's bucket is paused, not
	// only the plugin's own memory of it.
	env.Ineo.InjectHTTPFault(ineosim.ServiceSpotify, ineosim.HTTPFault{Status: http.StatusTooManyRequests, RetryAfter: "8"})
	sent := time.Now()
	_, err := spotify(nil)
	var p *problem.Problem
	if !errors.As(err, &p) || p.Status != http.StatusBadGateway || p.RetryAfter <= 0 || p.RetryAfter > 9*time.Second {
		t.Fatalf("bare HTTP 429: %v, want a 502 with Retry-After of at most 8s", err)
	}
	until, reason := bucketPause(ctx, t, env, "ineo.spotify")
	if until.Before(sent.Add(6*time.Second)) || until.After(time.Now().Add(9*time.Second)) || !strings.Contains(reason, "HTTP 429") {
		t.Fatalf("bare HTTP 429: bucket paused until %v (%q); want about 8s from %v for HTTP 429", until, reason, sent)
	}
	stoppedLocally(t, env, ineosim.ServiceSpotify, func() error { _, err := spotify(short); return err }, 2*time.Second)
	testenv.Eventually(t, 20*time.Second, "the 8 s pause to end", func() bool {
		until, _ := bucketPause(ctx, t, env, "ineo.spotify")
		return until.IsZero()
	})

	// 2. A ban (10 ip_blocked) under HTTP 403: relayed as iNeo's answer,
	// classified, never cached, and the bucket paused for an hour.
	env.Ineo.InjectHTTPFault(ineosim.ServiceSpotify, ineosim.HTTPFault{Status: http.StatusForbidden, Envelope: true, StatusCode: 10})
	r, err := spotify(nil)
	if err != nil {
		t.Fatalf("ban under HTTP 403: %v, want iNeo's envelope relayed", err)
	}
	if !strings.Contains(string(r.Body), `"status_code":10`) || r.Header.Get("Sluice-Upstream-Status") != "10 ip_blocked" ||
		r.Header.Get("Sluice-Upstream-Class") != "stop" {
		t.Fatalf("ban under HTTP 403: %d %v %s", r.Status, r.Header, r.Body)
	}
	until, reason = bucketPause(ctx, t, env, "ineo.spotify")
	if time.Until(until) < 50*time.Minute || !strings.Contains(reason, "ip_blocked") {
		t.Fatalf("ban under HTTP 403: bucket paused until %v (%q); want an hour for ip_blocked", until, reason)
	}
	stoppedLocally(t, env, ineosim.ServiceSpotify, func() error { _, err := spotify(short); return err }, 50*time.Minute)
	if _, err := spotify(http.Header{"Cache-Control": {"only-if-cached"}}); problemStatus(err) != http.StatusGatewayTimeout {
		t.Fatalf("a ban answer was cached: %v", err)
	}

	// 3. A bare HTTP 503 without Retry-After on the other service: paused
	// for the safe default (30 s), that service only.
	env.Ineo.InjectHTTPFault(ineosim.ServiceTmanage, ineosim.HTTPFault{Status: http.StatusServiceUnavailable})
	sent = time.Now()
	_, err = tmanage(nil)
	if !errors.As(err, &p) || p.Status != http.StatusBadGateway || p.RetryAfter < 20*time.Second || p.RetryAfter > 31*time.Second {
		t.Fatalf("bare HTTP 503: %v, want a 502 with Retry-After about 30s", err)
	}
	until, reason = bucketPause(ctx, t, env, "ineo.tmanage")
	if until.Before(sent.Add(25*time.Second)) || until.After(time.Now().Add(31*time.Second)) || !strings.Contains(reason, "HTTP 503") {
		t.Fatalf("bare HTTP 503: bucket paused until %v (%q); want about 30s from %v", until, reason, sent)
	}
	stoppedLocally(t, env, ineosim.ServiceTmanage, func() error { _, err := tmanage(short); return err }, 20*time.Second)

	st, err := env.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Cache.Entries != 0 {
		t.Fatalf("%d stop answers cached", st.Cache.Entries)
	}
}

// bucketPause reads a bucket's pause from the daemon's status; a zero time
// when it is not paused.
func bucketPause(ctx context.Context, t *testing.T, env *testenv.Env, name string) (time.Time, string) {
	t.Helper()
	b := bucketStatus(t, ctx, env, name)
	if b.PausedUntil == nil || !b.PausedUntil.After(time.Now()) {
		return time.Time{}, ""
	}
	return *b.PausedUntil, b.PauseReason
}

// stoppedLocally: the next call is refused at once with a 429 whose
// Retry-After is at least minRetry, and costs the upstream nothing.
func stoppedLocally(t *testing.T, env *testenv.Env, service string, call func() error, minRetry time.Duration) {
	t.Helper()
	before := env.Ineo.Requests(service)
	start := time.Now()
	err := call()
	var p *problem.Problem
	if !errors.As(err, &p) || p.Status != http.StatusTooManyRequests || p.RetryAfter < minRetry {
		t.Fatalf("next caller on a paused bucket: %v, want 429 with Retry-After >= %s", err, minRetry)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("429 took %s; it must come at once", took)
	}
	if got := env.Ineo.Requests(service); got != before {
		t.Fatalf("a paused bucket still sent %d requests to %s", got-before, service)
	}
}

// TestGrantCountsAtItsAnswer: the scheduler knows when a request left, not
// when iNeo counted it, which is at the latest when its answer came back.
// With a slow upstream, the request that opens the next window must leave
// a window (plus margin) after the first request's answer, not after its
// send: so a first request that spent longer in transit than a later one
// (a fresh TLS connection to a far server) cannot squeeze a window. An
// answer slower than the window itself keeps the slot too (the plugin
// reports the exchange outstanding meanwhile), rather than freeing it a
// window after the send while the request may still be on its way.
func TestGrantCountsAtItsAnswer(t *testing.T) {
	t.Parallel()
	const (
		window = time.Second
		margin = 100 * time.Millisecond
	)
	for _, tc := range []struct {
		name string
		slow time.Duration
		ids  int
	}{
		{"answered within the window", 600 * time.Millisecond, 960},
		{"answered after the window", 1600 * time.Millisecond, 970},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := testenv.Start(t, testenv.Options{SpotifyLimit: ineosim.Limit{Requests: 3, Window: window}})
			ctx := testenv.Ctx(t, time.Minute)
			env.Ineo.SetDelay(tc.slow)
			errs := make(chan error, 4)
			for i := range 4 {
				go func() {
					_, err := track(ctx, env.Client, trackID(tc.ids+i), nil)
					errs <- err
				}()
			}
			for range 4 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			log := env.Ineo.RequestLog(ineosim.ServiceSpotify)
			if len(log) != 4 {
				t.Fatalf("%d requests reached iNeo, want 4", len(log))
			}
			first, last := log[0].At, log[0].At
			for _, a := range log {
				if a.At.Before(first) {
					first = a.At
				}
				if a.At.After(last) {
					last = a.At
				}
			}
			// The first answers came back after slow; the 4th may leave
			// only a window and the margin after that. (Counted from the
			// send, it would leave a window and the margin after the
			// first request.)
			if gap := last.Sub(first); gap < window+margin+tc.slow-50*time.Millisecond {
				t.Fatalf("4th request %s after the 1st; want at least %s: a window after the first answer", gap, window+margin+tc.slow)
			}
			if v := env.Ineo.Violations(); v != 0 {
				t.Fatalf("%d violations", v)
			}
		})
	}
}
