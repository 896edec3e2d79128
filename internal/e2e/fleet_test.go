package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

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
