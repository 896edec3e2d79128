package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// checkHTTP validates the TCP listener's keys. The address must be an IP
// literal and a port: a name would be resolved at start, and what it
// resolves to decides whether the listener is reachable from the network.
func (c *Config) checkHTTP() []fieldErr {
	var errs []fieldErr
	bad := func(key, format string, args ...any) {
		errs = append(errs, fieldErr{key, fmt.Sprintf(format, args...)})
	}
	c.HTTPListen = strings.TrimSpace(c.HTTPListen)
	if c.HTTPListen != "" {
		ap, err := ParseListen(c.HTTPListen)
		switch {
		case err != nil:
			bad("http_listen", "%v", err)
		case !ap.Addr().Unmap().IsLoopback() && !c.HTTPListenAllowRemote:
			bad("http_listen", "%s is not a loopback address: anyone who can reach it could use every provider with your credentials; "+
				"use 127.0.0.1 or [::1], or set http_listen_allow_remote = true", ap.Addr())
		}
	}
	for i, h := range c.HTTPHosts {
		h = strings.ToLower(strings.TrimSpace(h))
		c.HTTPHosts[i] = h
		if h == "" || strings.ContainsAny(h, "/@?#* \t") {
			bad("http_hosts", "%s is not a host name (write it as in a Host header: name or name:port)", quoteValue(h))
		}
	}
	c.HTTPLevel = strings.ToLower(strings.TrimSpace(c.HTTPLevel))
	switch c.HTTPLevel {
	case "none", "read", "admin":
	default:
		bad("http_level", "must be one of none, read, admin")
	}
	return errs
}

// ParseListen parses http_listen: an IP literal and a port ("127.0.0.1:8750",
// "[::1]:8750"; port 0 picks a free one).
func ParseListen(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s is not host:port (e.g. \"127.0.0.1:8750\")", quoteValue(s))
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%s must be an IP address such as 127.0.0.1 or [::1], not a name", quoteValue(host))
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %s must be a number from 0 to 65535", quoteValue(port))
	}
	return netip.AddrPortFrom(a, uint16(n)), nil
}
