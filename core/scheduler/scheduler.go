// Package scheduler is the single gate every upstream request of sluice passes
// through: first tries, retries, token fetches and page follow-ups, for all
// local callers together.
//
// Some upstreams ban the caller for good when it sends more than N requests
// within a window (iNeo: more than 6 in 7 s bans the IP, then the token). A
// token bucket does not prevent that: golang.org/x/time/rate with burst 6 at
// 6/7s lets 11–12 requests into one 7 s window. The scheduler therefore keeps
// a sliding-window log of grant times per named bucket and guarantees, for
// every grant at time t, that the bucket granted at most Limit.Requests in the
// half-open interval (t − (Window+Margin), t]. The margin exists because the
// upstream counts arrivals in closed windows (sends at t and t+Window land in
// one window) and because network jitter and the persistence write between
// the grant and the send move the arrival.
//
// Every grant counts forever: there is no release, because a request that
// timed out may still have reached the upstream. Waiters are served strictly
// FIFO per bucket; a caller may bound its wait (maxWait) and is told at once,
// with a BudgetError carrying RetryAfter, when it cannot be served in time.
// Pause holds a bucket for every caller after a 429/Retry-After or a ban
// signal.
//
// Grants and pauses are persisted before Acquire (or Pause, Resume) returns,
// so a daemon killed in the middle of a burst and restarted cannot exceed the
// limit together with the grants made just before. A grant whose record
// cannot be written is never handed out: the scheduler then holds every
// bucket until a write succeeds (see hold.go), failing closed. The state is a snapshot
// (StateFile, replaced atomically by temp file + rename) plus an append-only
// journal of the changes since (JournalFile): a grant costs one small
// append, and the journal is folded into a new snapshot when it grows large,
// after a failed append and at Close. Journal records are idempotent, so a
// crash between writing a snapshot and emptying the journal is harmless.
// When the state cannot be read, cannot be written at startup (a
// read-only or full file system), or holds times in the future (the wall
// clock went back), every bucket is assumed to have been full at startup.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMargin is the safety margin added to every window when
// Options.Margin is zero.
const DefaultMargin = 250 * time.Millisecond

// minLate is the least time a grant may take from decision to hand-out
// (half the margin normally): with a margin of a few microseconds, which
// guarantees little anyway, ordinary scheduling would otherwise make every
// grant late.
const minLate = time.Millisecond

// deadlineSlack absorbs timer latency when re-checking waiters against their
// maxWait: a waiter whose prediction was exactly its deadline must not be
// failed because the head's timer fired a few milliseconds late and shifted
// the schedule by that much. Real changes (a Pause, a lower limit) move the
// prediction by far more.
const deadlineSlack = 10 * time.Millisecond

var (
	// ErrBudget is matched (errors.Is) by every *BudgetError.
	ErrBudget = errors.New("rate budget exceeded")
	// ErrUnknownBucket is returned by Acquire for a bucket never configured.
	ErrUnknownBucket = errors.New("unknown rate bucket")
	// ErrClosed is returned once the scheduler has been closed.
	ErrClosed = errors.New("scheduler closed")
)

// Limit is the upstream's rule: at most Requests within any Window.
type Limit struct {
	Requests int
	Window   time.Duration
}

func (l Limit) validate() error {
	if l.Requests < 1 {
		return fmt.Errorf("limit requests must be at least 1, got %d", l.Requests)
	}
	if l.Window <= 0 {
		return fmt.Errorf("limit window must be positive, got %s", l.Window)
	}
	return nil
}

// Grant is one permission to send one upstream request.
type Grant struct {
	Bucket string
	// At is when the grant was recorded (monotonic clock reading included).
	At time.Time
	// Seq numbers the bucket's grants since this scheduler started, from 1.
	Seq uint64
	// UseBy is the latest moment the request may be sent: within the
	// margin of the grant decision. A grant not used by then must be left
	// unused and a new one acquired. Zero (no margin configured) means no
	// bound.
	UseBy time.Time
}

