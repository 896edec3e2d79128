package e2e

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// TestStateDirReadOnlyOrFull mounts a real file system as state_dir, made
// read-only or filled to the last byte while the daemon was stopped, and
// checks the safe default: the daemon starts and serves, holds every bucket
// for one window after start (the last run may have been unable to save its
// grants too), answers a caller that cannot wait 429 without any upstream
// request, serves once the window has passed, and says why in status.
func TestStateDirReadOnlyOrFull(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		break_  func(t *testing.T, dir string)
		wantErr string
	}{
		{"read-only", func(t *testing.T, dir string) {
			mustRun(t, "mount", "-o", "remount,ro", dir)
		}, "read-only file system"},
		{"full", fillUp, "no space left on device"},
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
			_, err := track(ctx, env.Client, trackID(901), http.Header{"Sluice-Max-Wait": {"200ms"}})
			var p *problem.Problem
			if !errors.As(err, &p) || p.Status != http.StatusTooManyRequests {
				t.Fatalf("request inside the startup hold: %v, want a 429 problem", err)
			}
			st, err := env.Client.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(st.StateError, tc.wantErr) {
				t.Errorf("status state_error = %q, want it to say %q", st.StateError, tc.wantErr)
			}
			if until, reason := bucketPause(ctx, t, env, "ineo.spotify"); until.IsZero() || !strings.Contains(reason, "cannot be saved") {
				t.Errorf("ineo.spotify is not held for the unsaveable state: until %v, %q", until, reason)
			}

			r, err := track(ctx, env.Client, trackID(902), nil)
			if err != nil || r.Status != 200 {
				t.Fatalf("request waiting out the hold: %v", err)
			}
			if d := time.Since(start); d < window {
				t.Errorf("served %s after start, inside the one-window hold (%s)", d, window)
			}
			if got := env.Ineo.Requests(ineosim.ServiceSpotify) - sent; got != 1 {
				t.Errorf("%d upstream requests after the restart, want 1 (the 429 must cost none)", got)
			}
			if v := env.Ineo.Violations(); v != 0 {
				t.Errorf("%d rate-limit violations", v)
			}
		})
	}
}

// mountTmpfs mounts a small tmpfs over dir, keeping the files dir held, or
// skips the test where mounting is not allowed (not root, no CAP_SYS_ADMIN).
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs as state_dir needs root; the scheduler's unit tests cover unwritable state")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
			files[e.Name()] = b
		}
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); the scheduler's unit tests cover unwritable state", err, strings.TrimSpace(string(out)))
	}
	// Lazily: the daemon, stopped by a cleanup that runs after this one,
	// may still hold the directory.
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// fillUp writes to dir until its file system has no byte left.
func fillUp(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	if _, err := f.Write([]byte{0}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("file system not full: %v", err)
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}
