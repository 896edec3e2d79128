package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// defaultDebounce is used when Watch is given a debounce <= 0.
const defaultDebounce = 250 * time.Millisecond

// maxBurstFactor bounds how long a continuous stream of events can postpone
// a notification: at most this many debounce periods after the first event.
const maxBurstFactor = 10

// Watch calls notify after the config file at path may have changed, until
// ctx is done; it then returns nil. Other errors are returned only when
// watching cannot start.
//
// It watches the file's directory rather than the file, because editors,
// sed -i and config managers replace the file (a new inode) instead of
// writing it, and an inotify watch on the old inode would go silent. Events
// count when they name the file itself or start with ".." (Kubernetes mounts
// ConfigMaps as config.toml -> ..data/config.toml and swap the ..data
// symlink). If path is a symlink elsewhere, the target's directory is
// watched too and re-resolved after each change.
//
// Bursts of events are debounced: notify runs once the directory has been
// quiet for debounce (never later than ten debounce periods after the burst
// began). Spurious calls happen (a touch, a chmod), so the caller should
// compare Hash of the content it reads with the last one. notify runs on
// Watch's goroutine, one call at a time.
func Watch(ctx context.Context, path string, debounce time.Duration, notify func(), logger *slog.Logger) error {
	return watch(ctx, path, debounce, notify, logger, nil)
}

// watch is Watch with a hook called once the watches are in place, so tests
// know when changes start to count.
func watch(ctx context.Context, path string, debounce time.Duration, notify func(), logger *slog.Logger, ready func()) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if debounce <= 0 {
		debounce = defaultDebounce
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("config: watch %s: %w", path, err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("config: watch %s: %w", path, err)
	}
	defer w.Close()

	t := &watchTargets{path: abs, dir: filepath.Dir(abs), base: filepath.Base(abs), w: w, logger: logger}
	if err := w.Add(t.dir); err != nil {
		return fmt.Errorf("config: watch directory %s: %w", t.dir, err)
	}
	t.retarget()
	logger.Debug("watching config file", "path", abs)
	if ready != nil {
		ready()
	}

	timer := time.NewTimer(debounce)
	timer.Stop()
	var (
		pending    bool
		burstStart time.Time
	)
	arm := func() {
		now := time.Now()
		if !pending {
			pending, burstStart = true, now
			timer.Reset(debounce)
			return
		}
		// Keep postponing while events keep coming, but not forever.
		if now.Sub(burstStart) < maxBurstFactor*debounce {
			timer.Reset(debounce)
		}
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("config: file watcher closed unexpectedly")
			}
			if ev.Name == t.dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				logger.Warn("config directory went away; further changes will not be noticed", "dir", t.dir)
				continue
			}
			if t.relevant(ev.Name) {
				logger.Debug("config file event", "event", ev.String())
				arm()
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("config: file watcher closed unexpectedly")
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				// Events were lost; one of them may have been ours.
				arm()
			}
			logger.Warn("config file watcher error", "err", err)
		case <-timer.C:
			pending = false
			t.retarget()
			notify()
		}
	}
}

// watchTargets tracks what is being watched: the config's directory always,
// and the directory of the symlink target if the config is a symlink that
// leads elsewhere.
type watchTargets struct {
	path, dir, base string
	w               *fsnotify.Watcher
	logger          *slog.Logger

	targetDir, targetBase string
}

func (t *watchTargets) relevant(name string) bool {
	dir, base := filepath.Dir(name), filepath.Base(name)
	if dir == t.dir && (base == t.base || strings.HasPrefix(base, "..") || base == t.targetBase) {
		return true
	}
	return t.targetDir != "" && dir == t.targetDir && base == t.targetBase
}

// retarget re-resolves the symlink chain and moves the extra watch if the
// target's directory changed.
func (t *watchTargets) retarget() {
	real, err := filepath.EvalSymlinks(t.path)
	if err != nil {
		// Missing (mid-replace, or not created yet): keep what we have; the
		// directory watch will tell us when it appears.
		return
	}
	dir, base := filepath.Dir(real), filepath.Base(real)
	if dir == t.dir || sameDir(dir, t.dir) {
		t.dropTarget()
		if base != t.base {
			t.targetBase = base
		}
		return
	}
	if dir == t.targetDir {
		t.targetBase = base
		return
	}
	t.dropTarget()
	if err := t.w.Add(dir); err != nil {
		t.logger.Warn("cannot watch config symlink target directory", "dir", dir, "err", err)
		return
	}
	t.targetDir, t.targetBase = dir, base
}

// sameDir catches a target directory that is the watched directory under
// another name (e.g. the directory's own path goes through a symlink);
// watching one inode under two names would confuse event naming.
func sameDir(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false
	}
	return os.SameFile(fa, fb)
}

func (t *watchTargets) dropTarget() {
	if t.targetDir != "" {
		// The directory may be gone already (Kubernetes deletes the old
		// ..timestamp directory), which removes the watch by itself.
		_ = t.w.Remove(t.targetDir)
	}
	t.targetDir, t.targetBase = "", ""
}
