package provider

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/proto"
)

// turnHost is a host in fleet mode as the SDK sees it over gRPC: it grants
// at once, holds Turn streams (or denies them), and records the order of
// what the plugin did.
type turnHost struct {
	proto.UnimplementedHostServer
	deny *proto.TurnResponse

	mu     sync.Mutex
	events []string
}

func (h *turnHost) record(e string) {
	h.mu.Lock()
	h.events = append(h.events, e)
	h.mu.Unlock()
}

func (h *turnHost) seen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.events)
}

func (h *turnHost) Acquire(context.Context, *proto.AcquireRequest) (*proto.AcquireResponse, error) {
	h.record("grant")
	return &proto.AcquireResponse{GrantedAtUnixNs: time.Now().UnixNano()}, nil
}

func (h *turnHost) Pause(context.Context, *proto.PauseRequest) (*proto.PauseResponse, error) {
	h.record("pause")
	return &proto.PauseResponse{}, nil
}

func (h *turnHost) Turn(s proto.Host_TurnServer) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	if h.deny != nil {
		h.record("denied")
		return s.Send(h.deny)
	}
	h.record("held")
	if err := s.Send(&proto.TurnResponse{Held: true}); err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			h.record("released")
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// serveTurnHost serves h on loopback and returns a fleet-mode Upstream
// using it.
func serveTurnHost(t *testing.T, h *turnHost) *Upstream {
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
	u := newUpstream(proto.NewHostClient(conn), oneAtATime)
	u.fleet.Store(true)
	return u
}

// TestFleetTurn: in fleet mode a request sends only under the fleet's turn,
// taken before its grant and given back after the answer's head; a 429's pause reaches the host before the turn is handed on (the
// next member must find the bucket paused); and a denied turn sends
// nothing, as the problem the host named.
func TestFleetTurn(t *testing.T) {
	var hits sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store(r.URL.Path, true)
		if r.URL.Path == "/429" {
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	get := func(path string) Builder {
		return func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
		}
	}
	released := func(t *testing.T, h *turnHost, n int) []string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ev := h.seen()
			if c := len(slices.DeleteFunc(slices.Clone(ev), func(e string) bool { return e != "released" })); c >= n {
				return ev
			}
			if time.Now().After(deadline) {
				t.Fatalf("turn not given back: %v", ev)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	t.Run("ok and 429", func(t *testing.T) {
		h := &turnHost{}
		u := serveTurnHost(t, h)
		ctx, _ := callWith(nil)
		resp, err := u.Do(ctx, "p.a", get("/ok"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if ev := released(t, h, 1); !slices.Equal(ev, []string{"held", "grant", "released"}) {
			t.Fatalf("events %v, want the grant and the send inside the turn", ev)
		}
		resp, err = u.Do(ctx, "p.a", get("/429"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if ev := released(t, h, 2)[3:]; !slices.Equal(ev, []string{"held", "grant", "pause", "released"}) {
			t.Fatalf("events %v, want the 429's pause at the host before the turn is given back", ev)
		}
	})

	for _, tc := range []struct {
		name   string
		deny   *proto.TurnResponse
		status int
		reason string
	}{
		{"fleet unreachable", &proto.TurnResponse{Denied: true, Denial: problem.ReasonFleetUnreachable, RetryAfterMs: 1000, Reason: "redis down"},
			http.StatusServiceUnavailable, problem.ReasonFleetUnreachable},
		{"max wait", &proto.TurnResponse{Denied: true, RetryAfterMs: 1000, Reason: "no turn"}, http.StatusTooManyRequests, problem.ReasonNoBudget},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &turnHost{deny: tc.deny}
			u := serveTurnHost(t, h)
			ctx, _ := callWith(nil)
			_, err := u.Do(ctx, "p.a", get("/denied-"+tc.name))
			var p *problem.Problem
			if !errors.As(err, &p) || p.Status != tc.status || p.Reason != tc.reason {
				t.Fatalf("denied turn: %v, want %d %q", err, tc.status, tc.reason)
			}
			if _, sent := hits.Load("/denied-" + tc.name); sent {
				t.Fatal("sent without the fleet's turn")
			}
			if ev := h.seen(); slices.Contains(ev, "grant") {
				t.Fatalf("events %v: a grant spent without a turn", ev)
			}
		})
	}
}
