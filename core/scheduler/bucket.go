package scheduler

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// waiter is one blocked Acquire. All fields but ch are guarded by the
// bucket's mutex until ch is closed; afterwards they are read-only.
type waiter struct {
	ch       chan struct{}
	deadline time.Time // zero: no maxWait
	done     bool
	grant    Grant
	err      error
	gen      uint64 // persister generation that holds the grant
}

// bucket is one named limit: a sliding-window log of grant times, a FIFO
// queue of waiters and a single timer armed for the head's earliest grant.
type bucket struct {
	s    *Scheduler
	name string

	mu    sync.Mutex
	limit Limit
	// log holds grant times, ascending, for the last retain (at least
	// historyFloor) and at most max(maxReq, historyCap) entries.
	log []time.Time
	// retain is the longest history this bucket needs: the largest
	// Window+Margin it has had (here or, via the state file, in an earlier
	// run), never less than historyFloor. Keeping more than the current
	// window means a reload that lengthens the window or raises the margin
	// still sees the grants the longer window now covers.
	retain      time.Duration
	maxReq      int
	pausedUntil time.Time
	pauseReason string
	queue       []*waiter
	timer       *time.Timer
	granted     uint64
	late        uint64 // grants handed out too late to use (see BucketStatus.Late)
	unsaved     uint64 // grants withdrawn because their record could not be written
	// shared maps a local grant time (Unix ns) to its entry in the
	// fleet's log (fleet mode only).
	shared map[int64]sharedRef
	// moved maps a grant's earlier times (Unix ns) to the time Answered
	// moved it to, so a report naming an old time (its reply lost, or a
	// trailer written before the last move was known) still finds it.
	moved map[int64]int64
	// seeded says this daemon's recent grants are in the fleet's log, as
	// of the store's life seededGen (see Scheduler.seedShared).
	seeded    bool
	seededGen uint64
	// fleetPausedUntil and fleetPauseReason are the latest fleet pause
	// this daemon was told of (in memory: Redis has it; this copy is only
	// written back if Redis forgets it).
	fleetPausedUntil time.Time
	fleetPauseReason string
	// reading is the fleet's budget as last read (fleet mode; see
	// Scheduler.fleetBudget).
	reading  fleetReading
	released uint64 // grants given back unused (Scheduler.Release)
	closed   bool
	// savedRetain and savedCap are the retain and cap last recorded in the
	// persister, so a retain record is written only when they change.
	savedRetain time.Duration
	savedCap    int
}

// historyFloor and historyCap bound the grant history independently of the
// current limit. A minute covers realistic window changes on reload; the cap
// keeps a high-rate bucket from making every state write large.
const (
	historyFloor = time.Minute
	historyCap   = 1024
)

// newBucket creates a bucket from its persisted state d, which the persister
// already holds: nothing is recorded here.
func newBucket(s *Scheduler, name string, l Limit, d diskBucket) *bucket {
	// The cap, like retain, never shrinks below what an earlier run needed.
	b := &bucket{s: s, name: name, limit: l, maxReq: d.Cap,
		savedRetain: time.Duration(d.RetainNS), savedCap: d.Cap}
	now := time.Now()
	for _, ns := range d.Grants {
		b.log = append(b.log, anchor(now, time.Unix(0, ns)))
	}
	// A clock step could have reordered wall times; the log must be sorted.
	slices.SortFunc(b.log, func(x, y time.Time) int { return x.Compare(y) })
	b.retain = max(time.Duration(d.RetainNS), historyFloor)
	if d.PauseUntil != 0 {
		b.setPauseLocked(now, time.Unix(0, d.PauseUntil), d.PauseReason)
	}
	return b
}

// anchor converts a persisted wall-clock time to one carrying the monotonic
// reading of now, so later comparisons are immune to wall-clock steps. A time
// in the future (the clock went back since it was written) is treated as now:
// still counted, but unable to hold the bucket for longer than one window.
func anchor(now, wall time.Time) time.Time {
	d := wall.Sub(now)
	if d > 0 {
		d = 0
	}
	return now.Add(d)
}

