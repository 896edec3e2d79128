package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
