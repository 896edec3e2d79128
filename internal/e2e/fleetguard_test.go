package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/hellorf/hellorfsim"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// These tests run three daemons (own sockets and state dirs) on one Redis,
// in front of one hellorf and one Spotify simulator, as a user's hosts
// behind one IP and one set of credentials: a purchase is made once for
// the fleet, not once per host, and Spotify sees one request at a time
// from the fleet, with a 429 seen by one host stopping them all.

// spotifyFleetWindow scales Spotify's 30 s windows down: a fleet's first
// grant in a bucket waits one window (its store may have forgotten the
// last one), and the tests should not.
const spotifyFleetWindow = 2 * time.Second

// startGuardFleet starts Redis, a hellorf and a Spotify simulator and n
// daemons sharing all three.
func startGuardFleet(t *testing.T, n int) (*testenv.Redis, *hellorfsim.Sim, *spotifysim.Sim, []*testenv.Env) {
	t.Helper()
	rd := testenv.StartRedis(t)
	hsim, hURL, err := hellorfsim.Start(hellorfsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hsim.Close() })
	ssim, sAPI, sAcc, err := spotifysim.Start(spotifysim.Options{Limit: spotifysim.Limit{Requests: 50, Window: spotifyFleetWindow}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ssim.Close() })
	extra := testenv.HellorfSection(hURL, hellorfsim.DefaultClientID, hellorfsim.DefaultClientSecret, "allow_purchase = true", `timeout = "5s"`) +
		testenv.SpotifySection(sAPI, sAcc, spotifysim.DefaultClientID, spotifysim.DefaultClientSecret, `max_retry_after = "20s"`) +
		fmt.Sprintf("[providers.spotify.limits.api]\nrequests = 50\nwindow = %q\n\n", spotifyFleetWindow) +
		fmt.Sprintf("[providers.spotify.limits.accounts]\nrequests = 10\nwindow = %q\n\n", spotifyFleetWindow) +
		fmt.Sprintf("[fleet]\nredis_url = %q\nname = \"g\"\n", rd.URL)
	var envs []*testenv.Env
	for range n {
		envs = append(envs, testenv.Start(t, testenv.Options{Extra: extra}))
	}
	return rd, hsim, ssim, envs
}

// fleetPurchase posts one purchase of the sample track for warrant.
func fleetPurchase(t *testing.T, env *testenv.Env, warrant string, h http.Header) (*client.Response, error) {
	t.Helper()
	body := url.Values{"audio_id": {strconv.Itoa(hellorfsim.SampleAudioID)}, "permission_id": {"35"}, "warrant_name": {warrant}}.Encode()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Type", "application/x-www-form-urlencoded")
	return env.Client.Call(testenv.Ctx(t, time.Minute), http.MethodPost, "/v1/hellorf/audio/purchase", nil, strings.NewReader(body), h)
}

// TestFleetPurchaseGuard: a purchase made on one host is refused as a
// duplicate on another (before fleet mode had its own guard: each host's
// guard knew only its own purchases, and the same licence was bought once
// per host); identical purchases racing on three hosts buy once; a
// deliberate repeat works from any host; and with the fleet's store gone
// a purchase is refused by the guard before anything is sent.
func TestFleetPurchaseGuard(t *testing.T) {
	t.Parallel()
	rd, sim, _, envs := startGuardFleet(t, 3)

	r, err := fleetPurchase(t, envs[0], "Fleet Ltd", nil)
	if err != nil || r.Status != 200 {
		t.Fatalf("first purchase on A: %v", err)
	}
	var first struct {
		ID int `json:"id"`
	}
	hdata(t, r, &first)
	_, err = fleetPurchase(t, envs[1], "Fleet Ltd", nil)
	var p *problem.Problem
	if !errors.As(err, &p) || p.Status != http.StatusConflict || p.Title != "Probable duplicate purchase" ||
		p.Extra["purchase_id"] != float64(first.ID) || !strings.Contains(p.Detail, strconv.Itoa(first.ID)) {
		t.Fatalf("the same purchase on B: %v (%+v), want 409 naming purchase %d", err, p, first.ID)
	}
	if n := purchasesOf(sim, "Fleet Ltd"); n != 1 {
		t.Fatalf("the simulator recorded %d purchases, want exactly 1", n)
	}

	// Racing on three hosts: one purchase.
	var wg sync.WaitGroup
	statuses := make([]int, len(envs))
	for i, env := range envs {
		wg.Go(func() {
			r, err := fleetPurchase(t, env, "Race Ltd", nil)
			switch {
			case err == nil:
				statuses[i] = r.Status
			default:
				statuses[i] = problemStatus(err)
			}
		})
	}
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		switch s {
		case 200:
			ok++
		case http.StatusConflict:
		default:
			t.Errorf("racing purchase answered %d", s)
		}
	}
	if n := purchasesOf(sim, "Race Ltd"); n != 1 || ok != 1 {
		t.Fatalf("three hosts racing: %d purchases, %d answered 200 (%v); want exactly 1", n, ok, statuses)
	}

	// A deliberate repeat, confirmed on C, goes through once; then its own
	// record blocks the next unconfirmed one on A.
	if r, err := fleetPurchase(t, envs[2], "Fleet Ltd", http.Header{"Sluice-Confirm": {"repeat-purchase"}}); err != nil || r.Status != 200 {
		t.Fatalf("confirmed repeat on C: %v", err)
	}
	if _, err := fleetPurchase(t, envs[0], "Fleet Ltd", nil); problemStatus(err) != http.StatusConflict {
		t.Fatalf("after the confirmed repeat, the same purchase on A: %v, want 409", err)
	}
	if n := purchasesOf(sim, "Fleet Ltd"); n != 2 {
		t.Fatalf("%d purchases, want 2 (the first and the confirmed repeat)", n)
	}

	// The fleet's store gone: refused by the guard, nothing sent.
	rd.Kill()
	before := len(sim.Purchases())
	_, err = fleetPurchase(t, envs[1], "Dark Ltd", nil)
	if !errors.As(err, &p) || p.Status != http.StatusServiceUnavailable || p.Reason != problem.ReasonFleetUnreachable ||
		p.Title != "Purchase guard unavailable" || !strings.Contains(p.Detail, "nothing was sent") {
		t.Fatalf("purchase with Redis gone: %v (%+v), want 503 fleet_unreachable from the purchase guard", err, p)
	}
	if n := len(sim.Purchases()) - before; n != 0 {
		t.Fatalf("%d purchases reached the simulator with the fleet's guard gone", n)
	}
}

