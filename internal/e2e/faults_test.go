package e2e

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// TestUpstreamFaults: broken, garbled, slow and absent upstreams give the
// documented problems within the configured timeout, every attempt is
// counted by the scheduler exactly as the upstream saw it, and nothing is
// cached.
func TestUpstreamFaults(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{IneoExtra: `timeout = "1s"`,
		SpotifyLimit: ineosim.Limit{Requests: 50, Window: time.Second}})
	ctx := testenv.Ctx(t, time.Minute)
	cases := []struct {
		name  string
		fault ineosim.Fault
		delay time.Duration
		want  int
	}{
		{"reset mid-body", ineosim.FaultReset, 0, http.StatusBadGateway},
		{"truncated body", ineosim.FaultTruncated, 0, http.StatusBadGateway},
		{"HTML error page", ineosim.FaultHTML500, 0, http.StatusBadGateway},
		{"not JSON", ineosim.FaultNotJSON, 0, http.StatusBadGateway},
		{"stall past the timeout", 0, 3 * time.Second, http.StatusGatewayTimeout},
	}
	for i, tc := range cases {
		id := trackID(i)
		if tc.fault != 0 {
			env.Ineo.InjectFault(ineosim.ServiceSpotify, tc.fault)
		}
		env.Ineo.SetDelay(tc.delay)
		start := time.Now()
		_, err := track(ctx, env.Client, id, nil)
		took := time.Since(start)
		env.Ineo.SetDelay(0)
		if got := problemStatus(err); got != tc.want {
			t.Errorf("%s: %v, want a %d problem", tc.name, err, tc.want)
		}
		if took > 2500*time.Millisecond {
			t.Errorf("%s: took %s with a 1s timeout", tc.name, took)
		}
		if _, err := track(ctx, env.Client, id, http.Header{"Cache-Control": {"only-if-cached"}}); problemStatus(err) != 504 {
			t.Errorf("%s: the failure was cached", tc.name)
		}
	}
	// A storm of 5xx pages from many callers at once.
	for range 10 {
		env.Ineo.InjectFault(ineosim.ServiceSpotify, ineosim.FaultHTML500)
	}
	for i, err := range burst(ctx, env.Client, 100, 10) {
		if problemStatus(err) != http.StatusBadGateway {
			t.Errorf("storm request %d: %v", i, err)
		}
	}
	// The scheduler counted every attempt the upstream saw. It may have
	// counted more: a grant handed out or used too late on a starved
	// machine is counted and never sent.
	st, err := env.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range st.Buckets {
		seen := env.Ineo.Requests(ineosim.ServiceSpotify)
		if b.Name != "ineo.spotify" {
			continue
		}
		if int(b.Granted) < seen {
			t.Errorf("bucket granted %d, upstream saw %d: requests without a grant", b.Granted, seen)
		} else if int(b.Granted) != seen {
			t.Logf("bucket granted %d (%d handed out late), upstream saw %d", b.Granted, b.Late, seen)
		}
	}
	if st.Cache.Entries != 0 {
		t.Errorf("%d failed answers cached", st.Cache.Entries)
	}
	// Connection refused.
	env.Ineo.Close()
	if _, err := track(ctx, env.Client, trackID(200), nil); problemStatus(err) != http.StatusBadGateway {
		t.Errorf("connection refused: %v, want 502", err)
	}
	if v := env.Ineo.Violations(); v != 0 {
		t.Errorf("violations: %d", v)
	}
}

// TestUnwritableStateDir: with a state_dir that cannot be written (and so
// not read either), the daemon starts and answers its own routes, but fails
// closed for the upstreams: after the one-window hold of unreadable state,
// a provider call gets 503 state_unwritable (ENOTDIR), at no upstream cost,
// and status says why.
func TestUnwritableStateDir(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, time.Minute)
	env.StopDaemon()
	// Replace the state directory by a regular file: unwritable even for
	// root, unlike a chmod.
	state := env.Dir + "/state"
	if err := os.RemoveAll(state); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(state, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	env.StartDaemon()
	sent := env.Ineo.Requests(ineosim.ServiceSpotify)
	_, err := track(ctx, env.Client, "6fx5VOjqYNBHcDf5GIF5g5", nil)
	assertUnwritable(t, err, "ENOTDIR")
	if got := env.Ineo.Requests(ineosim.ServiceSpotify); got != sent {
		t.Fatalf("%d upstream requests with no state to record them in", got-sent)
	}
	st, err := env.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.StateError == "" {
		t.Fatalf("status does not say the state cannot be kept: %+v", st)
	}
}

// TestAnswerPastItsLinkIsNotCalledStored: an iNeo answer that arrives
// after its link's life (less the expiry margin) has run out is relayed
// but not stored, and its Cache-Status does not claim it was.
func TestAnswerPastItsLinkIsNotCalledStored(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{IneoExtra: `link_ttl = "2s"`, Extra: "[cache]\nexpiry_margin = \"1s\"\n"})
	ctx := testenv.Ctx(t, time.Minute)
	env.Ineo.SetDelay(1500 * time.Millisecond) // the link's 1 s of fresh life is over on arrival
	r, err := track(ctx, env.Client, trackID(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cs := r.Header.Get("Cache-Status"); strings.Contains(cs, "stored") {
		t.Fatalf("Cache-Status %q for an answer that was not stored", cs)
	}
	env.Ineo.SetDelay(0)
	if _, err := track(ctx, env.Client, trackID(1), http.Header{"Cache-Control": {"only-if-cached"}}); problemStatus(err) != http.StatusGatewayTimeout {
		t.Fatalf("the answer past its link was cached: %v", err)
	}
}
