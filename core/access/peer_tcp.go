package access

import (
	"fmt"
	"net"
	"os/user"
	"strconv"
)

// tcpPeer identifies the process user at the other end of a loopback TCP
// connection: the uid from the kernel (tcpPeerUID), its primary group and
// supplementary groups from the user database. Unlike SO_PEERCRED the
// kernel names no pid and no process groups for a TCP peer, so the groups
// are the user's as the system lists them; PID is 0.
func tcpPeer(c *net.TCPConn) (Peer, error) {
	la, lok := c.LocalAddr().(*net.TCPAddr)
	ra, rok := c.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok {
		return Peer{}, fmt.Errorf("tcp connection without addresses")
	}
	uid, err := tcpPeerUID(la.AddrPort(), ra.AddrPort())
	if err != nil {
		return Peer{}, fmt.Errorf("tcp peer %s: %w", ra, err)
	}
	p := Peer{UID: uid, GID: uid}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			p.GID = uint32(g)
		}
		if gs, err := u.GroupIds(); err == nil {
			for _, s := range gs {
				if g, err := strconv.ParseUint(s, 10, 32); err == nil {
					p.Groups = append(p.Groups, uint32(g))
				}
			}
		}
	} else {
		// No such user in the database: the uid alone decides, and its
		// gid must not borrow some group's rights by coincidence.
		p.GID = ^uint32(0)
	}
	return p, nil
}
