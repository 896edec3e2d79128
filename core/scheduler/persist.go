package scheduler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/internal/durable"
	"github.com/sluice-dev/sluice/internal/jsonstr"
)

// StateFile is the name of the state snapshot inside Options.StateDir.
const StateFile = "scheduler-state.json"

// JournalFile is the name of the journal inside Options.StateDir: the changes
// made since StateFile was written, one JSON object per line.
const JournalFile = "scheduler-state.journal"

const stateVersion = 1

// journalCompactSize is the journal size at which the next flush folds it
// into a new snapshot. At roughly 50 bytes per record that is a few thousand
// grants, and the snapshot it costs is the ~20 KB rewrite every grant used to
// pay.
const journalCompactSize = 256 << 10

// diskState is the snapshot file. Times are wall-clock Unix nanoseconds: the
// monotonic clock does not survive a restart.
type diskState struct {
	Version int                   `json:"version"`
	SavedAt int64                 `json:"saved_at"`
	Buckets map[string]diskBucket `json:"buckets"`
}

type diskBucket struct {
	// Grants is ascending (ties are possible in files written before the
	// journal existed).
	Grants []int64 `json:"grants,omitempty"`
	// RetainNS is the bucket's history horizon (see bucket.retain), so the
	// state of a bucket that is not configured in this run can still be
	// pruned and a longer window configured later still sees its grants.
	RetainNS    int64  `json:"retain_ns,omitempty"`
	PauseUntil  int64  `json:"pause_until,omitempty"`
	PauseReason string `json:"pause_reason,omitempty"`
	// Cap is the most grants the bucket keeps (max(maxReq, historyCap));
	// zero, in files written before it existed, means no limit but RetainNS.
	Cap int `json:"cap,omitempty"`
}

// Journal records. Each line is one JSON object with "op" and the bucket
// name "b":
//
//	{"op":"grant","b":NAME,"t":NS}                   add grant NS
//	{"op":"restamp","b":NAME,"t":NS,"d":DELTA}       move grant NS to NS+DELTA
//	{"op":"pause","b":NAME,"until":NS,"reason":TEXT} set the pause (0: none)
//	{"op":"retain","b":NAME,"retain":NS,"cap":N}     history horizon and cap
//	{"op":"release","b":NAME,"t":NS}                 remove grant NS (never used)
//
// Every record is idempotent: a grant already present (same nanosecond) is
// not added again, a restamp removes its old time only if present and adds
// its new one like a grant, a release removes its time if present, pause
// sets, and retain only ever raises (within a run both values only grow, so
// this equals setting them). Replaying a journal over a snapshot that already holds its effects therefore changes nothing,
// which is what makes a crash between writing a snapshot and emptying the
// journal harmless. Keys are short and a restamp carries a delta because a
// grant and its restamp are the whole per-request write.
const (
	opGrant   = "grant"
	opRestamp = "restamp"
	opPause   = "pause"
	opRetain  = "retain"
	opRelease = "release"
)

// journalRec is one journal record; which fields count depends on op.
type journalRec struct {
	op     string
	bucket string
	t      int64 // grant: time; restamp: old time
	d      int64 // restamp: new time − old time
	until  int64 // pause
	reason string
	retain int64
	cap    int
}

// journalLine is the decoding form of a journalRec.
type journalLine struct {
	Op     string  `json:"op"`
	Bucket *string `json:"b"`
	T      int64   `json:"t"`
	D      int64   `json:"d"`
	Until  int64   `json:"until"`
	Reason string  `json:"reason"`
	Retain int64   `json:"retain"`
	Cap    int     `json:"cap"`
}

func (l journalLine) record() (journalRec, error) {
	if l.Bucket == nil {
		return journalRec{}, errors.New("record without bucket")
	}
	r := journalRec{op: l.Op, bucket: *l.Bucket, t: l.T, d: l.D, until: l.Until, reason: l.Reason, retain: l.Retain, cap: l.Cap}
	switch l.Op {
	case opGrant, opRelease:
		if l.T <= 0 {
			return r, fmt.Errorf("bucket %q: invalid grant time %d", r.bucket, l.T)
		}
	case opRestamp:
		if l.T <= 0 || (l.D > 0 && l.T > math.MaxInt64-l.D) || l.T+l.D <= 0 {
			return r, fmt.Errorf("bucket %q: invalid restamp %d%+d", r.bucket, l.T, l.D)
		}
	case opPause:
		if l.Until < 0 {
			return r, fmt.Errorf("bucket %q: negative pause", r.bucket)
		}
	case opRetain:
		if l.Retain < 0 || l.Cap < 0 {
			return r, fmt.Errorf("bucket %q: negative retain or cap", r.bucket)
		}
	default:
		return r, fmt.Errorf("unknown op %q", l.Op)
	}
	return r, nil
}

