package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Sentinel is a Redis master on loopback TCP watched by one Sentinel, for
// fleet mode's sentinel_addrs/master_name path. Sentinels speak TCP only,
// and announce the master by IP and port, so neither can live on a Unix
// socket as StartRedis's server does.
type Sentinel struct {
	// Addr is the Sentinel's host:port (a [fleet] sentinel_addrs entry),
	// MasterName the name it knows the master by, MasterAddr the
	// master's own host:port.
	Addr, MasterName, MasterAddr string
	// Password is the master's requirepass, SentinelPassword the
	// Sentinel's own ("" for none): SentinelOptions.
	Password, SentinelPassword string
}

// SentinelOptions protects the master and the Sentinel with passwords, as
// a production deployment does ([fleet] password and sentinel_password).
type SentinelOptions struct {
	Password, SentinelPassword string
}

// StartSentinel starts a master and a Sentinel monitoring it, or skips the
// test, printing why, where redis-server is not installed. Both are
// stopped when the test ends.
func StartSentinel(t testing.TB) *Sentinel { return StartSentinelWith(t, SentinelOptions{}) }

// StartSentinelWith is StartSentinel with passwords on the master and on
// the Sentinel.
func StartSentinelWith(t testing.TB, o SentinelOptions) *Sentinel {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed (Debian package redis-server; .ci/run installs it): Sentinel tests skipped")
	}
	dir := t.TempDir()
	mport, sport := freePort(t), freePort(t)
	s := &Sentinel{Addr: fmt.Sprintf("127.0.0.1:%d", sport), MasterName: "sluice", MasterAddr: fmt.Sprintf("127.0.0.1:%d", mport),
		Password: o.Password, SentinelPassword: o.SentinelPassword}
	args := []string{"--port", fmt.Sprint(mport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}
	if o.Password != "" {
		args = append(args, "--requirepass", o.Password)
	}
	startProc(t, "redis-server", args...)
	waitPong(t, s.MasterAddr, o.Password)
	// A Sentinel rewrites its config file: it must be writable, and its own.
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s 127.0.0.1 %d 1\nsentinel down-after-milliseconds %s 5000\n",
		sport, dir, s.MasterName, mport, s.MasterName)
	if o.Password != "" {
		text += fmt.Sprintf("sentinel auth-pass %s %s\n", s.MasterName, o.Password)
	}
	if o.SentinelPassword != "" {
		text += fmt.Sprintf("requirepass %s\n", o.SentinelPassword)
	}
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	startProc(t, "redis-server", conf, "--sentinel")
	waitPong(t, s.Addr, o.SentinelPassword)
	// Ready once it names the master to clients, as go-redis asks.
	Eventually(t, 30*time.Second, "the Sentinel to name its master", func() bool {
		got, err := commandAuth("tcp", s.Addr, o.SentinelPassword, "SENTINEL get-master-addr-by-name "+s.MasterName)
		return err == nil && strings.Contains(got, "127.0.0.1") && strings.Contains(got, fmt.Sprint(mport))
	})
	return s
}

func startProc(t testing.TB, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitPong(t testing.TB, addr, password string) {
	t.Helper()
	Eventually(t, 30*time.Second, addr+" to answer PING", func() bool {
		got, err := commandAuth("tcp", addr, password, "PING")
		return err == nil && strings.HasPrefix(got, "+PONG")
	})
}

// command sends one inline command to a Redis server or Sentinel and
// returns the raw reply's lines: enough for the test helpers' PING, CLIENT
// PAUSE and SENTINEL questions, without a client library.
func command(network, addr, cmd string) (string, error) { return commandAuth(network, addr, "", cmd) }

// commandAuth is command on a server that requires a password ("" for
// none): AUTH first, then cmd.
func commandAuth(network, addr, password, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(c)
	if password != "" {
		if _, err := fmt.Fprintf(c, "AUTH %s\r\n", password); err != nil {
			return "", err
		}
		if got, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(got, "+OK") {
			return "", fmt.Errorf("AUTH: %q, %v", got, err)
		}
	}
	if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
		return "", err
	}
	var sb strings.Builder
	first, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	sb.WriteString(first)
	if strings.HasPrefix(first, "*") { // an array of bulk strings: read them
		var n int
		fmt.Sscanf(first, "*%d", &n)
		for range 2 * n {
			line, err := r.ReadString('\n')
			if err != nil {
				return "", err
			}
			sb.WriteString(line)
		}
	}
	return sb.String(), nil
}
