package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/bench/loadgen"
	"github.com/sluice-dev/sluice/plugins/hellorf/hellorfsim"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// env owns everything the bench starts: the temp directory, the binaries,
// and a stack of cleanups that stop every process in reverse start order,
// on success, on error and on Ctrl-C alike.
type env struct {
	root     string // module root
	tmp      string // everything the bench writes, removed at the end
	bin      string // built binaries
	progress io.Writer
	cleanups []func()
	// The hellorf and Spotify simulators every bench daemon points at, so
	// all three plugins run (footprint and start-up include them).
	hellorfURL, spotifyAPI, spotifyAccounts string
	// scripts names core/fleet's Lua scripts by SHA1 (row 7), read from
	// the sources when the binaries were built from them.
	scripts map[string]string
}

func newEnv(progress io.Writer) (*env, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return nil, errors.New("run the bench from inside the sluice module (make bench)")
	}
	// A short path: Unix socket paths must fit in sun_path (108 bytes).
	tmp, err := os.MkdirTemp("", "slb-")
	if err != nil {
		return nil, err
	}
	e := &env{root: filepath.Dir(gomod), tmp: tmp, bin: filepath.Join(tmp, "bin"), progress: progress}
	e.onClose(func() { os.RemoveAll(tmp) })
	hs, hURL, err := hellorfsim.Start(hellorfsim.Options{})
	if err != nil {
		e.close()
		return nil, err
	}
	e.onClose(func() { hs.Close() })
	ss, api, acct, err := spotifysim.Start(spotifysim.Options{})
	if err != nil {
		e.close()
		return nil, err
	}
	e.onClose(func() { ss.Close() })
	e.hellorfURL, e.spotifyAPI, e.spotifyAccounts = hURL, api, acct
	return e, nil
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.progress, "bench: "+format+"\n", args...)
}

// onClose registers f to run at close, before everything registered earlier.
func (e *env) onClose(f func()) { e.cleanups = append(e.cleanups, f) }

func (e *env) close() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	e.cleanups = nil
}

// build compiles the daemon, the plugins and the bare reference server
// without the race detector (the tests use -race; a benchmark must not).
func (e *env) build(ctx context.Context) error {
	targets := []struct {
		name, pkg string
		required  bool
	}{
		{"sluiced", "./cmd/daemon", true},
		{"sluice-ineo", "./plugins/ineo", true},
		{"sluice-hellorf", "./plugins/hellorf", true},
		{"sluice-spotify", "./plugins/spotify", true},
		{"bareserver", "./bench/bareserver", true},
		{"relay", "./bench/relay", true},
	}
	e.scripts = fleetScripts(filepath.Join(e.root, "core", "fleet"))
	for _, t := range targets {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(e.bin, t.name), t.pkg)
		cmd.Dir = e.root
		out, err := cmd.CombinedOutput()
		switch {
		case err == nil:
		case t.required:
			return fmt.Errorf("go build %s: %w\n%s", t.pkg, err, out)
		default:
			e.logf("warning: go build %s failed (continuing): %v", t.pkg, err)
		}
	}
	return nil
}

// daemonSpec is one sluiced configuration.
type daemonSpec struct {
	name   string // subdirectory of the temp dir; keep it short (socket path)
	simURL string
	// limit for ineo.spotify; zero keeps the built-in 6 per 7 s.
	limit     ineosim.Limit
	margin    string
	stateDir  string // "" means <dir>/state, on the temp dir's file system
	cacheSize string
	logLevel  string // "" means info, what a user runs
	accessLog string // "" means the default, misses
	// httpListen, when set, is the loopback TCP listener (http_listen),
	// for row 1's TCP variant.
	httpListen string
	// fleetURL, when set, puts the daemon in fleet mode ([fleet]
	// redis_url, name fleetName) for row 7.
	fleetURL, fleetName string
}

// daemon is one running sluiced.
type daemon struct {
	spec    daemonSpec
	dir     string
	socket  string
	config  string
	logPath string
	client  *http.Client
	cmd     *exec.Cmd
	exited  chan struct{}
	// startup is the time from starting the process to the first
	// /v1/health answering 200 (every enabled plugin ready).
	startup time.Duration
	// plugins seen in /v1/status, so they can be reaped if the daemon dies
	// without stopping them.
	pluginPIDs []int
}

