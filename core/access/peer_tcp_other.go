//go:build !linux

package access

import (
	"errors"
	"net/netip"
)

// tcpPeerUID needs the Linux sock_diag interface; elsewhere a TCP peer
// stays unknown (and gets http_level).
func tcpPeerUID(local, remote netip.AddrPort) (uint32, error) {
	return 0, errors.New("identifying TCP peers needs Linux sock_diag")
}
