// Package provider is the plumbing every sluice provider plugin shares: the
// go-plugin handshake and gRPC glue used by both sides, Serve for a plugin's
// main, the request/response types a plugin handles, and Upstream, the only
// HTTP transport a plugin may use to reach its upstream — it cannot send
// without a grant from the host's scheduler.
//
// A plugin directory (plugins/<name>) then holds only what is specific to its
// upstream: operations, validation, signing, status-code tables, simulator.
package provider