func (e *env) configText(s daemonSpec, dir string) string {
	stateDir := s.stateDir
	if stateDir == "" {
		stateDir = filepath.Join(dir, "state")
	}
	level := s.logLevel
	if level == "" {
		level = "info"
	}
	limits := ""
	if s.limit.Requests > 0 {
		// Scaled limits, which the bench's simulator enforces alike: past
		// the real iNeo's threshold, so they must be allowed explicitly.
		limits = fmt.Sprintf("\n[providers.ineo.limits.spotify]\nrequests = %d\nwindow = %q\nallow_over_vendor_limit = true\n", s.limit.Requests, s.limit.Window.String())
	}
	top := ""
	if s.accessLog != "" {
		top = fmt.Sprintf("access_log = %q\n", s.accessLog)
	}
	if s.httpListen != "" {
		top += fmt.Sprintf("http_listen = %q\n", s.httpListen)
	}
	fleet := ""
	if s.fleetURL != "" {
		fleet = fmt.Sprintf("\n[fleet]\nredis_url = %q\nname = %q\n", s.fleetURL, s.fleetName)
	}
	// hellorf and Spotify run against their simulators so the footprint and
	// start-up figures include all three plugins; the load is iNeo's.
	return fmt.Sprintf(`socket = %q
state_dir = %q
plugin_dir = %q
log_level = %q
%s
[scheduler]
margin = %q
max_wait = "2m"

[cache]
max_size = %q

[providers.ineo]
enabled = true
base_url = %q
access_key = %q
tmanage_auth = %q
%s
[providers.hellorf]
enabled = true
base_url = %q
client_id = %q
client_secret = %q

[providers.spotify]
enabled = true
api_url = %q
accounts_url = %q
client_id = %q
client_secret = %q
%s`, filepath.Join(dir, "s.sock"), stateDir, e.bin, level, top, s.margin, s.cacheSize, s.simURL,
		ineosim.DefaultAccessKey, ineosim.DefaultTmanageAuth, limits,
		e.hellorfURL, hellorfsim.DefaultClientID, hellorfsim.DefaultClientSecret,
		e.spotifyAPI, e.spotifyAccounts, spotifysim.DefaultClientID, spotifysim.DefaultClientSecret, fleet)
}

// startDaemon writes the spec's config (once per name; a restart reuses it
// and its state directory) and starts sluiced, returning once /v1/health is
// ok. The daemon is stopped at close unless stopped earlier.
func (e *env) startDaemon(ctx context.Context, s daemonSpec) (*daemon, error) {
	dir := filepath.Join(e.tmp, s.name)
	d := &daemon{spec: s, dir: dir, socket: filepath.Join(dir, "s.sock"),
		config: filepath.Join(dir, "config.toml"), logPath: filepath.Join(dir, "daemon.log")}
	if _, err := os.Stat(d.config); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		// 0600: the config holds inline secrets, and sluiced warns
		// about a world-readable one.
		if err := os.WriteFile(d.config, []byte(e.configText(s, dir)), 0o600); err != nil {
			return nil, err
		}
	}
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d.client = loadgen.UnixClient(d.socket, 64)
	cmd := exec.Command(filepath.Join(e.bin, "sluiced"), "--config", d.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The environment must not point sluiced at another socket or config.
	cmd.Env = append(os.Environ(), "SLUICE_SOCKET=", "SLUICE_CONFIG=")
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d.cmd, d.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(d.exited) }()
	e.onClose(func() { d.stop() })

	if err := d.waitHealthy(ctx, 60*time.Second); err != nil {
		d.stop()
		return nil, fmt.Errorf("sluiced (%s) did not become healthy: %w\n%s", s.name, err, tail(d.logPath, 2000))
	}
	d.startup = time.Since(start)
	if st, err := d.status(ctx); err == nil {
		for _, p := range st.Providers {
			if p.PID > 0 {
				d.pluginPIDs = append(d.pluginPIDs, p.PID)
			}
		}
	}
	return d, nil
}

// reconfigure rewrites the daemon's config for spec (atomically, as an
// editor would) and reloads it with POST /v1/reload.
func (e *env) reconfigure(ctx context.Context, d *daemon, s daemonSpec) error {
	tmp := d.config + ".tmp"
	if err := os.WriteFile(tmp, []byte(e.configText(s, d.dir)), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, d.config); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://sluice/v1/reload", nil)
	if err != nil {
		return err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reload: HTTP %d: %s", resp.StatusCode, body)
	}
	return nil
}

