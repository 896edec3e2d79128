package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
)

// rssKiB is pid's resident set in KiB.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// plainDaemon builds sluiced without the race detector and returns a
// testenv Launcher that runs it in place of the race-built one. The race
// runtime keeps its own memory per goroutine that it never returns (a
// race-built daemon held ~65 KiB per idle connection, and 300 MB after
// 6,000 of them closed): RSS is only worth asserting on the binary users
// run.
func plainDaemon(t *testing.T) []string {
	t.Helper()
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "sluiced")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/daemon")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(mod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// sh -c 'shift; exec "$0" "$@"' BIN <race sluiced> --config ...
	return []string{"sh", "-c", `shift; exec "$0" "$@"`, bin}
}

// TestFloodMemoryReturned: after a flood of idle keep-alive connections
// closes, the daemon's resident memory comes back to near what it was
// before. net/http parks each closed connection's buffers in sync.Pools,
// which only an idle daemon's second collection empties: with one
// debug.FreeOSMemory, 2,000 closed connections left 24 MB resident; now
// about 5.
func TestFloodMemoryReturned(t *testing.T) {
	t.Parallel()
	const (
		flood = 2000
		// allowance is what may stay: the runtime keeps a dead
		// goroutine's descriptor for reuse, and memory the daemon
		// touches meanwhile (logs, metrics). Measured: 5.6 MB after
		// 2,000 connections; 24 MB before the fix.
		allowance = 12 << 10 // KiB
	)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Max < flood+1000 {
		t.Skipf("needs an open-file limit over %d (hard limit %d)", flood+1000, rl.Max)
	}
	env := testenv.Start(t, testenv.Options{Top: "max_connections = 4000", Launcher: plainDaemon(t)})
	ctx := testenv.Ctx(t, 3*time.Minute)
	id := trackID(950)
	if r, err := track(ctx, env.Client, id, nil); err != nil || r.Status != 200 {
		t.Fatalf("priming miss: %v %v", r, err)
	}
	pid := env.DaemonPID()
	idle := rssKiB(t, pid)
	conns := make([]net.Conn, 0, flood)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range flood {
		// Mostly net/http connections (whose buffers are pooled),
		// some fast-lane hits.
		target := "/v1/health"
		if i%4 == 0 {
			target = "/v1/ineo/spotify.php?trackId=" + id
		}
		c, err := net.DialTimeout("unix", env.Socket, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(time.Minute))
		io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: sluice\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	peak := rssKiB(t, pid)
	if peak-idle < 2*allowance {
		t.Fatalf("the flood grew RSS only from %d to %d KiB: too little to tell a release from none", idle, peak)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	// The daemon checks every 10 s whether a flood is over.
	var now int
	deadline := time.Now().Add(60 * time.Second)
	for {
		now = rssKiB(t, pid)
		if now <= idle+allowance || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("RSS: %d KiB idle, %d KiB with %d idle connections (%.1f KiB each), %d KiB after they closed",
		idle, peak, flood, float64(peak-idle)/flood, now)
	if now > idle+allowance {
		t.Errorf("RSS %d KiB 60 s after the flood closed, want at most %d (idle %d + %d)", now, idle+allowance, idle, allowance)
	}
	if !strings.Contains(env.Log(), "connection flood over") {
		t.Error("no release logged")
	}
}
