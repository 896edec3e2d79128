package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/internal/testenv"
)

// providerState is one provider's state in the daemon's status, or "".
func providerState(t *testing.T, ctx context.Context, env *testenv.Env, name string) string {
	t.Helper()
	st, err := env.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Providers {
		if p.Name == name {
			return p.State
		}
	}
	return ""
}

// TestTruncatedConfigKeepsServing: a config file truncated in place (": >
// config.toml", or an editor or generator that truncates before writing)
// is what the file watch sees first. Loaded, that empty file would be the
// defaults: hellorf off, its cached answers purged, iNeo without
// credentials. It must be refused like any invalid config instead.
func TestTruncatedConfigKeepsServing(t *testing.T) {
	t.Parallel()
	env, _ := startHellorf(t, hellorfEnv{})
	ctx := testenv.Ctx(t, time.Minute)
	if s := providerState(t, ctx, env, "hellorf"); s != "ready" {
		t.Fatalf("hellorf %q before the edit, want ready", s)
	}
	hget(t, ctx, env, "categories", nil, nil)
	if r := hget(t, ctx, env, "categories", nil, nil); !strings.Contains(cacheStatus(r), "hit") {
		t.Fatalf("second categories call not a cache hit: %q", cacheStatus(r))
	}

	var lastErrAt time.Time
	for _, content := range []string{"", "# being rewritten\n\n"} {
		// In place, same inode, as the shell's ": >" does.
		if err := os.WriteFile(env.Config, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "status to show the refused empty config", func() bool {
			st, err := env.Client.Status(ctx)
			if err != nil || st.Config.LastReloadOK || !st.Config.LastErrorAt.After(lastErrAt) {
				return false
			}
			lastErrAt = st.Config.LastErrorAt
			return strings.Contains(st.Config.LastError, "sets no keys")
		})
		if s := providerState(t, ctx, env, "hellorf"); s != "ready" {
			t.Fatalf("hellorf %q after the config was emptied (%q), want ready", s, content)
		}
		if r := hget(t, ctx, env, "categories", nil, nil); !strings.Contains(cacheStatus(r), "hit") {
			t.Fatalf("categories after the config was emptied (%q): %q, want a cache hit", content, cacheStatus(r))
		}
		if r, err := track(ctx, env.Client, "6fx5VOjqYNBHcDf5GIF5g5", nil); err != nil || r.Status != 200 {
			t.Fatalf("iNeo after the config was emptied (%q): %v", content, err)
		}
	}

	// The writer finishes: the same config again is in force, nothing
	// restarted.
	env.WriteConfig(env.ConfigText())
	testenv.Eventually(t, 10*time.Second, "the rewritten config to be accepted", func() bool {
		st, err := env.Client.Status(ctx)
		return err == nil && st.Config.LastReloadOK
	})
	if r := hget(t, ctx, env, "categories", nil, nil); !strings.Contains(cacheStatus(r), "hit") {
		t.Fatalf("categories after the rewrite: %q, want a cache hit", cacheStatus(r))
	}
}

// TestCheckConfigRefusesEmptyFile: --check-config fails on a file that sets
// no keys, as start and reload do.
func TestCheckConfigRefusesEmptyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, content := range map[string]string{"empty.toml": "", "comments.toml": "# nothing here\n\n# [providers.ineo]\n"} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(filepath.Join(testenv.BinDir(t), "sluiced"), "--check-config", path).CombinedOutput()
		if err == nil {
			t.Fatalf("--check-config %s succeeded:\n%s", name, out)
		}
		if !strings.Contains(string(out), "sets no keys") {
			t.Errorf("--check-config %s: %s", name, out)
		}
	}
}

