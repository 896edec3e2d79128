package access

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as a TCP client under another uid:
// with SLUICE_TEST_DIAL set it connects there, says its uid and waits.
func TestMain(m *testing.M) {
	if addr := os.Getenv("SLUICE_TEST_DIAL"); addr != "" {
		c, err := net.Dial(os.Getenv("SLUICE_TEST_NET"), addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		fmt.Fprintf(c, "%d\n", os.Getuid())
		bufio.NewReader(c).ReadString('\n')
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestTCPPeerUID: the kernel's uid of a loopback TCP client, over IPv4 and
// IPv6, for this process and (as root) for a client running as nobody.
func TestTCPPeerUID(t *testing.T) {
	for _, nw := range []struct{ net, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(nw.net, func(t *testing.T) {
			ln, err := net.Listen(nw.net, nw.addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", nw.net, err)
			}
			defer ln.Close()
			check := func(t *testing.T, want uint32, cmd *exec.Cmd) {
				t.Helper()
				var cli net.Conn
				if cmd == nil {
					if cli, err = net.Dial(nw.net, ln.Addr().String()); err != nil {
						t.Fatal(err)
					}
					defer cli.Close()
				} else {
					cmd.Env = append(os.Environ(), "SLUICE_TEST_DIAL="+ln.Addr().String(), "SLUICE_TEST_NET="+nw.net)
					cmd.Stderr = os.Stderr
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					defer cmd.Wait()
				}
				ln.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
				c, err := ln.Accept()
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				p, err := PeerOf(c)
				if err != nil {
					t.Fatalf("PeerOf: %v", err)
				}
				if p.UID != want {
					t.Fatalf("peer uid %d, want %d", p.UID, want)
				}
				c.Write([]byte("bye\n"))
			}
			t.Run("self", func(t *testing.T) { check(t, uint32(os.Getuid()), nil) })
			t.Run("nobody", func(t *testing.T) {
				if os.Getuid() != 0 {
					t.Skip("running a client as another uid needs root")
				}
				cmd := exec.Command(worldExecutable(t), "-test.run=^$")
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
				check(t, 65534, cmd)
			})
		})
	}
}

// TestTCPPeerNotLoopback: a peer that is not on loopback is never looked
// up (a remote port could match a local listener's).
func TestTCPPeerNotLoopback(t *testing.T) {
	if _, err := tcpPeerUID(mustAP("127.0.0.1:8750"), mustAP("192.0.2.7:40000")); err == nil {
		t.Fatal("a remote peer was given a uid")
	}
}

// TestTCPPeerGone: a 4-tuple no live socket has (the client is gone) is
// an error, never uid 0.
func TestTCPPeerGone(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Nobody connects from port 1: a lookup of it must find nothing,
	// not the listener on the other port.
	if uid, err := tcpPeerUID(mustAP(ln.Addr().String()), mustAP("127.0.0.1:1")); err == nil {
		t.Fatalf("uid %d for a socket that does not exist", uid)
	}
	// A client that closed first leaves a TIME_WAIT socket, which the
	// kernel reports as uid 0.
	cli, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cli.Close()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after the client closed")
	}
	c.Close()
	if uid, err := tcpPeerUID(mustAP(c.LocalAddr().String()), mustAP(c.RemoteAddr().String())); err == nil {
		t.Fatalf("uid %d for a closed client's socket", uid)
	}
}

func mustAP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// worldExecutable is a copy of the test binary that another uid may run
// (go test builds it in a directory only its owner may enter).
func worldExecutable(t *testing.T) string {
	dir, err := os.MkdirTemp("", "sluice-access-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "client")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}
