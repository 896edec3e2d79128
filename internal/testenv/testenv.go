// Package testenv is the one shared helper of sluice's end-to-end tests: it
// builds the real binaries (race-enabled), starts the upstream simulators on
// loopback, writes a config, runs a real sluiced with real plugin
// subprocesses, and hands the test a client. Nothing of the core is mocked.
package testenv

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// Main builds the binaries once for a test package, runs its tests and
// removes them. Use it from TestMain: os.Exit(testenv.Main(m)).
func Main(m *testing.M) int {
	dir := os.Getenv("SLUICE_TEST_BINDIR")
	if dir == "" {
		tmp, err := os.MkdirTemp("", "sluice-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "testenv:", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		if err := Build(tmp); err != nil {
			fmt.Fprintln(os.Stderr, "testenv: build:", err)
			return 1
		}
		os.Setenv("SLUICE_TEST_BINDIR", tmp)
	}
	return m.Run()
}

// Build compiles sluiced, sluicectl and every plugin into dir with the race
// detector, so the daemon's own races fail tests too.
func Build(dir string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	targets := map[string]string{
		"sluiced":        "./cmd/daemon",
		"sluicectl":      "./cmd/ctl",
		"sluice-ineo":    "./plugins/ineo",
		"sluice-hellorf": "./plugins/hellorf",
		"sluice-spotify": "./plugins/spotify",
	}
	for name, pkg := range targets {
		cmd := exec.Command("go", "build", "-race", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	}
	// Access tests run the binaries as other users.
	return os.Chmod(dir, 0o755)
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// BinDir is where the test binaries are.
func BinDir(t testing.TB) string {
	d := os.Getenv("SLUICE_TEST_BINDIR")
	if d == "" {
		t.Fatal("testenv: binaries not built; call testenv.Main from TestMain")
	}
	return d
}

// Options shape one environment.
type Options struct {
	// Limits of the iNeo services, applied to the simulator AND the daemon's
	// config alike (tests scale windows down; zero means the real figures).
	SpotifyLimit, TmanageLimit ineosim.Limit
	// Margin is the scheduler margin (default "100ms": enough for the
	// jitter of race-instrumented processes on a busy CI machine).
	Margin string
	// Extra is appended to the generated config.
	Extra string
	// IneoExtra is appended inside [providers.ineo].
	IneoExtra string
	// Prefix serves the iNeo simulator under a path prefix.
	Prefix string
	// AccessKey and TmanageAuth are the iNeo credentials (simulator and
	// config alike); default: the simulator's sample tokens.
	AccessKey, TmanageAuth string
	// Top is inserted among the top-level keys (e.g. socket_mode).
	Top string
	// Env is added to the daemon's environment.
	Env []string
	// PluginDir is the daemon's plugin_dir; default: the freshly built
	// binaries shared by every test (a test that changes a plugin binary
	// must copy it into a dir of its own).
	PluginDir string
	// Ineo and IneoURL, if set, are a simulator shared with other daemons
	// (fleet tests); Start then neither starts nor closes one.
	Ineo    *ineosim.Sim
	IneoURL string
	// Launcher is a command the daemon runs under, e.g.
	// {"systemd-socket-activate", "-l", SOCKET}; the word SOCKET is
	// replaced by the socket path.
	Launcher []string
}

// Env is one running simulator set plus daemon.
type Env struct {
	t       testing.TB
	opts    Options
	Dir     string
	Socket  string
	Config  string
	LogPath string
	Ineo    *ineosim.Sim
	IneoURL string
	Client  *client.Client
	cmd     *exec.Cmd
	exited  chan struct{}
}

// Start starts the simulators and a daemon and waits until it is healthy.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	if opts.SpotifyLimit.Requests == 0 {
		opts.SpotifyLimit = ineosim.Limit{Requests: 6, Window: 7 * time.Second}
	}
	if opts.TmanageLimit.Requests == 0 {
		opts.TmanageLimit = ineosim.Limit{Requests: 10, Window: 11 * time.Second}
	}
	if opts.AccessKey == "" {
		opts.AccessKey = ineosim.DefaultAccessKey
	}
	if opts.TmanageAuth == "" {
		opts.TmanageAuth = ineosim.DefaultTmanageAuth
	}
	if opts.Margin == "" {
		opts.Margin = "100ms"
	}
	// A short directory: the socket path must fit in sun_path.
	dir, err := os.MkdirTemp("", "sl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sim, url := opts.Ineo, opts.IneoURL
	if sim == nil {
		var err error
		sim, url, err = ineosim.Start(ineosim.Options{AccessKey: opts.AccessKey, TmanageAuth: opts.TmanageAuth, SpotifyLimit: opts.SpotifyLimit, TmanageLimit: opts.TmanageLimit, Prefix: opts.Prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sim.Close() })
	}
	e := &Env{t: t, opts: opts, Dir: dir, Socket: filepath.Join(dir, "s.sock"), Config: filepath.Join(dir, "config.toml"),
		LogPath: filepath.Join(dir, "daemon.log"), Ineo: sim, IneoURL: url}
	e.Client = client.New(e.Socket)
	e.WriteConfig(e.ConfigText())
	e.StartDaemon()
	t.Cleanup(func() {
		e.StopDaemon()
		if t.Failed() {
			if b, err := os.ReadFile(e.LogPath); err == nil {
				t.Logf("daemon log%s", logTail(string(b), 12))
			}
		}
	})
	return e
}

// ConfigText renders the environment's config.
func (e *Env) ConfigText() string {
	o := e.opts
	return fmt.Sprintf(`socket = %q
state_dir = %q
plugin_dir = %q
log_level = "debug"
%s

[scheduler]
margin = %q
max_wait = "3m"

[providers.ineo]
base_url = %q
access_key = %q
tmanage_auth = %q
%s

[providers.ineo.limits.spotify]
requests = %d
window = %q
allow_over_vendor_limit = %t

[providers.ineo.limits.tmanage]
requests = %d
window = %q
allow_over_vendor_limit = %t

%s
`, e.Socket, filepath.Join(e.Dir, "state"), cmp.Or(o.PluginDir, BinDir(e.t)), o.Top, o.Margin, e.IneoURL, o.AccessKey, o.TmanageAuth,
		o.IneoExtra, o.SpotifyLimit.Requests, o.SpotifyLimit.Window.String(), scaled(o.SpotifyLimit, 6, 7*time.Second),
		o.TmanageLimit.Requests, o.TmanageLimit.Window.String(), scaled(o.TmanageLimit, 10, 11*time.Second), o.Extra)
}

// scaled reports whether a test limit differs from iNeo's real figures: the
// simulator enforces the same scaled-down rule, so the daemon may go past
// the real vendor's (which config refuses unless allowed).
func scaled(l ineosim.Limit, requests int, window time.Duration) bool {
	return l.Requests != requests || l.Window != window
}

// WriteConfig atomically replaces the config file (as editors do).
func (e *Env) WriteConfig(text string) {
	e.t.Helper()
	tmp := e.Config + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.Config); err != nil {
		e.t.Fatal(err)
	}
}

