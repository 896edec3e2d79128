// Package daemon wires sluiced together: config, scheduler, cache, plugin
// host, gateway and the socket API, plus live reload (file watch, SIGHUP,
// POST /v1/reload) with Prometheus-style semantics: validate the whole new
// config first, swap atomically, keep the old one on error, and report
// whether the last reload succeeded.
package daemon

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/core/access"
	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/core/cache"
	"github.com/sluice-dev/sluice/core/config"
	"github.com/sluice-dev/sluice/core/fleet"
	"github.com/sluice-dev/sluice/core/gateway"
	"github.com/sluice-dev/sluice/core/metrics"
	"github.com/sluice-dev/sluice/core/pluginhost"
	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/progress"
	"github.com/sluice-dev/sluice/core/scheduler"
)

// Options configure Run.
type Options struct {
	// ConfigPath is the TOML file. In sandbox mode it may be absent, and
	// the defaults are used.
	ConfigPath string
	// Socket overrides the config's socket (from --socket or SLUICE_SOCKET).
	Socket  string
	Version string
	// Sandbox, if set, rewrites every loaded config to point providers at
	// built-in simulators with test credentials.
	Sandbox func(*config.Config)
	// StateDir overrides the config's state_dir (from --state-dir or
	// SLUICE_STATE_DIR); the sandbox then keeps its state in sandbox/ of
	// it, as of any state dir.
	StateDir string
	// Reset empties the state dir before starting (sandbox only: it
	// forgets the rate-limit state that keeps a real daemon from a ban).
	Reset bool
	// Listener, if set, is used instead of creating the socket (socket
	// activation, tests).
	Listener net.Listener
	// LogOutput receives the daemon's log (default stderr).
	LogOutput *os.File
}

// Daemon is one running sluiced.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	level   *slog.LevelVar
	started time.Time
	socket  string

	sched *scheduler.Scheduler
	// fleet is the connection to the fleet's Redis; nil on a single host.
	fleet *fleet.Client
	// startFleet is the [fleet] section the daemon started with: fleet
	// settings apply at start only.
	startFleet config.Fleet
	cache      *cache.Cache
	host       *pluginhost.Host
	gw         *gateway.Gateway
	metrics    *metrics.Metrics
	api        *api.Server
	front      *api.Front
	// memLimit is the soft memory limit in force (see setMemoryLimit).
	memLimit atomic.Int64

	cfg    atomic.Pointer[config.Config]
	policy atomic.Pointer[access.Policy]
	// socketGID is the socket file's group, whose members may read.
	socketGID int

	reloadMu sync.Mutex
	// readySent: READY=1 has announced the start to systemd.
	readySent atomic.Bool
	cfgMu     sync.Mutex
	cfgState  api.ConfigStatus
}

