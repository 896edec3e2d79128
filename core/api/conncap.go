package api

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
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
//
// A request marks its connection busy and then idle again: that is two
// atomic stores in the connection's own memory, not a lock all
// connections share (which every core took twice per hit). The cost moves
// to the rare moment the cap is exceeded: finding the oldest idle
// connection scans them all (1,024 by default: microseconds).
type connCap struct {
	mu  sync.Mutex // guards the fields up to waiting
	max int
	n   int
	// peak is the most connections held since the last ResetPeak.
	peak int
	// all is every tracked connection, in no order (capConn.idx).
	all []*capConn
	// evicted counts connections closed to make room.
	evicted uint64
	// waiting counts waitRoom callers: a connection going idle signals
	// room only when someone waits for it.
	waiting atomic.Int32
	// room is signalled when a connection closes or goes idle.
	room  chan struct{}
	epoch time.Time
}

// Connection states.
const (
	capIdle    int32 = iota // waiting for a request head: may be evicted
	capActive               // a request is being read or answered
	capEvicted              // closed to make room: must not be served
	capRemoved              // closed or handed off, forgotten
)

// capConn is one tracked connection.
type capConn struct {
	c     net.Conn
	state atomic.Int32
	// idleAt is when it last went idle, in nanoseconds since epoch.
	idleAt atomic.Int64
	idx    int // in connCap.all; guarded by connCap.mu
}

func newConnCap(max int) *connCap {
	return &connCap{max: max, room: make(chan struct{}, 1), epoch: time.Now()}
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
	cc.idleAt.Store(int64(time.Since(k.epoch)))
	k.mu.Lock()
	k.n++
	k.peak = max(k.peak, k.n)
	// Room is made among the connections already there: the new one is
	// the caller the cap exists to serve.
	victim := k.evictLocked()
	cc.idx = len(k.all)
	k.all = append(k.all, cc)
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
	for {
		var old *capConn
		for _, cc := range k.all {
			if cc.state.Load() == capIdle && (old == nil || cc.idleAt.Load() < old.idleAt.Load()) {
				old = cc
			}
		}
		if old == nil {
			return nil
		}
		// A request may have come in on it since the scan: then it is
		// busy, and the scan starts over.
		if old.state.CompareAndSwap(capIdle, capEvicted) {
			k.dropLocked(old)
			k.evicted++
			return old.c
		}
	}
}

// dropLocked forgets cc.
func (k *connCap) dropLocked(cc *capConn) {
	last := k.all[len(k.all)-1]
	k.all[cc.idx], last.idx = last, cc.idx
	k.all[len(k.all)-1] = nil
	k.all = k.all[:len(k.all)-1]
	k.n--
}

func (k *connCap) anyIdleLocked() bool {
	for _, cc := range k.all {
		if cc.state.Load() == capIdle {
			return true
		}
	}
	return false
}

// setIdle: the connection waits for its next request (since now).
func (k *connCap) setIdle(cc *capConn, now time.Time) {
	cc.idleAt.Store(int64(now.Sub(k.epoch)))
	// The store to state and waitRoom's to waiting are sequentially
	// consistent: either this sees the waiter or the waiter sees the idle
	// connection.
	if cc.state.CompareAndSwap(capActive, capIdle) && k.waiting.Load() > 0 {
		k.signal()
	}
}

// setActive: a whole request head is in. False when the connection was
// closed to make room meanwhile: it must not be served.
func (k *connCap) setActive(cc *capConn) bool {
	if cc.state.CompareAndSwap(capIdle, capActive) {
		return true
	}
	return cc.state.Load() != capEvicted
}

// remove forgets a closed connection.
func (k *connCap) remove(cc *capConn) {
	k.mu.Lock()
	for {
		st := cc.state.Load()
		if st == capEvicted || st == capRemoved {
			k.mu.Unlock()
			return
		}
		if cc.state.CompareAndSwap(st, capRemoved) {
			break
		}
	}
	k.dropLocked(cc)
	k.mu.Unlock()
	k.signal()
}

// full: more connections than the cap are open and none of them is idle.
func (k *connCap) full() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.max > 0 && k.n > k.max && !k.anyIdleLocked()
}

// waitRoom blocks while more connections than the cap are open and none
// of them is idle, so that the next one admitted can make room; done ends
// the wait. Connections are only closed when a new one is admitted (add):
// an idle connection is closed for a caller, never ahead of one.
func (k *connCap) waitRoom(done <-chan struct{}) {
	for k.full() {
		k.waiting.Add(1)
		// Looked at again once announced: a connection that went idle
		// before then did not signal.
		if !k.full() {
			k.waiting.Add(-1)
			return
		}
		select {
		case <-k.room:
		case <-done:
			k.waiting.Add(-1)
			return
		}
		k.waiting.Add(-1)
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
				k.setIdle(hc.cc, time.Now())
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
