package api

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
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

// TestConnCapOrder: the connection idle longest is the one closed, however
// old the connection; a closed one is not served; a busy one is kept.
func TestConnCapOrder(t *testing.T) {
	k := newConnCap(2)
	conn := func() (net.Conn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return a, b
	}
	ca, _ := conn()
	cb, _ := conn()
	a, b := k.add(ca), k.add(cb)
	k.setActive(a)
	k.setActive(b)
	now := time.Now()
	k.setIdle(b, now)
	k.setIdle(a, now.Add(time.Millisecond)) // a: the older connection, idle a shorter time
	cc, _ := conn()
	c := k.add(cc)
	if k.setActive(b) {
		t.Fatal("b, idle longest, was not closed to make room")
	}
	if !k.setActive(a) {
		t.Fatal("a was closed instead of b")
	}
	// a busy, c idle: a fourth closes c, not a.
	cd, _ := conn()
	k.add(cd)
	if k.setActive(c) || !k.setActive(a) {
		t.Fatal("want c (idle) closed and a (busy) kept")
	}
	if st := k.stats(); st.Open != 2 || st.Evicted != 2 {
		t.Fatalf("stats %+v, want 2 open and 2 evicted", st)
	}
}

// TestConnCapWaitWakes: waitRoom, blocked while every connection over the
// cap is busy, returns once one of them goes idle.
func TestConnCapWaitWakes(t *testing.T) {
	k := newConnCap(1)
	x1, x2 := net.Pipe()
	y1, y2 := net.Pipe()
	defer func() { x1.Close(); x2.Close(); y1.Close(); y2.Close() }()
	k.setActive(k.add(x1))
	y := k.add(y1)
	k.setActive(y)
	done := make(chan struct{})
	go func() { k.waitRoom(nil); close(done) }()
	for deadline := time.Now().Add(10 * time.Second); k.waiting.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("waitRoom did not wait with every connection busy")
		}
		runtime.Gosched()
	}
	select {
	case <-done:
		t.Fatal("waitRoom returned with every connection busy")
	default:
	}
	k.setIdle(y, time.Now())
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("waitRoom still waits after a connection went idle")
	}
}

// TestConnCapNeverEvictsBusy: connections going busy and idle while new
// ones keep arriving past the cap; a connection that setActive let through
// is never closed before it goes idle again.
func TestConnCapNeverEvictsBusy(t *testing.T) {
	k := newConnCap(8)
	var wg sync.WaitGroup
	for range 8 {
		c1, c2 := net.Pipe()
		defer c2.Close()
		cc := k.add(c1)
		wg.Go(func() {
			for range 2000 {
				if !k.setActive(cc) {
					return // evicted while idle: fine
				}
				if st := cc.state.Load(); st != capActive {
					t.Errorf("a busy connection is in state %d", st)
					return
				}
				k.setIdle(cc, time.Now())
			}
		})
	}
	for range 200 {
		c1, c2 := net.Pipe()
		defer c2.Close()
		k.setActive(k.add(c1))
	}
	wg.Wait()
}

type closeOnlyConn struct{ net.Conn }

func (closeOnlyConn) Close() error { return nil }

// BenchmarkConnCapEvict: admitting a connection at the default cap of
// 1,024, every one idle, which scans them all for the oldest.
func BenchmarkConnCapEvict(b *testing.B) {
	k := newConnCap(1024)
	for range 1024 {
		k.add(closeOnlyConn{})
	}
	for b.Loop() {
		k.add(closeOnlyConn{})
	}
}

// BenchmarkConnCapRequest: what each request costs the cap (busy, then
// idle), from many connections at once.
func BenchmarkConnCapRequest(b *testing.B) {
	k := newConnCap(1024)
	b.RunParallel(func(pb *testing.PB) {
		cc := k.add(closeOnlyConn{})
		for pb.Next() {
			k.setActive(cc)
			k.setIdle(cc, time.Now())
		}
	})
}
