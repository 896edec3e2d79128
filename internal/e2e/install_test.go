package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func makeIn(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("make", append([]string{"-s", "-C", repoRoot(t)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestInstallIntoDestdir: make install honours DESTDIR and PREFIX, never
// overwrites an existing config, and uninstall removes what it put in place.
func TestInstallIntoDestdir(t *testing.T) {
	t.Parallel()
	dest := t.TempDir()
	bin := "BIN=" + testenv.BinDir(t)
	makeIn(t, "install-files", bin, "DESTDIR="+dest, "PREFIX=/usr")
	for _, f := range []string{"usr/bin/sluiced", "usr/bin/sluicectl", "usr/lib/sluice/plugins/sluice-ineo",
		"usr/lib/sluice/plugins/sluice-hellorf", "usr/lib/sluice/plugins/sluice-spotify",
		"usr/lib/systemd/system/sluice.service", "usr/lib/systemd/system/sluice.socket",
		"usr/lib/systemd/system/sluice-http.socket",
		"usr/share/systemd/user/sluice.service", "usr/share/systemd/user/sluice.socket",
		"usr/lib/sysusers.d/sluice.conf", "usr/lib/tmpfiles.d/sluice.conf", "etc/sluice/config.toml",
		"usr/share/man/man1/sluicectl.1", "usr/share/man/man8/sluiced.8", "usr/share/man/man5/sluice.toml.5"} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("not installed: %s", f)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/sluice.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/sluiced") {
		t.Errorf("unit does not point at the installed binary:\n%s", unit)
	}
	cfg := filepath.Join(dest, "etc/sluice/config.toml")
	os.WriteFile(cfg, []byte("# mine\n"), 0o640)
	makeIn(t, "install-files", bin, "DESTDIR="+dest, "PREFIX=/usr")
	if b, _ := os.ReadFile(cfg); string(b) != "# mine\n" {
		t.Fatal("a second install overwrote the existing config")
	}
	makeIn(t, "uninstall", "DESTDIR="+dest, "PREFIX=/usr")
	for _, f := range []string{"usr/bin/sluiced", "usr/lib/sluice/plugins/sluice-ineo", "usr/lib/systemd/system/sluice.service",
		"usr/lib/systemd/system/sluice-http.socket", "usr/lib/tmpfiles.d/sluice.conf", "usr/share/man/man8/sluiced.8", "usr/share/man/man5/sluice.toml.5"} {
		if _, err := os.Stat(filepath.Join(dest, f)); err == nil {
			t.Errorf("uninstall left %s", f)
		}
	}
	if _, err := os.Stat(cfg); err != nil {
		t.Error("uninstall removed the config")
	}
}

// TestInstalledDaemonRunsAndUnitsVerify installs under a PREFIX, runs the
// installed sluiced (which must find its plugins in PREFIX/lib/sluice/plugins
// by itself) and verifies every unit with systemd-analyze.
func TestInstalledDaemonRunsAndUnitsVerify(t *testing.T) {
	t.Parallel()
	prefix, err := os.MkdirTemp("", "si-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(prefix)
	makeIn(t, "install-files", "BIN="+testenv.BinDir(t), "PREFIX="+prefix, "SYSCONFDIR="+filepath.Join(prefix, "etc"))

	sim, url, err := ineosim.Start(ineosim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	sock := filepath.Join(prefix, "s.sock")
	cfg := filepath.Join(prefix, "etc/sluice/test.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("socket = %q\nstate_dir = %q\n[providers.ineo]\nbase_url = %q\naccess_key = %q\ntmanage_auth = %q\n",
		sock, filepath.Join(prefix, "state"), url, ineosim.DefaultAccessKey, ineosim.DefaultTmanageAuth)), 0o600)
	cmd := exec.Command(filepath.Join(prefix, "bin/sluiced"), "--config", cfg)
	logf, _ := os.Create(filepath.Join(prefix, "log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := client.New(sock)
	if err := c.WaitHealthy(ctx); err != nil {
		b, _ := os.ReadFile(filepath.Join(prefix, "log"))
		t.Fatalf("installed daemon: %v\n%s", err, b)
	}
	if _, err := c.Provider(ctx, "ineo", "spotify.php", map[string][]string{"trackId": {"6fx5VOjqYNBHcDf5GIF5g5"}}); err != nil {
		t.Fatal(err)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd; .ci/run installs it)")
	}
	sys := filepath.Join(prefix, "lib/systemd/system")
	// sluice-http.socket (the optional TCP listener) names sluice.service
	// as its Service=: verified beside it.
	if out, err := exec.Command(analyze, "verify", filepath.Join(sys, "sluice.service"), filepath.Join(sys, "sluice.socket"),
		filepath.Join(sys, "sluice-http.socket")).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify (system units): %v\n%s", err, out)
	}
	// User units are looked up in the user's search path.
	home := filepath.Join(prefix, "home")
	userDir := filepath.Join(home, ".config/systemd/user")
	rt := filepath.Join(prefix, "run")
	os.MkdirAll(userDir, 0o755)
	os.MkdirAll(rt, 0o700)
	for _, u := range []string{"sluice.service", "sluice.socket"} {
		b, _ := os.ReadFile(filepath.Join(prefix, "share/systemd/user", u))
		os.WriteFile(filepath.Join(userDir, u), b, 0o644)
	}
	uv := exec.Command(analyze, "--user", "verify", filepath.Join(userDir, "sluice.service"), filepath.Join(userDir, "sluice.socket"))
	uv.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_RUNTIME_DIR="+rt)
	if out, err := uv.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze --user verify: %v\n%s", err, out)
	}
}
