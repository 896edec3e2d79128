package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sluice-dev/sluice/internal/testenv"
)

// ctlAs runs sluicectl as another user.
func ctlAs(t *testing.T, env *testenv.Env, uid uint32, args ...string) (string, int) {
	t.Helper()
	return runCtl(t, env.Socket, &syscall.Credential{Uid: uid, Gid: uid, NoSetGroups: true}, args...)
}

// TestAccessTiers uses two real uids: one granted read, one granted
// nothing; root (the test) is admin.
func TestAccessTiers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run clients as other uids (CI runs as root)")
	}
	t.Parallel()
	const reader, stranger = 65534, 65533
	env := testenv.Start(t, testenv.Options{Top: `socket_mode = "0666"`,
		Extra: "[access]\nread_uids = [65534]\n", IneoExtra: "allow_delete_account = true"})
	if err := os.Chmod(env.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		uid  uint32
		args []string
		code int
		want string
	}{
		{reader, []string{"status"}, 0, "ineo"},
		{reader, []string{"ineo", "track", "6fx5VOjqYNBHcDf5GIF5g5"}, 0, "dl/"},
		{reader, []string{"reload"}, 2, "admin"},
		{reader, []string{"cache", "purge"}, 2, "admin"},
		{reader, []string{"ineo", "tg", "delete", "989012345678", "--confirm", "989012345678"}, 2, "admin"},
		{stranger, []string{"status"}, 2, "read"},
		{stranger, []string{"ineo", "track", "6fx5VOjqYNBHcDf5GIF5g5"}, 2, "read"},
	}
	for _, tc := range cases {
		out, code := ctlAs(t, env, tc.uid, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("uid %d %v: exit %d, want %d with %q\n%s", tc.uid, tc.args, code, tc.code, tc.want, out)
		}
	}
	if n := env.Ineo.Requests("tmanage"); n != 0 {
		t.Fatalf("a refused deletion reached the upstream (%d requests)", n)
	}
	// Root is admin.
	if out, code := ctl(t, env, "reload"); code != 0 {
		t.Fatalf("root reload: exit %d\n%s", code, out)
	}
	testenv.Eventually(t, 5*time.Second, "the denial in the log with the peer's uid", func() bool {
		log := env.Log()
		return strings.Contains(log, `"peer_uid":65533`) && strings.Contains(log, "permission denied")
	})
}

// TestMetricsScrape parses /metrics with the Prometheus text parser.
func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, 30*time.Second)
	for range 2 {
		if _, err := track(ctx, env.Client, "6fx5VOjqYNBHcDf5GIF5g5", nil); err != nil {
			t.Fatal(err)
		}
		env.Client.Call(ctx, "GET", "/v1/ineo/spotify.php", url.Values{"trackId": {"bad"}}, nil, nil)
	}
	resp, err := env.Client.Do(ctx, "GET", "/metrics", nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels map[string]string) float64 {
		f, ok := fams[name]
		if !ok {
			t.Fatalf("metric %s missing", name)
		}
	next:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
		t.Fatalf("metric %s%v missing", name, labels)
		return 0
	}
	op := map[string]string{"provider": "ineo", "operation": "spotify.track"}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"sluice_requests_total", map[string]string{"provider": "ineo", "operation": "spotify.track", "outcome": "miss"}, 1},
		{"sluice_requests_total", map[string]string{"provider": "ineo", "operation": "spotify.track", "outcome": "rejected"}, 2},
		{"sluice_upstream_duration_seconds", op, 1},
		{"sluice_scheduler_grants_total", map[string]string{"bucket": "ineo.spotify"}, 1},
		{"sluice_scheduler_wait_seconds", map[string]string{"bucket": "ineo.spotify"}, 1},
		{"sluice_scheduler_limit_requests", map[string]string{"bucket": "ineo.spotify"}, 6},
		{"sluice_plugin_ready", map[string]string{"provider": "ineo"}, 1},
		{"sluice_config_last_reload_successful", nil, 1},
	}
	for _, c := range checks {
		if got := value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The second identical request was a hit, or coalesced if the first
	// was still being stored.
	if hits := value("sluice_cache_hits_total", nil); hits < 1 && value("sluice_cache_coalesced_total", nil) < 1 {
		t.Errorf("no hit recorded")
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "sluice_cache_bytes", "sluice_scheduler_queue_depth"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}
}

// TestSystemdNotifyAndPluginEnv reads the daemon's sd_notify messages from a
// fake NOTIFY_SOCKET and checks that nothing of the daemon's environment
// reaches a plugin.
func TestSystemdNotifyAndPluginEnv(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "sn-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sockPath, await, _ := notifySocket(t, dir)
	env := testenv.Start(t, testenv.Options{Env: []string{"NOTIFY_SOCKET=" + sockPath, "SLUICE_TEST_SECRET=hunter2",
		"WATCHDOG_USEC=600000"}})
	await("READY=1")
	// Watchdog pings come from a real health check over the socket.
	await("WATCHDOG=1")
	ctx := testenv.Ctx(t, 30*time.Second)
	if _, err := env.Client.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	m := await("RELOADING=1")
	if !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Fatalf("RELOADING without MONOTONIC_USEC: %q", m)
	}
	await("READY=1")

	st, err := env.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	environ, err := os.ReadFile("/proc/" + strconv.Itoa(st.Providers[0].PID) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "SLUICE_TEST_SECRET", "hunter2", "LISTEN_FDS", "HOME="} {
		if bytes.Contains(environ, []byte(bad)) {
			t.Errorf("plugin environment contains %q", bad)
		}
	}
	env.StopDaemon()
	await("STOPPING=1")
}