// StartDaemon starts sluiced and waits for health ok.
func (e *Env) StartDaemon() {
	e.t.Helper()
	logf, err := os.OpenFile(e.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	args := []string{filepath.Join(BinDir(e.t), "sluiced"), "--config", e.Config}
	if len(e.opts.Launcher) > 0 {
		var pre []string
		for _, a := range e.opts.Launcher {
			pre = append(pre, strings.ReplaceAll(a, "SOCKET", e.Socket))
		}
		args = append(pre, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(append(os.Environ(), "SLUICE_SOCKET="), e.opts.Env...)
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	logf.Close()
	e.cmd, e.exited = cmd, make(chan struct{})
	go func(c *exec.Cmd, ch chan struct{}) { c.Wait(); close(ch) }(cmd, e.exited)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e.Client.WaitHealthy(ctx); err != nil {
		b, _ := os.ReadFile(e.LogPath)
		e.t.Fatalf("daemon did not become healthy: %v\n%s", err, b)
	}
}

// Log returns the daemon's log so far (plugins' records included).
func (e *Env) Log() string {
	b, _ := os.ReadFile(e.LogPath)
	return string(b)
}

// DaemonPID is the running daemon's pid.
func (e *Env) DaemonPID() int { return e.cmd.Process.Pid }

// KillDaemon SIGKILLs the daemon and waits for it to be gone.
func (e *Env) KillDaemon() {
	if e.cmd == nil {
		return
	}
	e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.exited
	e.cmd = nil
}

// StopDaemon stops the daemon gracefully (SIGTERM), SIGKILL after 15 s.
func (e *Env) StopDaemon() {
	if e.cmd == nil {
		return
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(15 * time.Second):
		e.cmd.Process.Kill()
		<-e.exited
	}
	e.cmd = nil
}

// ChildPluginPIDs lists the live plugin processes whose parent is pid.
func ChildPluginPIDs(parent int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || !strings.HasPrefix(filepath.Base(exe), "sluice-") || !Alive(pid) {
			continue
		}
		if f, err := procStat(pid); err == nil && len(f) > 1 && f[1] == strconv.Itoa(parent) {
			out = append(out, pid)
		}
	}
	return out
}

// Alive reports whether pid is a live, non-zombie process.
func Alive(pid int) bool {
	state, err := procState(pid)
	return err == nil && state != "Z" && state != "X"
}

func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// The command name is in parentheses and may contain spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("bad stat")
	}
	return strings.Fields(s[i+1:]), nil
}

func procState(pid int) (string, error) {
	f, err := procStat(pid)
	if err != nil || len(f) < 1 {
		return "", err
	}
	return f[0], nil
}

// Eventually polls cond until it holds or the deadline passes.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Ctx is a context bounded for one test step.
func Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// HellorfSection is the config that enables hellorf against a simulator;
// more lines go inside the section.
func HellorfSection(baseURL, clientID, clientSecret string, more ...string) string {
	return section("hellorf", []string{"base_url", baseURL, "client_id", clientID, "client_secret", clientSecret}, more)
}

// SpotifySection is the config that enables Spotify against a simulator;
// more lines go inside the section.
func SpotifySection(apiURL, accountsURL, clientID, clientSecret string, more ...string) string {
	return section("spotify", []string{"api_url", apiURL, "accounts_url", accountsURL, "client_id", clientID, "client_secret", clientSecret}, more)
}

func section(name string, kv, more []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[providers.%s]\nenabled = true\n", name)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, "%s = %q\n", kv[i], kv[i+1])
	}
	for _, m := range more {
		b.WriteString(m + "\n")
	}
	return b.String() + "\n"
}

// logTail keeps the last n lines of a failed test's daemon log: CI shows
// only the end of the output, and a full log dumped after the test's own
// error lines would push those out of sight.
func logTail(log string, n int) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	if len(lines) <= n {
		return ":\n" + strings.Join(lines, "\n")
	}
	return fmt.Sprintf(" (last %d of %d lines):\n%s", n, len(lines), strings.Join(lines[len(lines)-n:], "\n"))
}
