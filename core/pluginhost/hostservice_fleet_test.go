package pluginhost

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sluice-dev/sluice/core/fleet"
	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/proto"
	"github.com/sluice-dev/sluice/internal/testenv"
)

// serveHostService serves h on loopback, as the broker serves it to a
// plugin, and returns a client.
func serveHostService(t *testing.T, h *hostService) proto.HostClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	proto.RegisterHostServer(s, h)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return proto.NewHostClient(conn)
}

// openTurn asks for bucket's turn and returns the stream and the host's
// first answer.
func openTurn(t *testing.T, ctx context.Context, c proto.HostClient, bucket string, maxWait time.Duration) (proto.Host_TurnClient, *proto.TurnResponse, error) {
	t.Helper()
	s, err := c.Turn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&proto.TurnRequest{Bucket: bucket, MaxInFlight: 1, MaxWaitMs: maxWait.Milliseconds()}); err != nil {
		t.Fatal(err)
	}
	r, err := s.Recv()
	return s, r, err
}

// TestHostTurn: the host holds a fleet turn while the plugin's stream is
// open: another member waits for it (and is told so at its max wait), a
// plugin that dies gives it back with its stream rather than at the
// lease's expiry, a closed stream ends only once the lease is released,
// and a store that does not answer denies the turn (fail closed).
func TestHostTurn(t *testing.T) {
	rd := testenv.StartRedis(t)
	q, err := fleet.New(fleet.Options{URL: rd.URL, Name: "unit"})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	// Two members of one fleet.
	a := serveHostService(t, &hostService{name: "spotify", log: slog.New(slog.DiscardHandler), leases: q, guard: q})
	b := serveHostService(t, &hostService{name: "spotify", log: slog.New(slog.DiscardHandler), leases: q, guard: q})
	ctx := context.Background()

	actx, die := context.WithCancel(ctx)
	_, r, err := openTurn(t, actx, a, "spotify.api", time.Second)
	if err != nil || !r.GetHeld() {
		t.Fatalf("A's turn: %v %v", r, err)
	}
	_, r, err = openTurn(t, ctx, b, "spotify.api", 200*time.Millisecond)
	if err != nil || r.GetHeld() || !r.GetDenied() || r.GetDenial() != "" {
		t.Fatalf("B's turn while A holds it, max wait 200 ms: %v %v; want a budget denial", r, err)
	}
	// A's plugin dies: its stream breaks and the host releases the
	// lease, well before the lease's own expiry.
	die()
	s, r, err := openTurn(t, ctx, b, "spotify.api", leaseTTL/2)
	if err != nil || !r.GetHeld() {
		t.Fatalf("B's turn after A's plugin died: %v %v; want it before A's lease expired", r, err)
	}
	// B gives it back: once its stream has ended, the turn is free.
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of B's turn: %v", err)
	}
	if l, ok, _, err := q.TakeLease(ctx, "spotify.api", 1, time.Second); err != nil || !ok {
		t.Fatalf("the turn is still held after its stream ended: %v %v", ok, err)
	} else if err := q.ReleaseLease(ctx, "spotify.api", l); err != nil {
		t.Fatal(err)
	}

	// Another provider's bucket is not B's to take.
	if _, _, err := openTurn(t, ctx, b, "hellorf.api", time.Second); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("another provider's bucket: %v", err)
	}
	// A single host has no fleet turns.
	single := serveHostService(t, &hostService{name: "spotify", log: slog.New(slog.DiscardHandler)})
	if _, _, err := openTurn(t, ctx, single, "spotify.api", time.Second); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("single host: %v", err)
	}
	if r, err := single.GuardClaim(ctx, &proto.GuardClaimRequest{Key: strings.Repeat("ab", 32), WindowMs: 1000}); err != nil || r.GetFleet() {
		t.Fatalf("single host's guard: %v %v; want no fleet guard", r, err)
	}
	if _, err := b.GuardClaim(ctx, &proto.GuardClaimRequest{Key: "audio 505947", WindowMs: 1000}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a guard key that is not a hash: %v", err)
	}

	// The store gone: no turn, no guard.
	rd.Kill()
	_, r, err = openTurn(t, ctx, b, "spotify.api", 10*time.Second)
	if err != nil || !r.GetDenied() || r.GetDenial() != problem.ReasonFleetUnreachable {
		t.Fatalf("turn with Redis gone: %v %v; want fleet_unreachable", r, err)
	}
	if r, err := b.GuardClaim(ctx, &proto.GuardClaimRequest{Key: strings.Repeat("ab", 32), WindowMs: 1000}); err != nil || !r.GetFleet() || !r.GetUnavailable() || r.GetClaimed() {
		t.Fatalf("guard with Redis gone: %v %v; want unavailable", r, err)
	}
}