// spSearch is the i-th distinct Spotify search through env.
func spSearch(t *testing.T, env *testenv.Env, i int, h http.Header) (*client.Response, error) {
	return env.Client.Call(testenv.Ctx(t, time.Minute), http.MethodGet, "/v1/spotify/v1/search", spDistinct(i), nil, h)
}

// TestFleetSpotifyOneInFlight: Spotify's one request in flight holds for
// the fleet, not per host: three daemons sending at once never have two
// requests on hand at the simulator (before: each host's own semaphore let
// three through at once, and a request could be on the wire while another
// host's 429 came back).
func TestFleetSpotifyOneInFlight(t *testing.T) {
	t.Parallel()
	_, _, sim, envs := startGuardFleet(t, 3)
	// Answers take a while, so requests sent at once would overlap.
	sim.SetDelay(40 * time.Millisecond)
	const each = 6
	errs := spConcurrently(len(envs)*each, func(i int) (*client.Response, error) {
		return spSearch(t, envs[i%len(envs)], i, nil)
	})
	spNoErrors(t, errs)
	c := sim.Counts()
	if c.MaxInFlight != 1 {
		t.Fatalf("the simulator had %d requests on hand at once from the fleet, want 1", c.MaxInFlight)
	}
	if c.APIRequests != len(errs) {
		t.Fatalf("%d API requests, want %d", c.APIRequests, len(errs))
	}
	log := sim.RequestLog()
	if n := len(log); n > 1 {
		// Each answer takes 40 ms; the rest of each gap is the hand-off
		// of the turn (within a host, or to another host's next poll).
		span := log[n-1].At.Sub(log[0].At)
		t.Logf("%d requests through 3 daemons, one at a time: arrivals span %s, a mean %s between arrivals (answers take 40 ms)",
			n, span.Round(time.Millisecond), (span / time.Duration(n-1)).Round(time.Millisecond))
	}

	// While A's request holds the fleet's turn, a caller on B that may
	// wait 1 s gets a 429 when its max wait runs out, and sends nothing.
	sim.SetDelay(5 * time.Second)
	aDone := make(chan error, 1)
	go func() {
		_, err := spSearch(t, envs[0], 100, nil)
		aDone <- err
	}()
	testenv.Eventually(t, 10*time.Second, "A's request to reach the simulator", func() bool {
		return sim.Counts().APIRequests > c.APIRequests
	})
	_, err := spSearch(t, envs[1], 101, http.Header{"Sluice-Max-Wait": {"1s"}})
	if p := spProblem(err); p == nil || p.Status != http.StatusTooManyRequests {
		t.Fatalf("B's caller while A holds the turn, max wait 1 s: %v, want 429", err)
	}
	if got := sim.Counts().APIRequests - c.APIRequests; got != 1 {
		t.Fatalf("%d API requests, want only A's", got)
	}
	if err := <-aDone; err != nil {
		t.Fatalf("A: %v", err)
	}
}

