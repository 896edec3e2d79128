package provider

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/metadata"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/proto"
)

// server adapts a Provider to the gRPC Provider service, in the plugin.
type server struct {
	proto.UnimplementedProviderServer
	impl   Provider
	broker *plugin.GRPCBroker

	mu sync.Mutex
	up *Upstream
}

func (s *server) Describe(context.Context, *proto.DescribeRequest) (*proto.Description, error) {
	return s.impl.Describe(), nil
}

func (s *server) Configure(ctx context.Context, req *proto.ConfigureRequest) (*proto.ConfigureResponse, error) {
	s.mu.Lock()
	if s.up == nil {
		// Dial the host's scheduler once per plugin lifetime; every later
		// upstream request reuses this connection.
		conn, err := s.broker.Dial(req.GetHostBrokerId())
		if err != nil {
			s.mu.Unlock()
			return nil, err
		}
		s.up = newUpstream(proto.NewHostClient(conn), s.impl.Describe())
	}
	s.up.fleet.Store(req.GetFleet())
	s.mu.Unlock()
	if err := s.impl.Configure(context.WithValue(ctx, stateDirKey{}, req.GetStateDir()), req.GetConfigJson()); err != nil {
		return nil, err
	}
	return &proto.ConfigureResponse{}, nil
}

func (s *server) upstream() *Upstream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up
}

func (s *server) Call(m *proto.CallRequest, stream proto.Provider_CallServer) error {
	stats := &callStats{}
	w := &ResponseWriter{stream: stream, stats: stats}
	pg := pregrantFrom(m.GetPregrant())
	// Runs after the provider's Call has returned and before the stream
	// closes: a pre-grant nothing took is returned (after which nothing can
	// take it) and reported in the trailer, so the host releases it.
	defer func() {
		if pg.giveBack() {
			stream.SetTrailer(metadata.Pairs(PregrantTrailer, PregrantUnused))
		}
		if a := stats.answerValues(); len(a) > 0 {
			stream.SetTrailer(metadata.MD{AnsweredTrailer: a})
		}
		if stream.Context().Err() != nil {
			// The host cancelled the call (its caller hung up mid-body,
			// say): it may never read the trailer. Each answered
			// exchange is reported on its own, so its grant counts from
			// now, after its answer, not from before it.
			if up := s.upstream(); up != nil {
				up.reportAnswered(stats.answerList())
			}
		}
	}()
	up := s.upstream()
	if up == nil {
		return w.writeProblem(problem.New(http.StatusServiceUnavailable, "provider not configured yet"))
	}
	req := &Request{
		ID: m.GetRequestId(), Operation: m.GetOperation(), Method: m.GetMethod(), Path: m.GetPath(),
		Params: url.Values{}, Body: m.GetBody(), ContentType: m.GetContentType(), Header: http.Header{},
		PublicBase: m.GetPublicBase(), MaxWait: time.Duration(m.GetMaxWaitMs()) * time.Millisecond,
		stats: stats, pregrant: pg,
	}
	for _, kv := range m.GetParams() {
		req.Params.Add(kv.GetName(), kv.GetValue())
	}
	for _, kv := range m.GetHeaders() {
		req.Header.Add(kv.GetName(), kv.GetValue())
	}
	ctx := withCall(stream.Context(), req)
	err := s.impl.Call(ctx, req, w, up)
	if err == nil {
		return w.finish()
	}
	if w.HeadWritten() {
		// Mid-body failure: abort the stream so the host sees a truncated
		// answer as an error rather than a short success.
		return err
	}
	var p *problem.Problem
	if !errors.As(err, &p) {
		p = problem.New(http.StatusBadGateway, err.Error())
	}
	return w.writeProblem(p)
}

type stateDirKey struct{}

// StateDir is the plugin's private state directory, available in the
// context of Configure: state a provider must not lose when its process is
// restarted (e.g. hellorf's purchase guard) belongs there. Empty if none.
func StateDir(ctx context.Context) string {
	d, _ := ctx.Value(stateDirKey{}).(string)
	return d
}

type callKey struct{}

// withCall lets Upstream.Do find the caller's max wait and request id without
// every plugin threading them through.
func withCall(ctx context.Context, r *Request) context.Context {
	return context.WithValue(ctx, callKey{}, r)
}

func callFrom(ctx context.Context) *Request {
	r, _ := ctx.Value(callKey{}).(*Request)
	return r
}

// LimitWait returns a context under which Upstream waits for rate budget at
// most d, or the caller's own max wait if that is shorter. A provider uses
// it to bound how long it honours an upstream's Retry-After (e.g. Spotify's
// max_retry_after) before answering 429 itself.
func LimitWait(ctx context.Context, d time.Duration) context.Context {
	r := Request{MaxWait: d}
	if cur := callFrom(ctx); cur != nil {
		r = *cur
		if r.MaxWait <= 0 || d < r.MaxWait {
			r.MaxWait = d
		}
	}
	return withCall(ctx, &r)
}