// Run starts the daemon and serves until ctx ends, then stops every plugin
// and removes the socket.
func Run(ctx context.Context, opts Options) error {
	level := new(slog.LevelVar)
	out := opts.LogOutput
	if out == nil {
		out = os.Stderr
	}
	// Text for a person at a terminal, JSON for journald and collectors.
	// Access lines (one per request) go through a buffer; see logbuf.go.
	accessOut := newBufferedWriter(out, 100*time.Millisecond)
	defer accessOut.Close()
	newHandler := func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}) }
	terminal := false
	if fi, err := out.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		terminal = true
		newHandler = func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}) }
	}
	log := slog.New(newHandler(out))
	accessLog := slog.New(newHandler(accessOut)).With("component", "api")

	cfg, raw, err := loadConfig(opts)
	if err != nil {
		return err
	}
	level.Set(cfg.Level())
	d := &Daemon{opts: opts, log: log, level: level, started: time.Now(), startFleet: cfg.Fleet}
	d.setMemoryLimit(cfg)
	d.cfg.Store(cfg)
	d.cfgState = api.ConfigStatus{Path: cfg.Path, LoadedAt: time.Now(), Hash: config.Hash(raw), LastReloadOK: true, Warnings: d.configWarnings(cfg)}

	d.socket = cfg.Socket
	if opts.Socket != "" {
		d.socket = opts.Socket
	}
	if cfg.InlineSecrets() && cfg.Path != "" && opts.Sandbox == nil {
		if fi, err := os.Stat(cfg.Path); err == nil && fi.Mode().Perm()&0o004 != 0 {
			log.Warn("config file holds inline secrets and is world-readable; chmod o-r it or use env:/file: references", "path", cfg.Path)
		}
	}

	// One daemon per state dir: two would each keep their own rate-limit
	// log and together send twice the budget.
	lock, err := lockStateDir(cfg.StateDir, d.socket, log)
	if err != nil {
		return err
	}
	defer lock.release()
	if opts.Reset {
		if opts.Sandbox == nil {
			return errors.New("--reset forgets the rate-limit state that keeps a real daemon from a ban; it is for --sandbox only")
		}
		if filepath.Base(cfg.StateDir) != "sandbox" {
			return fmt.Errorf("--reset empties only a sandbox's own state dir; %s is not one", cfg.StateDir)
		}
		if err := resetState(cfg.StateDir); err != nil {
			return err
		}
		log.Info("sandbox state reset", "state_dir", cfg.StateDir)
	}

	var shared scheduler.Shared
	if cfg.Fleet.Enabled() {
		f := &cfg.Fleet
		q, err := fleet.New(fleet.Options{URL: f.RedisURL.Value(), SentinelAddrs: f.SentinelAddrs, MasterName: f.MasterName,
			ClusterAddrs: f.ClusterAddrs, Username: f.Username, Password: f.Password.Value(), TLS: f.TLS,
			SentinelUsername: f.SentinelUsername, SentinelPassword: f.SentinelPassword.Value(),
			Name: f.Name, Version: opts.Version, Log: log.With("component", "fleet")})
		if err != nil {
			return err
		}
		defer q.Close()
		d.fleet, shared = q, q
		log.Info("fleet mode: rate budgets are shared through Redis", "name", cmp.Or(cfg.Fleet.Name, "default"))
	}
	d.sched, err = scheduler.New(scheduler.Options{Shared: shared, StateDir: cfg.StateDir, Margin: cfg.Scheduler.Margin.Duration, Logger: log.With("component", "scheduler")})
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	defer d.sched.Close()
	// The config's margin as written, as a reload applies it: New reads
	// a zero margin as "the default", and margin = "0s" means none.
	d.sched.SetMargin(cfg.Scheduler.Margin.Duration)
	d.cache, err = cache.New(int64(cfg.Cache.MaxSize))
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer d.cache.Close()
	if d.fleet != nil {
		// One cache: answers are shared through the fleet's Redis too.
		rc := d.fleet.Cache(func(provider string) { d.cache.PurgeLocal(provider) })
		defer rc.Close()
		d.cache.SetRemote(rc)
	}
	d.metrics = metrics.New(d.metricSources())
	tracker := progress.New()
	hostOpts := pluginhost.Options{Scheduler: d.sched, Logger: log.With("component", "plugins"),
		ObserveWait: d.metrics.ObserveWait, Progress: tracker}
	if d.fleet != nil {
		hostOpts.Guard, hostOpts.Leases = d.fleet, d.fleet // purchase guards and max_in_flight turns fleet-wide
	}
	d.host, err = pluginhost.New(hostOpts)
	if err != nil {
		return err
	}
	defer d.host.Close()
	d.gw = gateway.New(d.host, d.cache, gatewaySettings(cfg), log.With("component", "gateway"))
	d.gw.SetBudgets(d.sched.Budget)
	d.gw.SetProgress(tracker)

	ln := opts.Listener
	activated := false
	var httpLn net.Listener
	if ln == nil {
		if ln, httpLn, err = activatedListeners(); err != nil {
			return err
		}
		activated = ln != nil
		if activated {
			d.socket = ln.Addr().String()
		}
	}
	if ln == nil {
		ln, err = listen(d.socket, cfg.SocketMode.Perm())
		if err != nil {
			return err
		}
	}
	defer ln.Close()
	if httpLn, err = openHTTP(cfg, httpLn); err != nil {
		return err
	}
	lock.setSocket(d.socket)
	d.socketGID = fileGID(d.socket)
	d.policy.Store(access.NewPolicy(cfg.Access, uint32(os.Geteuid()), d.socketGID))

	specs, err := providerSpecs(cfg)
	if err != nil {
		return err
	}
	d.host.Apply(specs)

	apiSrv := api.NewServer(d, accessLog, d.metrics)
	apiSrv.SetAccessLog(cfg.AccessLog)
	apiSrv.SetTCPPolicy(tcpPolicy(cfg))
	d.api = apiSrv
	if !terminal {
		apiSrv.SetAccessWriter(newJSONAccess(accessOut))
	}
	srv := &http.Server{Handler: apiSrv, ReadHeaderTimeout: 10 * time.Second,
		ConnContext: api.ConnContext, MaxHeaderBytes: 64 << 10,
		// Bounds on reading a request (slow or stalled clients); answers are
		// not bounded, as files stream for as long as they take.
		ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	serveErr := make(chan error, 1)
	front := apiSrv.NewFront(srv, maxConnections(cfg))
	d.front = front
	serving := ln
	if httpLn != nil {
		defer httpLn.Close()
		serving = api.Listeners(ln, httpLn)
		log.Info("sluiced listening on TCP", "addr", httpLn.Addr().String(), "http_level", cfg.HTTPLevel)
	}
	go func() { serveErr <- front.Serve(serving) }()
	log.Info("sluiced listening", "socket", d.socket, "activated", activated, "config", cfg.Path, "version", opts.Version, "sandbox", opts.Sandbox != nil,
		"max_connections", front.ConnStats().Max)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go d.announceReady(ctx)
	go d.watchdog(ctx)
	go d.watchSignals(ctx)
	go lock.watch(ctx, 5*time.Second)
	go d.releaseAfterFlood(ctx, floodCheck)
	if cfg.Path != "" {
		go func() {
			err := config.Watch(ctx, cfg.Path, 200*time.Millisecond, func() { d.reload(ctx, false) }, log.With("component", "config"))
			if err != nil && ctx.Err() == nil {
				log.Warn("config file watch stopped; SIGHUP and POST /v1/reload still work", "err", err)
			}
		}()
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving: %w", err)
		}
	}
	log.Info("sluiced stopping")
	d.notify("STOPPING=1")
	shutCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	front.Shutdown(shutCtx)
	if opts.Listener == nil && !activated {
		os.Remove(d.socket)
	}
	return nil
}

