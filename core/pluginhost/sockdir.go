package pluginhost

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// sockDir is one daemon's private directory for plugin Unix sockets:
// <parent>/<pid>-<random>, 0700, with go-plugin's per-plugin 0700
// directories inside. The parent is deterministic and per uid, so a daemon
// that died without cleaning up (SIGKILL, OOM, power loss) leaves its
// directory where the next daemon of that uid finds and removes it.
//
// A live daemon holds an flock on its directory for its whole life; a
// directory nobody holds a lock on is stale. A pid test would be wrong: pids
// are reused, and a daemon in another pid namespace sharing the temp
// directory has a pid that means nothing here.
type sockDir struct {
	path string
	// lock is the open directory holding the flock; closing it (or the
	// process dying) releases the directory to the next start's cleanup.
	lock *os.File
}

// maxSockDir bounds the directory's path: go-plugin adds
// "/plugin-dirNNNNNNNNNN/pluginNNNNNNNNNN" (at most 39 bytes) and the whole
// must fit sun_path (107 bytes and a NUL).
const maxSockDir = 107 - 39

// defaultSockParent is <tmp>/sluice-<uid>-plugins: per uid, so daemons of
// different users never meet, and under the temp directory, which the
// shipped units make private (PrivateTmp) and which is short enough for
// socket paths.
func defaultSockParent() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("sluice-%d-plugins", os.Geteuid()))
}

// openSockDir prepares parent (creating it 0700 if missing, refusing one
// that is not a real directory of this uid), removes every stale daemon
// directory under it and creates and locks this daemon's own. It reports
// how many stale directories it removed.
func openSockDir(parent string) (*sockDir, int, error) {
	if err := os.Mkdir(parent, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, 0, err
	}
	// Lstat, not Stat: a symlink planted in a shared temp directory must
	// not redirect the sockets into somebody else's directory.
	fi, err := os.Lstat(parent)
	if err != nil {
		return nil, 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() {
		return nil, 0, fmt.Errorf("%s is not a directory owned by uid %d (someone else may have created it)", parent, os.Geteuid())
	}
	// Ours, so ours to fix: an umask-000 mkdir, or a chmod by hand, must
	// not leave the parent open to others.
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(parent, 0o700); err != nil {
			return nil, 0, err
		}
	}

	// Cleanup and creation are one step under the parent's lock, so a
	// daemon starting alongside never sees another's directory in the
	// moment between its creation and its flock, and removes it as stale.
	guard, err := os.OpenFile(filepath.Join(parent, ".lock"), os.O_CREATE|os.O_RDONLY, 0o600)
	if err != nil {
		return nil, 0, err
	}
	defer guard.Close()
	if err := flock(guard, syscall.LOCK_EX); err != nil {
		return nil, 0, err
	}
	defer flock(guard, syscall.LOCK_UN)

	removed := removeStale(parent)
	dir, err := os.MkdirTemp(parent, strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, removed, err
	}
	// MkdirTemp asks for 0700 and the umask can only take bits away;
	// check anyway, since everything else rests on this.
	if err := os.Chmod(dir, 0o700); err != nil {
		os.Remove(dir)
		return nil, removed, err
	}
	lock, err := os.Open(dir)
	if err == nil {
		err = flock(lock, syscall.LOCK_EX|syscall.LOCK_NB)
		if err != nil {
			lock.Close()
		}
	}
	if err != nil {
		os.Remove(dir)
		return nil, removed, fmt.Errorf("locking %s: %w", dir, err)
	}
	return &sockDir{path: dir, lock: lock}, removed, nil
}

// removeStale removes every directory under parent no live daemon holds
// locked, and returns how many it removed.
func removeStale(parent string) int {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return 0
	}
	n := 0
	for _, ent := range ents {
		if !ent.IsDir() {
			continue
		}
		p := filepath.Join(parent, ent.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if flock(f, syscall.LOCK_EX|syscall.LOCK_NB) == nil && os.RemoveAll(p) == nil {
			n++
		}
		f.Close()
	}
	return n
}

// Close removes the directory and everything left in it, then releases
// the lock.
func (d *sockDir) Close() error {
	err := os.RemoveAll(d.path)
	if d.lock != nil {
		d.lock.Close()
	}
	return err
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
