package provider

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// Serve runs a plugin binary's main: it logs to stderr in the JSON shape
// go-plugin forwards to the host's log, exits when its parent daemon is gone,
// and serves the provider until the host kills it.
func Serve(newProvider func(*slog.Logger) Provider) {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{
		Level:       slog.LevelDebug,
		ReplaceAttr: hclogAttrs,
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go exitWithParent(ctx, logger)

	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{PluginName: &GRPCPlugin{Impl: newProvider(logger)}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes))...)
		},
		Logger: hclog.New(&hclog.LoggerOptions{Output: os.Stderr, JSONFormat: true, Level: hclog.Info}),
	})
}

// hclogAttrs renames slog's keys to the ones go-plugin's host side parses, so
// a plugin's records arrive in the daemon's log with their level and fields.
func hclogAttrs(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		return slog.Attr{} // the host stamps its own time
	case slog.LevelKey:
		return slog.String("@level", strings.ToLower(a.Value.String()))
	case slog.MessageKey:
		return slog.String("@message", a.Value.String())
	}
	return a
}

// exitWithParent ends the plugin when sluiced is gone, even if it was
// SIGKILLed and could not stop its children. The host also sets
// PR_SET_PDEATHSIG; this is the fallback for when that signal is lost (it is
// tied to the thread that started us).
func exitWithParent(ctx context.Context, logger *slog.Logger) {
	parent := os.Getppid()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if os.Getppid() != parent {
				logger.Warn("parent daemon gone; exiting")
				os.Exit(0)
			}
		}
	}
}