func (b *bucket) span() time.Duration { return b.limit.Window + b.s.marginNow() }

func (b *bucket) setLimitLocked(l Limit) {
	b.limit = l
	b.maxReq = max(b.maxReq, l.Requests)
	b.retain = max(b.retain, b.span())
	b.recordRetainLocked()
}

// recordRetainLocked records retain and the history cap when either changed
// since last recorded. Both only grow.
func (b *bucket) recordRetainLocked() {
	c := max(b.maxReq, historyCap)
	if b.retain == b.savedRetain && c == b.savedCap {
		return
	}
	b.savedRetain, b.savedCap = b.retain, c
	b.s.persist.retain(b.name, b.retain, c)
}

// pauseLocked extends the pause to until and records it; it reports whether
// anything changed.
func (b *bucket) pauseLocked(now, until time.Time, reason string) bool {
	if !b.setPauseLocked(now, until, reason) {
		return false
	}
	b.recordPauseLocked()
	return true
}

// setPauseLocked is pauseLocked without recording. A pause until is
// converted to the monotonic clock (it may come from a wall-clock
// Retry-After date).
func (b *bucket) setPauseLocked(now, until time.Time, reason string) bool {
	until = now.Add(until.Sub(now))
	if !until.After(now) || !until.After(b.pausedUntil) {
		return false
	}
	b.pausedUntil, b.pauseReason = until, reason
	return true
}

// resumeLocked clears the pause; it reports whether there was one.
func (b *bucket) resumeLocked() bool {
	if b.pausedUntil.IsZero() {
		return false
	}
	b.pausedUntil, b.pauseReason = time.Time{}, ""
	b.recordPauseLocked()
	return true
}

// recordPauseLocked records the bucket's pause (or its absence) and returns
// the generation that holds it.
func (b *bucket) recordPauseLocked() uint64 {
	var until int64
	if !b.pausedUntil.IsZero() {
		until = b.pausedUntil.UnixNano()
	}
	return b.s.persist.pause(b.name, until, b.pauseReason)
}

// floor is the earliest any grant may happen: now, or the end of a pause.
func (b *bucket) floor(now time.Time) time.Time {
	if b.pausedUntil.After(now) {
		return b.pausedUntil
	}
	return now
}

// nextAt is the earliest time not before floor at which one more grant keeps
// at most req grants in every (t − span, t]: the req-th most recent grant
// must lie at or before t − span.
func nextAt(log []time.Time, req int, span time.Duration, floor time.Time) time.Time {
	if n := len(log); n >= req {
		if t := log[n-req].Add(span); t.After(floor) {
			return t
		}
	}
	return floor
}

// tail copies the last n entries of log into a slice with room to grow, the
// starting point of a schedule simulation.
func tail(log []time.Time, n, extra int) []time.Time {
	log = log[max(0, len(log)-n):]
	out := make([]time.Time, len(log), len(log)+extra)
	copy(out, log)
	return out
}

func (b *bucket) pruneLocked(now time.Time) {
	b.retain = max(b.retain, b.span())
	b.maxReq = max(b.maxReq, b.limit.Requests)
	cut := now.Add(-b.retain)
	i := 0
	for i < len(b.log) && !b.log[i].After(cut) {
		i++
	}
	i = max(i, len(b.log)-max(b.maxReq, historyCap))
	if i > 0 {
		// Reslicing, not copying: at the cap every grant drops one entry,
		// and append moves the log to a fresh array (freeing the dropped
		// front) once the spare capacity is used up, amortised O(1).
		b.log = b.log[i:]
	}
	b.recordRetainLocked()
}

func (b *bucket) inWindowLocked(now time.Time) int {
	cut := now.Add(-b.span())
	n := 0
	for _, t := range b.log {
		if t.After(cut) && !t.After(now) {
			n++
		}
	}
	return n
}