// notifySocket listens on a fake NOTIFY_SOCKET in dir and returns its path,
// a function that waits for the next message containing what, and one that
// drops the messages received so far.
func notifySocket(t *testing.T, dir string) (string, func(what string) string, func()) {
	t.Helper()
	sockPath := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	msgs := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			select {
			case msgs <- string(buf[:n]):
			default: // nobody is waiting for watchdog pings this old
			}
		}
	}()
	drain := func() {
		for {
			select {
			case <-msgs:
			default:
				return
			}
		}
	}
	return sockPath, func(what string) string {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed waiting for %s", what)
				}
				if strings.Contains(m, what) {
					return m
				}
			case <-deadline:
				t.Fatalf("no %s from the daemon", what)
			}
		}
	}, drain
}

// TestFailedPluginKeepsDaemonAliveAndForcedReloadRevivesIt: a plugin
// that can no longer start (its binary no longer matches plugin_sha256)
// must not stop the daemon's watchdog pings, or systemd would restart the
// whole daemon and every working provider with it; once the binary is
// fixed, a forced reload (sluicectl reload, SIGHUP) starts it again
// without a config change.
func TestFailedPluginKeepsDaemonAliveAndForcedReloadRevivesIt(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "fp-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	plugin := filepath.Join(dir, "sluice-ineo")
	good, err := os.ReadFile(filepath.Join(testenv.BinDir(t), "sluice-ineo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(plugin, good, 0o755); err != nil {
		t.Fatal(err)
	}
	sockPath, await, drain := notifySocket(t, dir)
	env := testenv.Start(t, testenv.Options{PluginDir: dir, IneoExtra: `plugin_sha256 = "` + sha256File(t, plugin) + `"`,
		Env: []string{"NOTIFY_SOCKET=" + sockPath, "WATCHDOG_USEC=600000"}})
	ctx := testenv.Ctx(t, time.Minute)
	await("READY=1")

	// A changed binary, found when the plugin next starts.
	if err := os.WriteFile(plugin+".new", []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(plugin+".new", plugin); err != nil {
		t.Fatal(err)
	}
	st, err := env.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(st.Providers[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the provider to fail on the checksum", func() bool {
		st, err := env.Client.Status(ctx)
		return err == nil && st.Providers[0].State == "failed"
	})
	// Pings go on while the provider is down.
	drain()
	await("WATCHDOG=1")
	await("WATCHDOG=1")

	if err := os.WriteFile(plugin+".new", good, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(plugin+".new", plugin); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.WaitHealthy(ctx); err != nil {
		t.Fatalf("the provider did not come back after a forced reload: %v", err)
	}
}

// TestSocketActivation runs sluiced under systemd-socket-activate and calls
// it through the passed socket.
func TestSocketActivation(t *testing.T) {
	bin, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd; .ci/run installs it)")
	}
	t.Parallel()
	env := testenv.Start(t, testenv.Options{Launcher: []string{bin, "-l", "SOCKET"}})
	ctx := testenv.Ctx(t, 30*time.Second)
	st, err := env.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Socket != env.Socket {
		t.Fatalf("status socket %q, want %q", st.Socket, env.Socket)
	}
	if !strings.Contains(env.Log(), `"activated":true`) {
		t.Fatalf("daemon did not use the passed socket:\n%s", env.Log())
	}
	if r, err := track(ctx, env.Client, "6fx5VOjqYNBHcDf5GIF5g5", nil); err != nil || r.Status != http.StatusOK {
		t.Fatalf("call through the activated socket: %v", err)
	}
}

// TestPluginChecksumPin: a reload whose plugin_sha256 does not match the
// binary is refused before anything is swapped, saying both digests: the
// plugin in force keeps serving. (A binary that changes on disk under a
// running pin: TestFailedPluginKeepsDaemonAliveAndForcedReloadRevivesIt.)
func TestPluginChecksumPin(t *testing.T) {
	t.Parallel()
	good := sha256File(t, filepath.Join(testenv.BinDir(t), "sluice-ineo"))
	env := testenv.Start(t, testenv.Options{IneoExtra: `plugin_sha256 = "` + good + `"`})
	ctx := testenv.Ctx(t, 60*time.Second)
	bad := strings.Repeat("ab", 32)
	env.WriteConfig(strings.Replace(env.ConfigText(), good, bad, 1))
	testenv.Eventually(t, 20*time.Second, "the reload to be refused on the checksum", func() bool {
		st, err := env.Client.Status(ctx)
		return err == nil && !st.Config.LastReloadOK && strings.Contains(st.Config.LastError, "plugin_sha256") &&
			strings.Contains(st.Config.LastError, good) && strings.Contains(st.Config.LastError, bad)
	})
	st, err := env.Client.Status(ctx)
	if err != nil || st.Providers[0].State != "ready" {
		t.Fatalf("provider after a refused reload: %+v %v", st.Providers, err)
	}
	if _, err := track(ctx, env.Client, "6fx5VOjqYNBHcDf5GIF5g5", nil); err != nil {
		t.Fatalf("call after a refused reload: %v", err)
	}
	env.WriteConfig(env.ConfigText())
	testenv.Eventually(t, 20*time.Second, "the good config to reload", func() bool {
		st, err := env.Client.Status(ctx)
		return err == nil && st.Config.LastReloadOK
	})
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
