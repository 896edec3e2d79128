package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LockFile is the name of the lock inside the state dir. Two daemons on one
// state dir would each keep their own rate-limit log and together send
// twice the budget: the second refuses to start.
const LockFile = "sluiced.lock"

// stateLock is this daemon's hold on its state dir: an flock on LockFile,
// whose content names the holder (pid and socket) for the refusal message.
type stateLock struct {
	dir, path, socket string
	f                 *os.File // nil while the lock cannot be taken
	log               *slog.Logger
	logged            string // the last error logged by watch, once each
}

// ErrStateDirInUse is matched by the error lockStateDir returns when another
// daemon holds the state dir.
var ErrStateDirInUse = errors.New("state dir in use by another sluiced")

// lockStateDir creates dir (0700) if needed and locks it for this process.
// Only another daemon's hold is an error: a state dir that cannot take a
// lock file (removed, read-only, full) cannot take grants either, so the
// scheduler holds every bucket there (fail closed) and two daemons on it
// send nothing; the lock is then taken as soon as it can be (watch).
func lockStateDir(dir, socket string, log *slog.Logger) (*stateLock, error) {
	l := &stateLock{dir: dir, path: filepath.Join(dir, LockFile), socket: socket, log: log}
	if err := l.acquire(); err != nil {
		if errors.Is(err, ErrStateDirInUse) {
			return nil, err
		}
		log.Error("state dir cannot be locked; retrying (the scheduler holds every bucket while it cannot write there either)", "dir", dir, "err", err)
	}
	return l, nil
}

func (l *stateLock) acquire() error {
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return fmt.Errorf("state dir %s: %w", l.dir, err)
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		// A read-only file system still takes an flock on a file that
		// exists there.
		if f, err = os.Open(l.path); err != nil {
			return fmt.Errorf("state dir lock: %w", err)
		}
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(l.path)
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("%w: %s is held by %s; stop that daemon, or give this one its own state with --state-dir (or SLUICE_STATE_DIR)",
				ErrStateDirInUse, l.dir, describeHolder(holder))
		}
		return fmt.Errorf("state dir lock %s: %w", l.path, err)
	}
	l.f = f
	l.write()
	return nil
}

// write records the holder in the lock file (best effort: only the holder
// writes it, and only under the lock).
func (l *stateLock) write() {
	if l.f == nil {
		return
	}
	content := fmt.Sprintf("pid %d\nsocket %s\n", os.Getpid(), l.socket)
	if err := l.f.Truncate(0); err == nil {
		_, _ = l.f.WriteAt([]byte(content), 0)
	}
}

// setSocket records the socket actually listened on (socket activation
// may give another than the config's).
func (l *stateLock) setSocket(s string) {
	l.socket = s
	l.write()
}

// describeHolder renders the lock file's content for a refusal.
func describeHolder(b []byte) string {
	var pid, socket string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "pid":
			pid = v
		case "socket":
			socket = v
		}
	}
	if _, err := strconv.Atoi(pid); err != nil {
		return "another sluiced"
	}
	if socket == "" {
		return "sluiced pid " + pid
	}
	return fmt.Sprintf("sluiced pid %s (socket %s)", pid, socket)
}

// replaced reports whether the lock file this daemon holds is no longer the
// one at its path: the state dir was removed or replaced, and a second
// daemon could lock the new one.
func (l *stateLock) replaced() bool {
	if l.f == nil {
		return true
	}
	var held, now syscall.Stat_t
	if err := syscall.Fstat(int(l.f.Fd()), &held); err != nil {
		return true
	}
	if err := syscall.Stat(l.path, &now); err != nil {
		return true
	}
	return held.Dev != now.Dev || held.Ino != now.Ino
}

// watch re-checks the lock every interval and takes the new one when the
// state dir was replaced, so a second daemon started on the new directory
// still finds it held.
func (l *stateLock) watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !l.replaced() {
				continue
			}
			old := l.f
			if err := l.acquire(); err != nil {
				if l.logged != err.Error() {
					l.logged = err.Error()
					l.log.Error("state dir cannot be locked", "dir", l.dir, "err", err)
				}
				continue
			}
			l.logged = ""
			if old != nil {
				_ = old.Close()
			}
			l.log.Warn("state dir locked again (it was replaced or could not be locked)", "dir", l.dir)
		}
	}
}

// release unlocks (the kernel does so too when the process dies).
func (l *stateLock) release() {
	if l != nil && l.f != nil {
		_ = l.f.Close()
	}
}

// resetState removes everything in dir but the lock: the sandbox's way to
// start from nothing (sluiced --sandbox --reset).
func resetState(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	for _, e := range ents {
		if e.Name() == LockFile {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("reset: %w", err)
		}
	}
	return nil
}
