package daemon

import (
	"fmt"
	"net"

	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/core/config"
)

// openHTTP returns the TCP listener: the one systemd passed (it takes
// precedence over http_listen, as the main socket does over `socket`),
// else http_listen's, else none. Either way it must be loopback unless
// http_listen_allow_remote says otherwise: a socket unit can name any
// address, and the config check alone would not see it.
func openHTTP(cfg *config.Config, activated net.Listener) (net.Listener, error) {
	ln := activated
	if ln == nil {
		if cfg.HTTPListen == "" {
			return nil, nil
		}
		var err error
		if ln, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
			return nil, fmt.Errorf("http_listen: %w", err)
		}
	}
	if !api.IsLoopback(ln.Addr()) && !cfg.HTTPListenAllowRemote {
		ln.Close()
		return nil, fmt.Errorf("the TCP listener %s is not loopback: anyone who can reach it could use every provider with these credentials; "+
			"set http_listen_allow_remote = true if that is meant", ln.Addr())
	}
	return ln, nil
}

// tcpPolicy is the TCP listener's policy under cfg.
func tcpPolicy(cfg *config.Config) *api.TCPPolicy {
	return api.NewTCPPolicy(cfg.HTTPHosts, api.LevelOf(cfg.HTTPLevel), cfg.HTTPAdminToken.Value())
}
