package testenv

import (
	"fmt"
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
	Eventually(r.t, 30*time.Second, "redis-server to answer PING", func() bool {
		got, err := command("unix", r.Socket, "PING")
		return err == nil && got == "+PONG\r\n"
	})
}

// Kill SIGKILLs the server (a crash, or the fleet losing its store).
func (r *Redis) Kill() {
	if r.cmd != nil {
		killServer(r.cmd, r.done, r.Socket)
		r.cmd = nil
	}
}

// killServer SIGKILLs a server, waits for it (done closes when it has
// exited) and removes its socket.
func killServer(cmd *exec.Cmd, done <-chan struct{}, socket string) {
	_ = cmd.Process.Kill()
	<-done
	_ = os.Remove(socket)
}

// Pause makes the server answer no client for d (CLIENT PAUSE … ALL): a
// Redis that is busy, or a network that drops packets rather than refusing
// connections, which a killed server on a Unix socket does at once. It
// returns once the pause is in force.
func (r *Redis) Pause(d time.Duration) {
	r.t.Helper()
	got, err := command("unix", r.Socket, fmt.Sprintf("CLIENT PAUSE %d ALL", d.Milliseconds()))
	if err != nil || got != "+OK\r\n" {
		r.t.Fatalf("redis pause: answered %q, %v", got, err)
	}
}
