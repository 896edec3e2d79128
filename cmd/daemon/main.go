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
	"github.com/sluice-dev/sluice/internal/daemonflags"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run())
}

func run() int {
	version := buildinfo.Version(version)
	// The flags live in internal/daemonflags, which sluiced(8) is generated from.
	fs, fl := daemonflags.New(os.Getenv)
	cfgPath, socket, sandbox, stateDir, reset, showVersion, check := fl.Config, fl.Socket, fl.Sandbox, fl.StateDir, fl.Reset, fl.Version, fl.CheckConfig
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
