package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/sluice-dev/sluice/core/proto"
)

// Handshake is shared by sluiced and every plugin binary. The cookie only
// stops a plugin binary from being run by hand by mistake; it is not security.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "SLUICE_PLUGIN",
	MagicCookieValue: "provider-v1",
}

// PluginName is the single plugin kind each binary serves.
const PluginName = "provider"

// MaxMessageBytes raises gRPC's default 4 MiB limits: request bodies and
// answer chunks stay far below, but configs and descriptions must never be
// the thing that breaks.
const MaxMessageBytes = 64 << 20

// GRPCPlugin implements plugin.GRPCPlugin for both sides. The plugin side
// sets Impl; the host side sets Host, which is served to the plugin over the
// broker once per plugin lifetime.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Provider
	Host proto.HostServer
}

// GRPCServer runs in the plugin process.
func (p *GRPCPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	proto.RegisterProviderServer(s, &server{impl: p.Impl, broker: broker})
	return nil
}

// GRPCClient runs in the host. It starts serving the Host service on a
// broker stream and returns a Client that knows its id.
func (p *GRPCPlugin) GRPCClient(ctx context.Context, broker *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	if p.Host == nil {
		return nil, fmt.Errorf("provider plugin client needs a Host service")
	}
	id := broker.NextId()
	go broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes))...)
		proto.RegisterHostServer(s, p.Host)
		return s
	})
	return &Client{ProviderClient: proto.NewProviderClient(c), HostBrokerID: id}, nil
}

// Client is what the host dispenses: the Provider RPC client plus the broker
// id under which the plugin reaches the host's scheduler.
type Client struct {
	proto.ProviderClient
	HostBrokerID uint32
}

// DialOptions are the host's gRPC dial options for plugin connections.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes))}
}