func loadConfig(opts Options) (*config.Config, []byte, error) {
	cfg, raw, err := config.Load(opts.ConfigPath)
	if err != nil && opts.Sandbox != nil && errors.Is(err, fs.ErrNotExist) {
		// Sandbox mode needs no config file: defaults and simulators.
		cfg, raw, err = config.Default(), nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if opts.StateDir != "" {
		cfg.StateDir = opts.StateDir
	}
	if opts.Sandbox != nil {
		// After --state-dir: the sandbox keeps its state in sandbox/ of
		// whichever state dir is in force, so --reset can never empty a
		// real daemon's (its purchase guard, its rate-limit log).
		opts.Sandbox(cfg)
	}
	return cfg, raw, nil
}

func (d *Daemon) watchSignals(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			d.log.Info("SIGHUP: reloading config")
			d.reload(ctx, true)
		}
	}
}

// listen creates the socket: its directory, a refusal if another live
// daemon answers on it, removal of a stale file, and the configured mode.
func listen(path string, mode os.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another sluiced is already serving on %s", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	// Keep the file on Close only if it was replaced by someone else.
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket mode: %w", err)
	}
	return ln, nil
}

// reload loads the config file, validates it fully and swaps it in; on any
// error the old config keeps serving and status shows the error. force
// reloads even when the content hash is unchanged.
func (d *Daemon) reload(ctx context.Context, force bool) (api.ReloadResult, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	d.notifyReloading()
	defer func() {
		// Only a daemon that has announced its start may say READY
		// again: before that, systemd would take it as the start.
		if d.readySent.Load() {
			d.notify("READY=1")
		}
	}()
	cfg, raw, err := loadConfig(d.opts)
	if err == nil {
		var specs []pluginhost.Spec
		if specs, err = providerSpecs(cfg); err == nil {
			for _, sp := range specs {
				if err = sp.Check(); err != nil {
					break
				}
			}
		}
	}
	if err != nil {
		d.cfgMu.Lock()
		d.cfgState.LastReloadOK, d.cfgState.LastError, d.cfgState.LastErrorAt = false, err.Error(), time.Now()
		d.cfgMu.Unlock()
		d.log.Error("config reload failed; keeping the previous config", "err", err)
		d.metrics.Reloaded(false)
		return api.ReloadResult{}, configProblem(err)
	}
	hash := config.Hash(raw)
	d.cfgMu.Lock()
	unchanged := hash == d.cfgState.Hash
	d.cfgMu.Unlock()
	if unchanged && !force {
		d.cfgMu.Lock()
		d.cfgState.LastReloadOK, d.cfgState.LastError = true, ""
		st := d.cfgState
		d.cfgMu.Unlock()
		// The file is back to the config in force after a failed
		// reload: the metric must clear like status does.
		d.metrics.Reloaded(true)
		return api.ReloadResult{Status: "unchanged", Hash: hash, LoadedAt: st.LoadedAt}, nil
	}
	d.apply(cfg)
	if force {
		if names := d.host.RestartFailed(); len(names) > 0 {
			d.log.Info("restarting failed providers on a forced reload", "providers", names)
		}
	}
	d.metrics.Reloaded(true)
	now := time.Now()
	d.cfgMu.Lock()
	d.cfgState = api.ConfigStatus{Path: cfg.Path, LoadedAt: now, Hash: hash, LastReloadOK: true, Warnings: d.configWarnings(cfg)}
	d.cfgMu.Unlock()
	d.log.Info("config reloaded", "path", cfg.Path)
	return api.ReloadResult{Status: "reloaded", Hash: hash, LoadedAt: now}, nil
}

