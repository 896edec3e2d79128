package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Shared is a fleet's authority for grants (core/fleet, through Redis):
// with Options.Shared set, every bucket's grants, pauses and restamps are
// decided there, for all the fleet's daemons together, and this scheduler
// keeps only a local mirror for status. Nothing falls back to local
// limits when the fleet cannot be reached: that is exactly the ban the
// fleet exists to prevent.
type Shared interface {
	// GrantQueued grants one request in bucket if the fleet's window
	// (span = Window + margin), pause and queue allow it now, else says
	// how long to wait. A waiter asks with the same ticket (unique to this
	// scheduler) each time: the fleet keeps its place in a FIFO queue of
	// waiters and tells it the slot that place will get, unless that is
	// further than within (≥ 0; negative: no bound). "" asks without a
	// place (a newcomer behind every waiter, not queued). spare > 0 asks
	// for a speculative grant: made only if at least spare slots stay
	// free after it, and never queued (see AcquireSpeculative).
	GrantQueued(ctx context.Context, bucket string, l Limit, span time.Duration, ticket string, within time.Duration, spare int) (SharedGrant, error)
	// Dequeue gives up ticket's place in the queue (a waiter that stops
	// waiting).
	Dequeue(ctx context.Context, bucket, ticket string) error
	Pause(ctx context.Context, bucket string, until time.Time, reason string) error
	// RestampLater moves a grant later, to when its answer arrived (answer)
	// or to a moment its exchange was still unanswered, and ReleaseLater
	// forgets a grant that was never sent. Neither blocks: the fleet sends
	// them with its next round trip (or on their own within moments) and
	// reports the outcome to done.
	RestampLater(bucket, member string, to time.Time, answer bool, done func(error))
	ReleaseLater(bucket, member string, done func(error))
	// Budget reads the fleet's remaining budget without granting (what a
	// newcomer would see).
	Budget(ctx context.Context, bucket string, l Limit, span time.Duration) (remaining int, reset time.Duration, err error)
	// Beat is this member's heartbeat: it publishes the limits it keeps
	// each bucket to (a bucket whose limit differs from the fleet's is
	// held, see SharedGrant.Mismatch) and says whether the fleet's store
	// has forgotten this member's pauses, which must then be written again.
	Beat(ctx context.Context, limits map[string]Limit) (BeatResult, error)
	// Seed counts grants this member made before it joined the fleet (a
	// daemon that ran alone and restarts into fleet mode) in the fleet's
	// window: each lands at its age before the fleet's now, later than
	// it really was if anything, never earlier.
	Seed(ctx context.Context, bucket string, span time.Duration, grants []SeedGrant) error
}

// BeatResult is a fleet's answer to a heartbeat.
type BeatResult struct {
	// Republish: the store does not have this member's pauses (its first
	// beat, or a store restarted); Forgot: it lost all its records (a
	// Redis restarted empty), the grants of the last window included.
	Republish, Forgot bool
	// Next is when to beat again.
	Next time.Duration
}