// appendRecord encodes r as one journal line, newline included.
func appendRecord(buf []byte, r journalRec) []byte {
	buf = append(buf, `{"op":"`...)
	buf = append(buf, r.op...)
	buf = append(buf, `","b":`...)
	buf = jsonstr.Append(buf, r.bucket)
	switch r.op {
	case opGrant, opRelease:
		buf = append(buf, `,"t":`...)
		buf = strconv.AppendInt(buf, r.t, 10)
	case opRestamp:
		buf = append(buf, `,"t":`...)
		buf = strconv.AppendInt(buf, r.t, 10)
		buf = append(buf, `,"d":`...)
		buf = strconv.AppendInt(buf, r.d, 10)
	case opPause:
		buf = append(buf, `,"until":`...)
		buf = strconv.AppendInt(buf, r.until, 10)
		buf = append(buf, `,"reason":`...)
		buf = jsonstr.Append(buf, r.reason)
	case opRetain:
		buf = append(buf, `,"retain":`...)
		buf = strconv.AppendInt(buf, r.retain, 10)
		buf = append(buf, `,"cap":`...)
		buf = strconv.AppendInt(buf, int64(r.cap), 10)
	}
	return append(buf, "}\n"...)
}

// applyRecord applies r to state; see the record list above for why it is
// idempotent.
func applyRecord(state map[string]diskBucket, r journalRec) {
	d := state[r.bucket]
	switch r.op {
	case opGrant:
		d.Grants = capGrants(addGrant(d.Grants, r.t), d.Cap)
	case opRestamp:
		d.Grants = addGrant(removeGrant(d.Grants, r.t), r.t+r.d)
	case opRelease:
		d.Grants = removeGrant(d.Grants, r.t)
	case opPause:
		d.PauseUntil, d.PauseReason = r.until, r.reason
		if r.until == 0 {
			d.PauseReason = ""
		}
	case opRetain:
		d.RetainNS = max(d.RetainNS, r.retain)
		d.Cap = max(d.Cap, r.cap)
	}
	state[r.bucket] = d
}

// addGrant inserts ns into the ascending g unless it is there already. New
// grants are the newest, so this is an append in practice.
func addGrant(g []int64, ns int64) []int64 {
	if n := len(g); n == 0 || g[n-1] < ns {
		return append(g, ns)
	}
	i, found := slices.BinarySearch(g, ns)
	if found {
		return g
	}
	return slices.Insert(g, i, ns)
}

func removeGrant(g []int64, ns int64) []int64 {
	if i, found := slices.BinarySearch(g, ns); found {
		return slices.Delete(g, i, i+1)
	}
	return g
}

// capGrants drops the oldest grants once there are twice as many as the cap
// allows, keeping the mirror bounded at amortised O(1) per grant; snapshots
// apply the exact cap.
func capGrants(g []int64, limit int) []int64 {
	if limit > 0 && len(g) > 2*limit {
		g = g[:copy(g, g[len(g)-limit:])]
	}
	return g
}