// TestFleetSpotify429PausesAll: a 429 answered to host A stops host B too:
// B, sending while A's 429 is still on its way back, waits for the fleet's
// turn, finds the bucket paused, and sends nothing upstream until the
// Retry-After has run out (before: B's request left at once and arrived
// inside Spotify's Retry-After).
func TestFleetSpotify429PausesAll(t *testing.T) {
	t.Parallel()
	_, _, sim, envs := startGuardFleet(t, 2)
	a, b := envs[0], envs[1]
	for i, env := range envs { // tokens and connections warm
		if r, err := spSearch(t, env, i, nil); err != nil || r.Status != 200 {
			t.Fatalf("warm-up: %v", err)
		}
	}
	// The 429 takes a while to come back: B sends in the meantime.
	sim.SetDelay(300 * time.Millisecond)
	before := sim.Counts()
	sim.Force429(3, 1)
	aDone := make(chan error, 1)
	go func() {
		r, err := spSearch(t, a, 10, nil)
		if err == nil && r.Status != 200 {
			err = fmt.Errorf("status %d", r.Status)
		}
		aDone <- err
	}()
	testenv.Eventually(t, 10*time.Second, "the simulator to answer A 429", func() bool {
		return sim.Counts().Throttled > before.Throttled
	})
	r, err := spSearch(t, b, 11, nil)
	if err != nil || r.Status != 200 {
		t.Fatalf("B during A's 429: %v", err)
	}
	if err := <-aDone; err != nil {
		t.Fatalf("A, after its 429: %v", err)
	}
	c := sim.Counts()
	if n := c.DuringRetryAfter - before.DuringRetryAfter; n != 0 {
		t.Fatalf("%d requests arrived while Spotify's Retry-After ran", n)
	}
	var at429 time.Time
	for _, ar := range sim.RequestLog() {
		if ar.Status == http.StatusTooManyRequests {
			at429 = ar.At
		} else if !at429.IsZero() && ar.At.Sub(at429) < 3*time.Second {
			t.Fatalf("a request arrived %s after the 429", ar.At.Sub(at429))
		}
	}
	if got := c.APIRequests - before.APIRequests; got != 3 {
		t.Fatalf("%d API requests, want 3 (the 429, A's retry, B's)", got)
	}
	// A caller on B that cannot wait out A's pause is refused, and costs
	// nothing upstream.
	sim.SetDelay(0)
	sim.Force429(10, 1)
	if _, err := spSearch(t, a, 20, http.Header{"Sluice-Max-Wait": {"2s"}}); problemStatus(err) != http.StatusTooManyRequests {
		t.Fatalf("A's caller during a 10 s Retry-After with a 2 s max wait: %v, want 429", err)
	}
	n := sim.Counts().APIRequests
	if _, err := spSearch(t, b, 21, http.Header{"Sluice-Max-Wait": {"1s"}}); problemStatus(err) != http.StatusTooManyRequests {
		t.Fatalf("B's caller during A's pause: %v, want 429", err)
	}
	if got := sim.Counts().APIRequests - n; got != 0 {
		t.Fatalf("B sent %d requests into A's pause", got)
	}
}

// TestFleetPurchaseGuardSurvivesEmptyRestart: Redis restarted empty forgets
// the fleet's purchase records. The hosts that know of a purchase write it
// back while the fleet holds every claim, so a third host is still refused
// the repeat; and a host that was refused it keeps it in its own guard
// file, so it refuses it after its own restart too, when no host is left
// to write it back. (Before: either host could buy it again.)
func TestFleetPurchaseGuardSurvivesEmptyRestart(t *testing.T) {
	t.Parallel()
	rd, sim, _, envs := startGuardFleet(t, 3)
	r, err := fleetPurchase(t, envs[0], "Amnesia Ltd", nil)
	if err != nil || r.Status != 200 {
		t.Fatalf("purchase on A: %v", err)
	}
	if _, err := fleetPurchase(t, envs[1], "Amnesia Ltd", nil); problemStatus(err) != http.StatusConflict {
		t.Fatalf("the same purchase on B: %v, want 409", err)
	}

	rd.Kill()
	rd.Start()
	// A and B are up: their heartbeats write the record back while the
	// fleet holds C's claim.
	if _, err := fleetPurchase(t, envs[2], "Amnesia Ltd", nil); problemStatus(err) != http.StatusConflict {
		t.Fatalf("the same purchase on C after Redis restarted empty: %v, want 409", err)
	}

	// A and C (which learned of it when refused) are gone, B restarts (its
	// daemon's memory with it), Redis forgets again: B's own guard file
	// still knows A's purchase.
	envs[0].StopDaemon()
	envs[2].StopDaemon()
	envs[1].StopDaemon()
	rd.Kill()
	rd.Start()
	envs[1].StartDaemon()
	if _, err := fleetPurchase(t, envs[1], "Amnesia Ltd", nil); problemStatus(err) != http.StatusConflict {
		t.Fatalf("the same purchase on B, restarted, after Redis restarted empty again: %v, want 409", err)
	}
	if n := purchasesOf(sim, "Amnesia Ltd"); n != 1 {
		t.Fatalf("the simulator recorded %d purchases, want exactly 1", n)
	}
}
