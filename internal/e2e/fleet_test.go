package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// startFleet starts a real redis-server, one strict iNeo simulator and n
// daemons sharing both, each with its own socket and state dir.
func startFleet(t *testing.T, n int, lim ineosim.Limit) (*testenv.Redis, *ineosim.Sim, []*testenv.Env) {
	t.Helper()
	rd := testenv.StartRedis(t)
	sim, url, err := ineosim.Start(ineosim.Options{AccessKey: ineosim.DefaultAccessKey, TmanageAuth: ineosim.DefaultTmanageAuth,
		SpotifyLimit: lim, TmanageLimit: ineosim.Limit{Requests: 10, Window: 11 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	var envs []*testenv.Env
	for range n {
		envs = append(envs, testenv.Start(t, testenv.Options{Ineo: sim, IneoURL: url, SpotifyLimit: lim,
			Extra: fmt.Sprintf("[fleet]\nredis_url = %q\nname = \"t\"\n", rd.URL)}))
	}
	return rd, sim, envs
}

// TestFleetSharesOneQuota: three daemons behind one IP keep iNeo's limit
// together, not each (before fleet mode: 3 × the limit, a ban); with Redis
// gone, no upstream request leaves (503 fleet_unreachable, at once) while
// cached answers are still served; with Redis back (empty), the fleet
// holds one window, then serves again by itself.
func TestFleetSharesOneQuota(t *testing.T) {
	t.Parallel()
	lim := ineosim.Limit{Requests: 6, Window: 2 * time.Second}
	rd, sim, envs := startFleet(t, 3, lim)
	ctx := testenv.Ctx(t, 3*time.Minute)

	const each = 8
	var wg sync.WaitGroup
	errs := make([]error, len(envs)*each)
	for d, env := range envs {
		for i := range each {
			wg.Go(func() {
				r, err := track(ctx, env.Client, trackID(100*d+i), nil)
				if err == nil && r.Status != 200 {
					err = fmt.Errorf("status %d", r.Status)
				}
				errs[d*each+i] = err
			})
		}
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
	log := sim.RequestLog(ineosim.ServiceSpotify)
	if len(log) != len(errs) {
		t.Fatalf("simulator saw %d requests, want %d", len(log), len(errs))
	}
	if v := sim.Violations(); v != 0 {
		t.Fatalf("%d violations: the daemons did not share one quota", v)
	}
	assertArrivalWindows(t, log, lim)
	first, last := log[0].At, log[len(log)-1].At
	t.Logf("%d requests through 3 daemons in %s (the limit allows them in no less than %s)",
		len(log), last.Sub(first).Round(time.Millisecond), time.Duration(len(log)/lim.Requests-1)*lim.Window)

	// Redis gone: fail closed, promptly; hits still served.
	rd.Kill()
	before := sim.Requests(ineosim.ServiceSpotify)
	start := time.Now()
	_, err := track(ctx, envs[0].Client, trackID(900), http.Header{"Sluice-Max-Wait": {"20s"}})
	if p := spProblem(err); p == nil || p.Status != http.StatusServiceUnavailable || p.Reason != problem.ReasonFleetUnreachable {
		t.Fatalf("miss with Redis gone: %v, want 503 fleet_unreachable", err)
	}
	if d := time.Since(start); d >= 20*time.Second {
		t.Fatalf("the refusal took the whole max wait (%s)", d)
	}
	if r, err := track(ctx, envs[1].Client, trackID(100), nil); err != nil || r.Status != 200 {
		t.Fatalf("cached answer with Redis gone: %v", err)
	}
	if got := sim.Requests(ineosim.ServiceSpotify); got != before {
		t.Fatalf("%d upstream requests while the fleet's store was gone", got-before)
	}

	// Back, empty: held one window, then serving again.
	rd.Start()
	back := time.Now()
	r, err := track(ctx, envs[2].Client, trackID(901), nil)
	if err != nil || r.Status != 200 {
		t.Fatalf("after Redis came back: %v", err)
	}
	if d := time.Since(back); d < lim.Window {
		t.Errorf("served %s after an empty Redis came back, inside the one-window hold", d)
	}
	if v := sim.Violations(); v != 0 {
		t.Fatalf("%d violations", v)
	}
}

// fleetTrack asks for a track through c, asking again while the fleet's
// store is briefly unreachable (a client reconnecting after a Redis
// restart answers 503 fleet_unreachable at once, having sent nothing).
func fleetTrack(ctx context.Context, t *testing.T, c *client.Client, id string) error {
	t.Helper()
	for {
		r, err := track(ctx, c, id, nil)
		if p := spProblem(err); p != nil && p.Reason == problem.ReasonFleetUnreachable && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond) // polling a store that is coming back
			continue
		}
		if err == nil && r.Status != 200 {
			err = fmt.Errorf("status %d", r.Status)
		}
		return err
	}
}

// withLimit is a daemon's config with another iNeo spotify.php limit.
func withLimit(t *testing.T, env *testenv.Env, from, to ineosim.Limit) string {
	t.Helper()
	old := fmt.Sprintf("[providers.ineo.limits.spotify]\nrequests = %d\n", from.Requests)
	text := env.ConfigText()
	if !strings.Contains(text, old) {
		t.Fatalf("config has no %q", old)
	}
	return strings.Replace(text, old, fmt.Sprintf("[providers.ineo.limits.spotify]\nrequests = %d\n", to.Requests), 1)
}

func fleetOf(t *testing.T, ctx context.Context, env *testenv.Env) *api.FleetStatus {
	t.Helper()
	st, err := env.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Fleet == nil {
		t.Fatal("status has no fleet in fleet mode")
	}
	return st.Fleet
}

// TestFleetOneLimit: a member whose iNeo limit differs from the fleet's
// holds that bucket: its callers get 503 fleet_limit_mismatch and it sends
// nothing, its status and every member's show the mismatch, and the others
// serve; reloaded to the fleet's limit, it serves again. Status lists the
// three members. (Before: each member kept its own limit to one shared log.)
func TestFleetOneLimit(t *testing.T) {
	t.Parallel()
	lim := ineosim.Limit{Requests: 6, Window: 2 * time.Second}
	_, sim, envs := startFleet(t, 3, lim)
	ctx := testenv.Ctx(t, 3*time.Minute)
	a, c := envs[0], envs[2]
	if err := fleetTrack(ctx, t, a.Client, trackID(1)); err != nil { // the fleet's first grant stores 6 per 2s
		t.Fatal(err)
	}

	odd := ineosim.Limit{Requests: 5, Window: lim.Window}
	c.WriteConfig(withLimit(t, c, lim, odd))
	if _, err := c.Client.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the odd member's status shows the mismatch", func() bool {
		f := fleetOf(t, ctx, c)
		return len(f.Mismatches) == 1 && f.Mismatches[0].Bucket == "ineo.spotify" && f.Mismatches[0].FleetLimit == "6 per 2s" && f.Mismatches[0].Limit == "5 per 2s"
	})
	before := sim.Requests(ineosim.ServiceSpotify)
	_, err := track(ctx, c.Client, trackID(2), nil)
	if p := spProblem(err); p == nil || p.Status != http.StatusServiceUnavailable || p.Reason != problem.ReasonFleetLimitMismatch {
		t.Fatalf("call through the odd member: %v, want 503 fleet_limit_mismatch", err)
	}
	if got := sim.Requests(ineosim.ServiceSpotify); got != before {
		t.Fatalf("the odd member sent %d requests", got-before)
	}
	for i, env := range envs[:2] {
		if err := fleetTrack(ctx, t, env.Client, trackID(10+i)); err != nil {
			t.Fatalf("member %d with the fleet's limit: %v", i, err)
		}
	}
	testenv.Eventually(t, 30*time.Second, "status lists 3 members, the odd one flagged", func() bool {
		f := fleetOf(t, ctx, a)
		if !f.RedisReachable || f.Name != "t" || len(f.Members) != 3 || len(f.Mismatches) != 0 {
			return false
		}
		flagged := 0
		for _, m := range f.Members {
			if len(m.LimitsDisagree) > 0 {
				flagged++
				if m.ID != fleetOf(t, ctx, c).Member || m.LimitsDisagree[0] != "ineo.spotify" || m.Limits["ineo.spotify"] != "5 per 2s" {
					return false
				}
			}
		}
		return flagged == 1
	})
	out, code := ctlSocket(t, a.Socket, "status")
	if code != 0 || !strings.Contains(out, "FLEET t: 3 live members") || !strings.Contains(out, "limits of ineo.spotify") {
		t.Fatalf("sluicectl status (exit %d):\n%s", code, out)
	}
	out, _ = ctlSocket(t, c.Socket, "status")
	if !strings.Contains(out, "HELD ineo.spotify: this member's limit 5 per 2s differs from the fleet's 6 per 2s") {
		t.Fatalf("sluicectl status of the odd member:\n%s", out)
	}

	c.WriteConfig(c.ConfigText())
	if _, err := c.Client.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the mismatch clears after the reload", func() bool {
		return len(fleetOf(t, ctx, c).Mismatches) == 0
	})
	if err := fleetTrack(ctx, t, c.Client, trackID(3)); err != nil {
		t.Fatalf("the member reloaded to the fleet's limit: %v", err)
	}
	if v := sim.Violations(); v != 0 {
		t.Fatalf("%d violations", v)
	}
}

