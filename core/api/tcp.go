package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/sluice-dev/sluice/core/access"
	"github.com/sluice-dev/sluice/core/problem"
)

// TypeMisdirected is the problem type of a TCP request whose Host names
// some other server: 421 Misdirected Request.
const TypeMisdirected = "urn:sluice:problem:misdirected"

// TCPPolicy is what callers on the loopback TCP listener are held to,
// besides everything the socket's callers are. Over TCP anyone who can
// make a browser connect can send a request, and a page can make a name
// it controls resolve to 127.0.0.1 (DNS rebinding): the Host must be one
// this listener answers to. A caller whose uid the kernel cannot name
// gets Level; the admin token, when set, grants admin.
type TCPPolicy struct {
	// hosts are the further Host names allowed (http_hosts), lower case.
	hosts []string
	level access.Level
	// token is the SHA-256 of http_admin_token: digests of equal length
	// are compared, so the comparison's time tells nothing of the
	// token's length either.
	token []byte
}

// NewTCPPolicy: hosts from http_hosts, level for unidentified peers
// (http_level), token (http_admin_token; "" for none).
func NewTCPPolicy(hosts []string, level access.Level, token string) *TCPPolicy {
	p := &TCPPolicy{level: level}
	for _, h := range hosts {
		p.hosts = append(p.hosts, strings.ToLower(h))
	}
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		p.token = sum[:]
	}
	return p
}

// SetTCPPolicy sets the policy of the TCP listener (at start and on a
// reload); nil leaves TCP callers with their uid's tier, no token, and
// only the listener's own address and localhost as Host.
func (s *Server) SetTCPPolicy(p *TCPPolicy) { s.tcp.Store(p) }

func (s *Server) tcpPolicy() *TCPPolicy {
	if p := s.tcp.Load(); p != nil {
		return p
	}
	return noTCPPolicy
}

// noTCPPolicy is the policy before any is set: one value, never changed,
// so the lane's per-connection Host memo recognises it.
var noTCPPolicy = &TCPPolicy{}

// localTCP is the local address of the request's connection when it came
// in on a TCP listener.
func localTCP(r *http.Request) (*net.TCPAddr, bool) {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
	return a, ok
}

// hostAllowed: host (a Host header) names this listener. The listener's
// own address is the address the client connected to (an IP literal
// cannot be rebound), localhost is always on this machine, and http_hosts
// lists the rest. A name without a port matches with the listener's port,
// or bare on port 80.
func (p *TCPPolicy) hostAllowed(host string, local *net.TCPAddr) bool {
	host = strings.ToLower(host)
	port := strconv.Itoa(local.Port)
	is := func(name string) bool { return host == name+":"+port || (port == "80" && host == name) }
	ip := local.AddrPort().Addr().Unmap()
	own := ip.String()
	if ip.Is6() {
		own = "[" + own + "]"
	}
	if is(own) || is("localhost") {
		return true
	}
	for _, h := range p.hosts {
		if _, _, err := net.SplitHostPort(h); (err == nil && host == h) || is(h) {
			return true
		}
	}
	return false
}

// misdirected answers 421 unless the Host names this TCP listener; true
// when it did. Nothing else happens first: no routing, no upstream request.
func (s *Server) misdirected(w http.ResponseWriter, r *http.Request) bool {
	local, ok := localTCP(r)
	if !ok || s.tcpPolicy().hostAllowed(r.Host, local) {
		return false
	}
	p := problem.New(http.StatusMisdirectedRequest, fmt.Sprintf("Host %q does not name this listener (%s, localhost:%d or a name in http_hosts); "+
		"refused, as a web page rebinding its own name to 127.0.0.1 would send it", r.Host, local, local.Port))
	p.Type = TypeMisdirected
	problem.Write(w, p)
	return true
}

// laneHostAllowed: the fast lane's Host check, the same as misdirected's;
// a refused request is handed over and gets its 421 there. memo is the
// connection's: a client names the same Host on every request, and
// checking it anew built strings for every hit.
func (s *Server) laneHostAllowed(c net.Conn, host string, memo *allowedHost) bool {
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return true
	}
	p := s.tcpPolicy()
	if memo.policy == p && memo.host == host {
		return true
	}
	if !p.hostAllowed(host, local) {
		return false
	}
	memo.host, memo.policy = host, p
	return true
}

// allowedHost is the Host a connection's last request was allowed under,
// and the policy that allowed it: a reload (a new policy) checks again.
type allowedHost struct {
	host   string
	policy *TCPPolicy
}

// tcpGrant is the grant of a request on the TCP listener: the peer's tier
// when the kernel named its uid, else http_level; admin with the admin
// token. Any Authorization header is then removed: SDKs send their own
// bearer tokens, which mean nothing here, are never refused, and must go
// nowhere else.
func (s *Server) tcpGrant(ctx context.Context, r *http.Request, peer access.Peer, known bool) context.Context {
	p := s.tcpPolicy()
	// A peer the kernel cannot name gets http_level, but never admin: a
	// client that closes its end before sluiced looks it up is one such
	// peer, and admin is for a known uid or the token.
	g := access.Grant{Peer: peer, Level: min(p.level, access.Read), Known: known, TCP: true}
	if known {
		g.Level = s.b.Level(peer)
	}
	if p.bearer(r.Header.Values("Authorization")) {
		g.Level, g.Token = access.Admin, true
	}
	r.Header.Del("Authorization")
	return access.WithGrant(ctx, g)
}

// bearer reports whether one of the Authorization values is "Bearer
// <token>" (the scheme in any case), compared in constant time.
func (p *TCPPolicy) bearer(values []string) bool {
	if len(p.token) == 0 {
		return false
	}
	ok := false
	for _, v := range values {
		scheme, cred, found := strings.Cut(strings.TrimSpace(v), " ")
		if !found || !strings.EqualFold(scheme, "Bearer") {
			continue
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(cred)))
		if subtle.ConstantTimeCompare(sum[:], p.token) == 1 {
			ok = true
		}
	}
	return ok
}

// LevelOf parses a tier name (none, read, admin).
func LevelOf(name string) access.Level {
	switch name {
	case "admin":
		return access.Admin
	case "read":
		return access.Read
	}
	return access.None
}

// Listeners serves several listeners (the socket and the TCP listener) as
// one, so one Front, with one connection cap, serves them all. Each
// listener has one connection accepted ahead at most, waiting for the
// Front to take it: the cap may be passed by that many.
func Listeners(lns ...net.Listener) net.Listener {
	if len(lns) == 1 {
		return lns[0]
	}
	m := &multiListener{lns: lns, ch: make(chan accepted), done: make(chan struct{})}
	for _, ln := range lns {
		go m.accept(ln)
	}
	return m
}

type accepted struct {
	c   net.Conn
	err error
}

type multiListener struct {
	lns  []net.Listener
	ch   chan accepted
	done chan struct{}
	once sync.Once
}

func (m *multiListener) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		select {
		case m.ch <- accepted{c, err}:
		case <-m.done:
			if c != nil {
				c.Close()
			}
			return
		}
		if err != nil {
			if te, ok := err.(interface{ Temporary() bool }); !ok || !te.Temporary() {
				return
			}
		}
	}
}

func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case a := <-m.ch:
		return a.c, a.err
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *multiListener) Close() error {
	m.once.Do(func() {
		close(m.done)
		for _, ln := range m.lns {
			ln.Close()
		}
	})
	return nil
}

func (m *multiListener) Addr() net.Addr { return m.lns[0].Addr() }

// IsLoopback reports whether a TCP listener's address is loopback.
func IsLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	return ok && ip.Unmap().IsLoopback()
}
