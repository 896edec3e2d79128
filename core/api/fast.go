package api

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sluice-dev/sluice/core/access"
)

// Hit is a fresh cached answer, as Backend.Hit hands it to the fast lane.
type Hit struct {
	Operation string
	Status    int
	// Head is the answer's own header lines ("Name: value\r\n" each),
	// without framing headers (Content-Length, Cache-Status, Age, Date).
	Head []byte
	// HasDate: Head carries the answer's own Date, which net/http would
	// send instead of its own.
	HasDate   bool
	Body      []byte
	StoredAt  time.Time
	ExpiresAt time.Time
	// Extra is more header lines for this answer ("Name: value\r\n"
	// each): the RateLimit headers of the operation's bucket.
	Extra []byte
	// ETag, when set, is the answer's validator for this caller (answers
	// whose links carry the caller's base have one per base).
	ETag string
}

// Front serves the socket. Each connection starts in a lean HTTP/1.1 loop
// (the fast lane) that answers plain GETs of provider operations straight
// from the cache. The first request the lane does not answer itself (any
// miss, any other route, anything unusual: a body, a Cache-Control, a
// browser's Origin, Referer or Sec-Fetch-Site, an encoded path, HTTP/1.0, a
// line ending in a bare LF, an oversized head) hands the connection,
// with the bytes already read, to the net/http server, which then serves it
// for the rest of its life. Both produce the same answers and access-log
// lines; the lane only skips net/http's per-request machinery, which was a
// third of the daemon's CPU on cache hits.
type Front struct {
	s        *Server
	fallback *http.Server
	handoff  *handoffListener

	mu      sync.Mutex
	ln      net.Listener
	conns   map[*laneConn]struct{}
	closing atomic.Bool
	wg      sync.WaitGroup
	date    dateCache
	// cap bounds the connections open at once, lane and net/http alike;
	// stop ends a wait for room at Shutdown.
	cap  *connCap
	stop chan struct{}
}

// laneConn states, for Shutdown: only a connection waiting for its next
// request may be closed under it.
const (
	laneActive int32 = iota
	laneIdle
)

type laneConn struct {
	c     net.Conn
	state atomic.Int32
	cc    *capConn
	// handed: net/http owns the connection now, and untracks it.
	handed bool
}

// NewFront serves s's routes on fallback for everything the lane hands over.
// fallback's ReadHeaderTimeout and IdleTimeout bound the lane's reads too.
// maxConns caps the connections open at once (0: no cap; see connCap); it
// sets fallback.ConnState, keeping any hook already there.
func (s *Server) NewFront(fallback *http.Server, maxConns int) *Front {
	k := newConnCap(maxConns)
	fallback.ConnState = k.connState(fallback.ConnState)
	return &Front{s: s, fallback: fallback, conns: map[*laneConn]struct{}{}, cap: k, stop: make(chan struct{})}
}

// SetMaxConns changes the connection cap (0: none), e.g. on a reload.
func (f *Front) SetMaxConns(n int) { f.cap.setMax(n) }

// ConnStats reports the connections held.
func (f *Front) ConnStats() ConnStats { return f.cap.stats() }

// ResetPeak starts a new peak from the connections open now.
func (f *Front) ResetPeak() { f.cap.resetPeak() }

// laneBuffer bounds a request head the lane reads; a longer one goes to
// net/http, which enforces MaxHeaderBytes with the proper status.
const laneBuffer = 4096