// dispatchLocked is the bucket's only scheduling step: grant every waiter
// that is due, fail waiters whose deadline the schedule now misses, and arm
// the timer for the next head. Every event that can change the schedule
// (arrival, cancellation, timer, limit, margin, pause) calls it.
func (b *bucket) dispatchLocked(now time.Time) {
	if b.closed {
		return
	}
	b.pruneLocked(now)
	if h := b.s.held.Load(); h != nil {
		// Fail closed: nothing is granted while records cannot be
		// written, and nobody waits on a disk that may stay full.
		for _, w := range b.queue {
			w.err = b.s.unwritable(b.name, h)
			w.done = true
			close(w.ch)
		}
		b.queue = nil
		if b.timer != nil {
			b.timer.Stop()
		}
		return
	}
	req, span := b.limit.Requests, b.span()
	for len(b.queue) > 0 && !nextAt(b.log, req, span, b.floor(now)).After(now) {
		w := b.queue[0]
		b.queue[0] = nil
		b.queue = b.queue[1:]
		b.grantLocked(w, now)
	}
	if len(b.queue) == 0 {
		b.queue = nil // drop the drained backing array
		if b.timer != nil {
			b.timer.Stop()
		}
		return
	}

	// Predict every waiter's grant, each consuming one slot ahead of the
	// next; those predicted past their deadline leave without consuming,
	// which can only bring the ones behind them forward.
	sim := tail(b.log, req, len(b.queue))
	floor := b.floor(now)
	kept := b.queue[:0]
	for i, w := range b.queue {
		at := nextAt(sim, req, span, floor)
		if !w.deadline.IsZero() && at.After(w.deadline.Add(deadlineSlack)) {
			w.err = b.budgetErrorLocked(now, at, w.deadline, i)
			w.done = true
			close(w.ch)
			continue
		}
		sim = append(sim, at)
		kept = append(kept, w)
	}
	clear(b.queue[len(kept):])
	b.queue = kept
	if len(b.queue) == 0 {
		if b.timer != nil {
			b.timer.Stop()
		}
		return
	}

	d := nextAt(b.log, req, span, floor).Sub(now)
	if b.timer == nil {
		b.timer = time.AfterFunc(d, b.onTimer)
	} else {
		b.timer.Reset(d)
	}
}

func (b *bucket) onTimer() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dispatchLocked(time.Now())
}

// grantLocked grants w at now, or a nanosecond after the newest grant when
// that is not before now: several waiters granted in one dispatch would
// otherwise share a time, and the journal identifies grants by their time
// (replaying it skips a time already present). A later time only ever delays
// later grants.
func (b *bucket) grantLocked(w *waiter, now time.Time) {
	if n := len(b.log); n > 0 && !now.After(b.log[n-1]) {
		now = b.log[n-1].Add(time.Nanosecond)
	}
	b.log = append(b.log, now)
	b.granted++
	w.grant = Grant{Bucket: b.name, At: now, Seq: b.granted}
	w.gen = b.s.persist.grant(b.name, now.UnixNano())
	w.done = true
	close(w.ch)
}

func compareTime(e, t time.Time) int { return e.Compare(t) }

// withdrawLocked removes a grant that was decided but never handed out, so
// never sent, from the log, and records the removal (a crash before it is
// written keeps the grant counted, which is safe). The caller dispatches:
// the slot it frees belongs to the withdrawn grant's caller first.
func (b *bucket) withdrawLocked(at time.Time) {
	for i := len(b.log) - 1; i >= 0; i-- {
		if b.log[i].Equal(at) {
			b.log = slices.Delete(b.log, i, i+1)
			b.s.persist.release(b.name, at.UnixNano())
			return
		}
	}
}

// maxMoves bounds the chain of moves currentLocked follows: a grant is
// moved at most every half span while its exchange runs, so a chain this
// long outlives any exchange's timeout.
const maxMoves = 64

// currentLocked returns the time the grant once logged at at is logged at
// now, after the moves Answered made.
func (b *bucket) currentLocked(at time.Time) time.Time {
	t := at.UnixNano()
	for range maxMoves {
		n, ok := b.moved[t]
		if !ok {
			break
		}
		t = n
	}
	if t == at.UnixNano() {
		return at
	}
	return time.Unix(0, t)
}

