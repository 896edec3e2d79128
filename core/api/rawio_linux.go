//go:build linux && !race

package api

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// laneIO reads and writes a lane connection with raw read(2) and write(2)
// calls made inside the net poller's RawConn, instead of net.Conn's Read
// and Write. The socket is non-blocking, so a call never waits in the
// kernel: EAGAIN parks the goroutine in the poller as net.Conn would.
//
// Why: net.Conn's calls go through the runtime's syscall entry, and that
// entry wakes the runtime's monitor thread (sysmon) whenever the process
// was idle a moment before. A daemon serving hits to a few clients on a
// busy machine is idle between most requests, so nearly every read woke
// sysmon, which then polled every 20 µs until the process idled again:
// a quarter of sluiced's CPU on cache hits (perf, bench row 1 at 16
// clients). The raw calls do not announce themselves to the scheduler,
// which is right only for calls that cannot block; that is why only the
// lane, whose sockets the poller keeps non-blocking, uses them. (The
// kernel may still sleep inside one, on memory pressure or a page fault,
// holding the thread's scheduler slot meanwhile, as any Go code touching
// swapped-out memory does.)
//
// Race builds use net.Conn instead (rawio_other.go): the race detector
// learns from net.Conn's calls which bytes the kernel wrote and that a
// write happens before the read that receives it, and from raw calls
// nothing, so it would report false races and miss real ones.
//
// A laneIO serves one goroutine: reads and writes share its fields.
type laneIO struct {
	rc syscall.RawConn
	// The call in progress: its buffer, how much is done, its error.
	p     []byte
	n     int
	errno syscall.Errno
	// Bound once, so a call allocates no closure.
	readFn, writeFn func(fd uintptr) bool
}

// newLaneIO returns raw I/O for c, or c itself when it has no file
// descriptor to call on (a wrapped connection, e.g. in tests).
func newLaneIO(c net.Conn) io.ReadWriter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	l := &laneIO{rc: rc}
	l.readFn, l.writeFn = l.read, l.write
	return l
}

func (l *laneIO) Read(p []byte) (int, error) {
	n, err := l.call(p, false)
	if n == 0 && err == nil && len(p) > 0 {
		return 0, io.EOF
	}
	return n, err
}

// Write writes all of p (waiting in the poller while the socket's buffer
// is full) or fails.
func (l *laneIO) Write(p []byte) (int, error) {
	n, err := l.call(p, true)
	if n < len(p) && err == nil {
		err = io.ErrShortWrite
	}
	return n, err
}

func (l *laneIO) call(p []byte, write bool) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	l.p, l.n, l.errno = p, 0, 0
	var err error
	if write {
		err = l.rc.Write(l.writeFn)
	} else {
		err = l.rc.Read(l.readFn)
	}
	n := l.n
	l.p = nil
	if err == nil && l.errno != 0 {
		err = l.errno
	}
	return n, err
}

func (l *laneIO) read(fd uintptr) bool  { return l.step(syscall.SYS_READ, fd, false) }
func (l *laneIO) write(fd uintptr) bool { return l.step(syscall.SYS_WRITE, fd, true) }

// step makes the system call nr on fd for the rest of l.p: once for a
// read, until all is written for a write. false means EAGAIN: the caller
// waits in the poller and calls again.
func (l *laneIO) step(nr, fd uintptr, whole bool) bool {
	for l.n < len(l.p) {
		n, _, e := syscall.RawSyscall(nr, fd, uintptr(unsafe.Pointer(&l.p[l.n])), uintptr(len(l.p)-l.n))
		switch e {
		case 0:
			l.n += int(n)
			if !whole || n == 0 {
				return true
			}
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			l.errno = e
			return true
		}
	}
	return true
}

// rawLaneIO: this build's lane uses raw I/O.
const rawLaneIO = true