// Serve accepts connections on ln until Shutdown, then returns
// http.ErrServerClosed.
func (f *Front) Serve(ln net.Listener) error {
	f.mu.Lock()
	f.ln = ln
	f.handoff = newHandoffListener(ln.Addr())
	f.mu.Unlock()
	go f.fallback.Serve(f.handoff)
	var delay time.Duration
	for {
		// Over the cap with every connection mid-request: the next
		// caller waits in the listen backlog until one finishes or
		// goes idle (and is closed).
		f.cap.waitRoom(f.stop)
		c, err := ln.Accept()
		if err != nil {
			if f.closing.Load() {
				return http.ErrServerClosed
			}
			// EMFILE and the like: pause and retry, as net/http does,
			// rather than stop serving.
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		lc := &laneConn{c: c}
		f.mu.Lock()
		if f.closing.Load() {
			f.mu.Unlock()
			c.Close()
			return http.ErrServerClosed
		}
		f.conns[lc] = struct{}{}
		f.wg.Add(1)
		f.mu.Unlock()
		lc.cc = f.cap.add(c)
		go f.serveConn(lc)
	}
}

// Shutdown stops accepting, closes lane connections between requests, lets
// the ones mid-answer finish, and shuts the net/http server down.
func (f *Front) Shutdown(ctx context.Context) error {
	if !f.closing.Swap(true) {
		close(f.stop)
	}
	f.mu.Lock()
	if f.ln != nil {
		f.ln.Close()
	}
	for lc := range f.conns {
		if lc.state.Load() == laneIdle {
			// Wakes the read; the loop sees closing and closes.
			lc.c.SetReadDeadline(time.Now())
		}
	}
	f.mu.Unlock()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return f.fallback.Shutdown(ctx)
}

func (f *Front) forget(lc *laneConn) {
	if !lc.handed {
		f.cap.remove(lc.cc)
	}
	f.mu.Lock()
	delete(f.conns, lc)
	f.mu.Unlock()
	f.wg.Done()
}

func (f *Front) serveConn(lc *laneConn) {
	defer f.forget(lc)
	c := lc.c
	peer, perr := access.PeerOf(c)
	rw := newLaneIO(c)
	br := bufio.NewReaderSize(rw, laneBuffer)
	var out []byte
	var allowed allowedHost
	first := true
	// deadline is the read deadline in force. Re-arming it costs a timer
	// update per request, so an idle deadline is only moved once half of
	// it has run out: the idle bound is then between half and all of
	// IdleTimeout.
	var deadline time.Time
	for {
		// A keep-alive connection waits up to IdleTimeout for its next
		// request, then the head must arrive within ReadHeaderTimeout,
		// as under net/http.
		wait := f.fallback.IdleTimeout
		if first || wait == 0 {
			wait = f.fallback.ReadHeaderTimeout
		}
		now := time.Now()
		if wait > 0 && (first || deadline.Sub(now) < wait/2) {
			deadline = now.Add(wait)
			c.SetReadDeadline(deadline)
		}
		lc.state.Store(laneIdle)
		f.cap.setIdle(lc.cc, now)
		if f.closing.Load() {
			c.Close()
			return
		}
		if _, err := br.Peek(1); err != nil {
			c.Close()
			return
		}
		lc.state.Store(laneActive)
		head, done := bufferedHead(br)
		var err error
		if !done {
			// The head is still coming in: it gets ReadHeaderTimeout.
			if !first && f.fallback.ReadHeaderTimeout > 0 {
				deadline = time.Now().Add(f.fallback.ReadHeaderTimeout)
				c.SetReadDeadline(deadline)
			}
			head, err = peekHead(br)
		}
		first = false
		// Only now is the connection busy: one still waiting for a
		// whole head may be closed to make room, and one that was
		// closed meanwhile is not served.
		if err != nil || !f.cap.setActive(lc.cc) {
			c.Close()
			return
		}
		start := time.Now()
		var req laneRequest
		if head == nil || perr != nil || !req.parse(head) || !f.s.laneHostAllowed(c, req.host, &allowed) {
			f.handOver(lc, br, peer, perr)
			return
		}
		g := access.Grant{Peer: peer, Level: f.s.b.Level(peer), Known: true}
		if g.Level < access.Read {
			f.handOver(lc, br, peer, perr)
			return
		}
		hit, ok := f.s.b.Hit(req.provider, req.rest, req.query, req.host)
		if !ok {
			f.handOver(lc, br, peer, perr)
			return
		}
		br.Discard(len(head))
		var cacheStatus string
		out, cacheStatus = appendHit(out[:0], &hit, start, &f.date)
		// Counted before the write: a client that has read the answer
		// and then reads /metrics must find it counted.
		if f.s.obs != nil {
			f.s.obs.FastLane()
		}
		if _, err := rw.Write(out); err != nil {
			c.Close()
			return
		}
		in := &Info{Provider: req.provider, Operation: hit.Operation, Outcome: "hit", Cache: cacheStatus}
		f.s.logRequest(context.Background(), g, http.MethodGet, req.path, hit.Status, in, time.Since(start))
	}
}

// handOver gives the connection to net/http, unread bytes included.
func (f *Front) handOver(lc *laneConn, br *bufio.Reader, peer access.Peer, perr error) {
	c := lc.c
	c.SetReadDeadline(time.Time{})
	hc := &handedConn{Conn: c, r: br, peer: peer, peerErr: perr, cc: lc.cc}
	if f.handoff.give(hc) {
		lc.handed = true
		return
	}
	c.Close()
}

// bufferedHead is the request head if it is already wholly buffered. done
// is false when more must be read first; true with a nil head when the lane
// will not read this head at all (a bare LF: see headEnd).
func bufferedHead(br *bufio.Reader) (head []byte, done bool) {
	buf, _ := br.Peek(br.Buffered())
	end, bare := headEnd(buf)
	if bare {
		return nil, true
	}
	if end == 0 {
		return nil, false
	}
	return buf[:end], true
}

// peekHead returns the request head up to and including its blank line,
// still unread in br; nil (no error) when the lane will not read it: it does
// not fit the buffer, or a line ends in a bare LF.
func peekHead(br *bufio.Reader) ([]byte, error) {
	for {
		n := br.Buffered()
		buf, _ := br.Peek(n)
		end, bare := headEnd(buf)
		if bare {
			return nil, nil
		}
		if end > 0 {
			return buf[:end], nil
		}
		if n >= laneBuffer {
			return nil, nil
		}
		// Blocks until more arrives, then takes all that is there.
		if _, err := br.Peek(n + 1); err != nil {
			return nil, err
		}
	}
}

// headEnd finds the blank line that ends a request head in buf: end is the
// head's length including it, 0 while it has not all arrived. bare reports
// a line ending in LF without CR before it: net/http reads such a head
// (a bare LF ends a line for it), the lane does not, and waiting for a
// CRLF CRLF that will never come would hold the request until
// ReadHeaderTimeout and answer nothing. Such a head is handed over as soon
// as its first bare LF is in.
func headEnd(buf []byte) (end int, bare bool) {
	for i := 0; ; {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return 0, false
		}
		j += i
		if j == 0 || buf[j-1] != '\r' {
			return 0, true
		}
		if j >= 3 && buf[j-2] == '\n' && buf[j-3] == '\r' {
			return j + 1, false
		}
		i = j + 1
	}
}

