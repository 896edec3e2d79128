package scheduler

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Fail closed: a grant is handed out only once the record of it is known to
// be written. When a write fails (a full disk, a removed or read-only
// state_dir) the scheduler holds every bucket: nothing is granted, waiters
// and newcomers are told at once with an *UnwritableError, and a background
// loop retries the write every retryEvery. The first write that succeeds
// releases the buckets, with no restart. Serving on from memory would let
// a crash forget grants the upstream has counted, and the restarted daemon
// would send a request over the limit: a ban, for iNeo.

// ErrStateUnwritable is matched (errors.Is) by every *UnwritableError.
var ErrStateUnwritable = errors.New("scheduler state cannot be written")

// retryEvery is how often a held scheduler tries its write again, and the
// Retry-After its callers are given.
const retryEvery = time.Second

// clockCheckEvery is how often the wall clock is compared with the
// monotonic one; clockStepMin is the least step taken for one (NTP's slew,
// at most 0.5 ms/s, stays far below it).
const (
	clockCheckEvery = time.Second
	clockStepMin    = 50 * time.Millisecond
)

// UnwritableError reports that a bucket grants nothing because the
// scheduler's records cannot be written. Nothing was consumed.
type UnwritableError struct {
	Bucket     string
	RetryAfter time.Duration
	// Err is the failed write's error.
	Err error
}

func (e *UnwritableError) Error() string {
	return fmt.Sprintf("scheduler: bucket %q: %v: %v", e.Bucket, ErrStateUnwritable, e.Err)
}

// Is makes errors.Is(err, ErrStateUnwritable) true.
func (e *UnwritableError) Is(target error) bool { return target == ErrStateUnwritable }

func (e *UnwritableError) Unwrap() error { return e.Err }

// Errno names the system error behind the failed write ("ENOSPC",
// "EROFS"), or "" when there is none.
func (e *UnwritableError) Errno() string {
	var en syscall.Errno
	if errors.As(e.Err, &en) {
		return unix.ErrnoName(en)
	}
	return ""
}

// heldState is why the scheduler holds every bucket.
type heldState struct {
	err   error
	since time.Time
}

// Held reports why every bucket is held (the failed write), or "".
func (s *Scheduler) Held() string {
	if h := s.held.Load(); h != nil {
		return "state_unwritable: " + h.err.Error()
	}
	return ""
}

func (s *Scheduler) unwritable(name string, h *heldState) *UnwritableError {
	return &UnwritableError{Bucket: name, RetryAfter: retryEvery, Err: h.err}
}

// hold starts (or keeps) holding every bucket after a failed write: every
// waiter fails at once, and the background loop retries.
func (s *Scheduler) hold(err error) {
	if errors.Is(err, ErrClosed) {
		return
	}
	h := &heldState{err: err, since: time.Now()}
	if old := s.held.Load(); old != nil {
		h.since = old.since
	} else {
		s.log.Error("scheduler state cannot be written: every bucket is held until it can be", "err", err)
	}
	s.held.Store(h)
	for _, b := range s.snapshotBuckets() {
		b.mu.Lock()
		b.dispatchLocked(time.Now())
		b.mu.Unlock()
	}
}

// release ends a hold once a write has succeeded.
func (s *Scheduler) releaseHold() {
	h := s.held.Swap(nil)
	if h == nil {
		return
	}
	s.log.Info("scheduler state written again: buckets serve again", "held", time.Since(h.since).Round(time.Millisecond))
	for _, b := range s.snapshotBuckets() {
		b.mu.Lock()
		b.dispatchLocked(time.Now())
		b.mu.Unlock()
	}
}

// kick asks the background loop to write what is buffered (restamps) soon.
func (s *Scheduler) kick() {
	select {
	case s.kickCh <- struct{}{}:
	default:
	}
}

// loop is the scheduler's background work: writes of buffered records
// (kick), retries while held, and the clock check.
// baseMono and baseWall are one reading of both clocks, taken in New so a
// step before the loop first runs is seen too.
func (s *Scheduler) loop(baseMono time.Time, baseWall int64) {
	defer close(s.loopDone)
	t := time.NewTicker(min(retryEvery, clockCheckEvery))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kickCh:
			if s.held.Load() == nil {
				if err := s.persist.flushAll(false); err != nil {
					s.hold(err)
				}
			}
		case <-t.C:
			if s.held.Load() != nil {
				if err := s.persist.retry(); err == nil {
					s.releaseHold()
				} else {
					s.hold(err)
				}
			}
			now := time.Now()
			wall := s.wallNow().UnixNano()
			step := time.Duration(wall-baseWall) - now.Sub(baseMono)
			baseMono, baseWall = now, wall
			if step < -clockStepMin {
				s.clockStepped(-step)
			}
		}
	}
}

// clockStepped holds every bucket for one Window+Margin, measured on the
// monotonic clock, after the wall clock went back by d. Grants are stored
// as wall-clock times: those made before the step now read as later than
// the ones after it, and a restart soon after would misjudge the window.
func (s *Scheduler) clockStepped(d time.Duration) {
	reason := fmt.Sprintf("the wall clock stepped back by %s; holding one window", d.Round(time.Millisecond))
	s.log.Warn("wall clock stepped back: every bucket is held for one window", "step", d.Round(time.Millisecond))
	for _, b := range s.snapshotBuckets() {
		b.mu.Lock()
		now := time.Now()
		if b.pauseLocked(now, now.Add(b.span()), reason) {
			b.dispatchLocked(now)
		}
		b.mu.Unlock()
	}
	if err := s.persist.flushAll(true); err != nil {
		s.hold(err)
	}
}
