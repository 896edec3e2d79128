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
// lane, whose sockets the poller keeps non-blocking, uses them.
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
	if len(p) == 0 {
		return 0, nil
	}
	l.p, l.n, l.errno = p, 0, 0
	err := l.rc.Read(l.readFn)
	l.p = nil
	switch {
	case err != nil:
		return 0, err
	case l.errno != 0:
		return 0, l.errno
	case l.n == 0:
		return 0, io.EOF
	}
	return l.n, nil
}

func (l *laneIO) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&l.p[0])), uintptr(len(l.p)))
		switch e {
		case 0:
			l.n = int(n)
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			l.errno = e
			return true
		}
	}
}

// Write writes all of p (waiting in the poller while the socket's buffer
// is full) or fails.
func (l *laneIO) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	l.p, l.n, l.errno = p, 0, 0
	err := l.rc.Write(l.writeFn)
	n := l.n
	l.p = nil
	switch {
	case err != nil:
		return n, err
	case l.errno != 0:
		return n, l.errno
	}
	return n, nil
}

func (l *laneIO) write(fd uintptr) bool {
	for l.n < len(l.p) {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&l.p[l.n])), uintptr(len(l.p)-l.n))
		switch e {
		case 0:
			l.n += int(n)
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
