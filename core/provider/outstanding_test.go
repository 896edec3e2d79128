package provider

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/sluice-dev/sluice/core/proto"
	"github.com/sluice-dev/sluice/core/scheduler"
)

// schedHost grants from a real scheduler and serves Outstanding as the
// host does. lose makes the n-th report apply its move and then lose its
// reply; hang makes it wait, applying nothing, until its context ends,
// whose error it keeps in ended.
type schedHost struct {
	fakeHost
	s     *scheduler.Scheduler
	n     atomic.Int32
	lose  func(n int32) bool
	hang  func(n int32) bool
	ended atomic.Value // error
}

func (h *schedHost) Acquire(ctx context.Context, r *proto.AcquireRequest, _ ...grpc.CallOption) (*proto.AcquireResponse, error) {
	g, err := h.s.Acquire(ctx, r.GetBucket(), time.Minute)
	if err != nil {
		return nil, err
	}
	return &proto.AcquireResponse{GrantedAtUnixNs: g.At.UnixNano(), Seq: g.Seq}, nil
}

func (h *schedHost) Outstanding(ctx context.Context, r *proto.OutstandingRequest, _ ...grpc.CallOption) (*proto.OutstandingResponse, error) {
	n := h.n.Add(1)
	if h.hang != nil && h.hang(n) {
		<-ctx.Done()
		h.ended.Store(ctx.Err())
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	var ns int64
	if at := h.s.Outstanding(r.GetBucket(), time.Unix(0, r.GetGrantedAtUnixNs())); !at.IsZero() {
		ns = at.UnixNano()
	}
	if h.lose != nil && h.lose(n) {
		return nil, errors.New("reply lost")
	}
	return &proto.OutstandingResponse{GrantedAtUnixNs: ns, AgainMs: h.s.Span(r.GetBucket()).Milliseconds() / 2}, nil
}

func outstandingSetup(t *testing.T, window, delay time.Duration) (*scheduler.Scheduler, *httptest.Server, *proto.Description) {
	s, err := scheduler.New(scheduler.Options{Margin: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Configure("p.a", scheduler.Limit{Requests: 1, Window: window}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay) // the upstream's answer time, not synchronisation
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return s, srv, &proto.Description{Buckets: []*proto.Bucket{{Name: "p.a", Requests: 1, WindowMs: window.Milliseconds()}}}
}

// TestOutstandingLostReplyKeepsTheGrant: a report whose reply is lost
// after the host moved the grant leaves the plugin naming an older time;
// later reports and the answer's trailer still find the grant, so it
// counts from the answer, not from the report that went astray.
func TestOutstandingLostReplyKeepsTheGrant(t *testing.T) {
	t.Parallel()
	s, srv, desc := outstandingSetup(t, time.Second, 3*time.Second)
	host := &schedHost{s: s, lose: func(n int32) bool { return n == 1 }}
	u := newUpstream(host, desc)
	ctx, r := callWith(nil)
	resp, err := u.Do(ctx, "p.a", func(ctx context.Context) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ans := ParseAnswers(r.stats.answerValues())
	if len(ans) != 1 {
		t.Fatalf("answers %v, want one", ans)
	}
	a := ans[0]
	if moved := s.Answered(a.Bucket, a.GrantedAt, a.Answered); moved.IsZero() { // what the host's settle does
		t.Fatalf("the trailer names %v, which finds no grant: the move to the answer is lost", a.GrantedAt)
	}
	if _, next, _ := s.Predict("p.a"); next.Before(a.Answered.Add(s.Span("p.a"))) {
		t.Fatalf("next grant %v before the answer and a span: the request counts from before its answer", a.Answered.Add(s.Span("p.a")).Sub(next))
	}
}

// TestOutstandingReportEndsWithTheExchange: a report still under way when
// the answer arrives is cancelled then, rather than holding the answer
// (and a one-at-a-time bucket's turn) until its own deadline.
func TestOutstandingReportEndsWithTheExchange(t *testing.T) {
	t.Parallel()
	// First report after 500 ms (a quarter of the window, at most 500 ms),
	// its deadline 500 ms later; the answer comes at 600 ms, between.
	s, srv, desc := outstandingSetup(t, 4*time.Second, 600*time.Millisecond)
	host := &schedHost{s: s, hang: func(n int32) bool { return n == 1 }}
	u := newUpstream(host, desc)
	ctx, _ := callWith(nil)
	resp, err := u.Do(ctx, "p.a", func(ctx context.Context) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if host.n.Load() == 0 {
		t.Skip("the exchange ended before the first report: the machine is too slow or too fast for this test")
	}
	if err, _ := host.ended.Load().(error); !errors.Is(err, context.Canceled) {
		t.Fatalf("the hung report ended with %v, want cancelled when the exchange ended", err)
	}
}

// TestCancelledCallReportsItsAnswers: a call the host cancels after its
// exchange was answered (its caller hung up mid-body) may never have its
// trailer read: the plugin reports the exchange on its own, and the grant
// counts from then. A call that ends cleanly leaves it to the trailer.
func TestCancelledCallReportsItsAnswers(t *testing.T) {
	t.Parallel()
	for _, cancelled := range []bool{true, false} {
		s, srv, desc := outstandingSetup(t, time.Minute, 0)
		host := &schedHost{s: s}
		call := providerFunc(func(ctx context.Context, _ *Request, w *ResponseWriter, up *Upstream) error {
			resp, err := up.Do(ctx, "p.a", func(ctx context.Context) (*http.Request, error) {
				return http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			})
			if err != nil {
				return err
			}
			resp.Body.Close()
			return w.WriteHead(http.StatusOK, nil, CacheHint{})
		})
		ctx, cancel := context.WithCancel(context.Background())
		st := &fakeStream{ctx: ctx}
		impl := providerFunc(func(c context.Context, r *Request, w *ResponseWriter, up *Upstream) error {
			err := call(c, r, w, up)
			if cancelled {
				cancel() // the host gives up on the call as the body streams
			}
			return err
		})
		srvr := &server{impl: impl, up: newUpstream(host, desc)}
		_ = srvr.Call(&proto.CallRequest{Operation: "op"}, st)
		cancel()
		if !cancelled {
			if n := host.n.Load(); n != 0 {
				t.Fatalf("a clean call made %d Outstanding reports, want 0 (the trailer says it)", n)
			}
			continue
		}
		deadline := time.Now().Add(10 * time.Second)
		for host.n.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("a cancelled call's answered exchange was never reported")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
