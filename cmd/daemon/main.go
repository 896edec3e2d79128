// Command sluiced is the sluice daemon: one local process that holds the
// credentials for iNeo, hellorf and Spotify, keeps each upstream's rate limit
// for all callers together, caches and coalesces answers, and serves local
// programs over a Unix socket.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluice-dev/sluice/core/config"
	"github.com/sluice-dev/sluice/core/daemon"
	"github.com/sluice-dev/sluice/internal/buildinfo"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run())
}

func run() int {
	version := buildinfo.Version(version)
	fs := flag.NewFlagSet("sluiced", flag.ContinueOnError)
	cfgPath := fs.String("config", envOr("SLUICE_CONFIG", "/etc/sluice/config.toml"), "config file (env SLUICE_CONFIG)")
	socket := fs.String("socket", os.Getenv("SLUICE_SOCKET"), "socket path, overriding the config (env SLUICE_SOCKET)")
	sandbox := fs.Bool("sandbox", false, "run against built-in simulators of the upstreams with test credentials")
	stateDir := fs.String("state-dir", os.Getenv("SLUICE_STATE_DIR"), "rate-limit and plugin state directory, overriding the config's state_dir (env SLUICE_STATE_DIR); one daemon per directory")
	reset := fs.Bool("reset", false, "with --sandbox: empty the state dir first (rate-limit state, purchase guard); the cache starts empty anyway")
	showVersion := fs.Bool("version", false, "print the version and exit")
	check := fs.String("check-config", "", "validate a config file and exit (0 ok, 1 invalid)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0 // asked for, and printed
		}
		return 2
	}
	if *reset && !*sandbox {
		fmt.Fprintln(os.Stderr, "sluiced: --reset is for --sandbox only: it forgets the rate-limit state that keeps a real daemon from a ban")
		return 2
	}
	switch {
	case *showVersion:
		fmt.Println("sluiced", version)
		return 0
	case *check != "":
		cfg, _, err := config.Load(*check)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sluiced: invalid config:", err)
			return 1
		}
		for _, w := range cfg.Warnings() {
			fmt.Fprintln(os.Stderr, "sluiced: warning:", w)
		}
		fmt.Println("config ok:", *check)
		return 0
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := daemon.Options{ConfigPath: *cfgPath, Socket: *socket, Version: version, StateDir: *stateDir, Reset: *reset}
	if *sandbox {
		sb, err := startSandbox()
		if err != nil {
			fmt.Fprintln(os.Stderr, "sluiced: sandbox:", err)
			return 1
		}
		defer sb.Close()
		opts.Sandbox = sb.Rewrite
		fmt.Fprintln(os.Stderr, sb.Banner())
	}
	if err := daemon.Run(ctx, opts); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "sluiced:", err)
		return 1
	}
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