// TestVendorLimitRefusedUnlessAllowed: a limit that can let more than
// iNeo's documented 6 requests into 7 s is refused at --check-config, start
// and reload, naming the vendor's rule; allow_over_vendor_limit = true
// accepts it with a warning that status shows.
func TestVendorLimitRefusedUnlessAllowed(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, time.Minute)
	good := env.ConfigText()
	const real = "requests = 6\nwindow = \"7s\"\nallow_over_vendor_limit = false\n"
	if !strings.Contains(good, real) {
		t.Fatalf("the test config does not carry the real spotify.php limit:\n%s", good)
	}
	loose := strings.Replace(good, real, "requests = 3\nwindow = \"3s\"\n", 1)
	const vendorRule = "beyond 6 in 7s"

	// --check-config and start.
	path := filepath.Join(t.TempDir(), "loose.toml")
	if err := os.WriteFile(path, []byte(loose), 0o600); err != nil {
		t.Fatal(err)
	}
	sluiced := filepath.Join(testenv.BinDir(t), "sluiced")
	out, err := exec.Command(sluiced, "--check-config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "lets up to 9 requests") || !strings.Contains(string(out), vendorRule) {
		t.Fatalf("--check-config of 3 per 3s: %v\n%s", err, out)
	}
	// Bounded: a daemon that accepted the file would serve until killed.
	startCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(startCtx, sluiced, "--config", path, "--socket", filepath.Join(t.TempDir(), "s.sock"))
	cmd.Env = append(os.Environ(), "SLUICE_SOCKET=")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), vendorRule) {
		t.Fatalf("start with 3 per 3s: %v\n%s", err, out)
	}

	// Reload.
	env.WriteConfig(loose)
	testenv.Eventually(t, 10*time.Second, "status to show the refused limit", func() bool {
		st, err := env.Client.Status(ctx)
		return err == nil && !st.Config.LastReloadOK && strings.Contains(st.Config.LastError, vendorRule)
	})
	if b := bucketStatus(t, ctx, env, "ineo.spotify"); b.Requests != 6 || b.Window != "7s" {
		t.Fatalf("ineo.spotify %d per %s after a refused reload, want 6 per 7s", b.Requests, b.Window)
	}

	// Allowed: accepted, warned, shown.
	allowed := strings.Replace(loose, "requests = 3\nwindow = \"3s\"\n", "requests = 3\nwindow = \"3s\"\nallow_over_vendor_limit = true\n", 1)
	if err := os.WriteFile(path, []byte(allowed), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(sluiced, "--check-config", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "warning: providers.ineo.limits.spotify") {
		t.Fatalf("--check-config of an allowed 3 per 3s: %v\n%s", err, out)
	}
	env.WriteConfig(allowed)
	testenv.Eventually(t, 10*time.Second, "the allowed limit to apply", func() bool {
		b := bucketStatus(t, ctx, env, "ineo.spotify")
		return b.Requests == 3 && b.Window == "3s"
	})
	st, err := env.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Config.LastReloadOK || len(st.Config.Warnings) != 1 || !strings.Contains(st.Config.Warnings[0], vendorRule) {
		t.Fatalf("status config after the allowed reload: %+v", st.Config)
	}
	if text, code := ctl(t, env, "status"); code != 0 || !strings.Contains(text, "warning") || !strings.Contains(text, "allow_over_vendor_limit") {
		t.Fatalf("sluicectl status (exit %d) does not show the override:\n%s", code, text)
	}
	if !strings.Contains(env.Log(), "allow_over_vendor_limit") {
		t.Fatal("the daemon did not log the override")
	}

	// Back to the real figure: the warning goes.
	env.WriteConfig(good)
	testenv.Eventually(t, 10*time.Second, "the warning to clear", func() bool {
		st, err := env.Client.Status(ctx)
		return err == nil && st.Config.LastReloadOK && len(st.Config.Warnings) == 0
	})
}

// TestFleetChangeNeedsRestart: a reload cannot move a running daemon into
// (or out of) a fleet. A user who adds [fleet] and sees "reloaded" must be
// told it still runs alone — its hosts would otherwise each keep their own
// quota while the user believes they share one.
func TestFleetChangeNeedsRestart(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, time.Minute)
	// Never dialled: fleet settings apply at start only.
	env.WriteConfig(env.ConfigText() + "\n[fleet]\nredis_url = \"redis://127.0.0.1:1/0\"\nname = \"later\"\n")
	var st *api.Status
	testenv.Eventually(t, 10*time.Second, "status to warn that [fleet] needs a restart", func() bool {
		var err error
		st, err = env.Client.Status(ctx)
		return err == nil && st.Config.LastReloadOK && len(st.Config.Warnings) == 1 &&
			strings.Contains(st.Config.Warnings[0], "[fleet]") && strings.Contains(st.Config.Warnings[0], "a single host")
	})
	if st.Fleet != nil {
		t.Fatalf("status shows a fleet the daemon never joined: %+v", st.Fleet)
	}
	if text, code := ctl(t, env, "status"); code != 0 || !strings.Contains(text, "restart sluiced") {
		t.Fatalf("sluicectl status (exit %d) does not say a restart is needed:\n%s", code, text)
	}
	// Back to the file it started with: the warning goes.
	env.WriteConfig(env.ConfigText())
	testenv.Eventually(t, 10*time.Second, "the warning to clear", func() bool {
		st, err := env.Client.Status(ctx)
		return err == nil && st.Config.LastReloadOK && len(st.Config.Warnings) == 0
	})
}
