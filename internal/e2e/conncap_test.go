package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
)

// fdCount is how many descriptors pid has open.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// idleKeepAlive opens a connection, makes one request on it, reads the
// answer and leaves it open: idle in keep-alive.
func idleKeepAlive(t *testing.T, socket, target string) {
	t.Helper()
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: sluice\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("request on connection to be left idle: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// TestConnectionFlood: a flood of idle keep-alive connections (lane hits
// and net/http ones) neither exhausts the daemon's descriptors nor keeps a
// new caller from health and status: past max_connections the oldest idle
// ones are closed. Run with an explicit cap, and with the default under a
// small open-file limit, where before the cap 400 idle connections left
// the daemon unable to accept anyone.
func TestConnectionFlood(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		opts     testenv.Options
		flood    int
		capacity int // the cap the daemon must keep to
	}{
		{"explicit cap", testenv.Options{Top: "max_connections = 20"}, 200, 20},
		// 256 - 128 - 256/16 = 112.
		{"default from fd limit", testenv.Options{Launcher: []string{"prlimit", "--nofile=256:256", "--"}}, 400, 112},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := testenv.Start(t, tt.opts)
			ctx := testenv.Ctx(t, 2*time.Minute)
			id := trackID(900)
			if r, err := track(ctx, env.Client, id, nil); err != nil || r.Status != 200 {
				t.Fatalf("priming miss: %v %v", r, err)
			}
			pid := env.DaemonPID()
			base := fdCount(t, pid)
			hit := "/v1/ineo/spotify.php?trackId=" + id
			most := 0
			for i := range tt.flood {
				target := hit
				if i%2 == 1 {
					target = "/v1/health"
				}
				idleKeepAlive(t, env.Socket, target)
				most = max(most, fdCount(t, pid))
			}
			// The allowance: the new connection admitted before an old
			// one is closed, and descriptors the daemon opens meanwhile.
			if limit := base + tt.capacity + 8; most > limit {
				t.Errorf("daemon held %d descriptors during the flood (%d before it), want at most %d", most, base, limit)
			}
			// A new caller is answered well within the idle timeout (2m)
			// that would otherwise be the only way out.
			fresh := testenv.Ctx(t, 30*time.Second)
			if h, err := env.Client.Health(fresh); err != nil || h.Status != "ok" {
				t.Fatalf("health after the flood: %v %v", h, err)
			}
			if _, err := env.Client.Status(fresh); err != nil {
				t.Fatalf("status after the flood: %v", err)
			}
			if r, err := track(fresh, env.Client, id, nil); err != nil || r.Status != 200 {
				t.Fatalf("hit after the flood: %v %v", r, err)
			}
			t.Logf("descriptors: %d before, at most %d during a flood of %d idle connections (cap %d)", base, most, tt.flood, tt.capacity)
		})
	}
}

// TestAccessLogModes: access_log = "all" logs hits and misses, "misses"
// only misses (and other routes), "off" nothing; a reload applies it.
func TestAccessLogModes(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{Top: `access_log = "all"`})
	ctx := testenv.Ctx(t, 2*time.Minute)
	n := 920
	// round makes one miss and one hit (lane) and a status call, then
	// waits for the status line, which every mode but off writes, so
	// the lines of the round before it are flushed.
	lines := func(outcome string) int { return strings.Count(env.Log(), `"outcome":"`+outcome+`"`) }
	round := func(mode string) (misses, hits int) {
		t.Helper()
		m0, h0 := lines("miss"), lines("hit")
		id := trackID(n)
		n++
		for range 2 {
			if r, err := track(ctx, env.Client, id, nil); err != nil || r.Status != 200 {
				t.Fatalf("%s: %v %v", mode, r, err)
			}
		}
		marker := strings.Count(env.Log(), `"path":"/v1/status"`)
		if _, err := env.Client.Status(ctx); err != nil {
			t.Fatal(err)
		}
		if mode != "off" {
			testenv.Eventually(t, 10*time.Second, "the status line", func() bool {
				return strings.Count(env.Log(), `"path":"/v1/status"`) > marker
			})
		} else {
			// Nothing to wait for: give the buffer (flushed every
			// 100ms) ample time, then check nothing came.
			deadline := time.Now().Add(time.Second)
			for time.Now().Before(deadline) && lines("miss") == m0 {
				time.Sleep(50 * time.Millisecond)
			}
		}
		return lines("miss") - m0, lines("hit") - h0
	}
	want := map[string][2]int{"all": {1, 1}, "misses": {1, 0}, "off": {0, 0}}
	cfg := env.ConfigText()
	for i, mode := range []string{"all", "misses", "off", "all"} {
		if i > 0 {
			env.WriteConfig(strings.Replace(cfg, `access_log = "all"`, `access_log = "`+mode+`"`, 1))
			if _, err := env.Client.Reload(ctx); err != nil {
				t.Fatal(err)
			}
		}
		m, h := round(mode)
		if w := want[mode]; m != w[0] || h != w[1] {
			t.Errorf("access_log = %q: %d miss and %d hit lines, want %d and %d", mode, m, h, w[0], w[1])
		}
	}
}