// persister keeps a mirror of every bucket's persistent state and writes it
// as a snapshot (StateFile) plus an append-only journal (JournalFile) of the
// changes since. Each change is applied to the mirror and encoded as a
// journal record at once; a flush appends the records buffered so far with
// one write. Flushes are group commits: whoever flushes writes everything
// changed so far, and callers whose change is already written return without
// a write of their own, so concurrent grants in many buckets share writes and
// no bucket lock is held during I/O.
//
// Compaction writes the mirror as a new snapshot (temp file + rename) and
// empties the journal. It happens on the first flush after load (folding in
// the journal found there), when the journal grows past compactAt, at close,
// and after a failed append: the records it lost can only reach disk in a
// snapshot, and the journal may end in part of one, so that flush compacts
// at once and every later flush compacts instead of appending until one
// succeeds. The journal is opened by compaction and kept open; while the
// state dir is unusable it stays closed and every flush retries, so a dir
// that becomes usable again recovers on the next flush.
type persister struct {
	dir, path, journalPath string
	log                    *slog.Logger
	// compactAt is the journal size that triggers a compaction; tests lower
	// it. Set before the first flush.
	compactAt int64

	// mu guards the fields below; it is a leaf lock (taken under bucket
	// locks, never the other way round).
	mu    sync.Mutex
	state map[string]diskBucket
	// omitted names the buckets the last snapshot left out for having no
	// grants and no pause although they have a retain or cap: their next
	// record is preceded by a retain record, so the journal does not
	// depend on values no file holds.
	omitted map[string]struct{}
	gen     uint64 // bumped by every change to state
	buf     []byte // records of changes no write has covered yet
	loadErr error
	saveErr error
	// newest is the latest wall time (Unix ns) the loaded state holds: the
	// snapshot's save time or a grant. Set by load, read-only after.
	newest    int64
	loggedErr string

	// writeMu serialises writes and guards the fields below. durable is
	// the newest generation a successful write has covered, synced the
	// newest one an fsync has; attempted is the newest generation a write
	// attempt covered, and failErr that attempt's error when it failed.
	// A generation is safe to act on only once durable has reached it.
	writeMu       sync.Mutex
	durable       uint64
	synced        uint64
	attempted     uint64
	failErr       error
	journal       *os.File // nil until the first compaction, and after failures
	size          int64    // bytes in the journal file
	needCompact   bool     // a write failed: only a snapshot can save the state
	retryAt       int64    // size at which to retry a failed size-triggered compaction
	wbuf          []byte   // spare record buffer, swapped with buf
	loggedCompact string
	closed        bool
}

func newPersister(dir string, log *slog.Logger) *persister {
	p := &persister{dir: dir, log: log, state: make(map[string]diskBucket), omitted: make(map[string]struct{}), compactAt: journalCompactSize}
	if dir != "" {
		p.path = filepath.Join(dir, StateFile)
		p.journalPath = filepath.Join(dir, JournalFile)
	}
	return p
}

