package e2e

import (
	"errors"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// TestStateDirReadOnlyOrFull mounts a real file system as state_dir, made
// read-only or filled to the last byte while the daemon was stopped, and
// checks that sluice fails closed: the daemon starts and serves its own
// routes, but sends nothing upstream while it cannot record grants — callers
// get 503 with reason "state_unwritable" and the errno, at once and at no
// upstream cost — and status says why. Once the file system is writable
// again the hold ends by itself (no restart), followed by one window's hold
// (the last run may have been unable to save its grants too).
func TestStateDirReadOnlyOrFull(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		break_  func(t *testing.T, dir string)
		repair  func(t *testing.T, dir string)
		wantErr string
		errno   string
	}{
		{"read-only", func(t *testing.T, dir string) {
			mustRun(t, "mount", "-o", "remount,ro", dir)
		}, func(t *testing.T, dir string) {
			mustRun(t, "mount", "-o", "remount,rw", dir)
		}, "read-only file system", "EROFS"},
		{"full", fillUp, unfill, "no space left on device", "ENOSPC"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const window = 2 * time.Second
			env := testenv.Start(t, testenv.Options{SpotifyLimit: ineosim.Limit{Requests: 6, Window: window}})
			ctx := testenv.Ctx(t, time.Minute)
			// A first run leaves state behind, so the hold below comes
			// from the unwritable directory, not from a missing state.
			if r, err := track(ctx, env.Client, trackID(900), nil); err != nil || r.Status != 200 {
				t.Fatalf("first run: %v", err)
			}
			env.StopDaemon()
			state := filepath.Join(env.Dir, "state")
			mountTmpfs(t, state)
			tc.break_(t, state)

			start := time.Now()
			env.StartDaemon()
			sent := env.Ineo.Requests(ineosim.ServiceSpotify)
			// A long max wait: the refusal must come by itself.
			_, err := track(ctx, env.Client, trackID(901), http.Header{"Sluice-Max-Wait": {"30s"}})
			assertUnwritable(t, err, tc.errno)
			st, err := env.Client.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(st.StateError, tc.wantErr) {
				t.Errorf("status state_error = %q, want it to say %q", st.StateError, tc.wantErr)
			}
			if b := bucketStatus(t, ctx, env, "ineo.spotify"); !strings.HasPrefix(b.Held, "state_unwritable") || b.HeldErrno != tc.errno {
				t.Errorf("ineo.spotify is not shown held: held %q, errno %q", b.Held, b.HeldErrno)
			}

			tc.repair(t, state)
			testenv.Eventually(t, 20*time.Second, "the hold to end once state_dir is writable", func() bool {
				return bucketStatus(t, ctx, env, "ineo.spotify").Held == ""
			})
			r, err := track(ctx, env.Client, trackID(902), nil)
			if err != nil || r.Status != 200 {
				t.Fatalf("request after the repair: %v", err)
			}
			if d := time.Since(start); d < window {
				t.Errorf("served %s after start, inside the one-window hold (%s)", d, window)
			}
			if got := env.Ineo.Requests(ineosim.ServiceSpotify) - sent; got != 1 {
				t.Errorf("%d upstream requests after the restart, want 1 (the 503 must cost none)", got)
			}
			if v := env.Ineo.Violations(); v != 0 {
				t.Errorf("%d rate-limit violations", v)
			}
		})
	}
}

// TestFullDiskCrashNoBan is issue 11's scenario: the state_dir fills up while
// the daemon runs, a burst arrives, the daemon is SIGKILLed and restarted at
// once on the freed disk, and a second burst arrives. Before fail-closed, 6
// were answered from memory while the disk was full, the restart forgot
// them, and the strict upstream counted a 7th request inside its window.
func TestFullDiskCrashNoBan(t *testing.T) {
	t.Parallel()
	lim := ineosim.Limit{Requests: 6, Window: 5 * time.Second}
	env := testenv.Start(t, testenv.Options{SpotifyLimit: lim})
	ctx := testenv.Ctx(t, 2*time.Minute)
	if r, err := track(ctx, env.Client, trackID(800), nil); err != nil || r.Status != 200 {
		t.Fatalf("first run: %v", err)
	}
	env.StopDaemon()
	state := filepath.Join(env.Dir, "state")
	mountTmpfs(t, state)
	env.StartDaemon()
	// Let the first request's window pass, so every later grant is free
	// to be given at once and the bursts alone decide.
	testenv.Eventually(t, 30*time.Second, "an empty window", func() bool {
		return bucketStatus(t, ctx, env, "ineo.spotify").InWindow == 0
	})
	fillUp(t, state)

	sent := env.Ineo.Requests(ineosim.ServiceSpotify)
	hdr := http.Header{"Sluice-Max-Wait": {"3s"}}
	errs := make([]error, 12)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { _, errs[i] = track(ctx, env.Client, trackID(810+i), hdr) })
	}
	wg.Wait()
	for i, err := range errs {
		if problemStatus(err) != http.StatusServiceUnavailable {
			t.Errorf("request %d on a full disk: %v, want 503 state_unwritable", i, err)
		}
	}
	assertUnwritable(t, errs[0], "ENOSPC")
	if got := env.Ineo.Requests(ineosim.ServiceSpotify) - sent; got != 0 {
		t.Fatalf("%d upstream requests while no grant could be recorded, want 0", got)
	}

	env.KillDaemon()
	unfill(t, state)
	env.StartDaemon()
	for i, err := range burst(ctx, env.Client, 830, 12) {
		if err != nil {
			t.Errorf("request %d after the restart: %v", i, err)
		}
	}
	if v := env.Ineo.Violations(); v != 0 {
		t.Fatalf("%d rate-limit violations: the restart forgot grants", v)
	}
	assertArrivalWindows(t, env.Ineo.RequestLog(ineosim.ServiceSpotify), lim)
}

// assertUnwritable checks the fail-closed refusal: 503, reason
// state_unwritable, a Retry-After, and the errno in the detail.
func assertUnwritable(t *testing.T, err error, errno string) {
	t.Helper()
	var p *problem.Problem
	if !errors.As(err, &p) || p.Status != http.StatusServiceUnavailable || p.Reason != problem.ReasonStateUnwritable ||
		p.RetryAfter <= 0 || !strings.Contains(p.Detail, errno) {
		t.Fatalf("got %v (%+v), want 503 with reason %q, Retry-After and %s in the detail", err, p, problem.ReasonStateUnwritable, errno)
	}
}

// mountTmpfs mounts a small tmpfs over dir for a state_dir, or skips.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	testenv.MountTmpfs(t, dir, "256k", "the scheduler's unit tests cover unwritable state")
}

var (
	fillUp = func(t *testing.T, dir string) { testenv.FillUp(t, dir) }
	unfill = func(t *testing.T, dir string) { testenv.Unfill(t, dir) }
)

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}
