package scheduler

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// StateFile is the name of the state file inside Options.StateDir.
const StateFile = "scheduler-state.json"

const stateVersion = 1

// diskState is the state file. Times are wall-clock Unix nanoseconds: the
// monotonic clock does not survive a restart.
type diskState struct {
	Version int                   `json:"version"`
	SavedAt int64                 `json:"saved_at"`
	Buckets map[string]diskBucket `json:"buckets"`
}

type diskBucket struct {
	Grants []int64 `json:"grants,omitempty"`
	// RetainNS is the bucket's history horizon (see bucket.retain), so the
	// state of a bucket that is not configured in this run can still be
	// pruned and a longer window configured later still sees its grants.
	RetainNS    int64  `json:"retain_ns,omitempty"`
	PauseUntil  int64  `json:"pause_until,omitempty"`
	PauseReason string `json:"pause_reason,omitempty"`
}

// persister mirrors every bucket's persistent state and writes it as one
// file. Writes are group commits: whoever flushes writes everything changed
// so far, and callers whose change is already on disk return without a write
// of their own, so concurrent grants in many buckets share writes and no
// bucket lock is held during I/O.
type persister struct {
	dir, path string
	log       *slog.Logger

	// mu guards the fields below; it is a leaf lock (taken under bucket
	// locks, never the other way round).
	mu        sync.Mutex
	state     map[string]diskBucket
	gen       uint64 // bumped by every change to state
	loadErr   error
	saveErr   error
	loggedErr string

	// writeMu serialises writes; written is the newest generation a write
	// attempt has covered.
	writeMu sync.Mutex
	written uint64
}

func newPersister(dir string, log *slog.Logger) *persister {
	p := &persister{dir: dir, log: log, state: make(map[string]diskBucket)}
	if dir != "" {
		p.path = filepath.Join(dir, StateFile)
	}
	return p
}

// load reads the state file. A missing file (or directory) is a fresh start;
// anything else that prevents reading it is returned and remembered, since
// the caller must then assume the worst.
func (p *persister) load() (map[string]diskBucket, error) {
	out := make(map[string]diskBucket)
	if p.path == "" {
		return out, nil
	}
	err := p.read(out)
	if err != nil {
		p.mu.Lock()
		p.loadErr = err
		p.mu.Unlock()
		return nil, err
	}
	p.mu.Lock()
	for name, d := range out {
		p.state[name] = d
	}
	p.mu.Unlock()
	return out, nil
}

func (p *persister) read(into map[string]diskBucket) error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	// A temp file left by a crash mid-write was never renamed into place,
	// so it holds nothing the real file lacks.
	_ = os.Remove(p.path + ".tmp")
	data, err := os.ReadFile(p.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading state: %w", err)
	}
	var st diskState
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("parsing state %s: %w", p.path, err)
	}
	if st.Version != stateVersion {
		return fmt.Errorf("state %s: unsupported version %d", p.path, st.Version)
	}
	for name, d := range st.Buckets {
		for _, g := range d.Grants {
			if g <= 0 {
				return fmt.Errorf("state %s: bucket %q: invalid grant time %d", p.path, name, g)
			}
		}
		if d.RetainNS < 0 || d.PauseUntil < 0 {
			return fmt.Errorf("state %s: bucket %q: negative value", p.path, name)
		}
		into[name] = d
	}
	return nil
}

// set records a bucket's state and returns the generation containing it.
func (p *persister) set(name string, d diskBucket) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state[name] = d
	p.gen++
	return p.gen
}

// flushAll writes every change made so far.
func (p *persister) flushAll() error {
	p.mu.Lock()
	gen := p.gen
	p.mu.Unlock()
	return p.flush(gen)
}

// flush returns once a write covering generation gen has been attempted. It
// returns that write's error only if this call made the attempt.
func (p *persister) flush(gen uint64) error {
	if p.path == "" {
		return nil
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if p.written >= gen {
		return nil
	}
	p.mu.Lock()
	cur := p.gen
	st := p.snapshotLocked(time.Now().UnixNano())
	p.mu.Unlock()

	err := p.write(st)
	p.written = cur

	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.saveErr = err
		// Once per distinct error: a full disk fails every grant, and a
		// warning per grant would bury everything else in the log.
		if msg := err.Error(); msg != p.loggedErr {
			p.loggedErr = msg
			p.log.Warn("scheduler state not saved; serving from memory, a restart may forget recent grants", "err", err)
		}
		return err
	}
	if p.saveErr != nil {
		p.log.Info("scheduler state saved again", "path", p.path)
		p.saveErr, p.loggedErr = nil, ""
	}
	return nil
}

// snapshotLocked copies the state, dropping grants older than their
// bucket's retention and pauses already over.
func (p *persister) snapshotLocked(nowWall int64) diskState {
	st := diskState{Version: stateVersion, SavedAt: nowWall, Buckets: make(map[string]diskBucket, len(p.state))}
	for name, d := range p.state {
		var grants []int64
		for _, g := range d.Grants {
			if d.RetainNS == 0 || g > nowWall-d.RetainNS {
				grants = append(grants, g)
			}
		}
		d.Grants = grants
		if d.PauseUntil <= nowWall {
			d.PauseUntil, d.PauseReason = 0, ""
		}
		if len(d.Grants) == 0 && d.PauseUntil == 0 {
			continue
		}
		st.Buckets[name] = d
	}
	return st
}

// write replaces the state file atomically (temp file, then rename), so a
// crash leaves either the old or the new state.
func (p *persister) write(st diskState) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("saving scheduler state: %w", err)
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("saving scheduler state: %w", err)
	}
	// A fixed temp name is safe because writes are serialised, and it keeps
	// error messages identical across attempts (see the warn-once above).
	tmp := p.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("saving scheduler state: %w", err)
	}
	// O_CREATE keeps the mode of a temp file that already existed.
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	// No fsync, of the file or the directory: the state must survive the
	// daemon restarting (crash, SIGKILL, upgrade), and the kernel keeps
	// written pages across that. Only a kernel crash or power loss would
	// lose them, and a machine takes longer to reboot than an upstream
	// window lasts. The two fsyncs cost ~0.5 ms on ext4 on every grant,
	// which is most of a cache miss's overhead.
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p.path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("saving scheduler state: %w", err)
	}
	return nil
}

func (p *persister) errString() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	if p.loadErr != nil {
		parts = append(parts, "load: "+p.loadErr.Error())
	}
	if p.saveErr != nil {
		parts = append(parts, "save: "+p.saveErr.Error())
	}
	return strings.Join(parts, "; ")
}