// BudgetError reports that a caller could not be granted within its maxWait.
// Nothing was consumed.
type BudgetError struct {
	Bucket string
	// RetryAfter is how long from now the caller's grant was predicted,
	// rounded up to the millisecond.
	RetryAfter time.Duration
	Reason     string
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("scheduler: bucket %q: %v: retry after %s (%s)", e.Bucket, ErrBudget, e.RetryAfter, e.Reason)
}

// Is makes errors.Is(err, ErrBudget) true.
func (e *BudgetError) Is(target error) bool { return target == ErrBudget }

// BucketStatus is a snapshot of one bucket, for the status API.
type BucketStatus struct {
	Name     string
	Requests int
	Window   time.Duration
	// InWindow counts grants within the last Window+Margin.
	InWindow int
	Queued   int
	// PausedUntil is zero when the bucket is not paused.
	PausedUntil time.Time
	PauseReason string
	// Granted counts grants handed out since the scheduler started:
	// released ones (never used), late ones and ones whose record could
	// not be written excluded.
	Granted uint64
	// Late counts grants decided but handed out too late to be used: they
	// are withdrawn, never sent, and their callers queue again.
	Late uint64
	// Released counts grants given back unused (Release): not in Granted.
	Released uint64
	// LastError is the scheduler's state error (see Scheduler.StateError).
	LastError string
	// Held says why the bucket grants nothing (its records cannot be
	// written: "state_unwritable: ..."), or is empty. HeldErrno names the
	// failed write's system error ("ENOSPC"), when there is one.
	Held      string
	HeldErrno string
}

// Options configure New.
type Options struct {
	// StateDir holds StateFile and JournalFile. Created with mode 0700
	// when missing. Empty disables persistence (tests, throwaway
	// instances).
	StateDir string
	// Margin is added to every window. Zero selects DefaultMargin; use
	// SetMargin(0) to run without one.
	Margin time.Duration
	// Logger receives warnings about state problems; nil discards.
	Logger *slog.Logger
	// wallClock replaces time.Now for the clock-step check (tests only).
	wallClock func() time.Time
	// Shared, if set, is the fleet's authority for every bucket's grants
	// and pauses (see Shared); the local journal then only mirrors them.
	Shared Shared
}

// Scheduler gates upstream requests per bucket. It is safe for concurrent use.
type Scheduler struct {
	log     *slog.Logger
	margin  atomic.Int64
	persist *persister
	start   time.Time
	// beforeHandOut, set by tests only, runs between a grant's state
	// write and its hand-out (where a starved process stalls).
	beforeHandOut func()
	// untrusted says why every bucket is held for one Window+Margin after
	// start: the persisted state could not be read, or not written at
	// startup; empty when the state is trusted. Immutable after New, so
	// buckets may read it without s.mu.
	untrusted string
	// held is set while the state cannot be written (see hold.go).
	held atomic.Pointer[heldState]
	// wallNow reads the wall clock for the step check; tests replace it.
	wallNow  func() time.Time
	kickCh   chan struct{}
	stop     chan struct{}
	loopDone chan struct{}
	shared   Shared
	// beatCh asks the fleet heartbeat for a beat now; beatDone closes
	// when it stops. forgot counts the fleet store's restarts (empty).
	beatCh   chan struct{}
	beatDone chan struct{}
	forgot   atomic.Uint64
	// tickets numbers this scheduler's places in its fleet's queues.
	tickets atomic.Uint64
	// stopCtx ends when the scheduler closes (background fleet reads).
	stopCtx  context.Context
	stopDone context.CancelFunc

	// mu guards the fields below. Lock order: s.mu, then bucket.mu, then
	// persister.mu; never the reverse.
	mu      sync.RWMutex
	closed  bool
	buckets map[string]*bucket
	// pending is persisted state for buckets not configured yet (the
	// persister's mirror holds it too).
	pending map[string]diskBucket
}

