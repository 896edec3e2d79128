package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/hellorf/hellorfsim"
)

// These tests break the hellorf plugin's purchase guard file under a running
// daemon and check that it fails closed: a purchase whose guard record
// cannot be written, or that starts from a guard file that cannot be read,
// is refused before anything is sent, and across a SIGKILL of the plugin an
// identical purchase reaches the simulator at most once.

// guardPurchase posts one purchase of the sample track for warrant.
func guardPurchase(ctx context.Context, env *testenv.Env, warrant string) (*client.Response, error) {
	body := url.Values{"audio_id": {strconv.Itoa(hellorfsim.SampleAudioID)}, "permission_id": {"35"}, "warrant_name": {warrant}}.Encode()
	return env.Client.Call(ctx, http.MethodPost, "/v1/hellorf/audio/purchase", nil, strings.NewReader(body),
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
}

// purchasesOf counts the purchases the simulator recorded for warrant.
func purchasesOf(sim *hellorfsim.Sim, warrant string) int {
	n := 0
	for _, p := range sim.Purchases() {
		if p.WarrantName == warrant {
			n++
		}
	}
	return n
}

// killHellorf SIGKILLs the hellorf plugin and waits until the supervisor has
// it ready again.
func killHellorf(t *testing.T, ctx context.Context, env *testenv.Env) {
	t.Helper()
	st, err := env.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	restarts := -1
	for _, pr := range st.Providers {
		if pr.Name == "hellorf" {
			restarts = pr.Restarts
			if err := syscall.Kill(pr.PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	if restarts < 0 {
		t.Fatal("no hellorf provider in status")
	}
	testenv.Eventually(t, 30*time.Second, "hellorf to restart", func() bool {
		st, err := env.Client.Status(ctx)
		if err != nil {
			return false
		}
		for _, pr := range st.Providers {
			if pr.Name == "hellorf" {
				return pr.State == "ready" && pr.Restarts > restarts
			}
		}
		return false
	})
}

// wantGuardRefusal expects the 503 of a purchase refused because its guard
// record is not durable, saying why.
func wantGuardRefusal(t *testing.T, what string, r *client.Response, err error, why string) {
	t.Helper()
	var p *problem.Problem
	if !errors.As(err, &p) || p.Status != http.StatusServiceUnavailable || !strings.Contains(p.Detail, "purchase guard") ||
		!strings.Contains(p.Detail, "nothing was sent") || !strings.Contains(p.Detail, why) {
		t.Fatalf("%s: %v (%s), want a 503 refusal naming the purchase guard and %q", what, err, answerText(r), why)
	}
}

// answerText renders an answer for a failure message.
func answerText(r *client.Response) string {
	if r == nil {
		return "no answer"
	}
	return fmt.Sprintf("answer %d %s", r.Status, bytes.TrimSpace(r.Body))
}

// TestHellorfPurchaseGuardStateDirRemoved is issue 11's scenario: the
// state_dir is removed while sluiced runs, a purchase is made, the plugin is
// SIGKILLed, and the same purchase is tried again.
func TestHellorfPurchaseGuardStateDirRemoved(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// replace puts a file where the plugin's state directory's parent
		// was, so the directory cannot be recreated.
		replace bool
	}{
		{"removed", false},
		{"replaced by a file", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env, sim := startHellorf(t, hellorfEnv{allowPurchase: true})
			ctx := testenv.Ctx(t, 2*time.Minute)
			state := filepath.Join(env.Dir, "state")
			guardFile := filepath.Join(state, "plugins", "hellorf", "purchase-guard.json")
			// One purchase before, so the guard file exists.
			if r, err := guardPurchase(ctx, env, "Before Ltd"); err != nil || r.Status != 200 {
				t.Fatalf("purchase before the removal: %v", err)
			}
			if _, err := os.Stat(guardFile); err != nil {
				t.Fatalf("guard file: %v", err)
			}
			// Renamed away first: the daemon's scheduler writes into
			// state_dir too, and may recreate it at any moment, which
			// would make a RemoveAll in place fail.
			gone := state + ".gone"
			if err := os.Rename(state, gone); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(gone); err != nil {
				t.Fatal(err)
			}
			if tc.replace {
				// The plugins directory, which only the plugin host and
				// the plugin create: state_dir itself may have been
				// recreated by the scheduler already.
				if err := os.MkdirAll(state, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(state, "plugins"), []byte("not a directory\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}

			r, err := guardPurchase(ctx, env, "Removed Ltd")
			if tc.replace {
				wantGuardRefusal(t, "purchase with its state directory's parent a file", r, err, "not a directory")
			} else {
				if err != nil || r.Status != 200 {
					t.Fatalf("purchase after the removal: %v", err)
				}
				if _, err := os.Stat(guardFile); err != nil {
					t.Fatalf("the guard file was not recreated: %v", err)
				}
			}
			killHellorf(t, ctx, env)
			r, err = guardPurchase(ctx, env, "Removed Ltd")
			if tc.replace {
				wantGuardRefusal(t, "purchase after the restart", r, err, "purchase guard")
			} else if problemStatus(err) != http.StatusConflict {
				t.Fatalf("identical purchase after the plugin's restart: %v (%s), want 409", err, answerText(r))
			}
			want := 1
			if tc.replace {
				want = 0
			}
			if n := purchasesOf(sim, "Removed Ltd"); n != want {
				t.Fatalf("%d purchases reached the simulator, want %d", n, want)
			}
			// The purchase made before the removal is remembered too when
			// the directory came back.
			if !tc.replace {
				if _, err := guardPurchase(ctx, env, "Before Ltd"); problemStatus(err) != http.StatusConflict || purchasesOf(sim, "Before Ltd") != 1 {
					t.Fatalf("purchase made before the removal, repeated: %v, %d purchases", err, purchasesOf(sim, "Before Ltd"))
				}
			}
		})
	}
}

// TestHellorfPurchaseGuardUnwritable: the plugin's state directory becomes
// read-only or full while the daemon runs (a real tmpfs: skipped where
// mounting is not allowed). A new purchase is refused before it is sent; an
// identical purchase stays blocked across a SIGKILL of the plugin.
func TestHellorfPurchaseGuardUnwritable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		break_ func(t *testing.T, dir string)
		why    string
	}{
		{"read-only", func(t *testing.T, dir string) { mustRun(t, "mount", "-o", "remount,ro", dir) }, "read-only file system"},
		{"full", fillUp, "no space left on device"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env, sim := startHellorf(t, hellorfEnv{allowPurchase: true})
			ctx := testenv.Ctx(t, 2*time.Minute)
			dir := filepath.Join(env.Dir, "state", "plugins", "hellorf")
			mountTmpfs(t, dir)
			if r, err := guardPurchase(ctx, env, "First Ltd"); err != nil || r.Status != 200 {
				t.Fatalf("purchase before breaking the directory: %v", err)
			}
			tc.break_(t, dir)
			r, err := guardPurchase(ctx, env, "Second Ltd")
			wantGuardRefusal(t, "purchase with an unwritable guard", r, err, tc.why)
			killHellorf(t, ctx, env)
			if _, err := guardPurchase(ctx, env, "First Ltd"); problemStatus(err) != http.StatusConflict {
				t.Fatalf("identical purchase after the restart: %v, want 409", err)
			}
			r, err = guardPurchase(ctx, env, "Second Ltd")
			wantGuardRefusal(t, "purchase after the restart", r, err, tc.why)
			if a, b := purchasesOf(sim, "First Ltd"), purchasesOf(sim, "Second Ltd"); a != 1 || b != 0 {
				t.Fatalf("purchases reaching the simulator: %d and %d, want 1 and 0", a, b)
			}
		})
	}
}

// TestHellorfPurchaseGuardCorrupt: a guard file that cannot be parsed at
// start refuses every purchase (the purchases it held are not known), says
// so in the log, and lets purchases through again once the operator has
// removed it.
func TestHellorfPurchaseGuardCorrupt(t *testing.T) {
	t.Parallel()
	env, sim := startHellorf(t, hellorfEnv{allowPurchase: true})
	ctx := testenv.Ctx(t, 2*time.Minute)
	guardFile := filepath.Join(env.Dir, "state", "plugins", "hellorf", "purchase-guard.json")
	if r, err := guardPurchase(ctx, env, "Corrupt Ltd"); err != nil || r.Status != 200 {
		t.Fatalf("first purchase: %v", err)
	}
	env.StopDaemon()
	b, err := os.ReadFile(guardFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(guardFile, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	env.StartDaemon()
	for _, w := range []string{"Corrupt Ltd", "Other Ltd"} {
		r, err := guardPurchase(ctx, env, w)
		wantGuardRefusal(t, w+" with a corrupt guard file", r, err, "could not be read")
	}
	if a, b := purchasesOf(sim, "Corrupt Ltd"), purchasesOf(sim, "Other Ltd"); a != 1 || b != 0 {
		t.Fatalf("purchases reaching the simulator: %d and %d, want 1 and 0", a, b)
	}
	if !strings.Contains(env.Log(), "purchase guard") {
		t.Error("the unreadable guard file is not logged")
	}
	if err := os.Remove(guardFile); err != nil {
		t.Fatal(err)
	}
	if r, err := guardPurchase(ctx, env, "Other Ltd"); err != nil || r.Status != 200 || purchasesOf(sim, "Other Ltd") != 1 {
		t.Fatalf("purchase after the operator removed the file: %v", err)
	}
}