// waitHealthy polls /v1/health every 0.5 ms, so the measured start-up time
// is accurate to about that.
func (d *daemon) waitHealthy(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last error
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("sluiced exited: %v", d.cmd.ProcessState)
		default:
		}
		_, resp, _, err := loadgen.Once(ctx, d.client, "http://sluice/v1/health", nil, nil)
		if err == nil {
			return nil
		}
		if resp != nil {
			last = fmt.Errorf("health: HTTP %d", resp.StatusCode)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(500 * time.Microsecond):
		}
	}
}

// stop stops the daemon with SIGTERM (it stops its plugins itself), SIGKILL
// after 15 s; plugins still alive after that are killed too, so nothing
// outlives the bench. It is idempotent.
func (d *daemon) stop() {
	if d.cmd == nil {
		return
	}
	terminate(d.cmd.Process, d.exited, syscall.SIGTERM, 15*time.Second)
	d.cmd = nil
	if tr, ok := d.client.Transport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range d.pluginPIDs {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// statusDoc is the part of GET /v1/status the bench reads.
type statusDoc struct {
	Providers []struct {
		Name  string `json:"name"`
		State string `json:"state"`
		PID   int    `json:"pid"`
	} `json:"providers"`
}

func (d *daemon) status(ctx context.Context) (statusDoc, error) {
	var st statusDoc
	err := d.getJSON(ctx, "/v1/status", &st)
	return st, err
}

// cacheDoc is GET /v1/cache.
type cacheDoc struct {
	Entries   int   `json:"entries"`
	Bytes     int64 `json:"bytes"`
	Hits      int64 `json:"hits"`
	Misses    int64 `json:"misses"`
	Coalesced int64 `json:"coalesced"`
	Evictions int64 `json:"evictions"`
}

func (d *daemon) cacheStats(ctx context.Context) (cacheDoc, error) {
	var c cacheDoc
	err := d.getJSON(ctx, "/v1/cache", &c)
	return c, err
}

func (d *daemon) getJSON(ctx context.Context, path string, out any) error {
	_, _, body, err := loadgen.Once(ctx, d.client, "http://sluice"+path, nil, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return json.Unmarshal(body, out)
}

func (d *daemon) purgeCache(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "http://sluice/v1/cache", nil)
	if err != nil {
		return err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("DELETE /v1/cache: HTTP %d", resp.StatusCode)
	}
	return nil
}

// proc is a plain subprocess (bare server, nginx) stopped at close.
type proc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	// stopSig is the graceful stop signal (nginx: SIGQUIT finishes
	// in-flight requests; SIGTERM is fine for the Go server).
	stopSig syscall.Signal
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (e *env) startProc(name string, stopSig syscall.Signal, logPath string, args ...string) (*proc, error) {
	return e.startProcEnv(name, stopSig, logPath, nil, args...)
}

// startProcEnv is startProc with variables added to the bench's environment.
func (e *env) startProcEnv(name string, stopSig syscall.Signal, logPath string, extraEnv []string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if extraEnv != nil {
		cmd.Env = append(os.Environ(), extraEnv...)
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{}), stopSig: stopSig}
	go func() { cmd.Wait(); close(p.exited) }()
	e.onClose(p.stop)
	return p, nil
}

func (p *proc) stop() {
	if p.cmd == nil {
		return
	}
	terminate(p.cmd.Process, p.exited, p.stopSig, 10*time.Second)
	p.cmd = nil
}

// terminate signals a process and kills it if it has not exited (exited
// closed) within grace.
func terminate(proc *os.Process, exited <-chan struct{}, sig os.Signal, grace time.Duration) {
	proc.Signal(sig)
	select {
	case <-exited:
	case <-time.After(grace):
		proc.Kill()
		<-exited
	}
}

// waitAnswer polls url until it answers per check, the process exits, or
// within passes.
func waitAnswer(ctx context.Context, c *http.Client, url string, p *proc, within time.Duration, check loadgen.Check) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited: %v", p.name, p.cmd.ProcessState)
		default:
		}
		_, _, _, err := loadgen.Once(ctx, c, url, nil, check)
		if err == nil {
			return nil
		}
		last = err
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("%s not answering after %s: %v", p.name, within, last)
}

// rssKB is VmRSS from /proc/<pid>/status, in KiB (the kernel's "kB").
func rssKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// tail returns up to the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// trackID makes a distinct, valid-looking Spotify track id (22 base62
// characters) per tag and number, so each measurement uses its own ids and
// never touches another's cache entries. The "Bn" prefix keeps clear of
// the simulator's reserved all-digit id that answers 602.
func trackID(tag byte, n int) string {
	return fmt.Sprintf("Bn%c%019d", tag, n)
}