// laneRequest is the part of a request head the lane acts on.
type laneRequest struct {
	path, provider, rest, query, host string
}

// parse accepts only what the lane answers exactly as the full server
// would: GET, HTTP/1.1, an origin-form target under /v1/{provider}/ made of
// plain printable ASCII with no escapes, and no header that changes how a
// provider call is served (those requests are handed over).
func (r *laneRequest) parse(head []byte) bool {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	target, ok := bytes.CutPrefix(line, []byte("GET "))
	if !ok {
		return false
	}
	target, ok = bytes.CutSuffix(target, []byte(" HTTP/1.1"))
	if !ok || !plainTarget(target) {
		return false
	}
	p, q, _ := bytes.Cut(target, []byte("?"))
	path := string(p)
	after, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		return false
	}
	provider, tail, _ := strings.Cut(after, "/")
	if provider == "" || tail == "" || reserved[provider] {
		return false
	}
	hosts := 0
	for len(rest) > 2 {
		var hl []byte
		hl, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(hl, []byte(":"))
		if !ok || len(name) == 0 || !token(name) {
			return false
		}
		value = bytes.Trim(value, " \t")
		if !plainValue(value) {
			return false
		}
		switch {
		case bytes.EqualFold(name, []byte("Host")):
			hosts++
			r.host = string(value)
		case bytes.EqualFold(name, []byte("Connection")):
			if !bytes.EqualFold(value, []byte("keep-alive")) {
				return false
			}
		case bytes.EqualFold(name, []byte("Content-Length")):
			if string(value) != "0" {
				return false
			}
		case handedOverHeader(name):
			return false
		}
	}
	// net/http refuses a Host that is not a valid host[:port] (400); the
	// lane hands such a head over so that refusal is the one answer. It
	// matters beyond agreement: the Host becomes the base written into an
	// answer's links, and a quote in it would rewrite the JSON around them.
	if hosts != 1 || !httpguts.ValidHostHeader(r.host) {
		return false
	}
	r.path, r.provider, r.rest, r.query = path, provider, tail, string(q)
	return true
}

