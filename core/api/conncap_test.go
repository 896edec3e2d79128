package api

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/access"
)

// idleConn makes one request on a new connection, reads the answer and
// leaves the connection open, idle in keep-alive.
func idleConn(t *testing.T, sock, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(headerTimeout / 2))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: sluice\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return c, br
}

// TestConnCapClosesOldestIdle: past max connections, idle keep-alive
// connections (lane and net/http ones alike) are closed oldest first, the
// daemon holds at most the cap, a new caller is answered, and the newest
// idle connections still work.
func TestConnCapClosesOldestIdle(t *testing.T) {
	t.Parallel()
	const max, flood = 20, 200
	sock, f := startFrontCap(t, &testBackend{}, max)
	type conn struct {
		c  net.Conn
		br *bufio.Reader
	}
	var conns []conn
	for i := range flood {
		// Half stay in the lane (hits), half were handed to net/http.
		path := "/v1/p/cached"
		if i%2 == 1 {
			path = "/v1/health"
		}
		c, br := idleConn(t, sock, path)
		conns = append(conns, conn{c, br})
		if st := f.ConnStats(); st.Open > max {
			t.Fatalf("after %d connections %d are open, cap %d", i+1, st.Open, max)
		}
	}
	if r := roundTrip(t, sock, "GET /v1/health HTTP/1.1\r\nHost: sluice\r\n\r\n"); r.StatusCode != http.StatusOK {
		t.Fatalf("health during the flood: %d", r.StatusCode)
	}
	if st := f.ConnStats(); st.Evicted < flood-max {
		t.Fatalf("stats %+v: want at least %d closed to make room", st, flood-max)
	}
	// The oldest were closed: reading gives EOF.
	conns[0].c.SetReadDeadline(time.Now().Add(headerTimeout / 2))
	if _, err := conns[0].br.ReadByte(); err == nil {
		t.Fatal("the oldest idle connection is still open")
	}
	// The newest still serve (one on each path).
	for _, cn := range conns[flood-2:] {
		io.WriteString(cn.c, "GET /v1/p/cached HTTP/1.1\r\nHost: sluice\r\n\r\n")
		resp, err := http.ReadResponse(cn.br, nil)
		if err != nil {
			t.Fatalf("a recent idle connection was closed: %v", err)
		}
		resp.Body.Close()
	}
}

// TestConnCapKeepsBusyConnections: a connection mid-request is never
// closed to make room; the caller past the cap is still served, and the
// one after waits until a connection goes idle.
func TestConnCapKeepsBusyConnections(t *testing.T) {
	t.Parallel()
	b := &blockingBackend{testBackend: &testBackend{}, release: make(chan struct{}), entered: make(chan struct{}, 4)}
	sock, f := startFrontCap(t, b, 2)
	// Two requests held mid-answer fill the cap.
	var busy []*bufio.Reader
	for range 2 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(headerTimeout))
		io.WriteString(c, "GET /v1/p/slow HTTP/1.1\r\nHost: sluice\r\n\r\n")
		busy = append(busy, bufio.NewReader(c))
		<-b.entered
	}
	// Served although both are busy: one over the cap.
	if r := roundTrip(t, sock, "GET /v1/health HTTP/1.1\r\nHost: sluice\r\n\r\n"); r.StatusCode != http.StatusOK {
		t.Fatalf("health past the cap: %d", r.StatusCode)
	}
	close(b.release)
	for i, br := range busy {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("busy connection %d was closed: %v", i, err)
		}
		resp.Body.Close()
	}
	if st := f.ConnStats(); st.Peak > 3 {
		t.Fatalf("peak %d connections, want at most cap+1", st.Peak)
	}
}

// blockingBackend holds provider calls to "slow" until release.
type blockingBackend struct {
	*testBackend
	release chan struct{}
	entered chan struct{}
}

func (b *blockingBackend) ServeProvider(w http.ResponseWriter, r *http.Request, provider, rest string) {
	if rest == "slow" {
		b.entered <- struct{}{}
		<-b.release
	}
	b.testBackend.ServeProvider(w, r, provider, rest)
}

// TestAccessLogMode: "misses" drops hit lines only, "off" every line,
// "all" none; metrics see every request whatever the mode.
func TestAccessLogMode(t *testing.T) {
	for _, tt := range []struct {
		mode      string
		hit, miss bool
	}{{"all", true, true}, {"misses", false, true}, {"off", false, false}} {
		t.Run(tt.mode, func(t *testing.T) {
			var w recordingWriter
			obs := &countingObserver{}
			s := NewServer(&testBackend{}, slog.New(slog.NewTextHandler(io.Discard, nil)), obs)
			s.SetAccessWriter(&w)
			s.SetAccessLog(tt.mode)
			g := access.Grant{}
			s.logRequest(context.Background(), g, "GET", "/v1/p/x", 200, &Info{Provider: "p", Outcome: "hit"}, 0)
			s.logRequest(context.Background(), g, "GET", "/v1/p/y", 200, &Info{Provider: "p", Outcome: "miss"}, 0)
			if got := w.has("hit"); got != tt.hit {
				t.Errorf("hit line written: %v, want %v", got, tt.hit)
			}
			if got := w.has("miss"); got != tt.miss {
				t.Errorf("miss line written: %v, want %v", got, tt.miss)
			}
			if obs.n != 2 {
				t.Errorf("metrics saw %d requests, want 2", obs.n)
			}
		})
	}
}

type recordingWriter struct{ outcomes []string }

func (w *recordingWriter) WriteAccess(r *AccessRecord) {
	w.outcomes = append(w.outcomes, r.Info.Outcome)
}
func (w *recordingWriter) has(o string) bool { return slices.Contains(w.outcomes, o) }

type countingObserver struct{ n int }

func (o *countingObserver) ObserveRequest(string, string, string, time.Duration, time.Duration) {
	o.n++
}
func (o *countingObserver) Denied(string) {}
func (o *countingObserver) FastLane()     {}