// noteMovedLocked records a move for currentLocked and forgets moves of
// grants older than twice the bucket's span, which no report names.
func (b *bucket) noteMovedLocked(from, to, now time.Time) {
	if b.moved == nil {
		b.moved = map[int64]int64{}
	}
	b.moved[from.UnixNano()] = to.UnixNano()
	cut := now.Add(-2 * b.span()).UnixNano()
	for k, v := range b.moved {
		if v < cut {
			delete(b.moved, k)
		}
	}
}

// restampLocked moves a grant's log entry from the moment it was granted to
// the moment it is handed to the caller, after the state write: the caller
// sends right then. Under load that write can take long enough to squeeze
// two windows' worth of sends closer than the margin allows; logging the
// later time only ever delays later grants, so it cannot let one through.
//
// The restamp is recorded but not flushed: it goes out with the next write
// or at Close. A crash before then leaves the grant-time stamp on disk,
// earlier by the duration of one state write, which the margin covers.
func (b *bucket) restampLocked(at, now time.Time) time.Time {
	if !now.After(at) {
		return at
	}
	for i := len(b.log) - 1; i >= 0; i-- {
		if !b.log[i].Equal(at) {
			continue
		}
		b.log = slices.Delete(b.log, i, i+1)
		// Keep grant times distinct (see grantLocked): callers handed
		// their grants after one shared write may read the same clock.
		j, found := slices.BinarySearchFunc(b.log, now, compareTime)
		for found {
			now = now.Add(time.Nanosecond)
			j, found = slices.BinarySearchFunc(b.log, now, compareTime)
		}
		b.log = slices.Insert(b.log, j, now)
		b.s.persist.restamp(b.name, at.UnixNano(), now.UnixNano())
		b.dispatchLocked(now)
		return now
	}
	return at
}

// predictTailLocked is when a caller joining the queue now would be granted.
func (b *bucket) predictTailLocked(now time.Time) time.Time {
	req, span := b.limit.Requests, b.span()
	if len(b.queue) == 0 {
		// The common case, and the pre-grant's: no schedule to simulate,
		// so no copy of the log (it can hold thousands of grants).
		return nextAt(b.log, req, span, b.floor(now))
	}
	sim := tail(b.log, req, len(b.queue)+1)
	floor := b.floor(now)
	for range b.queue {
		sim = append(sim, nextAt(sim, req, span, floor))
	}
	return nextAt(sim, req, span, floor)
}

func (b *bucket) budgetErrorLocked(now, at, deadline time.Time, ahead int) *BudgetError {
	var reason string
	if b.pausedUntil.After(deadline) {
		reason = fmt.Sprintf("paused until %s: %s", b.pausedUntil.Round(0).Format(time.RFC3339Nano), b.pauseReason)
	} else {
		reason = fmt.Sprintf("limit %d per %s plus %s margin, %d waiting ahead",
			b.limit.Requests, b.limit.Window, b.s.marginNow(), ahead)
	}
	return &BudgetError{Bucket: b.name, RetryAfter: roundUp(at.Sub(now)), Reason: reason}
}

// roundUp rounds d up to a whole millisecond, at least one: finer precision
// means nothing to a retrying caller, and zero would invite a busy loop.
func roundUp(d time.Duration) time.Duration {
	if d <= 0 {
		return time.Millisecond
	}
	return (d + time.Millisecond - 1).Truncate(time.Millisecond)
}

func (b *bucket) removeLocked(w *waiter) {
	if i := slices.Index(b.queue, w); i >= 0 {
		b.queue = slices.Delete(b.queue, i, i+1)
	}
	w.done = true
}

func (b *bucket) closeLocked() {
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
	}
	for _, w := range b.queue {
		w.err = fmt.Errorf("scheduler: acquire %q: %w", b.name, ErrClosed)
		w.done = true
		close(w.ch)
	}
	b.queue = nil
}