// load reads the snapshot and replays the journal over it. A missing file
// (or directory) is a fresh start; anything else that prevents reading the
// state is returned and remembered, since the caller must then assume the
// worst. Even then the state returned holds what could be read: the journal
// up to a corrupt line, and the journal alone when the snapshot is
// unreadable. Records only add grants and pauses to what the caller assumes
// anyway, and a ban pause outlasts the startup hold.
func (p *persister) load() (map[string]diskBucket, error) {
	out := make(map[string]diskBucket)
	if p.path == "" {
		return out, nil
	}
	err := p.readSnapshot(out)
	if err != nil {
		clear(out)
	}
	if jerr := p.readJournal(out); err == nil {
		err = jerr
	}
	for _, d := range out {
		if len(d.Grants) > 0 {
			p.newest = max(p.newest, slices.Max(d.Grants))
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.loadErr = err
	// The mirror gets its own grant slices: it changes them in place, and
	// the returned map is handed to buckets.
	for name, d := range out {
		d.Grants = slices.Clone(d.Grants)
		p.state[name] = d
	}
	return out, err
}

func (p *persister) readSnapshot(into map[string]diskBucket) error {
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
	p.newest = max(p.newest, st.SavedAt)
	for name, d := range st.Buckets {
		for _, g := range d.Grants {
			if g <= 0 {
				return fmt.Errorf("state %s: bucket %q: invalid grant time %d", p.path, name, g)
			}
		}
		if d.RetainNS < 0 || d.PauseUntil < 0 || d.Cap < 0 {
			return fmt.Errorf("state %s: bucket %q: negative value", p.path, name)
		}
		// A clock step could have reordered wall times; the mirror keeps
		// them sorted.
		slices.Sort(d.Grants)
		into[name] = d
	}
	return nil
}

// readJournal replays the journal into into. A last line that does not parse
// is a write torn by a crash: its caller never got to act on it, so it is
// ignored. A bad line before the end means the file is corrupt.
func (p *persister) readJournal(into map[string]diskBucket) error {
	data, err := os.ReadFile(p.journalPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading journal: %w", err)
	}
	p.size = int64(len(data)) // makes Close fold it in even if nothing changes
	for n := 1; len(data) > 0; n++ {
		line, rest, terminated := bytes.Cut(data, []byte{'\n'})
		data = rest
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		last := len(bytes.TrimSpace(data)) == 0
		var l journalLine
		if err := json.Unmarshal(line, &l); err != nil {
			if last {
				p.log.Info("ignoring torn last line of the scheduler journal", "path", p.journalPath, "line", n, "err", err)
				return nil
			}
			return fmt.Errorf("journal %s line %d: %w", p.journalPath, n, err)
		}
		r, err := l.record()
		if err != nil {
			return fmt.Errorf("journal %s line %d: %w", p.journalPath, n, err)
		}
		if !terminated {
			// The write was cut right before its newline: the record is
			// complete, and counting it can only err on the safe side.
			p.log.Info("scheduler journal's last line lacks its newline; applying the complete record", "path", p.journalPath, "line", n)
		}
		applyRecord(into, r)
	}
	return nil
}

// grant records a grant at wall time ns and returns the generation holding it.
func (p *persister) grant(name string, ns int64) uint64 {
	return p.apply(journalRec{op: opGrant, bucket: name, t: ns})
}

// restamp records that the grant logged at old counts at ns from now on.
func (p *persister) restamp(name string, old, ns int64) uint64 {
	return p.apply(journalRec{op: opRestamp, bucket: name, t: old, d: ns - old})
}

// release records that the grant logged at ns was never used.
func (p *persister) release(name string, ns int64) uint64 {
	return p.apply(journalRec{op: opRelease, bucket: name, t: ns})
}

// pause records the bucket's pause; until 0 clears it.
func (p *persister) pause(name string, until int64, reason string) uint64 {
	return p.apply(journalRec{op: opPause, bucket: name, until: until, reason: reason})
}

// retain records the bucket's history horizon and cap.
func (p *persister) retain(name string, retain time.Duration, limit int) uint64 {
	return p.apply(journalRec{op: opRetain, bucket: name, retain: int64(retain), cap: limit})
}

// apply updates the mirror, buffers the record and returns the generation
// containing it.
func (p *persister) apply(r journalRec) uint64 {
	if p.path == "" {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.omitted[r.bucket]; ok {
		delete(p.omitted, r.bucket)
		if r.op != opRetain { // a retain record carries both values itself
			d := p.state[r.bucket]
			p.buf = appendRecord(p.buf, journalRec{op: opRetain, bucket: r.bucket, retain: d.RetainNS, cap: d.Cap})
		}
	}
	applyRecord(p.state, r)
	p.buf = appendRecord(p.buf, r)
	p.gen++
	return p.gen
}

// flushAll writes every change made so far; with sync, through to the disk
// (fsync), for rare records a power loss must not forget (pauses).
func (p *persister) flushAll(sync bool) error {
	p.mu.Lock()
	gen := p.gen
	p.mu.Unlock()
	return p.flush(gen, sync)
}

// flush returns nil once generation gen is known to be written (with sync,
// also fsynced), and an error when it is not: the write that covered it
// failed. Writes are group commits: every caller checks its own
// generation, and one failed attempt answers every generation it covered
// without a new attempt (a full disk would otherwise be retried by every
// waiter); retry makes the next attempt.
func (p *persister) flush(gen uint64, sync bool) error {
	if p.path == "" {
		return nil
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if p.durable >= gen && (!sync || p.synced >= gen) {
		return nil
	}
	if p.closed {
		return fmt.Errorf("saving scheduler state: %w", ErrClosed)
	}
	if p.failErr != nil && p.attempted >= gen {
		return p.failErr
	}
	err := p.attemptLocked(sync)
	if p.durable >= gen && (!sync || p.synced >= gen) {
		// A snapshot holds it even though the attempt as a whole failed
		// (the journal could not be reopened after it): the record is on
		// disk, where the next start reads it.
		return nil
	}
	return err
}

// retry makes a new write attempt of everything recorded, whatever the last
// attempt's outcome. Called by the scheduler while it holds its buckets.
func (p *persister) retry() error {
	if p.path == "" {
		return nil
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if p.closed {
		return fmt.Errorf("saving scheduler state: %w", ErrClosed)
	}
	return p.attemptLocked(true)
}

// attemptLocked writes every buffered change and records the outcome.
// Called with writeMu held.
func (p *persister) attemptLocked(sync bool) error {
	err := p.save(sync)
	if err != nil {
		p.failErr = err
	} else {
		p.failErr = nil
	}
	p.noteResult(err)
	return err
}

// save writes every buffered change: appended to the journal, or, when the
// journal cannot take them, as a snapshot. Called with writeMu held.
func (p *persister) save(sync bool) error {
	if p.journal != nil && unlinked(p.journal) {
		// The state dir was removed or replaced: appends would go to a
		// file nobody will read.
		p.closeJournal()
	}
	if p.journal == nil || p.needCompact {
		return p.compact()
	}
	if p.failErr != nil {
		// The last attempt failed and may have left part of a record in
		// the journal; a snapshot is the only write that is sure to
		// leave a whole state.
		return p.compact()
	}
	p.mu.Lock()
	cur := p.gen
	p.buf, p.wbuf = p.wbuf[:0], p.buf
	p.mu.Unlock()
	data := p.wbuf
	// One write(2) for everything buffered; O_APPEND puts it at the end.
	// No fsync for grants: the state must survive the daemon restarting
	// (crash, SIGKILL, upgrade), and the kernel keeps written pages across
	// that. Only a kernel crash or power loss would lose them, and a
	// machine takes longer to reboot than an upstream window lasts. An
	// fsync costs ~0.5 ms on ext4 on every grant, most of a cache miss's
	// overhead. Pauses are different (up to an hour, rare): they sync.
	p.attempted = max(p.attempted, cur)
	_, err := p.journal.Write(data)
	if err == nil && sync {
		err = p.journal.Sync()
	}
	if err != nil {
		// The records are lost, and the journal may now end in part of
		// one: only a snapshot can save them, and nothing may be appended
		// until one has replaced the journal.
		p.log.Info("scheduler journal append failed; writing a snapshot instead", "path", p.journalPath, "err", err)
		p.closeJournal()
		return p.compact()
	}
	p.durable = max(p.durable, cur)
	if sync {
		p.synced = max(p.synced, cur)
	}
	p.size += int64(len(data))
	if p.size >= max(p.compactAt, p.retryAt) {
		p.compactBySize()
	}
	return nil
}

// compact writes the mirror as a new snapshot (fsynced) and empties the
// journal. Until it succeeds, every flush calls it again. Called with
// writeMu held.
func (p *persister) compact() error {
	p.needCompact = true
	p.mu.Lock()
	cur := p.gen
	// The snapshot holds these records' effects.
	p.buf = p.buf[:0]
	st := p.snapshotLocked(time.Now().UnixNano())
	p.mu.Unlock()
	p.attempted = max(p.attempted, cur)
	if err := p.write(st); err != nil {
		return err
	}
	// The snapshot is on disk, synced: everything up to cur is safe even
	// if emptying the journal fails below.
	p.durable, p.synced = max(p.durable, cur), max(p.synced, cur)
	// A crash here leaves the new snapshot and the old journal: replaying
	// the journal over a snapshot that holds its effects changes nothing.
	if err := p.resetJournal(); err != nil {
		return err
	}
	p.needCompact, p.retryAt = false, 0
	return nil
}

// compactBySize compacts a journal that has grown past compactAt. The
// journal is complete at this point, so a failure loses nothing: appends go
// on, and the next attempt waits for another compactAt bytes. The records
// still buffered stay buffered (their later append is harmless), so a failed
// snapshot cannot drop them. Called with writeMu held.
func (p *persister) compactBySize() {
	p.mu.Lock()
	st := p.snapshotLocked(time.Now().UnixNano())
	p.mu.Unlock()
	err := p.write(st)
	if err == nil {
		if err = p.resetJournal(); err != nil {
			// The journal is closed now; only a snapshot can save the
			// next records.
			p.needCompact = true
		}
	}
	if err != nil {
		p.retryAt = p.size + p.compactAt
		if msg := err.Error(); msg != p.loggedCompact {
			p.loggedCompact = msg
			p.log.Warn("scheduler journal not compacted; it keeps growing until a snapshot can be written", "path", p.journalPath, "size", p.size, "err", err)
		}
		return
	}
	p.retryAt, p.loggedCompact = 0, ""
}

// resetJournal opens the journal if needed and empties it.
func (p *persister) resetJournal() error {
	if p.journal != nil && unlinked(p.journal) {
		p.closeJournal()
	}
	if p.journal == nil {
		f, err := os.OpenFile(p.journalPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("saving scheduler state: %w", err)
		}
		// O_CREATE keeps the mode of a journal that already existed.
		if err := f.Chmod(0o600); err != nil {
			_ = f.Close()
			return fmt.Errorf("saving scheduler state: %w", err)
		}
		p.journal = f
	}
	// With O_APPEND the next write goes to the new end, the start.
	if err := p.journal.Truncate(0); err != nil {
		p.closeJournal()
		return fmt.Errorf("saving scheduler state: %w", err)
	}
	p.size = 0
	return nil
}

func (p *persister) closeJournal() {
	if p.journal != nil {
		_ = p.journal.Close()
		p.journal = nil
	}
}

// noteResult records a write attempt's outcome for StateError and the log.
func (p *persister) noteResult(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.saveErr = err
		// Once per distinct error: a full disk fails every grant, and a
		// warning per grant would bury everything else in the log.
		if msg := err.Error(); msg != p.loggedErr {
			p.loggedErr = msg
			p.log.Error("scheduler state not saved; no grants until it can be, retrying", "err", err)
		}
		return
	}
	if p.saveErr != nil {
		p.log.Info("scheduler state saved again", "path", p.path)
		p.saveErr, p.loggedErr = nil, ""
	}
}

// probe folds the loaded state into a fresh snapshot and empties the
// journal, the first write a flush would make anyway, so that a state dir
// that cannot be written is known at startup rather than at the first
// grant.
func (p *persister) probe() error {
	if p.path == "" {
		return nil
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	return p.attemptLocked(true)
}

// close folds the journal into a last snapshot and closes it. Later flushes
// do nothing.
func (p *persister) close() error {
	if p.path == "" {
		return nil
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	defer p.closeJournal()
	p.mu.Lock()
	dirty := p.gen > p.durable
	p.mu.Unlock()
	if !dirty && !p.needCompact && p.size == 0 {
		return nil
	}
	err := p.compact()
	p.noteResult(err)
	return err
}

// snapshotLocked prunes the mirror, dropping grants older than their
// bucket's retention or beyond its cap and pauses already over, and returns
// a copy of it.
func (p *persister) snapshotLocked(nowWall int64) diskState {
	st := diskState{Version: stateVersion, SavedAt: nowWall, Buckets: make(map[string]diskBucket, len(p.state))}
	for name, d := range p.state {
		g := d.Grants
		i := 0
		if d.RetainNS > 0 {
			// The first grant newer than nowWall − RetainNS.
			i, _ = slices.BinarySearch(g, nowWall-d.RetainNS+1)
		}
		if d.Cap > 0 {
			i = max(i, len(g)-d.Cap)
		}
		if i > 0 {
			d.Grants = g[:copy(g, g[i:])]
		}
		if d.PauseUntil <= nowWall {
			d.PauseUntil, d.PauseReason = 0, ""
		}
		// Entries stay in the mirror even when empty: their retain and cap
		// still bound the grants to come.
		p.state[name] = d
		if len(d.Grants) == 0 && d.PauseUntil == 0 {
			if d.RetainNS != 0 || d.Cap != 0 {
				p.omitted[name] = struct{}{}
			}
			continue
		}
		delete(p.omitted, name)
		d.Grants = slices.Clone(d.Grants)
		st.Buckets[name] = d
	}
	return st
}

// write replaces the snapshot atomically (temp file, then rename), so a
// crash leaves either the old or the new one.
func (p *persister) write(st diskState) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("saving scheduler state: %w", err)
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("saving scheduler state: %w", err)
	}
	// Snapshots are fsynced, file and directory: they are rare (startup,
	// compaction, failures, Close) and they carry pauses, which a power
	// loss must not forget.
	if err := durable.ReplaceFile(p.path, data); err != nil {
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