// New creates a scheduler and loads its state from opts.StateDir. A state
// that cannot be read is not an error: the scheduler starts in the safe mode
// described in the package comment and reports it through StateError.
func New(opts Options) (*Scheduler, error) {
	if opts.Margin < 0 {
		return nil, fmt.Errorf("scheduler: negative margin %s", opts.Margin)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Scheduler{
		log:     logger,
		start:   time.Now(),
		buckets: make(map[string]*bucket),
		pending: make(map[string]diskBucket),
		wallNow: time.Now,
		shared:  opts.Shared,
		kickCh:  make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	s.stopCtx, s.stopDone = context.WithCancel(context.Background())
	if opts.wallClock != nil {
		s.wallNow = opts.wallClock
	}
	margin := opts.Margin
	if margin == 0 {
		margin = DefaultMargin
	}
	s.margin.Store(int64(margin))

	s.persist = newPersister(opts.StateDir, logger)
	loaded, err := s.persist.load()
	if err != nil {
		s.untrusted = "scheduler state unreadable at startup"
		logger.Error("scheduler state unreadable; every bucket is held for one window after startup", "dir", opts.StateDir, "err", err)
	} else if err := s.persist.probe(); err != nil {
		// State that reads but cannot be written is no safer than state
		// that cannot be read: the last run, on the same read-only or
		// full file system, could not save its grants either, and this
		// one would forget its own.
		s.untrusted = "scheduler state cannot be saved (state_dir read-only or full)"
		logger.Error("scheduler state cannot be saved; every bucket is held until it can be, then for one window", "dir", opts.StateDir, "err", err)
		s.held.Store(&heldState{err: err, since: s.start})
	}
	if newest := s.persist.newest; s.untrusted == "" && newest > s.start.UnixNano() {
		// A record from the future: the wall clock is behind the one
		// that wrote it (a VPS booted without a hardware clock, an NTP
		// step), so how long ago the last grants were is unknown.
		ahead := time.Duration(newest - s.start.UnixNano()).Round(time.Millisecond)
		s.untrusted = fmt.Sprintf("the clock is %s behind the saved state", ahead)
		logger.Error("scheduler state was saved in the future: the clock went back; every bucket is held for one window after startup", "dir", opts.StateDir, "ahead", ahead)
	}
	// Even unreadable state yields what could be read of it (see load).
	s.pending = loaded
	if opts.StateDir != "" {
		s.loopDone = make(chan struct{})
		go s.loop(time.Now(), s.wallNow().UnixNano())
	}
	if s.shared != nil {
		s.beatCh, s.beatDone = make(chan struct{}, 1), make(chan struct{})
		go s.beatLoop()
	}
	return s, nil
}

// SetMargin changes the safety margin live. Waiters are re-evaluated at once.
// Negative values are treated as zero.
func (s *Scheduler) SetMargin(d time.Duration) {
	s.margin.Store(int64(max(d, 0)))
	for _, b := range s.snapshotBuckets() {
		b.mu.Lock()
		b.dispatchLocked(time.Now())
		b.mu.Unlock()
	}
}

func (s *Scheduler) marginNow() time.Duration { return time.Duration(s.margin.Load()) }

// Configure creates the bucket or changes its limit live (config reload).
// Waiters re-evaluate under the new limit at once: a higher limit releases
// them, a lower one may fail those whose maxWait it now exceeds.
func (s *Scheduler) Configure(name string, l Limit) error {
	if err := l.validate(); err != nil {
		return fmt.Errorf("scheduler: configure %q: %w", name, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("scheduler: configure %q: %w", name, ErrClosed)
	}
	b, ok := s.buckets[name]
	if !ok {
		b = newBucket(s, name, l, s.pending[name])
		delete(s.pending, name)
		s.buckets[name] = b
	}
	// Taking b.mu under s.mu follows the lock order and keeps a bucket that
	// is being created invisible until it is fully set up.
	b.mu.Lock()
	s.mu.Unlock()
	now := time.Now()
	b.setLimitLocked(l)
	if s.untrusted != "" {
		// Assume the bucket was full when the daemon started: nothing
		// before one whole Window+Margin has passed since then.
		until := s.start.Add(l.Window + s.marginNow())
		b.pauseLocked(now, until, s.untrusted+"; assuming the bucket was full")
	}
	b.dispatchLocked(now)
	b.mu.Unlock()
	if s.shared != nil {
		// A daemon joining its fleet counts its own recent grants there
		// before it serves (see seedShared); if the fleet cannot be
		// reached now, the heartbeat and the first Acquire try again, and
		// nothing is granted before it succeeds.
		ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
		if err := s.seedShared(ctx, b, name); err != nil {
			s.log.Warn("fleet: could not count this daemon's recent grants in the fleet's window yet; the bucket grants nothing until it can", "bucket", name, "err", err)
		}
		cancel()
		s.beatSoon()
	}
	return nil
}

// Acquire blocks until the bucket grants one request, in FIFO order with the
// other callers. If maxWait > 0 and the grant is predicted later than
// now+maxWait, it fails at once with a *BudgetError, and a waiting caller
// fails the same way as soon as the prediction moves past its deadline
// (Pause, lower limit). maxWait 0 leaves the wait to ctx; a negative maxWait
// accepts only an immediate grant. A cancelled caller leaves the queue
// without consuming anything; a grant, once returned, counts forever.
func (s *Scheduler) Acquire(ctx context.Context, name string, maxWait time.Duration) (Grant, error) {
	if err := ctx.Err(); err != nil {
		return Grant{}, fmt.Errorf("scheduler: acquire %q: %w", name, err)
	}
	b, err := s.lookup(name)
	if err != nil {
		return Grant{}, fmt.Errorf("scheduler: acquire %q: %w", name, err)
	}
	if s.shared != nil {
		return s.acquireShared(ctx, b, name, maxWait, 0)
	}
	w, err := s.wait(ctx, b, name, maxWait)
	for {
		if err != nil {
			return Grant{}, err
		}
		// Persist before the caller may send: a crash after this point
		// must not forget the grant. A grant whose record is not known to
		// be written is never handed out (fail closed): it is withdrawn,
		// never having been sent, and every bucket is held until a write
		// succeeds.
		if err := s.persist.flush(w.gen, false); err != nil {
			b.mu.Lock()
			b.withdrawLocked(w.grant.At)
			b.unsaved++
			b.mu.Unlock()
			s.hold(err)
			return Grant{}, &UnwritableError{Bucket: name, RetryAfter: retryEvery, Err: err}
		}
		if s.beforeHandOut != nil {
			s.beforeHandOut()
		}
		b.mu.Lock()
		now := time.Now()
		margin := s.marginNow()
		if stale := w.grant.At.Add(max(margin/2, minLate)); margin > 0 && now.After(stale) {
			// Handed out too late (a starved process, a slow disk): sent
			// now, it could land in a window the schedule has already
			// filled. Never handed out, it was never sent: it is withdrawn
			// (a crash before the withdrawal is written keeps it counted,
			// which is safe), and the caller queues again at the head, in
			// the same critical section, so nobody who arrived meanwhile
			// takes the slot it frees: it was first in line.
			lateBy := now.Sub(w.grant.At)
			b.withdrawLocked(w.grant.At)
			b.late++
			w, err = s.requeueFrontLocked(b, name, w.deadline)
			b.mu.Unlock()
			s.log.Warn("grant handed out too late to be used; queueing again", "bucket", name,
				"late", lateBy.Round(time.Microsecond), "margin", margin)
			if err == nil {
				w, err = s.await(ctx, b, name, w)
			}
			continue
		}
		// UseBy bounds the send, from the grant decision, to three quarters
		// of the margin, leaving the rest for the last hop's jitter. Without
		// a margin there is nothing to bound it by.
		var useBy time.Time
		if margin > 0 {
			useBy = w.grant.At.Add(max(margin*3/4, 2*minLate))
		}
		w.grant.At = b.restampLocked(w.grant.At, now)
		w.grant.UseBy = useBy
		b.mu.Unlock()
		return w.grant, nil
	}
}

// minSpeculative is the smallest limit that gets speculative grants: below
// it, half the limit is one slot or none, and one grant held for a moment
// could fill the bucket, so that a caller arriving meanwhile is told to
// wait a whole window and sleeps through the slot's return.
const minSpeculative = 4

// ErrNoSpeculation: the bucket's limit is too small for speculative
// grants (minSpeculative); ask for an ordinary grant when it is needed.
var ErrNoSpeculation = errors.New("no speculative grants in a bucket this small")

// AcquireSpeculative is Acquire for a grant that may be given back at
// once, unused (fleet mode: a miss's grant asked for beside its cache
// lookup, which may yet find another member's answer). It grants only at
// once, and only while at least half of the bucket's limit stays free
// after it: a grant taken and given back must never make another caller
// wait, and a caller told the bucket is full waits until the slot it was
// told, however soon a speculative grant comes back. Buckets whose limit
// is below minSpeculative get ErrNoSpeculation. A refusal never updates
// the bucket's budget reading (it says nothing of the budget an ordinary
// caller would get).
func (s *Scheduler) AcquireSpeculative(ctx context.Context, name string) (Grant, error) {
	if err := ctx.Err(); err != nil {
		return Grant{}, fmt.Errorf("scheduler: acquire %q: %w", name, err)
	}
	b, err := s.lookup(name)
	if err != nil {
		return Grant{}, fmt.Errorf("scheduler: acquire %q: %w", name, err)
	}
	b.mu.Lock()
	limit := b.limit.Requests
	b.mu.Unlock()
	if limit < minSpeculative {
		return Grant{}, fmt.Errorf("scheduler: acquire %q: %w", name, ErrNoSpeculation)
	}
	spare := limit / 2
	if s.shared != nil {
		return s.acquireShared(ctx, b, name, -1, spare)
	}
	// A single host has no lookup to pair a grant with; the rule holds
	// all the same.
	if bud, ok := s.Budget(name); !ok || bud.Remaining-1 < spare {
		return Grant{}, &BudgetError{Bucket: name, Reason: "no spare budget for a speculative grant"}
	}
	return s.Acquire(ctx, name, -1)
}

// wait queues one caller at the tail and waits for its grant.
func (s *Scheduler) wait(ctx context.Context, b *bucket, name string, maxWait time.Duration) (*waiter, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, fmt.Errorf("scheduler: acquire %q: %w", name, ErrClosed)
	}
	if h := s.held.Load(); h != nil {
		b.mu.Unlock()
		return nil, s.unwritable(name, h)
	}
	now := time.Now()
	// Serve waiters that are already due first so a newcomer never
	// overtakes them, even if their timer has not fired yet.
	b.dispatchLocked(now)
	var deadline time.Time
	if maxWait != 0 {
		deadline = now.Add(max(maxWait, 0))
		if at := b.predictTailLocked(now); at.After(deadline) {
			err := b.budgetErrorLocked(now, at, deadline, len(b.queue))
			b.mu.Unlock()
			return nil, err
		}
	}
	w := &waiter{ch: make(chan struct{}), deadline: deadline}
	b.queue = append(b.queue, w)
	b.dispatchLocked(now)
	b.mu.Unlock()
	return s.await(ctx, b, name, w)
}

// requeueFrontLocked puts a caller whose grant was handed out too late back
// at the head of the queue, keeping its deadline: a starved hand-out costs
// it no place in the FIFO order. No prediction check: the head's is the
// earliest there is, and dispatch fails it if even that misses the
// deadline.
func (s *Scheduler) requeueFrontLocked(b *bucket, name string, deadline time.Time) (*waiter, error) {
	if b.closed {
		return nil, fmt.Errorf("scheduler: acquire %q: %w", name, ErrClosed)
	}
	w := &waiter{ch: make(chan struct{}), deadline: deadline}
	b.queue = slices.Insert(b.queue, 0, w)
	b.dispatchLocked(time.Now())
	return w, nil
}

// await waits for w's grant (or failure), or for ctx.
func (s *Scheduler) await(ctx context.Context, b *bucket, name string, w *waiter) (*waiter, error) {
	select {
	case <-w.ch:
	case <-ctx.Done():
		b.mu.Lock()
		if !w.done {
			b.removeLocked(w)
			b.dispatchLocked(time.Now())
			b.mu.Unlock()
			return nil, fmt.Errorf("scheduler: acquire %q: %w", name, ctx.Err())
		}
		// Granted at the same moment: the slot is counted already, so
		// hand it out rather than waste it silently.
		b.mu.Unlock()
	}
	if w.err != nil {
		return nil, w.err
	}
	return w, nil
}

// Release returns a grant that provably was never used to send anything (a
// pre-grant its plugin reported unused): its log entry is removed, so the
// slot serves the next caller. Releasing a grant that might have been sent
// could overfill a window; callers must be certain. Unknown grants are
// ignored. The release is journaled with the next write; a crash before
// that keeps the grant counted, which is safe.
func (s *Scheduler) Release(g Grant) {
	b, err := s.lookup(g.Bucket)
	if err != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if ref, ok := b.sharedRefLocked(g.At); ok {
		delete(b.shared, g.At.UnixNano())
		s.shared.ReleaseLater(b.name, ref.member, s.sharedDone)
	}
	for i := len(b.log) - 1; i >= 0; i-- {
		if b.log[i].Equal(g.At) {
			b.log = slices.Delete(b.log, i, i+1)
			b.released++
			b.s.persist.release(b.name, g.At.UnixNano())
			b.dispatchLocked(time.Now())
			return
		}
	}
}

// Answered moves a grant's log entry from at, its time in the log, to
// answeredAt, when the answer to the request sent with it arrived, if that
// is later (and not later than now). The scheduler knows when a request
// left, not when the upstream counted it, which is at the latest when its
// answer came back: counted there, a request that spent longer in transit
// than the next (a first request on a fresh TLS connection to a far
// server) cannot squeeze a window, whatever the margin. Moving an entry
// later only ever delays later grants. An entry no longer in the log
// (pruned, released, from before a restart) is ignored.
//
// It returns the time the grant counts from now; zero if it is not in the
// log. A grant also moves while its exchange is unanswered (Outstanding);
// any of its earlier times still names it.
func (s *Scheduler) Answered(name string, at, answeredAt time.Time) time.Time {
	return s.move(name, at, answeredAt, true)
}

// Outstanding moves a grant whose exchange is still unanswered to now, as
// Answered would, except that the fleet does not learn from it how long
// answers take (it is no answer).
func (s *Scheduler) Outstanding(name string, at time.Time) time.Time {
	return s.move(name, at, time.Now(), false)
}

// move is Answered and Outstanding; answer says which.
func (s *Scheduler) move(name string, at, answeredAt time.Time, answer bool) time.Time {
	b, err := s.lookup(name)
	if err != nil {
		return time.Time{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if answeredAt.After(now) {
		answeredAt = now
	}
	at = b.currentLocked(at)
	ref, shared := b.sharedRefLocked(at)
	if shared && answeredAt.After(at) {
		// Queued now, in the caller's goroutine, so it goes with the
		// cache store that follows this answer.
		s.shared.RestampLater(name, ref.member, answeredAt.Add(ref.offset), answer, s.sharedDone)
	}
	if !answeredAt.After(at) {
		if _, found := slices.BinarySearchFunc(b.log, at, compareTime); found {
			return at
		}
		return time.Time{}
	}
	moved := b.restampLocked(at, answeredAt)
	if moved.Equal(at) {
		return time.Time{} // not in the log
	}
	if shared {
		// Found under its new time by the next move.
		delete(b.shared, at.UnixNano())
		b.shared[moved.UnixNano()] = ref
	}
	b.noteMovedLocked(at, moved, now)
	// The request has been counted upstream at its answer (or is still
	// out): until that is written, a restart would place it earlier than
	// the upstream did. Written soon, off the caller's path; a failure
	// holds every bucket like a failed grant.
	s.kick()
	return moved
}

// Span is how long a grant of bucket name counts from its time in the
// log: the window and the margin (zero for an unknown bucket).
func (s *Scheduler) Span(name string) time.Duration {
	b, err := s.lookup(name)
	if err != nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.span()
}

// Pause holds the bucket for every caller until until (429 Retry-After, ban
// signal). Pauses only extend: an until earlier than the current one is
// ignored. Waiters whose maxWait the pause exceeds fail at once. Pausing a
// bucket that is not configured yet takes effect when it is configured.
func (s *Scheduler) Pause(name string, until time.Time, reason string) {
	now := time.Now()
	if !until.After(now) {
		return
	}
	if s.shared != nil {
		// One pause for the fleet. If it cannot be written, this daemon's
		// own pause below still holds it.
		ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
		if err := s.shared.Pause(ctx, name, until, reason); err != nil {
			s.log.Error("the fleet did not take the pause; this daemon holds it alone", "bucket", name, "err", err)
		}
		cancel()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	b, ok := s.buckets[name]
	if !ok {
		d := s.pending[name]
		if w := until.UnixNano(); w > d.PauseUntil {
			d.PauseUntil, d.PauseReason = w, reason
			s.pending[name] = d
			s.persist.pause(name, w, reason)
		}
		s.mu.Unlock()
		s.log.Warn("pause for unconfigured bucket recorded", "bucket", name, "until", until, "reason", reason)
		s.syncOrHold()
		return
	}
	b.mu.Lock()
	s.mu.Unlock()
	changed := b.pauseLocked(now, until, reason)
	if changed {
		b.dispatchLocked(now)
	}
	b.mu.Unlock()
	if changed {
		s.log.Warn("bucket paused", "bucket", name, "until", until, "reason", reason)
		s.syncOrHold()
	}
}

// syncOrHold writes everything recorded through to the disk (fsync): pauses
// are rare and long (a Retry-After of up to an hour, iNeo's stop codes), and
// a power loss must not forget them. A failure holds every bucket.
func (s *Scheduler) syncOrHold() {
	if err := s.persist.flushAll(true); err != nil {
		s.hold(err)
	}
}

// Resume clears a pause (operator action).
func (s *Scheduler) Resume(name string) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	b, ok := s.buckets[name]
	if !ok {
		if d, ok := s.pending[name]; ok && d.PauseUntil != 0 {
			d.PauseUntil, d.PauseReason = 0, ""
			s.pending[name] = d
			s.persist.pause(name, 0, "")
		}
		s.mu.Unlock()
		s.syncOrHold()
		return
	}
	b.mu.Lock()
	s.mu.Unlock()
	b.resumeLocked()
	b.dispatchLocked(time.Now())
	b.mu.Unlock()
	s.log.Info("bucket resumed", "bucket", name)
	s.syncOrHold()
}

// Status reports every configured bucket, sorted by name.
func (s *Scheduler) Status() []BucketStatus {
	stateErr := s.StateError()
	held, heldErrno := s.Held(), ""
	if h := s.held.Load(); h != nil {
		heldErrno = (&UnwritableError{Err: h.err}).Errno()
	}
	bs := s.snapshotBuckets()
	out := make([]BucketStatus, 0, len(bs))
	now := time.Now()
	for _, b := range bs {
		b.mu.Lock()
		st := BucketStatus{
			Name:      b.name,
			Requests:  b.limit.Requests,
			Window:    b.limit.Window,
			InWindow:  b.inWindowLocked(now),
			Queued:    len(b.queue),
			Granted:   b.granted - b.released - b.late - b.unsaved,
			Late:      b.late,
			Released:  b.released,
			LastError: stateErr,
			Held:      held,
			HeldErrno: heldErrno,
		}
		if b.pausedUntil.After(now) {
			st.PausedUntil, st.PauseReason = b.pausedUntil, b.pauseReason
		}
		b.mu.Unlock()
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b BucketStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// StateError describes why the persisted state could not be loaded and the
// latest failure to save it; empty when state handling is healthy.
func (s *Scheduler) StateError() string { return s.persist.errString() }

// Close fails all waiters with ErrClosed, stops the buckets' timers and
// folds the journal into a last snapshot. Later calls return nil.
func (s *Scheduler) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.stopDone()
	bs := make([]*bucket, 0, len(s.buckets))
	for _, b := range s.buckets {
		bs = append(bs, b)
	}
	s.mu.Unlock()
	for _, b := range bs {
		b.mu.Lock()
		b.closeLocked()
		b.mu.Unlock()
	}
	if s.loopDone != nil {
		<-s.loopDone
	}
	if s.beatDone != nil {
		<-s.beatDone
	}
	if err := s.persist.close(); err != nil {
		return fmt.Errorf("scheduler: close: %w", err)
	}
	return nil
}

func (s *Scheduler) lookup(name string) (*bucket, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	b, ok := s.buckets[name]
	if !ok {
		return nil, ErrUnknownBucket
	}
	return b, nil
}

func (s *Scheduler) snapshotBuckets() []*bucket {
	s.mu.RLock()
	defer s.mu.RUnlock()
	bs := make([]*bucket, 0, len(s.buckets))
	for _, b := range s.buckets {
		bs = append(bs, b)
	}
	return bs
}

// Budget is what a caller may know of a bucket's budget right now, for the
// RateLimit and RateLimit-Policy headers (draft-ietf-httpapi-ratelimit-
// headers): the limit, how many requests it would grant at once, and when
// the next one frees.
type Budget struct {
	Limit     Limit
	Remaining int
	// Reset is how long until one more request can be granted: zero when
	// Remaining > 0, else until the oldest grant in the window leaves it
	// (or the pause or hold ends).
	Reset time.Duration
}

// Budget reports name's budget; false for an unknown bucket. It never
// waits on the fleet's Redis: in fleet mode it answers from the bucket's
// last reading (see fleetBudget), and says nothing is left, to look again
// in a second, when no recent reading is trusted.
func (s *Scheduler) Budget(name string) (Budget, bool) {
	b, err := s.lookup(name)
	if err != nil {
		return Budget{}, false
	}
	if s.shared != nil {
		// The fleet's budget, not this member's share of it, as last
		// read: never waiting on Redis.
		return s.fleetBudget(b), true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	out := Budget{Limit: b.limit}
	if s.held.Load() != nil {
		out.Reset = retryEvery
		return out, true
	}
	if b.pausedUntil.After(now) {
		out.Reset = b.pausedUntil.Sub(now)
		return out, true
	}
	out.Remaining = max(0, b.limit.Requests-b.inWindowLocked(now)-len(b.queue))
	if out.Remaining == 0 {
		out.Reset = max(0, b.predictTailLocked(now).Sub(now))
	}
	return out, true
}

// Predict says how many callers are queued in name and when one more,
// joining now, would be granted; false for an unknown bucket.
func (s *Scheduler) Predict(name string) (ahead int, at time.Time, ok bool) {
	b, err := s.lookup(name)
	if err != nil {
		return 0, time.Time{}, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	return len(b.queue), b.predictTailLocked(now), true
}