// TestFleetRestartedEmptyRepublishesPauses: one member holds a pause (a
// 429 with Retry-After); Redis restarts empty, forgetting it; the member
// writes it again, so no member sends until it ends, and none before one
// window after the restart. (Before: the others sent once the restart
// hold was over, inside the pause.)
func TestFleetRestartedEmptyRepublishesPauses(t *testing.T) {
	t.Parallel()
	lim := ineosim.Limit{Requests: 6, Window: 2 * time.Second}
	rd, sim, envs := startFleet(t, 3, lim)
	ctx := testenv.Ctx(t, 3*time.Minute)
	if err := fleetTrack(ctx, t, envs[0].Client, trackID(1)); err != nil {
		t.Fatal(err)
	}
	const retryAfter = 8 * time.Second
	sim.InjectHTTPFault(ineosim.ServiceSpotify, ineosim.HTTPFault{Status: http.StatusTooManyRequests, RetryAfter: "8"})
	track(ctx, envs[0].Client, trackID(2), http.Header{"Sluice-Max-Wait": {"1s"}})
	log := sim.RequestLog(ineosim.ServiceSpotify)
	faulted := log[len(log)-1].At
	testenv.Eventually(t, 10*time.Second, "the member that saw the 429 holds the pause", func() bool {
		st, err := envs[0].Client.Status(ctx)
		if err != nil {
			return false
		}
		for _, b := range st.Buckets {
			if b.Name == "ineo.spotify" && b.PausedUntil != nil {
				return true
			}
		}
		return false
	})
	rd.Kill()
	rd.Start()
	restarted := time.Now()

	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		env := envs[1+i%2]
		wg.Go(func() { errs[i] = fleetTrack(ctx, t, env.Client, trackID(100+i)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
	for _, a := range sim.RequestLog(ineosim.ServiceSpotify) {
		if !a.At.After(faulted) {
			continue
		}
		if a.At.Before(faulted.Add(retryAfter)) {
			t.Fatalf("a request arrived %s after a 429 with Retry-After %s: the pause was lost with the store", a.At.Sub(faulted).Round(time.Millisecond), retryAfter)
		}
		if a.At.Before(restarted.Add(lim.Window)) {
			t.Fatalf("a request arrived %s after the store restarted empty, inside one window", a.At.Sub(restarted).Round(time.Millisecond))
		}
	}
	if v := sim.Violations(); v != 0 {
		t.Fatalf("%d violations", v)
	}
}

// TestFleetMemberJoinsMidWindow: a daemon that spent a window's budget on
// its own and restarts into the fleet counts those grants there: the
// fleet sends nothing that, with them, would exceed the limit. (Before:
// the fleet knew nothing of them and sent a full window on top.)
func TestFleetMemberJoinsMidWindow(t *testing.T) {
	t.Parallel()
	// A window longer than a daemon's restart, so the join is mid-window.
	lim := ineosim.Limit{Requests: 6, Window: 6 * time.Second}
	rd, sim, envs := startFleet(t, 2, lim)
	ctx := testenv.Ctx(t, 3*time.Minute)
	if err := fleetTrack(ctx, t, envs[0].Client, trackID(1)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the warm-up leaves the window", func() bool {
		log := sim.RequestLog(ineosim.ServiceSpotify)
		return time.Since(log[len(log)-1].At) > lim.Window+time.Second
	})

	alone := testenv.Start(t, testenv.Options{Ineo: sim, IneoURL: envs[0].IneoURL, SpotifyLimit: lim})
	for i, err := range burst(ctx, alone.Client, 200, lim.Requests) {
		if err != nil {
			t.Fatalf("alone %d: %v", i, err)
		}
	}
	log := sim.RequestLog(ineosim.ServiceSpotify)
	spent := log[len(log)-1].At
	alone.WriteConfig(alone.ConfigText() + fmt.Sprintf("[fleet]\nredis_url = %q\nname = \"t\"\n", rd.URL))
	alone.StopDaemon()
	alone.StartDaemon()
	t.Logf("the joining daemon serves again %s after its last request (window %s)", time.Since(spent).Round(time.Millisecond), lim.Window)

	var wg sync.WaitGroup
	errs := make([]error, 2*lim.Requests)
	for i := range errs {
		env := envs[i%2]
		wg.Go(func() { errs[i] = fleetTrack(ctx, t, env.Client, trackID(300+i)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
	if v := sim.Violations(); v != 0 {
		t.Fatalf("%d violations: the fleet did not count the joining daemon's grants", v)
	}
	assertArrivalWindows(t, sim.RequestLog(ineosim.ServiceSpotify), lim)
}

// TestFleetMemberKilledMidBurst: SIGKILL one of three members in the
// middle of a burst through all three: the others keep the fleet's limit
// with its grants (0 violations), and it restarts into the fleet safely.
func TestFleetMemberKilledMidBurst(t *testing.T) {
	t.Parallel()
	lim := ineosim.Limit{Requests: 6, Window: 2 * time.Second}
	_, sim, envs := startFleet(t, 3, lim)
	ctx := testenv.Ctx(t, 3*time.Minute)
	var wg sync.WaitGroup
	const each = 8
	errs := make([]error, len(envs)*each)
	for d, env := range envs {
		for i := range each {
			wg.Go(func() { errs[d*each+i] = fleetTrack(ctx, t, env.Client, trackID(100*d+i)) })
		}
	}
	testenv.Eventually(t, time.Minute, "the burst is under way", func() bool {
		return sim.Requests(ineosim.ServiceSpotify) >= lim.Requests+2
	})
	envs[1].KillDaemon()
	wg.Wait()
	for i, err := range errs {
		if err != nil && i/each != 1 {
			t.Errorf("request %d through a surviving member: %v", i, err)
		}
	}
	envs[1].StartDaemon()
	for i, err := range burst(ctx, envs[1].Client, 500, lim.Requests) {
		if err != nil {
			t.Errorf("after the restart, request %d: %v", i, err)
		}
	}
	if v := sim.Violations(); v != 0 {
		t.Fatalf("%d violations", v)
	}
	assertArrivalWindows(t, sim.RequestLog(ineosim.ServiceSpotify), lim)
}

// TestFleetHitsWhileRedisPaused: a cache hit never waits on Redis. While
// the fleet's Redis answers nothing (CLIENT PAUSE: a busy server, or a
// network dropping packets, unlike a killed server on a Unix socket, which
// refuses connections at once), hits on a member are served promptly,
// RateLimit headers included, by concurrent callers, throughout; a miss
// still fails closed (503 fleet_unreachable, nothing sent). Before: the
// headers' budget was read from Redis on the hit's path, and every hit
// past the 50 ms reading waited for the fleet client's 1 s timeout.
func TestFleetHitsWhileRedisPaused(t *testing.T) {
	t.Parallel()
	lim := ineosim.Limit{Requests: 6, Window: 2 * time.Second}
	rd, sim, envs := startFleet(t, 1, lim)
	c := envs[0].Client
	ctx := testenv.Ctx(t, 2*time.Minute)
	const n = 4
	for i := range n {
		if err := fleetTrack(ctx, t, c, trackID(i)); err != nil {
			t.Fatal(err)
		}
	}
	before := sim.Requests(ineosim.ServiceSpotify)

	// The pause outlasts the miss's whole exchange with Redis (a 500 ms
	// cache lookup, then the grant's 1 s timeout) by a wide margin: a
	// paused Redis answers once the pause ends, and a miss still asking
	// then, on a starved machine, would rightly be granted.
	const pause = 8 * time.Second
	const hitFor = 2500 * time.Millisecond
	// A guarantee about not waiting on Redis (its client's timeout is
	// 1 s), not a speed test: a hit may take anything short of it.
	const bound = 750 * time.Millisecond
	rd.Pause(pause)
	paused := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var slowest time.Duration
	hits := 0
	for w := range n {
		wg.Go(func() {
			for time.Since(paused) < hitFor {
				start := time.Now()
				r, err := track(ctx, c, trackID(w), nil)
				d := time.Since(start)
				if err != nil || r.Status != 200 {
					t.Errorf("hit while Redis is paused: %v", err)
					return
				}
				if r.Header.Get("RateLimit") == "" {
					t.Errorf("hit without RateLimit headers: %v", r.Header)
				}
				mu.Lock()
				hits++
				slowest = max(slowest, d)
				mu.Unlock()
			}
		})
	}
	var missErr error
	wg.Go(func() {
		_, missErr = track(ctx, c, trackID(900), http.Header{"Sluice-Max-Wait": {"20s"}})
	})
	wg.Wait()
	if time.Since(paused) >= pause {
		t.Skipf("the machine is too slow for this test: the pause (%s) ended before the miss and the hits were done", pause)
	}
	if p := spProblem(missErr); p == nil || p.Status != http.StatusServiceUnavailable || p.Reason != problem.ReasonFleetUnreachable {
		t.Errorf("miss while Redis is paused: %v, want 503 fleet_unreachable", missErr)
	}
	t.Logf("%d hits while Redis was paused, the slowest %s", hits, slowest.Round(time.Microsecond))
	if slowest >= bound {
		t.Errorf("a hit took %s while Redis was paused (%s): it waited on Redis", slowest.Round(time.Millisecond), pause)
	}
	if got := sim.Requests(ineosim.ServiceSpotify); got != before {
		t.Fatalf("%d upstream requests while the fleet's store did not answer", got-before)
	}
}