// SeedGrant is one local grant for Seed: its local time (which names it)
// and its age when Seed was called.
type SeedGrant struct {
	Local time.Time
	Age   time.Duration
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
	// Mismatch: the fleet keeps this bucket to FleetLimit, not to the
	// limit asked with, and a live member still holds that one. Nothing is
	// granted until the configs agree.
	Mismatch   bool
	FleetLimit Limit
	// Queued: the asker holds a place in the fleet's queue (its ticket);
	// it must ask again with it, or Dequeue it.
	Queued bool
	// PausedFor is how long the fleet's pause lasts, when Reason names
	// one (Wait may be longer: the places ahead come first).
	PausedFor time.Duration
	// Budget: Remaining and ResetIn are the bucket's budget as a newcomer
	// would see it once this answer was decided (every answer of the
	// fleet carries it, so a miss needs no budget read of its own).
	Budget    bool
	Remaining int
	ResetIn   time.Duration
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

// ErrLimitMismatch is matched by the error of an Acquire refused because
// this daemon's limit for the bucket differs from its fleet's.
var ErrLimitMismatch = errors.New("this daemon's limit differs from its fleet's")

// LimitMismatchError reports that the bucket is held on this daemon: its
// configured limit is not the one its fleet keeps the bucket to. Nothing
// was sent. A reload that makes the configs agree ends it.
type LimitMismatchError struct {
	Bucket      string
	Mine, Fleet Limit
	RetryAfter  time.Duration
}

func (e *LimitMismatchError) Error() string {
	return fmt.Sprintf("scheduler: bucket %q: %v: this daemon's limit is %d per %s, the fleet's %d per %s; nothing is sent for this bucket from this daemon until the configs agree (reload every member with the same limit)",
		e.Bucket, ErrLimitMismatch, e.Mine.Requests, e.Mine.Window, e.Fleet.Requests, e.Fleet.Window)
}

// Is makes errors.Is(err, ErrLimitMismatch) true.
func (e *LimitMismatchError) Is(target error) bool { return target == ErrLimitMismatch }

// sharedRef ties a local grant to its entry in the fleet's log.
type sharedRef struct {
	member string
	offset time.Duration
}

// sharedTimeout bounds one fleet round trip made for a caller: a fleet
// that does not answer must fail the call promptly.
const sharedTimeout = 2 * time.Second

// acquireShared is Acquire in fleet mode: the fleet decides. A waiting
// caller holds a place in the fleet's FIFO queue (a ticket), is told the
// slot its place will get, sleeps until then and asks once more; a caller
// that gives up leaves the queue (off its path).
func (s *Scheduler) acquireShared(ctx context.Context, b *bucket, name string, maxWait time.Duration, spare int) (Grant, error) {
	start := time.Now()
	lateInARow := 0
	ticket := strconv.FormatUint(s.tickets.Add(1), 36)
	queued := false
	// giveUp leaves the queue when the caller stops waiting.
	giveUp := func(err error) (Grant, error) {
		if queued {
			s.sharedAsync(func(ctx context.Context) error { return s.shared.Dequeue(ctx, name, ticket) })
		}
		return Grant{}, err
	}
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return giveUp(fmt.Errorf("scheduler: acquire %q: %w", name, ErrClosed))
		}
		l, span, margin := b.limit, b.span(), s.marginNow()
		pausedFor := time.Until(b.pausedUntil)
		b.mu.Unlock()

		var g SharedGrant
		if pausedFor > 0 {
			// This daemon's own pause (its Redis write may have failed).
			g = SharedGrant{Wait: pausedFor, Reason: "paused", Queued: queued}
		} else if err := s.seedShared(ctx, b, name); err != nil {
			if ctx.Err() != nil {
				return giveUp(fmt.Errorf("scheduler: acquire %q: %w", name, ctx.Err()))
			}
			return giveUp(&FleetError{Bucket: name, RetryAfter: retryEvery, Err: err})
		} else {
			// How long this caller will still wait, for the fleet's queue:
			// a place whose slot is further is not taken.
			within := time.Duration(-1)
			switch {
			case maxWait < 0:
				within = 0
			case maxWait > 0:
				within = max(0, time.Until(start.Add(maxWait).Add(deadlineSlack)))
			}
			rctx, cancel := context.WithTimeout(ctx, sharedTimeout)
			var err error
			g, err = s.shared.GrantQueued(rctx, name, l, span, ticket, within, spare)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return giveUp(fmt.Errorf("scheduler: acquire %q: %w", name, ctx.Err()))
				}
				return giveUp(&FleetError{Bucket: name, RetryAfter: retryEvery, Err: err})
			}
			if g.Budget && (spare == 0 || g.Granted) {
				// A speculative refusal's figures are the spare
				// rule's, not the budget an ordinary caller sees.
				b.noteFleetBudget(g.Remaining, g.ResetIn)
			}
		}
		queued = g.Queued
		if g.Mismatch {
			return giveUp(&LimitMismatchError{Bucket: name, Mine: l, Fleet: g.FleetLimit, RetryAfter: max(g.Wait, retryEvery)})
		}
		if !g.Granted && strings.HasPrefix(g.Reason, "paused: ") {
			// Another member's pause: held here too, in memory, so this
			// member writes it again if the store forgets it while the
			// member that saw it is gone (see republish). Counted from
			// after the answer, so it ends here no earlier than there.
			pause := g.PausedFor
			if pause <= 0 {
				pause = g.Wait
			}
			b.mu.Lock()
			if until := time.Now().Add(pause); until.After(b.fleetPausedUntil) {
				b.fleetPausedUntil, b.fleetPauseReason = until, strings.TrimPrefix(g.Reason, "paused: ")
			}
			b.mu.Unlock()
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
				s.shared.ReleaseLater(name, member, s.sharedDone)
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
			return giveUp(&BudgetError{Bucket: name, RetryAfter: roundUp(g.Wait),
				Reason: fmt.Sprintf("fleet limit %d per %s plus %s margin: %s", l.Requests, l.Window, margin, g.Reason)})
		}
		// The slot named is this caller's own place in the fleet's queue:
		// no jitter is needed to keep waiters from asking at once.
		t := time.NewTimer(g.Wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return giveUp(fmt.Errorf("scheduler: acquire %q: %w", name, ctx.Err()))
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

// sharedDone logs a best-effort fleet write that failed.
func (s *Scheduler) sharedDone(err error) {
	if err != nil {
		s.log.Warn("fleet write failed", "err", err)
	}
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

// seedShared counts, once per bucket (and again after the fleet's store
// forgot everything), this daemon's own recent grants in the fleet's log
// before its first grant there: a daemon that ran alone and restarts into
// fleet mode mid-window, or one whose answers were still arriving when
// Redis restarted empty, must not let the fleet spend a window it has
// already half spent. Grants older than one span count for nothing and
// are not sent. A seed that fails grants nothing (fail closed).
func (s *Scheduler) seedShared(ctx context.Context, b *bucket, name string) error {
	gen := s.forgot.Load()
	b.mu.Lock()
	if b.seeded && b.seededGen == gen {
		b.mu.Unlock()
		return nil
	}
	now := time.Now()
	span := b.span()
	var grants []SeedGrant
	for _, at := range b.log {
		if age := now.Sub(at); age < span {
			grants = append(grants, SeedGrant{Local: at, Age: max(age, 0)})
		}
	}
	if len(grants) == 0 {
		// Nothing to count: no round trip (a daemon whose Redis does not
		// answer starts without waiting on it).
		b.seeded, b.seededGen = true, gen
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, sharedTimeout)
	defer cancel()
	if err := s.shared.Seed(rctx, name, span, grants); err != nil {
		return err
	}
	s.log.Info("fleet: this daemon's recent grants counted in the fleet's window", "bucket", name, "grants", len(grants))
	b.mu.Lock()
	b.seeded, b.seededGen = true, gen
	b.mu.Unlock()
	return nil
}

// beatLoop is this member's heartbeat (fleet mode only): every BeatResult.
// Next, and at once after a Configure (a reload changes limits).
func (s *Scheduler) beatLoop() {
	defer close(s.beatDone)
	// Close must not wait on a Redis that does not answer.
	stopped, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		select {
		case <-s.stop:
			stop()
		case <-stopped.Done():
		}
	}()
	t := time.NewTimer(0)
	defer t.Stop()
	republish := false
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.beatCh:
		}
		next := retryEvery
		ctx, cancel := context.WithTimeout(stopped, sharedTimeout)
		res, err := s.shared.Beat(ctx, s.Limits())
		cancel()
		if err != nil {
			s.log.Warn("fleet heartbeat failed", "err", err)
		} else {
			next = res.Next
			if res.Forgot {
				s.log.Warn("fleet: the store was restarted empty; writing this daemon's pauses again, every bucket is held for one window")
				s.forgot.Add(1)
			}
			republish = republish || res.Republish
		}
		if republish && err == nil {
			republish = !s.republish(stopped)
		}
		if err == nil {
			for _, b := range s.snapshotBuckets() {
				ctx, cancel := context.WithTimeout(stopped, sharedTimeout)
				_ = s.seedShared(ctx, b, b.name) // retried at the next beat and before every grant
				cancel()
			}
		}
		t.Reset(next)
	}
}

