// Package access decides who may do what on sluiced's socket. Every
// connection's peer is identified by SO_PEERCRED (the kernel's word, not the
// client's), then mapped to a tier: read (status, health, metrics and
// providers' read operations) or admin (also reload, purge, and destructive
// or paying operations).
package access

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/sluice-dev/sluice/core/config"
)

// Level is a permission tier.
type Level int

const (
	// None may do nothing.
	None Level = iota
	// Read may call status, health, metrics and read operations.
	Read
	// Admin may also reload, purge and call destructive operations.
	Admin
)

func (l Level) String() string {
	return [...]string{"none", "read", "admin"}[l]
}

// Peer is the process at the other end of a socket connection.
type Peer struct {
	PID    int32
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups, best effort from /proc
}

// PeerOf reads SO_PEERCRED from a Unix connection; a loopback TCP
// connection's peer is found through the kernel's socket table (tcpPeer).
func PeerOf(c net.Conn) (Peer, error) {
	if tc, ok := c.(*net.TCPConn); ok {
		return tcpPeer(tc)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, errors.New("not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *syscall.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if serr != nil {
		return Peer{}, fmt.Errorf("SO_PEERCRED: %w", serr)
	}
	p := Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
	p.Groups = supplementaryGroups(cred.Pid)
	return p, nil
}

// supplementaryGroups reads the "Groups:" line of /proc/PID/status. A
// process that exits meanwhile simply has none (its primary gid still
// counts).
func supplementaryGroups(pid int32) []uint32 {
	f, err := os.Open("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		var gs []uint32
		for _, f := range strings.Fields(rest) {
			if n, err := strconv.ParseUint(f, 10, 32); err == nil {
				gs = append(gs, uint32(n))
			}
		}
		return gs
	}
	return nil
}

// Policy maps peers to levels.
type Policy struct {
	readUIDs, readGIDs, adminUIDs, adminGIDs map[uint32]bool
}

// NewPolicy builds the policy from [access] plus the defaults: the daemon's
// own uid and root are admin; members of the socket's group may read.
func NewPolicy(a config.Access, daemonUID uint32, socketGID int) *Policy {
	set := func(ids []uint32) map[uint32]bool {
		m := map[uint32]bool{}
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	p := &Policy{readUIDs: set(a.ReadUIDs), readGIDs: set(a.ReadGIDs), adminUIDs: set(a.AdminUIDs), adminGIDs: set(a.AdminGIDs)}
	p.adminUIDs[0] = true
	p.adminUIDs[daemonUID] = true
	if socketGID >= 0 {
		p.readGIDs[uint32(socketGID)] = true
	}
	return p
}

// Level returns the peer's tier.
func (p *Policy) Level(peer Peer) Level {
	inAny := func(gids map[uint32]bool) bool {
		if gids[peer.GID] {
			return true
		}
		for _, g := range peer.Groups {
			if gids[g] {
				return true
			}
		}
		return false
	}
	switch {
	case p.adminUIDs[peer.UID] || inAny(p.adminGIDs):
		return Admin
	case p.readUIDs[peer.UID] || inAny(p.readGIDs):
		return Read
	}
	return None
}

type ctxKey struct{}

// Grant is what a request carries: who it is and what it may do.
type Grant struct {
	Peer  Peer
	Level Level
	// Known is false when the peer could not be identified (e.g. a
	// listener that is not a Unix socket in tests).
	Known bool
	// TCP: the request came over the loopback TCP listener, where a web
	// page can make a browser send a plain GET; Token: it carried the
	// admin bearer token, which no page can make a browser send.
	TCP, Token bool
}

// WithGrant stores g in ctx.
func WithGrant(ctx context.Context, g Grant) context.Context {
	return context.WithValue(ctx, ctxKey{}, g)
}

// FromContext returns the request's grant; without one, nothing is allowed.
func FromContext(ctx context.Context) Grant {
	g, _ := ctx.Value(ctxKey{}).(Grant)
	return g
}
