package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Shared is a fleet's authority for grants (core/fleet, through Redis):
// with Options.Shared set, every bucket's grants, pauses and restamps are
// decided there, for all the fleet's daemons together, and this scheduler
// keeps only a local mirror for status. Nothing falls back to local
// limits when the fleet cannot be reached: that is exactly the ban the
// fleet exists to prevent.
type Shared interface {
	// Grant grants one request in bucket if the fleet's window (span =
	// Window + margin) and pause allow it now, else says how long to wait.
	Grant(ctx context.Context, bucket string, l Limit, span time.Duration) (SharedGrant, error)
	Pause(ctx context.Context, bucket string, until time.Time, reason string) error
	// Restamp moves a grant later, to when its answer arrived.
	Restamp(ctx context.Context, bucket, member string, to time.Time) error
	// Release forgets a grant that was never sent.
	Release(ctx context.Context, bucket, member string) error
	// Budget reads the fleet's remaining budget without granting.
	Budget(ctx context.Context, bucket string, l Limit, span time.Duration) (remaining int, reset time.Duration, err error)
}

// SharedGrant is a fleet's answer to Grant.
type SharedGrant struct {
	Granted bool
	// At is the grant's time on the fleet's clock; Offset maps this host's
	// clock onto it (fleet = local + Offset); Member names it in the log.
	At     time.Time
	Offset time.Duration
	Member string
	// Wait is how long until a grant could be had, when not granted, and
	// Reason why ("full", "paused: ...").
	Wait   time.Duration
	Reason string
}

// ErrFleetUnreachable is matched by the error of an Acquire the fleet
// could not decide.
var ErrFleetUnreachable = errors.New("the fleet's shared rate-limit state cannot be reached")

// FleetError reports that no grant could be had because the fleet's store
// did not answer. Nothing was sent.
type FleetError struct {
	Bucket     string
	RetryAfter time.Duration
	Err        error
}

func (e *FleetError) Error() string {
	return fmt.Sprintf("scheduler: bucket %q: %v: %v", e.Bucket, ErrFleetUnreachable, e.Err)
}

// Is makes errors.Is(err, ErrFleetUnreachable) true.
func (e *FleetError) Is(target error) bool { return target == ErrFleetUnreachable }

func (e *FleetError) Unwrap() error { return e.Err }

// sharedRef ties a local grant to its entry in the fleet's log.
type sharedRef struct {
	member string
	offset time.Duration
}

// sharedTimeout bounds one fleet round trip made for a caller: a fleet
// that does not answer must fail the call promptly.
const sharedTimeout = 2 * time.Second

// acquireShared is Acquire in fleet mode: the fleet decides; waiting
// callers sleep until the next slot it names (with jitter, so the fleet's
// daemons do not all ask at once) and ask again.
func (s *Scheduler) acquireShared(ctx context.Context, b *bucket, name string, maxWait time.Duration) (Grant, error) {
	start := time.Now()
	lateInARow := 0
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return Grant{}, fmt.Errorf("scheduler: acquire %q: %w", name, ErrClosed)
		}
		l, span, margin := b.limit, b.span(), s.marginNow()
		pausedFor := time.Until(b.pausedUntil)
		b.mu.Unlock()

		var g SharedGrant
		if pausedFor > 0 {
			// This daemon's own pause (its Redis write may have failed).
			g = SharedGrant{Wait: pausedFor, Reason: "paused"}
		} else {
			rctx, cancel := context.WithTimeout(ctx, sharedTimeout)
			var err error
			g, err = s.shared.Grant(rctx, name, l, span)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return Grant{}, fmt.Errorf("scheduler: acquire %q: %w", name, ctx.Err())
				}
				return Grant{}, &FleetError{Bucket: name, RetryAfter: retryEvery, Err: err}
			}
		}
		if g.Granted {
			// Decided at the fleet's g.At, which is this host's g.At −
			// Offset. Handed out later than the local scheduler allows (a
			// slow reply, a starved process), it could land in a window
			// the fleet has filled since: never sent, it leaves the log
			// and the caller asks again.
			decided := g.At.Add(-g.Offset)
			if late := time.Since(decided); margin > 0 && late > max(margin/2, minLate) {
				member := g.Member
				s.sharedAsync(func(ctx context.Context) error { return s.shared.Release(ctx, name, member) })
				b.mu.Lock()
				b.late++
				b.mu.Unlock()
				s.log.Warn("fleet grant handed out too late to be used; asking again", "bucket", name, "late", late.Round(time.Microsecond))
				if lateInARow++; lateInARow >= 3 {
					// Every answer comes too late: no grant of this
					// fleet's can be used safely here until the margin
					// covers the round trip to Redis.
					return Grant{}, &FleetError{Bucket: name, RetryAfter: retryEvery, Err: fmt.Errorf(
						"the fleet's answers arrive %s after its grants, more than half the margin (%s): raise [scheduler] margin above the round trip to Redis",
						late.Round(time.Millisecond), margin)}
				}
				continue
			}
			b.mu.Lock()
			now := time.Now()
			// Distinct, ascending local times: they name the fleet's
			// entries for Answered and Release.
			if n := len(b.log); n > 0 && !now.After(b.log[n-1]) {
				now = b.log[n-1].Add(time.Nanosecond)
			}
			b.log = append(b.log, now)
			b.granted++
			if b.shared == nil {
				b.shared = make(map[int64]sharedRef)
			}
			b.shared[now.UnixNano()] = sharedRef{member: g.Member, offset: g.Offset}
			b.pruneSharedLocked(now)
			seq := b.granted
			b.mu.Unlock()
			var useBy time.Time
			if margin > 0 {
				useBy = now.Add(max(margin*3/4, 2*minLate))
			}
			return Grant{Bucket: name, At: now, Seq: seq, UseBy: useBy}, nil
		}
		now := time.Now()
		if maxWait < 0 || (maxWait > 0 && now.Add(g.Wait).After(start.Add(maxWait).Add(deadlineSlack))) {
			return Grant{}, &BudgetError{Bucket: name, RetryAfter: roundUp(g.Wait),
				Reason: fmt.Sprintf("fleet limit %d per %s plus %s margin: %s", l.Requests, l.Window, margin, g.Reason)}
		}
		// Up to a tenth more, so the fleet's waiters spread out, but
		// never past the caller's deadline.
		wait := g.Wait + time.Duration(rand.Int64N(int64(g.Wait/10)+1))
		if maxWait > 0 {
			wait = min(wait, max(g.Wait, time.Until(start.Add(maxWait))))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Grant{}, fmt.Errorf("scheduler: acquire %q: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

// pruneSharedLocked drops refs to grants older than the bucket's history.
func (b *bucket) pruneSharedLocked(now time.Time) {
	cut := now.Add(-2 * b.span()).UnixNano()
	for at := range b.shared {
		if at < cut {
			delete(b.shared, at)
		}
	}
	b.pruneLocked(now)
}

// sharedRefLocked finds the fleet's name for a local grant.
func (b *bucket) sharedRefLocked(at time.Time) (sharedRef, bool) {
	r, ok := b.shared[at.UnixNano()]
	return r, ok
}

// sharedAsync runs a best-effort fleet write off the caller's path.
func (s *Scheduler) sharedAsync(f func(ctx context.Context) error) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
		defer cancel()
		if err := f(ctx); err != nil {
			s.log.Warn("fleet write failed", "err", err)
		}
	}()
}