// beatSoon asks for a heartbeat now.
func (s *Scheduler) beatSoon() {
	select {
	case s.beatCh <- struct{}{}:
	default:
	}
}

// republish writes every pause this daemon holds (its own, those it saw
// from the fleet, those of buckets not configured yet) to the fleet's
// store again; it reports whether all were written.
func (s *Scheduler) republish(ctx context.Context) bool {
	type p struct {
		name, reason string
		until        time.Time
	}
	var ps []p
	now := time.Now()
	s.mu.RLock()
	for name, d := range s.pending {
		if u := time.Unix(0, d.PauseUntil); d.PauseUntil != 0 && u.After(now) {
			ps = append(ps, p{name, d.PauseReason, u})
		}
	}
	s.mu.RUnlock()
	for _, b := range s.snapshotBuckets() {
		b.mu.Lock()
		if b.pausedUntil.After(now) {
			ps = append(ps, p{b.name, b.pauseReason, b.pausedUntil})
		}
		if b.fleetPausedUntil.After(now) && b.fleetPausedUntil.After(b.pausedUntil) {
			ps = append(ps, p{b.name, b.fleetPauseReason, b.fleetPausedUntil})
		}
		b.mu.Unlock()
	}
	ok := true
	for _, x := range ps {
		ctx, cancel := context.WithTimeout(ctx, sharedTimeout)
		err := s.shared.Pause(ctx, x.name, x.until, x.reason)
		cancel()
		if err != nil {
			s.log.Warn("fleet: could not write a pause again; retrying at the next heartbeat", "bucket", x.name, "err", err)
			ok = false
			continue
		}
		s.log.Info("fleet: pause written again", "bucket", x.name, "until", x.until, "reason", x.reason)
	}
	return ok
}

