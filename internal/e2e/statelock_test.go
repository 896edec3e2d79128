package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/internal/testenv"
)

// startSluiced starts one more sluiced with args and returns it with its
// combined output file; the test stops it at the end.
func startSluiced(t *testing.T, env []string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.log")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(testenv.BinDir(t), "sluiced"), args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return cmd, out
}

// TestSecondDaemonOnOneStateDirRefused: two daemons on one state dir would
// each keep their own rate-limit log and together send twice the budget.
// The second refuses, naming the first one's pid and socket; given its
// own --state-dir (or SLUICE_STATE_DIR) it runs.
func TestSecondDaemonOnOneStateDirRefused(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	second := filepath.Join(t.TempDir(), "b.sock")
	cmd, out := startSluiced(t, nil, "--config", env.Config, "--socket", second)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the second daemon on one state dir exited 0")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the second daemon on one state dir is still running")
	}
	b, _ := os.ReadFile(out)
	msg := string(b)
	if !strings.Contains(msg, "pid "+strconv.Itoa(env.DaemonPID())) || !strings.Contains(msg, env.Socket) || !strings.Contains(msg, "--state-dir") {
		t.Fatalf("refusal does not name the holder's pid %d and socket %s, or the way out: %s", env.DaemonPID(), env.Socket, msg)
	}

	for _, how := range []struct {
		name string
		env  []string
		args []string
	}{
		{"flag", nil, []string{"--state-dir", filepath.Join(t.TempDir(), "state")}},
		{"env", []string{"SLUICE_STATE_DIR=" + filepath.Join(t.TempDir(), "state")}, nil},
	} {
		sock := filepath.Join(t.TempDir(), "c.sock")
		startSluiced(t, how.env, append([]string{"--config", env.Config, "--socket", sock}, how.args...)...)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := client.New(sock).WaitHealthy(ctx)
		cancel()
		if err != nil {
			t.Fatalf("%s: a daemon with its own state dir: %v", how.name, err)
		}
	}
}

// TestDisabledProviderSaysSo: a call to a provider the config switches off
// says so and how to switch it on, not "unknown provider".
func TestDisabledProviderSaysSo(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, time.Minute)
	_, err := env.Client.Call(ctx, http.MethodGet, "/v1/hellorf/audio/categories", nil, nil, nil)
	p := spProblem(err)
	if p == nil || p.Status != http.StatusNotFound || !strings.Contains(p.Detail, "disabled") || !strings.Contains(p.Detail, "enabled = true") {
		t.Fatalf("call to a disabled provider: %v, want a 404 saying it is disabled and how to enable it", err)
	}
}

// TestSandboxResetAndSwitchedOff: `sluiced --sandbox --reset` starts from
// an empty state dir (a grant made a moment ago is forgotten; without
// --reset it is kept), and the sandbox runs every provider except one the
// config switches off in so many words. A --state-dir given to the sandbox
// gets its sandbox/ too: --reset there must not wipe a real daemon's
// state (its purchase guard, its rate-limit log).
func TestSandboxResetAndSwitchedOff(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte("[providers.hellorf]\nenabled = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	sock := filepath.Join(dir, "s.sock")
	// A real daemon's record in the same state dir.
	realRecord := filepath.Join(state, "plugins", "hellorf", "purchase-guard.json")
	if err := os.MkdirAll(filepath.Dir(realRecord), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(realRecord, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Ctx(t, 2*time.Minute)
	run := func(extra ...string) (*exec.Cmd, *client.Client) {
		cmd, _ := startSluiced(t, nil, append([]string{"--sandbox", "--config", cfg, "--socket", sock, "--state-dir", state}, extra...)...)
		c := client.New(sock)
		if err := c.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
		return cmd, c
	}
	stop := func(cmd *exec.Cmd) {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
	inWindow := func(c *client.Client) int {
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range st.Buckets {
			if b.Name == "ineo.spotify" {
				return b.InWindow
			}
		}
		t.Fatalf("no ineo.spotify bucket: %+v", st.Buckets)
		return 0
	}

	cmd, c := run()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range st.Providers {
		names = append(names, p.Name)
	}
	if got := strings.Join(names, ","); got != "ineo,spotify" {
		t.Fatalf("sandbox providers %s, want ineo,spotify (hellorf switched off)", got)
	}
	if _, err := track(ctx, c, trackID(1), nil); err != nil {
		t.Fatal(err)
	}
	stop(cmd)
	cmd, c = run()
	if n := inWindow(c); n != 1 {
		t.Fatalf("after a restart: %d grants in the window, want the 1 made before", n)
	}
	stop(cmd)
	_, c = run("--reset")
	if n := inWindow(c); n != 0 {
		t.Fatalf("after --reset: %d grants in the window, want 0", n)
	}
	if _, err := os.Stat(realRecord); err != nil {
		t.Fatalf("--sandbox --reset --state-dir %s removed a real daemon's record: %v", state, err)
	}
}
