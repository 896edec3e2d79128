package pluginhost

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-dev/sluice/core/fleet"
	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/progress"
	"github.com/sluice-dev/sluice/core/proto"
	"github.com/sluice-dev/sluice/core/provider"
	"github.com/sluice-dev/sluice/core/scheduler"
)

// hostService is the scheduler as one plugin sees it, served over the
// go-plugin broker. A plugin may only use its own buckets.
type hostService struct {
	proto.UnimplementedHostServer
	name     string
	sched    Scheduler
	log      *slog.Logger
	observe  func(bucket string, d time.Duration)
	progress *progress.Tracker
	// guard and leases are the fleet's stores; nil on a single host.
	guard  GuardStore
	leases LeaseStore
}

// ownsBucket is the ownership rule: a provider's buckets are named
// "<provider>.<name>".
func ownsBucket(provider, bucket string) bool {
	return strings.HasPrefix(bucket, provider+".")
}

func (h *hostService) own(bucket string) error {
	if !ownsBucket(h.name, bucket) {
		return status.Errorf(codes.PermissionDenied, "bucket %q does not belong to provider %q", bucket, h.name)
	}
	return nil
}

func (h *hostService) Acquire(ctx context.Context, req *proto.AcquireRequest) (*proto.AcquireResponse, error) {
	if err := h.own(req.GetBucket()); err != nil {
		return nil, err
	}
	start := time.Now()
	if id := req.GetRequestId(); id != "" && h.progress != nil {
		if ahead, at, ok := h.sched.Predict(req.GetBucket()); ok && at.After(start) {
			h.progress.Set(id, h.name, progress.StageBudget, req.GetBucket(), ahead, at)
		}
		defer h.progress.Set(id, h.name, progress.StageUpstream, req.GetBucket(), 0, time.Time{})
	}
	g, err := h.sched.Acquire(ctx, req.GetBucket(), time.Duration(req.GetMaxWaitMs())*time.Millisecond)
	if h.observe != nil && err == nil {
		h.observe(req.GetBucket(), time.Since(start))
	}
	var be *scheduler.BudgetError
	var ue *scheduler.UnwritableError
	var fe *scheduler.FleetError
	var me *scheduler.LimitMismatchError
	switch {
	case errors.As(err, &me):
		return &proto.AcquireResponse{Denied: true, Denial: problem.ReasonFleetLimitMismatch, RetryAfterMs: me.RetryAfter.Milliseconds(),
			Reason: fmt.Sprintf("this daemon's limit for %s (%d per %s) differs from the one its fleet keeps (%d per %s), so it sends nothing for that bucket until the configs agree: give every member the same limit and reload",
				me.Bucket, me.Mine.Requests, me.Mine.Window, me.Fleet.Requests, me.Fleet.Window)}, nil
	case errors.As(err, &fe):
		return &proto.AcquireResponse{Denied: true, Denial: problem.ReasonFleetUnreachable, RetryAfterMs: fe.RetryAfter.Milliseconds(),
			Reason: "the fleet's shared rate-limit store (Redis) does not answer, so sluice sends nothing upstream until it does (local limits would let the fleet's hosts together exceed the upstream's)"}, nil
	case errors.As(err, &ue):
		// Fail closed: the plugin answers 503 and sends nothing.
		return &proto.AcquireResponse{Denied: true, Denial: problem.ReasonStateUnwritable,
			RetryAfterMs: ue.RetryAfter.Milliseconds(), Reason: unwritableDetail(ue)}, nil
	case errors.As(err, &be):
		return &proto.AcquireResponse{Denied: true, RetryAfterMs: be.RetryAfter.Milliseconds(), Reason: be.Error()}, nil
	case errors.Is(err, scheduler.ErrUnknownBucket):
		return nil, status.Error(codes.NotFound, err.Error())
	case err != nil:
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &proto.AcquireResponse{GrantedAtUnixMs: g.At.UnixMilli(), GrantedAtUnixNs: g.At.UnixNano(), Seq: g.Seq, UseByUnixNs: provider.UseByNs(g.UseBy)}, nil
}

// unwritableDetail says what a caller held by the fail-closed rule needs:
// what failed, with its errno, and that nothing was sent.
func unwritableDetail(ue *scheduler.UnwritableError) string {
	d := "sluice cannot record rate-limit grants, so it sends nothing upstream until it can (check the state_dir: full, read-only or removed): " + ue.Err.Error()
	if e := ue.Errno(); e != "" {
		d += " (" + e + ")"
	}
	return d
}

// Progress records a wait inside the plugin (its turn, a pause) for the
// call's caller to see; only calls of this provider are touched.
func (h *hostService) Progress(_ context.Context, req *proto.ProgressRequest) (*proto.ProgressResponse, error) {
	if err := h.own(req.GetBucket()); err != nil {
		return nil, err
	}
	var until time.Time
	if ms := req.GetUntilUnixMs(); ms > 0 {
		until = time.UnixMilli(ms)
	}
	switch stage := req.GetStage(); stage {
	case progress.StageTurn, progress.StagePaused, progress.StageUpstream:
		h.progress.Set(req.GetRequestId(), h.name, stage, req.GetBucket(), 0, until)
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown stage %q", stage)
	}
	return &proto.ProgressResponse{}, nil
}

// Outstanding counts a grant of this provider's, whose exchange is still
// unanswered, from now.
func (h *hostService) Outstanding(_ context.Context, req *proto.OutstandingRequest) (*proto.OutstandingResponse, error) {
	if err := h.own(req.GetBucket()); err != nil {
		return nil, err
	}
	var ns int64
	if at := h.sched.Outstanding(req.GetBucket(), time.Unix(0, req.GetGrantedAtUnixNs())); !at.IsZero() {
		ns = at.UnixNano()
	}
	return &proto.OutstandingResponse{GrantedAtUnixNs: ns, AgainMs: h.sched.Span(req.GetBucket()).Milliseconds() / 2}, nil
}

func (h *hostService) Pause(ctx context.Context, req *proto.PauseRequest) (*proto.PauseResponse, error) {
	if err := h.own(req.GetBucket()); err != nil {
		return nil, err
	}
	until := time.UnixMilli(req.GetUntilUnixMs())
	h.log.Warn("upstream asked to stop: bucket paused", "bucket", req.GetBucket(), "until", until.Format(time.RFC3339), "reason", req.GetReason())
	h.sched.Pause(req.GetBucket(), until, req.GetReason())
	return &proto.PauseResponse{}, nil
}

// GuardStore is the fleet's record of paying operations (core/fleet), for
// a plugin's duplicate guard: claimed before an operation is sent, settled
// after its answer. nil on a single host.
type GuardStore interface {
	ClaimGuard(ctx context.Context, name string, window, inFlight time.Duration, confirm bool) (claimed bool, token string, prev fleet.GuardRecord, err error)
	SettleGuard(ctx context.Context, name, token, state, purchaseID string, release bool) error
}

// LeaseStore holds the fleet's turns of max_in_flight buckets (core/fleet):
// leased locks, renewed while their request runs. nil on a single host.
type LeaseStore interface {
	TakeLease(ctx context.Context, bucket string, slots int, ttl time.Duration) (l fleet.Lease, ok bool, wait time.Duration, err error)
	RenewLease(ctx context.Context, bucket string, l fleet.Lease, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, bucket string, l fleet.Lease) error
}

const (
	// fleetRoundTrip bounds one request to the fleet's store made for a
	// caller: a store that does not answer fails the call promptly.
	fleetRoundTrip = 2 * time.Second
	// leaseTTL is how long a turn outlives its holder's last renewal: the
	// longest other members wait for a member that died holding one.
	leaseTTL = 5 * time.Second
	// leaseRenew is how often a held turn is renewed: three chances
	// before it would expire.
	leaseRenew = leaseTTL / 3
	// leasePoll bounds the wait between two attempts at a held turn. The
	// holder's release is not announced, so a waiter asks again; one per
	// host does (the plugin's own semaphore queues the host's others).
	leasePoll = 25 * time.Millisecond
	// maxTurns bounds a bucket's max_in_flight in a fleet.
	maxTurns = 64
)

// Turn holds a fleet-wide turn of a max_in_flight bucket while the stream
// is open (see the proto).
func (h *hostService) Turn(stream proto.Host_TurnServer) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	bucket := req.GetBucket()
	if err := h.own(bucket); err != nil {
		return err
	}
	if h.leases == nil {
		return status.Error(codes.FailedPrecondition, "not a fleet member: max_in_flight turns are the plugin's own")
	}
	ctx := stream.Context()
	// The plugin's own declaration; bounded, as each turn is a key the
	// take script tries.
	slots := min(max(int(req.GetMaxInFlight()), 1), maxTurns)
	var deadline time.Time
	if ms := req.GetMaxWaitMs(); ms > 0 {
		deadline = time.Now().Add(time.Duration(ms) * time.Millisecond)
	}
	var lease fleet.Lease
	for reported := false; ; {
		rctx, cancel := context.WithTimeout(ctx, fleetRoundTrip)
		l, ok, wait, err := h.leases.TakeLease(rctx, bucket, slots, leaseTTL)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			h.log.Warn("fleet turn could not be taken: nothing is sent", "bucket", bucket, "err", err)
			return stream.Send(&proto.TurnResponse{Denied: true, Denial: problem.ReasonFleetUnreachable, RetryAfterMs: time.Second.Milliseconds(),
				Reason: bucket + " sends one request at a time for the whole fleet, and the fleet's shared store (Redis) does not answer, so sluice sends nothing upstream until it does"})
		}
		if ok {
			lease = l
			break
		}
		if !reported && h.progress != nil {
			reported = true
			h.progress.Set(req.GetRequestId(), h.name, progress.StageTurn, bucket, 0, time.Time{})
		}
		poll := min(max(wait, time.Millisecond), leasePoll)
		poll += time.Duration(rand.Int64N(int64(poll/2) + 1)) // members polling in step would collide
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return stream.Send(&proto.TurnResponse{Denied: true, RetryAfterMs: time.Second.Milliseconds(),
					Reason: bucket + " sends its requests one turn at a time across the fleet and none came free within the max wait"})
			}
			poll = min(poll, left)
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return status.FromContextError(ctx.Err()).Err()
		case <-t.C:
		}
	}
	// Given back however the stream ends: closed by the plugin (the
	// answer's head is back), or broken (the plugin died).
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), fleetRoundTrip)
		defer cancel()
		if err := h.leases.ReleaseLease(rctx, bucket, lease); err != nil {
			h.log.Warn("fleet turn not released; it expires by itself", "bucket", bucket, "within", leaseTTL, "err", err)
		}
	}()
	if err := stream.Send(&proto.TurnResponse{Held: true}); err != nil {
		return err
	}
	done := make(chan struct{})
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		h.renewTurn(ctx, stream, bucket, lease, done)
	}()
	for {
		if _, err := stream.Recv(); err != nil {
			close(done)
			<-renewed
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// renewTurn renews a held turn until done. A renewal that fails (the store
// does not answer, or the lease expired and is another's) tells the plugin
// the turn is lost, so it sends nothing more under it; a store that does
// not answer is asked again at the next tick.
func (h *hostService) renewTurn(ctx context.Context, stream proto.Host_TurnServer, bucket string, l fleet.Lease, done <-chan struct{}) {
	t := time.NewTicker(leaseRenew)
	defer t.Stop()
	lost := false
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, fleetRoundTrip)
		ok, err := h.leases.RenewLease(rctx, bucket, l, leaseTTL)
		cancel()
		if err == nil && ok {
			continue
		}
		if !lost {
			lost = true
			h.log.Warn("fleet turn lost while held: nothing more is sent under it", "bucket", bucket, "err", err)
			_ = stream.Send(&proto.TurnResponse{Lost: true, Reason: "the fleet's turn could not be renewed"})
		}
		if err == nil {
			return // expired, and maybe another member's now
		}
		// The store did not answer: the lease may still be this
		// member's, and a request already on the wire still runs under
		// it, so keep it alive if the store comes back in time.
	}
}

