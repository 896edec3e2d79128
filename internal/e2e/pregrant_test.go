package e2e

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// bucketStatus returns one bucket of the daemon's status.
func bucketStatus(t *testing.T, ctx context.Context, env *testenv.Env, name string) api.BucketStatus {
	t.Helper()
	st, err := env.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range st.Buckets {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("no bucket %q in status", name)
	return api.BucketStatus{}
}

// TestPregrantIneoMissOneGrant: a cache miss, which now carries a
// pre-grant, still costs exactly one grant and one upstream request (the
// plugin uses the pre-grant instead of asking for another: unit-tested in
// core/provider's TestUpstreamAcquireUsesPregrant), none is released, and
// the hit after it costs none.
func TestPregrantIneoMissOneGrant(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, time.Minute)
	before := bucketStatus(t, ctx, env, "ineo.spotify")

	r, err := track(ctx, env.Client, "6fx5VOjqYNBHcDf5GIF5g5", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusOK {
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
	testenv.Eventually(t, 5*time.Second, "the simulator to count the request", func() bool {
		return env.Ineo.Requests(ineosim.ServiceSpotify) >= 1
	})
	after := bucketStatus(t, ctx, env, "ineo.spotify")
	if got := after.Granted - before.Granted; got != 1 {
		t.Errorf("the miss took %d grants, want 1", got)
	}
	if got := after.InWindow - before.InWindow; got != 1 {
		t.Errorf("in-window count went up by %d, want 1", got)
	}
	if after.Released != before.Released {
		t.Errorf("%d grants released: the miss's pre-grant went unused", after.Released-before.Released)
	}
	if got := env.Ineo.Requests(ineosim.ServiceSpotify); got != 1 {
		t.Errorf("simulator saw %d requests, want 1", got)
	}

	// The hit costs nothing.
	if r, err := track(ctx, env.Client, "6fx5VOjqYNBHcDf5GIF5g5", nil); err != nil || r.Status != http.StatusOK {
		t.Fatalf("hit: %v", err)
	}
	if b := bucketStatus(t, ctx, env, "ineo.spotify"); b.Granted != after.Granted {
		t.Errorf("the hit took %d grants", b.Granted-after.Granted)
	}
	if got := env.Ineo.Requests(ineosim.ServiceSpotify); got != 1 {
		t.Errorf("simulator saw %d requests after the hit, want 1", got)
	}
	if v := env.Ineo.Violations(); v != 0 {
		t.Errorf("simulator saw %d violations", v)
	}
}

// TestPregrantHellorfLocalRejectionReleased: a request the hellorf plugin
// rejects itself (its parameter checks, which the host does not know)
// reached the plugin carrying a pre-grant; the plugin reports it unused and
// the gateway releases it, so the rejection takes no budget. Both paths
// are covered: a cacheable operation (buffered fetch) and a non-cacheable
// one (streamed).
func TestPregrantHellorfLocalRejectionReleased(t *testing.T) {
	t.Parallel()
	// A window far longer than the test, so a grant that was not released
	// cannot age out of the in-window count before it is read.
	env, sim := startHellorf(t, hellorfEnv{requests: 10, window: "1m"})
	ctx := testenv.Ctx(t, time.Minute)

	cases := []struct {
		name, op string
		q        url.Values
		param    string
	}{
		{"cacheable search, per_page out of range", "search", url.Values{"per_page": {"1000"}}, "per_page"},
		{"cacheable search, unknown parameter", "search", url.Values{"genre": {"pop"}}, "genre"},
		{"streamed my-purchases, is_download 0", "my-purchases", url.Values{"is_download": {"0"}}, "is_download"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := bucketStatus(t, ctx, env, "hellorf.api")
			_, err := hcall(ctx, env, http.MethodGet, tc.op, tc.q, nil)
			var p *problem.Problem
			if !errors.As(err, &p) || p.Status != http.StatusBadRequest || p.Param != tc.param {
				t.Fatalf("got %v, want the plugin's 400 naming %q", err, tc.param)
			}
			after := bucketStatus(t, ctx, env, "hellorf.api")
			if after.InWindow != before.InWindow {
				t.Errorf("in-window count %d → %d: the unused pre-grant was not released", before.InWindow, after.InWindow)
			}
			// Exactly one grant was taken for the call and given back:
			// without a pre-grant there would be nothing to release.
			if got := after.Released - before.Released; got != 1 {
				t.Errorf("%d grants released, want the call's pre-grant", got)
			}
			if n := sim.TotalRequests(); n != 0 {
				t.Errorf("the rejection cost %d upstream requests", n)
			}
		})
	}

	// A request the plugin accepts still costs exactly one grant.
	before := bucketStatus(t, ctx, env, "hellorf.api")
	hget(t, ctx, env, "categories", nil, nil)
	after := bucketStatus(t, ctx, env, "hellorf.api")
	if got := after.InWindow - before.InWindow; got != 1 {
		t.Errorf("an accepted request changed the in-window count by %d, want 1", got)
	}
	if n := sim.TotalRequests(); n != 1 {
		t.Errorf("simulator saw %d requests, want 1", n)
	}
}