// Limits reports every configured bucket's limit.
func (s *Scheduler) Limits() map[string]Limit {
	out := map[string]Limit{}
	for _, b := range s.snapshotBuckets() {
		b.mu.Lock()
		out[b.name] = b.limit
		b.mu.Unlock()
	}
	return out
}

// Budget readings in fleet mode. A cache hit's RateLimit headers must
// never wait on Redis (a busy or unreachable Redis would make every hit
// wait for its timeout), so Budget answers from the bucket's last reading
// and refreshes it in the background, one refresh per bucket at a time,
// when it is older than budgetFresh and asked for. Every answer of the
// fleet's grant script carries the budget too, so misses refresh it for
// free.
const (
	// budgetFresh is how old a reading may be before a Budget call asks
	// for a new one (the gateway's own reading lasts as long).
	budgetFresh = 50 * time.Millisecond
	// budgetTrusted is how old a reading may be and still be reported:
	// past it (Redis slow or unreachable), Budget says nothing is left
	// and to look again in retryEvery, the answer a miss would get.
	budgetTrusted = time.Second
)

// fleetReading is a bucket's last reading of its fleet budget.
type fleetReading struct {
	at         time.Time // zero: never read
	remaining  int
	reset      time.Duration
	failed     bool // the last refresh failed
	refreshing bool
}

// noteFleetBudget records a reading the fleet sent.
func (b *bucket) noteFleetBudget(remaining int, reset time.Duration) {
	b.mu.Lock()
	b.reading.at, b.reading.remaining, b.reading.reset, b.reading.failed = time.Now(), remaining, reset, false
	b.mu.Unlock()
}

// fleetBudget is Budget in fleet mode: it never waits on Redis.
func (s *Scheduler) fleetBudget(b *bucket) Budget {
	now := time.Now()
	b.mu.Lock()
	l, span := b.limit, b.span()
	r := b.reading
	refresh := !r.refreshing && !b.closed && now.Sub(r.at) >= budgetFresh
	if refresh {
		b.reading.refreshing = true
	}
	b.mu.Unlock()
	if refresh {
		go s.refreshBudget(b, l, span)
	}
	age := now.Sub(r.at)
	if r.at.IsZero() || r.failed || age > budgetTrusted {
		// Nothing known for sure: say nothing is left, conservatively.
		return Budget{Limit: l, Reset: retryEvery}
	}
	return Budget{Limit: l, Remaining: r.remaining, Reset: max(0, r.reset-age)}
}

// refreshBudget reads b's fleet budget into its reading.
func (s *Scheduler) refreshBudget(b *bucket, l Limit, span time.Duration) {
	ctx, cancel := context.WithTimeout(s.stopCtx, sharedTimeout)
	rem, reset, err := s.shared.Budget(ctx, b.name, l, span)
	cancel()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reading.refreshing = false
	if err != nil {
		b.reading.failed = true
		return
	}
	b.reading.at, b.reading.remaining, b.reading.reset, b.reading.failed = time.Now(), rem, reset, false
}
