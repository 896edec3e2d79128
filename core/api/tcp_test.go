package api

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/access"
	"github.com/sluice-dev/sluice/core/problem"
)

// tcpBackend is testBackend with a chosen tier for every peer, and a
// record of what reached the provider route.
type tcpBackend struct {
	testBackend
	level atomic.Int32
	mu    sync.Mutex
	auth  []string // Authorization values the provider route saw
	peers []access.Peer
}

func (b *tcpBackend) Level(p access.Peer) access.Level {
	b.mu.Lock()
	b.peers = append(b.peers, p)
	b.mu.Unlock()
	return access.Level(b.level.Load())
}

func (b *tcpBackend) ServeProvider(w http.ResponseWriter, r *http.Request, provider, rest string) {
	b.mu.Lock()
	b.auth = append(b.auth, r.Header.Values("Authorization")...)
	b.mu.Unlock()
	if rest == "destroy" && access.FromContext(r.Context()).Level < access.Admin {
		problem.Write(w, problem.Forbidden("admin only"))
		return
	}
	b.testBackend.ServeProvider(w, r, provider, rest)
}

// startTCPFront serves one Front on a Unix socket and a loopback TCP
// listener together, as the daemon does with http_listen; its Server is
// returned for tests that change the policy as a reload would.
func startTCPFront(t *testing.T, b Backend, pol *TCPPolicy) (sock, addr string, s *Server) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "s.sock")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s = NewServer(b, nil, nil)
	s.SetTCPPolicy(pol)
	srv := &http.Server{Handler: s, ReadHeaderTimeout: headerTimeout, ConnContext: ConnContext,
		ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	f := s.NewFront(srv, 0)
	done := make(chan error, 1)
	go func() { done <- f.Serve(Listeners(uln, tln)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.Shutdown(ctx)
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
	})
	return sock, tln.Addr().String(), s
}

// tcpTrip sends raw on a new TCP connection and reads one answer.
func tcpTrip(t *testing.T, addr, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(headerTimeout / 2))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to %q: %v", raw, err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// TestTCPHostChecked: on the TCP listener a Host that names neither the
// listener's address, localhost with its port nor an http_hosts name gets
// 421 before any routing: no cache lookup, no provider call, whatever the
// route. The socket knows no such check.
func TestTCPHostChecked(t *testing.T) {
	b := &tcpBackend{}
	b.level.Store(int32(access.Read))
	sock, addr, _ := startTCPFront(t, b, NewTCPPolicy([]string{"sluice.test", "Other.Test:9"}, access.None, ""))
	_, port, _ := net.SplitHostPort(addr)
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{addr, true}, {"localhost:" + port, true}, {"LOCALHOST:" + port, true}, {"sluice.test:" + port, true}, {"other.test:9", true},
		{"evil.example:" + port, false}, {"evil.example", false}, {"localhost", false}, {"127.0.0.1", false},
		{"localhost:1", false}, {"sluice.test", false}, {"other.test:" + port, false}, {"127.0.0.2:" + port, false}, {"", false},
	} {
		for _, path := range []string{"/v1/p/cached", "/v1/p/miss", "/v1/health", "/nowhere"} {
			t.Run(tc.host+path, func(t *testing.T) {
				calls, lookups := b.providerCalls.Load(), b.lookups.Load()
				resp, body := tcpTrip(t, addr, "GET "+path+" HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n")
				if !tc.ok {
					var p problem.Problem
					if resp.StatusCode != http.StatusMisdirectedRequest || json.Unmarshal([]byte(body), &p) != nil || p.Type != TypeMisdirected {
						t.Fatalf("answer %d %s, want a 421 problem", resp.StatusCode, body)
					}
					if b.providerCalls.Load() != calls || b.lookups.Load() != lookups {
						t.Fatal("a misdirected request was routed")
					}
					return
				}
				if resp.StatusCode == http.StatusMisdirectedRequest {
					t.Fatalf("refused: %s", body)
				}
			})
		}
	}
	if resp := roundTrip(t, sock, "GET /v1/p/miss HTTP/1.1\r\nHost: evil.example\r\n\r\n"); resp.StatusCode != http.StatusOK {
		t.Fatalf("socket: %d, want 200 (the Host check is for TCP)", resp.StatusCode)
	}
}

// TestTCPBrowsersRefused: the socket's browser refusals hold on TCP too,
// on the lane's hits as on misses.
func TestTCPBrowsersRefused(t *testing.T) {
	b := &tcpBackend{}
	b.level.Store(int32(access.Admin))
	_, addr, _ := startTCPFront(t, b, nil)
	for _, path := range []string{"/v1/p/cached", "/v1/p/miss"} {
		for _, h := range []string{"Origin: http://evil.example", "Origin: null", "Sec-Fetch-Site: same-origin", "Sec-Fetch-Site: cross-site", "Referer: http://x/"} {
			t.Run(path+"/"+h, func(t *testing.T) {
				calls := b.providerCalls.Load()
				resp, body := tcpTrip(t, addr, "GET "+path+" HTTP/1.1\r\nHost: "+addr+"\r\n"+h+"\r\n\r\n")
				if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "browser") || b.providerCalls.Load() != calls {
					t.Fatalf("answer %d %s, want 403 before the provider", resp.StatusCode, body)
				}
			})
		}
	}
}

