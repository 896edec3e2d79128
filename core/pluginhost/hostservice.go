package pluginhost

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	switch {
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

func (h *hostService) Pause(ctx context.Context, req *proto.PauseRequest) (*proto.PauseResponse, error) {
	if err := h.own(req.GetBucket()); err != nil {
		return nil, err
	}
	until := time.UnixMilli(req.GetUntilUnixMs())
	h.log.Warn("upstream asked to stop: bucket paused", "bucket", req.GetBucket(), "until", until.Format(time.RFC3339), "reason", req.GetReason())
	h.sched.Pause(req.GetBucket(), until, req.GetReason())
	return &proto.PauseResponse{}, nil
}