// apply swaps a validated config in. Limits, TTLs, margins and sizes apply
// live; a changed provider section restarts only that provider's plugin.
func (d *Daemon) apply(cfg *config.Config) {
	old := d.cfg.Swap(cfg)
	d.level.Set(cfg.Level())
	d.api.SetAccessLog(cfg.AccessLog)
	d.api.SetTCPPolicy(tcpPolicy(cfg))
	d.front.SetMaxConns(maxConnections(cfg))
	d.setMemoryLimit(cfg)
	d.sched.SetMargin(cfg.Scheduler.Margin.Duration)
	d.cache.SetMaxBytes(int64(cfg.Cache.MaxSize))
	d.gw.SetSettings(gatewaySettings(cfg))
	d.policy.Store(access.NewPolicy(cfg.Access, uint32(os.Geteuid()), d.socketGID))
	specs, _ := providerSpecs(cfg)
	d.host.Apply(specs)
	d.purgeOutdated(old, cfg, specs)
	if old.Socket != cfg.Socket || old.StateDir != cfg.StateDir || old.SocketMode != cfg.SocketMode || old.HTTPListen != cfg.HTTPListen {
		d.log.Warn("socket, socket_mode, state_dir and http_listen changes take effect at the next start")
	}
}

// purgeOutdated drops cached answers whose lifetime was bounded by settings
// the reload changed: every answer when the expiry margin grows or the
// default TTL shrinks, a provider's answers when its section changed
// (link_ttl, a TTL, its upstream). Kept, they would be served until the
// bound they were stored under, past a link expiry the new settings know.
func (d *Daemon) purgeOutdated(old, cfg *config.Config, specs []pluginhost.Spec) {
	if cfg.Cache.ExpiryMargin.Duration > old.Cache.ExpiryMargin.Duration || cfg.Cache.DefaultTTL.Duration < old.Cache.DefaultTTL.Duration {
		d.log.Info("cache purged: a shorter default_ttl or a longer expiry_margin applies to every answer", "answers", d.cache.PurgeAll())
		return
	}
	before, _ := providerSpecs(old)
	was := map[string]pluginhost.Spec{}
	for _, s := range before {
		was[s.Name] = s
	}
	for _, s := range specs {
		if w, ok := was[s.Name]; ok && !bytes.Equal(w.ConfigJSON, s.ConfigJSON) {
			d.log.Info("cache purged: the provider's settings changed", "provider", s.Name, "answers", d.cache.Purge(s.Name))
		}
	}
}

// configWarnings logs what the config allows against a vendor's documented
// rule, at every load, and returns it for status.
func (d *Daemon) configWarnings(cfg *config.Config) []string {
	w := cfg.Warnings()
	if !cfg.Fleet.SameFleet(d.startFleet) {
		// A reload cannot move a daemon into or out of a fleet: a
		// user who added [fleet] and saw "reloaded" would believe the
		// hosts share one quota while each still keeps its own.
		now := "a single host"
		if d.startFleet.Enabled() {
			now = "fleet " + strconv.Quote(cmp.Or(d.startFleet.Name, "default"))
		}
		w = append(w, "[fleet] differs from the one this daemon started with; fleet settings apply at the next start only (until then it runs as "+now+"): restart sluiced")
	}
	for _, msg := range w {
		d.log.Warn("config: "+msg, "path", cfg.Path)
	}
	return w
}

func configProblem(err error) *problem.Problem {
	p := problem.New(http.StatusUnprocessableEntity, err.Error())
	p.Type, p.Title = problem.TypeConfig, "Invalid config; the previous config keeps serving"
	var ce *config.Error
	if errors.As(err, &ce) {
		p.Extra = map[string]any{"file": ce.File, "line": ce.Line, "key": ce.Key}
	}
	return p
}

func gatewaySettings(cfg *config.Config) gateway.Settings {
	p := cfg.Providers
	return gateway.Settings{
		DefaultMaxWait: cfg.Scheduler.MaxWait.Duration,
		DefaultTTL:     cfg.Cache.DefaultTTL.Duration,
		ExpiryMargin:   cfg.Cache.ExpiryMargin.Duration,
		ProviderTimeout: map[string]time.Duration{"ineo": p.Ineo.Timeout.Duration, "hellorf": p.Hellorf.Timeout.Duration,
			"spotify": p.Spotify.Timeout.Duration},
		StaleIfExhausted: map[string]time.Duration{"ineo": p.Ineo.StaleIfExhausted.Duration,
			"hellorf": p.Hellorf.StaleIfExhausted.Duration, "spotify": p.Spotify.StaleIfExhausted.Duration},
		Disabled: map[string]bool{"ineo": !p.Ineo.Enabled, "hellorf": !p.Hellorf.Enabled, "spotify": !p.Spotify.Enabled},
	}
}

// fileGID is the group of the file at path, or -1.
func fileGID(path string) int {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Gid)
	}
	return -1
}