// GuardClaim claims the fleet's duplicate guard for a paying operation of
// this provider. Its key is a hash the plugin made: the store sees neither
// secrets nor the caller's parameters.
func (h *hostService) GuardClaim(ctx context.Context, req *proto.GuardClaimRequest) (*proto.GuardClaimResponse, error) {
	if h.guard == nil {
		return &proto.GuardClaimResponse{Fleet: false}, nil
	}
	name, err := h.guardName(req.GetKey())
	if err != nil {
		return nil, err
	}
	ok, token, prev, err := h.claimGuard(ctx, name, req)
	var held *fleet.HeldError
	if errors.As(err, &held) {
		h.log.Warn("fleet purchase guard held while members write back its records: the purchase is refused", "wait", held.Wait)
		return &proto.GuardClaimResponse{Fleet: true, Unavailable: true,
			Reason: fmt.Sprintf("the fleet's shared purchase guard (Redis) lost its records or was just created, and is held until every member has written back the purchases it knows of; try again in %s", held.Wait.Round(time.Second)+time.Second)}, nil
	}
	if err != nil {
		h.log.Error("fleet purchase guard could not be written: the purchase is refused", "err", err)
		return &proto.GuardClaimResponse{Fleet: true, Unavailable: true,
			Reason: "the fleet's shared purchase guard (Redis) does not answer, so another host's identical purchase cannot be ruled out: " + err.Error()}, nil
	}
	if ok {
		return &proto.GuardClaimResponse{Fleet: true, Claimed: true, Token: token}, nil
	}
	return &proto.GuardClaimResponse{Fleet: true, Prev: &proto.GuardRecord{State: prev.State,
		StartedAtUnixMs: time.Now().Add(-prev.Age).UnixMilli(), PurchaseId: prev.PurchaseID}}, nil
}

