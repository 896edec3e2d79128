package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
)

// rawRequest writes a raw HTTP request to the socket and returns the status.
func rawRequest(t *testing.T, socket, req string) int {
	t.Helper()
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// The daemon may answer and close before the request is fully written
	// (oversized headers): write concurrently and read the answer anyway.
	go io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading answer to %.60q: %v", req, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func vmRSSKiB(pid int) int {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(rest)[0])
			return n
		}
	}
	return 0
}

// TestHostileRequests: oversized, malformed and slow requests get clear
// 4xx answers or are cut off, cost nothing upstream, and leave the daemon
// serving with bounded memory.
func TestHostileRequests(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, time.Minute)

	// A 1 MB query string.
	resp, err := env.Client.Do(ctx, "GET", "/v1/ineo/spotify.php", url.Values{"trackId": {strings.Repeat("a", 1<<20)}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode > 499 {
		t.Errorf("1 MB query: %d, want 4xx", resp.StatusCode)
	}

	// A 100 MB body, streamed (never in memory on our side either).
	body := io.LimitReader(zeroReader{}, 100<<20)
	resp, err = env.Client.Do(ctx, "POST", "/v1/ineo/spotify.php", nil, body, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("100 MB body: %d, want 413", resp.StatusCode)
		}
	} // else: the daemon closed the connection mid-upload, which is fine.

	cases := []struct {
		name string
		raw  string
		want int
	}{
		{"invalid UTF-8 value", "GET /v1/ineo/spotify.php?trackId=%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"invalid UTF-8 name", "GET /v1/ineo/spotify.php?%ff=1&trackId=6fx5VOjqYNBHcDf5GIF5g5 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"path traversal", "GET /v1/ineo/../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404},
		{"encoded traversal", "GET /v1/ineo/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404},
		{"provider traversal", "GET /v1/../v1/status/x HTTP/1.1\r\nHost: x\r\n\r\n", 404},
		{"header flood", "GET /v1/status HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Flood: "+strings.Repeat("y", 100)+"\r\n", 2000) + "\r\n", 431},
	}
	for _, tc := range cases {
		if got := rawRequest(t, env.Socket, tc.raw); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}

	// Slowloris: many connections that never finish their headers must not
	// keep others from being served.
	var slow []net.Conn
	for range 200 {
		c, err := net.Dial("unix", env.Socket)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		slow = append(slow, c)
	}
	start := time.Now()
	if _, err := env.Client.Status(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("status took %s with 200 stalled connections", d)
	}
	for _, c := range slow {
		c.Close()
	}

	if n := env.Ineo.Requests("spotify") + env.Ineo.Requests("tmanage"); n != 0 {
		t.Errorf("hostile requests cost %d upstream requests", n)
	}
	if rss := vmRSSKiB(env.DaemonPID()); rss > 200<<10 {
		t.Errorf("daemon RSS %d KiB after hostile requests", rss)
	}
	if h, err := env.Client.Health(ctx); err != nil || h.Status != "ok" {
		t.Fatalf("daemon unhealthy afterwards: %+v %v", h, err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}