// handedOverHeader names the request headers that change how a provider
// call is answered (or refused): such requests take the full path. The
// browser marks (Origin, Referer, Sec-Fetch-Site; see fromBrowser) are
// handed over whatever their value rather than judged here: the full path
// then writes the one refusal both paths give, and browsers are no hit
// path worth a second copy of it.
func handedOverHeader(name []byte) bool {
	for _, h := range [...]string{"Transfer-Encoding", "Expect", "Upgrade", "Origin", "Referer", "Sec-Fetch-Site",
		"Cache-Control", "Pragma", "Sluice-Max-Wait", "Content-Type", "Trailer", "TE", "If-None-Match", "Sluice-Base"} {
		if bytes.EqualFold(name, []byte(h)) {
			return true
		}
	}
	return false
}

// plainTarget: printable ASCII without escapes, fragments, backslashes,
// semicolons (net/http warns about those in queries) or dot segments, so
// the raw path is exactly what net/http would decode it to.
func plainTarget(t []byte) bool {
	if len(t) == 0 || t[0] != '/' {
		return false
	}
	for _, c := range t {
		if c <= ' ' || c >= 0x7f || c == '%' || c == '#' || c == '\\' || c == ';' {
			return false
		}
	}
	p, _, _ := bytes.Cut(t, []byte("?"))
	return !bytes.Contains(p, []byte("//")) && !bytes.Contains(p, []byte("/./")) &&
		!bytes.Contains(p, []byte("/../")) && !bytes.HasSuffix(p, []byte("/.")) && !bytes.HasSuffix(p, []byte("/.."))
}

func token(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), c) >= 0 {
			return false
		}
	}
	return true
}

func plainValue(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// appendHit renders the answer as the full path's writeEntry and net/http
// would: the stored headers, Cache-Status, Age, Content-Length, Date and a
// request id.
func appendHit(out []byte, h *Hit, now time.Time, date *dateCache) ([]byte, string) {
	cacheStatus := "sluice; hit; ttl=" + strconv.Itoa(max(0, int(h.ExpiresAt.Sub(now).Seconds())))
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(h.Status), 10)
	out = append(out, ' ')
	out = append(out, http.StatusText(h.Status)...)
	out = append(out, "\r\n"...)
	out = append(out, h.Head...)
	out = append(out, h.Extra...)
	if h.ETag != "" {
		out = append(out, "ETag: "...)
		out = append(out, h.ETag...)
		out = append(out, "\r\n"...)
	}
	out = append(out, "Age: "...)
	out = strconv.AppendInt(out, int64(now.Sub(h.StoredAt).Seconds()), 10)
	out = append(out, "\r\nCache-Status: "...)
	out = append(out, cacheStatus...)
	out = append(out, "\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(h.Body)), 10)
	if !h.HasDate {
		out = append(out, "\r\nDate: "...)
		out = date.append(out, now)
	}
	out = append(out, "\r\nSluice-Request-Id: "...)
	out = append(out, NewRequestID()...)
	out = append(out, "\r\n\r\n"...)
	out = append(out, h.Body...)
	return out, cacheStatus
}

// dateCache holds the Date value of the current second: formatting it
// for every answer was a few percent of a hit's CPU.
type dateCache struct{ p atomic.Pointer[dateStamp] }

type dateStamp struct {
	sec int64
	val []byte
}

func (c *dateCache) append(out []byte, now time.Time) []byte {
	sec := now.Unix()
	d := c.p.Load()
	if d == nil || d.sec != sec {
		d = &dateStamp{sec: sec, val: now.UTC().AppendFormat(nil, http.TimeFormat)}
		c.p.Store(d)
	}
	return append(out, d.val...)
}

// handedConn is a connection net/http takes over from the lane: reads drain
// what the lane had buffered first, and the peer is the one the lane
// identified (SO_PEERCRED needs the *net.UnixConn underneath).
type handedConn struct {
	net.Conn
	r       *bufio.Reader
	peer    access.Peer
	peerErr error
	// cc is the connection's place under the cap.
	cc *capConn
}

// Read drains what the lane had buffered, then reads the connection
// itself and lets the lane's buffer go: net/http has its own, and an idle
// net/http connection would otherwise hold both (4 KiB of about 20). Only
// net/http's connection goroutine and its background read call Read,
// never at once.
func (c *handedConn) Read(p []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(p)
		}
		c.r = nil
	}
	return c.Conn.Read(p)
}

// handoffListener is the net/http server's listener: connections the lane
// gives up.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }
