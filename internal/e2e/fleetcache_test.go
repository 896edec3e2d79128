package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// TestFleetOneCache: an answer fetched by one member is a hit on another
// (before fleet mode: a second upstream request, and a third on a third
// host), and one lookup asked on three members at once costs one
// upstream request: the others wait for the first one's answer.
func TestFleetOneCache(t *testing.T) {
	t.Parallel()
	lim := ineosim.Limit{Requests: 6, Window: 2 * time.Second}
	_, sim, envs := startFleet(t, 3, lim)
	ctx := testenv.Ctx(t, 2*time.Minute)

	t.Run("miss on A, hit on B", func(t *testing.T) {
		before := sim.Requests(ineosim.ServiceSpotify)
		a, err := track(ctx, envs[0].Client, trackID(1), nil)
		if err != nil || a.Status != 200 {
			t.Fatalf("A: %v", err)
		}
		for _, env := range envs[1:] {
			b, err := track(ctx, env.Client, trackID(1), nil)
			if err != nil || b.Status != 200 {
				t.Fatalf("B: %v", err)
			}
			if string(b.Body) != string(a.Body) {
				t.Fatalf("B answered %s, A %s", b.Body, a.Body)
			}
			if cs := b.Header.Get("Cache-Status"); !strings.Contains(cs, "hit") || !strings.Contains(cs, "fleet") {
				t.Errorf("B's Cache-Status %q, want a hit from the fleet's cache", cs)
			}
		}
		if got := sim.Requests(ineosim.ServiceSpotify) - before; got != 1 {
			t.Fatalf("%d upstream requests for one lookup on three members, want 1", got)
		}
		if v := metricValue(t, envs[1], "sluice_cache_remote_hits_total"); v != 1 {
			t.Errorf("B's sluice_cache_remote_hits_total %v, want 1", v)
		}
	})

	t.Run("the same miss on three members at once", func(t *testing.T) {
		before := sim.Requests(ineosim.ServiceSpotify)
		var wg sync.WaitGroup
		bodies := make([]string, len(envs))
		errs := make([]error, len(envs))
		for i, env := range envs {
			wg.Go(func() {
				r, err := track(ctx, env.Client, trackID(2), nil)
				if err == nil && r.Status != 200 {
					err = fmt.Errorf("status %d", r.Status)
				}
				if err == nil {
					bodies[i] = string(r.Body)
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i := range envs {
			if errs[i] != nil {
				t.Fatalf("member %d: %v", i, errs[i])
			}
			if bodies[i] != bodies[0] {
				t.Errorf("member %d answered %s, member 0 %s", i, bodies[i], bodies[0])
			}
		}
		if got := sim.Requests(ineosim.ServiceSpotify) - before; got != 1 {
			t.Fatalf("%d upstream requests for one lookup asked on three members at once, want 1", got)
		}
	})

	t.Run("a purge on A purges B", func(t *testing.T) {
		if _, err := envs[0].Client.PurgeCache(ctx, "ineo"); err != nil {
			t.Fatal(err)
		}
		before := sim.Requests(ineosim.ServiceSpotify)
		// B heard of the purge, or the next lookup would be a local hit.
		for deadline := time.Now().Add(30 * time.Second); ; {
			_, err := track(ctx, envs[1].Client, trackID(1), http.Header{"Cache-Control": {"only-if-cached"}})
			if p := spProblem(err); p != nil && p.Status == http.StatusGatewayTimeout {
				break // not cached: purged
			}
			if time.Now().After(deadline) {
				t.Fatal("B still serves its copy after the fleet's purge")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if r, err := track(ctx, envs[2].Client, trackID(1), nil); err != nil || r.Status != 200 {
			t.Fatalf("after the purge: %v", err)
		}
		if got := sim.Requests(ineosim.ServiceSpotify) - before; got != 1 {
			t.Fatalf("%d upstream requests after the purge, want 1 (the fleet's copy purged too)", got)
		}
	})
}

// TestFleetCacheLinksPerCaller: a Spotify page with links back to sluice,
// fetched through one member and then through another under another host
// name, costs one Spotify request, and each answer's links are on its own
// caller's base: the fleet's copy is host-free.
func TestFleetCacheLinksPerCaller(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	const window = 2 * time.Second
	sim, apiURL, accountsURL, err := spotifysim.Start(spotifysim.Options{Limit: spotifysim.Limit{Requests: 50, Window: window}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	extra := testenv.SpotifySection(apiURL, accountsURL, spotifysim.DefaultClientID, spotifysim.DefaultClientSecret) +
		fmt.Sprintf("[providers.spotify.limits.api]\nrequests = 50\nwindow = %q\n", window) +
		fmt.Sprintf("[providers.spotify.limits.accounts]\nrequests = 10\nwindow = %q\n", window) +
		fmt.Sprintf("[fleet]\nredis_url = %q\nname = \"links\"\n", rd.URL)
	var envs []*testenv.Env
	for range 2 {
		envs = append(envs, testenv.Start(t, testenv.Options{Extra: extra}))
	}
	target := "/v1/spotify/v1/artists/" + spotifysim.Artist95ID + "/albums?limit=10"
	before := sim.Counts().APIRequests
	for i, host := range []string{"sluice", "localhost:8750"} {
		resp, body := rawGet(t, envs[i].Socket, "GET "+target+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("member %d, Host %s: %d %s", i, host, resp.StatusCode, body)
		}
		var page struct {
			Href string  `json:"href"`
			Next *string `json:"next"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("Host %s: %v: %s", host, err, body)
		}
		want := "http://" + host + "/v1/spotify/v1/artists/" + spotifysim.Artist95ID + "/albums"
		if page.Next == nil || !strings.HasPrefix(*page.Next, want) || !strings.HasPrefix(page.Href, want) {
			t.Fatalf("member %d, Host %s: href %q, next %v; want both under %s", i, host, page.Href, page.Next, want)
		}
		if strings.Contains(string(body), "invalid") {
			t.Fatalf("Host %s: the link marker leaked: %s", host, body)
		}
	}
	if got := sim.Counts().APIRequests - before; got != 1 {
		t.Fatalf("%d Spotify requests for one page asked through two members, want 1", got)
	}
}

// TestFleetSpeculativeGrant: a member's miss asks for its grant beside
// its fleet cache lookup, in the same round trip to Redis. When the
// lookup finds another member's answer, that grant, never sent, is given
// back at once (before: it would have kept a slot of the fleet's window
// for a whole window); when the member fetches, the grant is used.
func TestFleetSpeculativeGrant(t *testing.T) {
	t.Parallel()
	lim := ineosim.Limit{Requests: 6, Window: 2 * time.Second}
	_, sim, envs := startFleet(t, 2, lim)
	ctx := testenv.Ctx(t, 2*time.Minute)
	released := func(i int) uint64 {
		st, err := envs[i].Client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range st.Buckets {
			if b.Name == "ineo.spotify" {
				return b.Released
			}
		}
		t.Fatalf("member %d has no bucket ineo.spotify: %+v", i, st.Buckets)
		return 0
	}
	before := sim.Requests(ineosim.ServiceSpotify)
	// The fleet's first window is held: A's first grant waits for it.
	if r, err := track(ctx, envs[0].Client, trackID(1), nil); err != nil || r.Status != 200 {
		t.Fatalf("A: %v", err)
	}
	if r, err := track(ctx, envs[0].Client, trackID(2), nil); err != nil || r.Status != 200 {
		t.Fatalf("A: %v", err)
	}
	b, err := track(ctx, envs[1].Client, trackID(2), nil)
	if err != nil || b.Status != 200 {
		t.Fatalf("B: %v", err)
	}
	if cs := b.Header.Get("Cache-Status"); !strings.Contains(cs, "fleet") {
		t.Fatalf("B's Cache-Status %q, want a hit from the fleet's cache", cs)
	}
	testenv.Eventually(t, 10*time.Second, "B to give back the grant it asked for beside its lookup", func() bool {
		return released(1) == 1
	})
	if got := released(0); got != 0 {
		t.Errorf("A gave back %d grants; its misses were fetched with them", got)
	}
	if got := sim.Requests(ineosim.ServiceSpotify) - before; got != 2 {
		t.Errorf("%d upstream requests for two tracks, want 2", got)
	}
}
