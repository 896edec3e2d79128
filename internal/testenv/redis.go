package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Redis is a real redis-server for fleet tests, on a Unix socket in a temp
// dir, with no persistence (--save ""), so a restart comes back empty.
type Redis struct {
	t      testing.TB
	Dir    string
	Socket string
	// URL is what a daemon's [fleet] redis_url takes.
	URL  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartRedis starts redis-server, or skips the test, printing why, where it
// is not installed (.ci/run installs Debian's redis-server).
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed (Debian package redis-server; .ci/run installs it): fleet tests skipped")
	}
	dir, err := os.MkdirTemp("", "rd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &Redis{t: t, Dir: dir, Socket: filepath.Join(dir, "redis.sock")}
	r.URL = "unix://" + r.Socket
	r.Start()
	t.Cleanup(r.Kill)
	return r
}

// Start starts (or restarts) the server and waits until it answers.
func (r *Redis) Start() {
	r.t.Helper()
	cmd := exec.Command("redis-server", "--port", "0", "--unixsocket", r.Socket, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", r.Dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	go func(c *exec.Cmd, ch chan struct{}) { _ = c.Wait(); close(ch) }(cmd, r.done)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if c, err := net.Dial("unix", r.Socket); err == nil {
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 16)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(buf)
			c.Close()
			if string(buf[:n]) == "+PONG\r\n" {
				return
			}
		}
		select {
		case <-ctx.Done():
			r.t.Fatal("redis-server did not answer within 30 s")
		case <-time.After(20 * time.Millisecond): // polling interval
		}
	}
}

// Kill SIGKILLs the server (a crash, or the fleet losing its store).
func (r *Redis) Kill() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
	_ = os.Remove(r.Socket)
}

// Pause makes the server answer no client for d (CLIENT PAUSE … ALL): a
// Redis that is busy, or a network that drops packets rather than refusing
// connections, which a killed server on a Unix socket does at once. It
// returns once the pause is in force.
func (r *Redis) Pause(d time.Duration) {
	r.t.Helper()
	c, err := net.Dial("unix", r.Socket)
	if err != nil {
		r.t.Fatalf("redis pause: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "CLIENT PAUSE %d ALL\r\n", d.Milliseconds()); err != nil {
		r.t.Fatalf("redis pause: %v", err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "+OK\r\n" {
		r.t.Fatalf("redis pause: answered %q, %v", buf[:n], err)
	}
}
