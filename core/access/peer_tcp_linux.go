package access

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPeerUID asks the kernel (NETLINK_SOCK_DIAG, the interface behind
// `ss -tep`) which uid owns the socket at the other end of an accepted
// loopback TCP connection: the one whose local end is remote and whose
// remote end is local. The uid is the kernel's record of who created that
// socket, not anything the client says.
//
// Only an exact, live, process-owned socket counts. A lookup by 4-tuple
// may also find a TIME_WAIT or SYN_RECV mini-socket, or, failing an exact
// match, a listener; the kernel reports uid 0 for the mini-sockets, which
// would read as root. So the reply must name the very 4-tuple asked
// about, be neither a listener nor a mini-socket, and have an inode (a
// socket still open in some process).
func tcpPeerUID(local, remote netip.AddrPort) (uint32, error) {
	if !remote.Addr().Unmap().IsLoopback() || !local.Addr().Unmap().IsLoopback() {
		return 0, errors.New("not a loopback connection")
	}
	// A client on 127.0.0.1 may hold an AF_INET socket, or an AF_INET6
	// one carrying a v4-mapped address (a dual-stack client): try both.
	if remote.Addr().Unmap().Is4() {
		l4 := netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		r4 := netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
		uid, err := sockDiagUID(unix.AF_INET, r4, l4)
		if !errors.Is(err, unix.ENOENT) {
			return uid, err
		}
		l6 := netip.AddrPortFrom(netip.AddrFrom16(l4.Addr().As16()), local.Port())
		r6 := netip.AddrPortFrom(netip.AddrFrom16(r4.Addr().As16()), remote.Port())
		return sockDiagUID(unix.AF_INET6, r6, l6)
	}
	return sockDiagUID(unix.AF_INET6, remote, local)
}

// Sizes of the kernel's structs (linux/inet_diag.h, linux/netlink.h).
const (
	nlmsgHdrLen   = 16
	inetDiagReqV2 = 56
	inetDiagMsg   = 72
	sockIDLen     = 48
)

// TCP states the kernel reports (include/net/tcp_states.h) that must not
// count as a client's socket.
const (
	tcpTimeWait   = 6
	tcpListen     = 10
	tcpNewSynRecv = 12
	tcpSynRecv    = 3
)

// sockDiagUID looks up the TCP socket of family whose local end is src and
// remote end dst, and returns its owner's uid.
func sockDiagUID(family int, src, dst netip.AddrPort) (uint32, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	// The kernel answers a sock_diag request while sending it; the bound
	// only matters if it ever does not.
	tv := unix.NsecToTimeval(time.Second.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, fmt.Errorf("netlink socket: %w", err)
	}
	id := sockID(src, dst)
	req := make([]byte, nlmsgHdrLen+inetDiagReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], 1) // sequence
	b := req[nlmsgHdrLen:]
	b[0] = byte(family)
	b[1] = unix.IPPROTO_TCP
	ne.PutUint32(b[4:], 0xffffffff) // every state; the reply's is checked
	copy(b[8:], id)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, 8192)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return 0, fmt.Errorf("sock_diag reply: %w", err)
	}
	buf = buf[:n]
	if len(buf) < nlmsgHdrLen {
		return 0, errors.New("sock_diag reply: short")
	}
	switch ne.Uint16(buf[4:]) {
	case unix.NLMSG_ERROR:
		if len(buf) < nlmsgHdrLen+4 {
			return 0, errors.New("sock_diag reply: short error")
		}
		if code := int32(ne.Uint32(buf[nlmsgHdrLen:])); code != 0 {
			return 0, fmt.Errorf("sock_diag: %w", unix.Errno(-code))
		}
		return 0, errors.New("sock_diag: no answer")
	case unix.SOCK_DIAG_BY_FAMILY:
	default:
		return 0, fmt.Errorf("sock_diag reply: message type %d", ne.Uint16(buf[4:]))
	}
	m := buf[nlmsgHdrLen:]
	if len(m) < inetDiagMsg {
		return 0, errors.New("sock_diag reply: short message")
	}
	state := m[1]
	uid, inode := ne.Uint32(m[64:]), ne.Uint32(m[68:])
	got := m[4 : 4+sockIDLen]
	switch {
	case int(m[0]) != family || string(got[:36]) != string(id[:36]):
		// Not the socket asked about (a listener found by its port).
		return 0, unix.ENOENT
	case state == tcpListen || state == tcpTimeWait || state == tcpNewSynRecv || state == tcpSynRecv || inode == 0:
		return 0, fmt.Errorf("sock_diag: the client's socket is not open in any process (state %d)", state)
	}
	return uid, nil
}

// sockID is struct inet_diag_sockid for src → dst: ports and addresses in
// network order, any interface, no cookie.
func sockID(src, dst netip.AddrPort) []byte {
	id := make([]byte, sockIDLen)
	binary.BigEndian.PutUint16(id[0:], src.Port())
	binary.BigEndian.PutUint16(id[2:], dst.Port())
	putAddr := func(b []byte, a netip.Addr) {
		if a.Is4() {
			v := a.As4()
			copy(b, v[:])
			return
		}
		v := a.As16()
		copy(b, v[:])
	}
	putAddr(id[4:20], src.Addr())
	putAddr(id[20:36], dst.Addr())
	// idiag_if 0 (any); cookie INET_DIAG_NOCOOKIE.
	binary.NativeEndian.PutUint32(id[40:], 0xffffffff)
	binary.NativeEndian.PutUint32(id[44:], 0xffffffff)
	return id
}