// TestTCPTiersAndToken: a TCP caller gets its uid's tier (the kernel's
// uid: this process's), the admin token grants admin, a wrong or foreign
// Authorization is ignored (never a 401), and no Authorization header
// reaches the provider route.
func TestTCPTiersAndToken(t *testing.T) {
	b := &tcpBackend{}
	_, addr, _ := startTCPFront(t, b, NewTCPPolicy(nil, access.None, "tok-123"))
	req := func(path string, extra string) int {
		resp, body := tcpTrip(t, addr, "GET "+path+" HTTP/1.1\r\nHost: "+addr+"\r\n"+extra+"\r\n")
		if resp.StatusCode == http.StatusUnauthorized {
			t.Fatalf("401: %s", body)
		}
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name  string
		level access.Level
		path  string
		auth  string
		want  int
	}{
		{"none", access.None, "/v1/p/miss", "", http.StatusForbidden},
		{"none, hit", access.None, "/v1/p/cached", "", http.StatusForbidden},
		{"none, token", access.None, "/v1/p/miss", "Authorization: Bearer tok-123\r\n", http.StatusOK},
		{"none, token, scheme in lower case", access.None, "/v1/p/destroy", "Authorization: bearer tok-123\r\n", http.StatusOK},
		{"none, wrong token", access.None, "/v1/p/miss", "Authorization: Bearer tok-124\r\n", http.StatusForbidden},
		{"none, token's prefix", access.None, "/v1/p/miss", "Authorization: Bearer tok-12\r\n", http.StatusForbidden},
		{"none, token and more", access.None, "/v1/p/miss", "Authorization: Bearer tok-1234\r\n", http.StatusForbidden},
		{"read", access.Read, "/v1/p/miss", "", http.StatusOK},
		{"read, foreign bearer", access.Read, "/v1/p/miss", "Authorization: Bearer BQDsdk-token\r\n", http.StatusOK},
		{"read, foreign bearer, hit", access.Read, "/v1/p/cached", "Authorization: Bearer BQDsdk-token\r\n", http.StatusOK},
		{"read, admin route", access.Read, "/v1/p/destroy", "", http.StatusForbidden},
		{"read, admin route, basic", access.Read, "/v1/p/destroy", "Authorization: Basic dG9rLTEyMw==\r\n", http.StatusForbidden},
		{"read, admin route, token", access.Read, "/v1/p/destroy", "Authorization: Bearer tok-123\r\n", http.StatusOK},
		{"admin", access.Admin, "/v1/p/destroy", "", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.level.Store(int32(tc.level))
			if got := req(tc.path, tc.auth); got != tc.want {
				t.Fatalf("answer %d, want %d", got, tc.want)
			}
		})
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.auth) != 0 {
		t.Fatalf("the provider route saw Authorization %q", b.auth)
	}
	if len(b.peers) == 0 {
		t.Fatal("no peer was mapped to a tier")
	}
	for _, p := range b.peers {
		if p.UID != uint32(currentUID()) {
			t.Fatalf("peer uid %d, want this process's %d", p.UID, currentUID())
		}
	}
}

func currentUID() int { return os.Getuid() }

// TestTCPUnnamedPeerNeverAdmin: a peer the kernel cannot name (a client
// that closed its end before the lookup) gets http_level, but never admin,
// even where http_level says admin: admin over TCP is for a known uid or
// the token. (Found by review.)
func TestTCPUnnamedPeerNeverAdmin(t *testing.T) {
	for _, tc := range []struct {
		level access.Level
		want  access.Level
	}{
		{access.None, access.None},
		{access.Read, access.Read},
		{access.Admin, access.Read},
	} {
		s := NewServer(&tcpBackend{}, nil, nil)
		s.SetTCPPolicy(NewTCPPolicy(nil, tc.level, "tok"))
		r := httptest.NewRequest(http.MethodGet, "/v1/health", nil)
		g := access.FromContext(s.tcpGrant(context.Background(), r, access.Peer{}, false))
		if g.Level != tc.want || !g.TCP || g.Token {
			t.Errorf("http_level %v, unnamed peer: %+v, want level %v", tc.level, g, tc.want)
		}
		r.Header.Set("Authorization", "Bearer tok")
		if g := access.FromContext(s.tcpGrant(context.Background(), r, access.Peer{}, false)); g.Level != access.Admin || !g.Token {
			t.Errorf("http_level %v, unnamed peer with the token: %+v, want admin", tc.level, g)
		}
	}
}

// TestTCPHostRecheckedAfterReload: the lane remembers the Host a
// connection was allowed under, but a reloaded policy that drops the name
// refuses the very next request on that connection.
func TestTCPHostRecheckedAfterReload(t *testing.T) {
	b := &tcpBackend{}
	b.level.Store(int32(access.Read))
	_, addr, s := startTCPFront(t, b, NewTCPPolicy([]string{"sluice.test"}, access.None, ""))
	_, port, _ := net.SplitHostPort(addr)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(headerTimeout / 2))
	br := bufio.NewReader(c)
	ask := func() int {
		t.Helper()
		if _, err := io.WriteString(c, "GET /v1/p/cached HTTP/1.1\r\nHost: sluice.test:"+port+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 2 {
		if code := ask(); code != http.StatusOK {
			t.Fatalf("allowed Host: %d", code)
		}
	}
	s.SetTCPPolicy(NewTCPPolicy(nil, access.None, ""))
	if code := ask(); code != http.StatusMisdirectedRequest {
		t.Fatalf("after the reload dropped the name: %d, want 421", code)
	}
}