// claimGuard claims name in the fleet's guard, waiting out a hold (see
// fleet.HeldError) when the caller's context allows it.
func (h *hostService) claimGuard(ctx context.Context, name string, req *proto.GuardClaimRequest) (bool, string, fleet.GuardRecord, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, fleetRoundTrip)
		ok, token, prev, err := h.guard.ClaimGuard(rctx, name, time.Duration(req.GetWindowMs())*time.Millisecond,
			time.Duration(req.GetInFlightMs())*time.Millisecond, req.GetConfirm())
		cancel()
		var held *fleet.HeldError
		if !errors.As(err, &held) {
			return ok, token, prev, err
		}
		if d, ok := ctx.Deadline(); ok && time.Until(d) < held.Wait+fleetRoundTrip {
			return false, "", fleet.GuardRecord{}, err
		}
		t := time.NewTimer(held.Wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, "", fleet.GuardRecord{}, err
		case <-t.C:
		}
	}
}

// GuardSettle records a claimed operation's outcome in the fleet's guard.
func (h *hostService) GuardSettle(ctx context.Context, req *proto.GuardSettleRequest) (*proto.GuardSettleResponse, error) {
	if h.guard == nil {
		return nil, status.Error(codes.FailedPrecondition, "not a fleet member: there is no fleet guard")
	}
	name, err := h.guardName(req.GetKey())
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, fleetRoundTrip)
	defer cancel()
	if err := h.guard.SettleGuard(rctx, name, req.GetToken(), req.GetState(), req.GetPurchaseId(), req.GetRelease()); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &proto.GuardSettleResponse{}, nil
}

// guardName is the store's name for a guard key: the provider's, so one
// plugin cannot touch another's records, and only a hash, so the key says
// nothing of the operation.
func (h *hostService) guardName(key string) (string, error) {
	if b, err := hex.DecodeString(key); err != nil || len(b) != 32 {
		return "", status.Error(codes.InvalidArgument, "guard key must be a hex SHA-256")
	}
	return h.name + ":" + key, nil
}
