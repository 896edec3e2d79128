package api

import (
	"container/list"
	"net"
	"net/http"
	"sync"
)

// connCap bounds the connections the Front holds open, lane and net/http
// alike. 20,000 idle keep-alive connections once took every file
// descriptor the daemon had: health, misses and reloads then failed for
// everyone. At the cap the oldest idle connection is closed to make room
// for the new one, so a new caller is served; an idle keep-alive
// connection closed under its client is the ordinary race HTTP clients
// retry on. A connection mid-request is never closed: when every one is
// busy, the new connection is still served (one over the cap) and the next
// is accepted only once one of them finishes or goes idle: at most the cap
// plus one are ever open.
type connCap struct {
	mu  sync.Mutex
	max int
	n   int
	// peak is the most connections held since the last ResetPeak.
	peak int
	// idle lists idle connections, the oldest (longest idle) first.
	idle list.List
	// room is signalled when a connection closes or goes idle.
	room chan struct{}
	// evicted counts connections closed to make room.
	evicted uint64
}

// capConn is one tracked connection. Its fields are guarded by connCap.mu.
type capConn struct {
	c       net.Conn
	elem    *list.Element
	gone    bool // closed to make room, or removed
	evicted bool
}

func newConnCap(max int) *connCap {
	return &connCap{max: max, room: make(chan struct{}, 1)}
}

func (k *connCap) signal() {
	select {
	case k.room <- struct{}{}:
	default:
	}
}

// setMax changes the cap; 0 or less means none.
func (k *connCap) setMax(n int) {
	k.mu.Lock()
	k.max = n
	k.mu.Unlock()
	k.signal()
}

// add tracks a new connection (idle until its first request head is in)
// and, past the cap, closes the oldest idle one.
func (k *connCap) add(c net.Conn) *capConn {
	cc := &capConn{c: c}
	k.mu.Lock()
	k.n++
	k.peak = max(k.peak, k.n)
	// Room is made among the connections already there: the new one is
	// the caller the cap exists to serve.
	victim := k.evictLocked()
	cc.elem = k.idle.PushBack(cc)
	k.mu.Unlock()
	if victim != nil {
		victim.Close()
	}
	return cc
}

// evictLocked picks the oldest idle connection when over the cap, and
// counts it gone; the caller closes it outside the lock.
func (k *connCap) evictLocked() net.Conn {
	if k.max <= 0 || k.n <= k.max {
		return nil
	}
	front := k.idle.Front()
	if front == nil {
		return nil
	}
	old := front.Value.(*capConn)
	k.idle.Remove(front)
	old.elem, old.gone, old.evicted = nil, true, true
	k.n--
	k.evicted++
	return old.c
}

// setIdle: the connection waits for its next request.
func (k *connCap) setIdle(cc *capConn) {
	k.mu.Lock()
	if cc.gone || cc.elem != nil {
		k.mu.Unlock()
		return
	}
	cc.elem = k.idle.PushBack(cc)
	k.mu.Unlock()
	k.signal()
}

// setActive: a whole request head is in. False when the connection was
// closed to make room meanwhile: it must not be served.
func (k *connCap) setActive(cc *capConn) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if cc.gone {
		return !cc.evicted
	}
	if cc.elem != nil {
		k.idle.Remove(cc.elem)
		cc.elem = nil
	}
	return true
}

// remove forgets a closed connection.
func (k *connCap) remove(cc *capConn) {
	k.mu.Lock()
	if cc.gone {
		k.mu.Unlock()
		return
	}
	if cc.elem != nil {
		k.idle.Remove(cc.elem)
		cc.elem = nil
	}
	cc.gone = true
	k.n--
	k.mu.Unlock()
	k.signal()
}

// waitRoom blocks while more connections than the cap are open and none
// of them is idle, so that the next one admitted can make room; done ends
// the wait. Connections are only closed when a new one is admitted (add):
// an idle connection is closed for a caller, never ahead of one.
func (k *connCap) waitRoom(done <-chan struct{}) {
	for {
		k.mu.Lock()
		full := k.max > 0 && k.n > k.max && k.idle.Len() == 0
		k.mu.Unlock()
		if !full {
			return
		}
		select {
		case <-k.room:
		case <-done:
			return
		}
	}
}

// ConnStats is what the Front holds: open connections, the most held since
// the last ResetPeak, the cap (0: none) and how many were closed to make
// room.
type ConnStats struct {
	Open, Peak, Max int
	Evicted         uint64
}

func (k *connCap) stats() ConnStats {
	k.mu.Lock()
	defer k.mu.Unlock()
	return ConnStats{Open: k.n, Peak: k.peak, Max: k.max, Evicted: k.evicted}
}

func (k *connCap) resetPeak() {
	k.mu.Lock()
	k.peak = k.n
	k.mu.Unlock()
}

// connState follows connections net/http serves after the lane handed
// them over; chained before any ConnState the server already had.
func (k *connCap) connState(prev func(net.Conn, http.ConnState)) func(net.Conn, http.ConnState) {
	return func(c net.Conn, s http.ConnState) {
		if hc, ok := c.(*handedConn); ok && hc.cc != nil {
			switch s {
			case http.StateIdle:
				k.setIdle(hc.cc)
			case http.StateActive:
				k.setActive(hc.cc)
			case http.StateClosed, http.StateHijacked:
				k.remove(hc.cc)
			}
		}
		if prev != nil {
			prev(c, s)
		}
	}
}
