package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/hellorf/hellorfsim"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// chaosDuration is 20 s in make test; make soak sets SLUICE_CHAOS=2m.
func chaosDuration(t *testing.T) time.Duration {
	if v := os.Getenv("SLUICE_CHAOS"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SLUICE_CHAOS: %v", err)
		}
		return d
	}
	return 20 * time.Second
}

// TestChaos: mixed load from 20 clients while the plugin is SIGKILLed every
// few seconds and the config is rewritten (valid with changed limits, and
// invalid). Every request must get an answer — a success or a problem —
// the simulator must see no violation, and afterwards no plugin is orphaned
// and the daemon's goroutines return to their baseline.
func TestChaos(t *testing.T) {
	// Not parallel: the violation counts measure sluice, and the rest of
	// the suite starving the same two cores would only add noise to the
	// simulators' arrival stamps.
	lim := ineosim.Limit{Requests: 6, Window: 500 * time.Millisecond}
	tlim := ineosim.Limit{Requests: 10, Window: 600 * time.Millisecond}
	hsim, hURL, err := hellorfsim.Start(hellorfsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer hsim.Close()
	ssim, sAPI, sAcct, err := spotifysim.Start(spotifysim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ssim.Close()
	extra := testenv.HellorfSection(hURL, hellorfsim.DefaultClientID, hellorfsim.DefaultClientSecret) +
		testenv.SpotifySection(sAPI, sAcct, spotifysim.DefaultClientID, spotifysim.DefaultClientSecret)
	// The margin covers the jitter between a grant and its arrival; with
	// the race detector and 20 clients on two cores, that (and the
	// simulator's own timestamping) reaches 100+ ms: use the production
	// default.
	env := testenv.Start(t, testenv.Options{SpotifyLimit: lim, TmanageLimit: tlim, Margin: "250ms", Extra: extra})
	ctx := testenv.Ctx(t, chaosDuration(t)+2*time.Minute)
	baseline := daemonGoroutines(t, env)

	var answered, succeeded, problems atomic.Int64
	var failures sync.Map // message -> count, for the report
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 42))
			for {
				select {
				case <-stop:
					return
				default:
				}
				status, err := chaosRequest(ctx, env, rng)
				switch {
				case err == nil && status < 400:
					succeeded.Add(1)
				case err == nil:
					problems.Add(1)
				default:
					n, _ := failures.LoadOrStore(err.Error(), new(atomic.Int64))
					n.(*atomic.Int64).Add(1)
					continue
				}
				answered.Add(1)
			}
		}()
	}
	// Chaos: kill the plugin, rewrite the config.
	var killedMu sync.Mutex
	var killed []int
	wg.Add(1)
	go func() {
		defer wg.Done()
		good := env.ConfigText()
		variants := []string{
			strings.Replace(good, "requests = 6", "requests = 5", 1),
			good + "\nthis is not toml\n",
			strings.Replace(good, `window = "500ms"`, `window = "700ms"`, 1),
			good,
		}
		tick := time.NewTicker(1500 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				env.WriteConfig(good)
				return
			case <-tick.C:
			}
			if i%2 == 0 {
				// Kill one provider's plugin, in turn, and make Spotify
				// answer a 429 now and then.
				if st, err := env.Client.Status(ctx); err == nil && len(st.Providers) > 0 {
					if p := st.Providers[(i/2)%len(st.Providers)]; p.PID > 0 {
						syscall.Kill(p.PID, syscall.SIGKILL)
						killedMu.Lock()
						killed = append(killed, p.PID)
						killedMu.Unlock()
					}
				}
				if i%4 == 0 {
					ssim.Force429(1, 1)
				}
			} else {
				env.WriteConfig(variants[(i/2)%len(variants)])
			}
		}
	}()
	time.Sleep(chaosDuration(t)) // the load runs for this long; not a synchronisation
	close(stop)
	wg.Wait()

	var lost []string
	failures.Range(func(k, v any) bool {
		lost = append(lost, fmt.Sprintf("%dx %s", v.(*atomic.Int64).Load(), k))
		return true
	})
	t.Logf("chaos: %d answered (%d successes, %d problems), %d without an answer", answered.Load(), succeeded.Load(), problems.Load(), len(lost))
	if len(lost) > 0 {
		t.Errorf("requests without an answer: %v", lost)
	}
	if answered.Load() < 100 || succeeded.Load() == 0 {
		t.Errorf("too little load got through to mean anything")
	}
	if v := env.Ineo.Violations(); v != 0 {
		t.Errorf("iNeo simulator saw %d violations", v)
	}
	if c := ssim.Counts(); c.DuringRetryAfter != 0 {
		t.Errorf("%d Spotify requests arrived while a Retry-After was running", c.DuringRetryAfter)
	} else {
		t.Logf("Spotify: %d API requests, %d tokens, %d throttled", c.APIRequests, c.TokenRequests, c.Throttled)
	}
	// The config settles back to the good one and the plugin comes back.
	if err := env.Client.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := env.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// No orphans: every killed plugin is gone and the daemon has exactly
	// one plugin child (a provider restarted by a config change leaves its
	// old process only while it drains).
	testenv.Eventually(t, 15*time.Second, "old plugin processes to be gone", func() bool {
		for _, pid := range killed {
			if testenv.Alive(pid) {
				return false
			}
		}
		return len(testenv.ChildPluginPIDs(env.DaemonPID())) == 3
	})
	for _, p := range st.Providers {
		if p.Restarts == 0 {
			t.Errorf("plugin %s was never restarted; the chaos did not happen", p.Name)
		}
	}
	// The clients' idle keep-alive connections hold daemon goroutines until
	// they close; close them so only leaks remain.
	env.Client.HTTPClient().CloseIdleConnections()
	testenv.Eventually(t, 15*time.Second, "daemon goroutines back to baseline", func() bool {
		return daemonGoroutines(t, env) <= baseline+15
	})
}

func chaosRequest(ctx context.Context, env *testenv.Env, rng *rand.Rand) (int, error) {
	hdr := http.Header{"Sluice-Max-Wait": {"3s"}}
	var path string
	q := url.Values{}
	switch rng.IntN(7) {
	case 0, 1:
		path = "/v1/ineo/spotify.php"
		q.Set("trackId", trackID(rng.IntN(40)))
	case 4:
		path = "/v1/hellorf/audio/search"
		q.Set("keyword", []string{"piano", "rain", "city", "guitar"}[rng.IntN(4)])
		q.Set("page", fmt.Sprint(1+rng.IntN(3)))
	case 5:
		path = "/v1/hellorf/audio/detail"
		q.Set("audio_id", fmt.Sprint(hellorfsim.SampleAudioID+rng.IntN(20)))
	case 6:
		path = "/v1/spotify/v1/search"
		q.Set("q", []string{"BTS", "piano", "rain", "night"}[rng.IntN(4)])
		q.Set("type", "artist")
		q.Set("offset", fmt.Sprint(rng.IntN(5)))
	case 2:
		path = "/v1/ineo/tmanage-v2.php"
		q.Set("action", "sendcode")
		q.Set("phone", fmt.Sprintf("98901234%04d", rng.IntN(100)))
	default:
		path = "/v1/ineo/spotify.php"
		q.Set("trackId", "not-an-id")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := env.Client.Call(ctx, http.MethodGet, path, q, nil, hdr)
	var p *problem.Problem
	if errors.As(err, &p) {
		return p.Status, nil
	}
	if err != nil {
		return 0, err
	}
	return r.Status, nil
}

// daemonGoroutines reads go_goroutines from the daemon's own metrics.
func daemonGoroutines(t *testing.T, env *testenv.Env) int {
	t.Helper()
	return int(metricValue(t, env, "go_goroutines"))
}
