// Command sluice-hellorf will be sluice's provider plugin for hellorf. Until its
// issue lands it serves a description with no operations and refuses to be
// configured, so an enabled hellorf provider shows as failed with a clear reason
// instead of half-working.
package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/sluice-dev/sluice/core/proto"
	"github.com/sluice-dev/sluice/core/provider"
)

func main() {
	provider.Serve(func(*slog.Logger) provider.Provider { return stub{} })
}

type stub struct{}

func (stub) Describe() *proto.Description {
	return &proto.Description{Name: "hellorf", Version: "0-stub"}
}

func (stub) Configure(context.Context, []byte) error {
	return errors.New("the hellorf provider is not implemented yet; set enabled = false in [providers.hellorf]")
}

func (stub) Call(context.Context, *provider.Request, *provider.ResponseWriter, *provider.Upstream) error {
	return errors.New("the hellorf provider is not implemented yet")
}
