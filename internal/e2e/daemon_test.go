package e2e

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/hellorf/hellorfsim"
)

// TestSocketOwnership: the socket gets socket_mode, and a second daemon on
// the same socket refuses to start while the first is alive.
func TestSocketOwnership(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	fi, err := os.Stat(env.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v, want 0660 socket", fi.Mode())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Its own state dir: the state dir's lock would refuse it first
	// (TestSecondDaemonOnOneStateDirRefused); this is about the socket.
	cmd := exec.CommandContext(ctx, filepath.Join(testenv.BinDir(t), "sluiced"), "--config", env.Config,
		"--state-dir", filepath.Join(t.TempDir(), "state"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err == nil || !strings.Contains(out.String(), "already serving") {
		t.Fatalf("second daemon: %v\n%s", err, out.String())
	}
	// The first one still serves.
	if _, err := env.Client.Health(ctx); err != nil {
		t.Fatal(err)
	}
	// A world-readable config with inline secrets is warned about.
	if strings.Contains(env.Log(), "world-readable") {
		t.Fatal("warned about a private config")
	}
	env.StopDaemon()
	if err := os.Chmod(env.Config, 0o644); err != nil {
		t.Fatal(err)
	}
	env.StartDaemon()
	if !strings.Contains(env.Log(), "world-readable") {
		t.Fatal("no warning for a world-readable config holding inline secrets")
	}
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("log_level = \"info\"\n\n[providers.ineo]\nlink_ttl = \"forever\"\n"), 0o600)
	out, err := exec.Command(filepath.Join(testenv.BinDir(t), "sluiced"), "--check-config", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bad.toml:4") || !strings.Contains(string(out), "providers.ineo.link_ttl") {
		t.Fatalf("--check-config of a bad file: %v\n%s", err, out)
	}
	root, _ := filepath.Abs("../..")
	out, err = exec.Command(filepath.Join(testenv.BinDir(t), "sluiced"), "--check-config", filepath.Join(root, "config.toml")).CombinedOutput()
	if err != nil {
		t.Fatalf("the example config.toml does not check: %v\n%s", err, out)
	}
}

// TestAPIErrorsAreProblems: routes answer JSON problems, browsers are
// refused.
func TestAPIErrorsAreProblems(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, 30*time.Second)
	cases := []struct {
		method, path string
		hdr          http.Header
		status       int
	}{
		{"GET", "/v2/status", nil, 404},
		{"GET", "/v1/", nil, 404},
		{"DELETE", "/v1/health", nil, 405},
		{"GET", "/v1/status", http.Header{"Origin": {"https://evil.example"}}, 403},
		{"GET", "/v1/ineo/spotify.php?trackId=6fx5VOjqYNBHcDf5GIF5g5", http.Header{"Referer": {"https://evil.example/"}}, 403},
		{"DELETE", "/v1/cache/nope", nil, 404},
	}
	for _, tc := range cases {
		resp, err := env.Client.Do(ctx, tc.method, tc.path, nil, nil, tc.hdr)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: %d %s, want %d problem", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.status)
		}
	}
	if n := env.Ineo.Requests("spotify"); n != 0 {
		t.Fatalf("refused requests reached upstream: %d", n)
	}
}

// TestSectionChangeRestartsOnlyThatPlugin: a changed provider section
// restarts that provider's plugin alone, calls made right after the reload
// wait for it instead of failing, and that provider's cached answers, stored
// under the old link_ttl, are dropped while the others' stay.
func TestSectionChangeRestartsOnlyThatPlugin(t *testing.T) {
	t.Parallel()
	hsim, hURL, err := hellorfsim.Start(hellorfsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer hsim.Close()
	env := testenv.Start(t, testenv.Options{Extra: testenv.HellorfSection(hURL, hellorfsim.DefaultClientID, hellorfsim.DefaultClientSecret)})
	ctx := testenv.Ctx(t, time.Minute)
	pids := func() map[string]int {
		st, err := env.Client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]int{}
		for _, p := range st.Providers {
			m[p.Name] = p.PID
		}
		return m
	}
	before := pids()
	const id = "6fx5VOjqYNBHcDf5GIF5g5"
	if _, err := track(ctx, env.Client, id, nil); err != nil {
		t.Fatal(err)
	}
	hget(t, ctx, env, "categories", nil, nil)
	env.WriteConfig(strings.Replace(env.ConfigText(), "[providers.ineo]\n", "[providers.ineo]\nlink_ttl = \"5m\"\n", 1))
	if _, err := env.Client.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := track(ctx, env.Client, id, nil)
	if err != nil || r.Status != 200 {
		t.Fatalf("call right after the reload: %v", err)
	}
	if cs := r.Header.Get("Cache-Status"); strings.Contains(cs, "; hit") {
		t.Errorf("an answer cached under the old link_ttl was served: %s", cs)
	}
	if cs := hget(t, ctx, env, "categories", nil, nil).Header.Get("Cache-Status"); !strings.Contains(cs, "; hit") {
		t.Errorf("hellorf's cached answer was dropped by an iNeo change: %s", cs)
	}
	after := pids()
	if after["ineo"] == before["ineo"] || after["ineo"] == 0 {
		t.Errorf("ineo plugin not restarted: %d → %d", before["ineo"], after["ineo"])
	}
	if after["hellorf"] != before["hellorf"] {
		t.Errorf("hellorf plugin restarted by an ineo change: %d → %d", before["hellorf"], after["hellorf"])
	}

	// A longer expiry_margin bounds every answer more tightly: all cached
	// answers go, hellorf's included.
	env.WriteConfig(strings.Replace(env.ConfigText(), "[providers.ineo]\n", "[providers.ineo]\nlink_ttl = \"5m\"\n", 1) +
		"\n[cache]\nexpiry_margin = \"1m\"\n")
	if _, err := env.Client.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if cs := hget(t, ctx, env, "categories", nil, nil).Header.Get("Cache-Status"); strings.Contains(cs, "; hit") {
		t.Errorf("an answer cached under a shorter expiry_margin was served: %s", cs)
	}
}
