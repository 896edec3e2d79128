package provider

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/proto"
)

// TestPregrantConsumeAndReturn walks the pre-grant's state machine: a
// send may take it once, for its bucket, while fresh; the end of the call
// returns it only if nothing took it, and nothing takes it after that.
func TestPregrantConsumeAndReturn(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	const bucket = "ineo.spotify"
	const bound = 50 * time.Millisecond // the grant's use-by, from its time
	type step struct {
		op     string // "consume" or "return"
		bucket string
		age    time.Duration // how long after the grant the step runs
		want   bool
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"fresh is used, then reported used", []step{
			{"consume", bucket, time.Millisecond, true},
			{"return", "", 0, false},
		}},
		{"at the freshness bound", []step{
			{"consume", bucket, bound, true},
		}},
		{"stale is refused, then returned unused", []step{
			{"consume", bucket, bound + time.Nanosecond, false},
			{"return", "", 0, true},
		}},
		{"wrong bucket is refused, then returned unused", []step{
			{"consume", "ineo.tmanage", time.Millisecond, false},
			{"return", "", 0, true},
		}},
		{"prefix of the bucket is refused", []step{
			{"consume", "ineo.spot", time.Millisecond, false},
		}},
		{"used only once", []step{
			{"consume", bucket, time.Millisecond, true},
			{"consume", bucket, 2 * time.Millisecond, false},
			{"return", "", 0, false},
		}},
		{"returned, then never used", []step{
			{"return", "", 0, true},
			{"consume", bucket, time.Millisecond, false},
			{"return", "", 0, false},
		}},
		{"a stale refusal does not spend it for a later fresh look", []step{
			{"consume", "ineo.tmanage", time.Millisecond, false},
			{"consume", bucket, 2 * time.Millisecond, true},
			{"return", "", 0, false},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := pregrantFrom(&proto.Pregrant{Bucket: bucket, GrantedAtUnixNs: now.UnixNano(), Seq: 7, UseByUnixNs: now.Add(bound).UnixNano()})
			for i, s := range tc.steps {
				var got bool
				switch s.op {
				case "consume":
					_, got = p.consume(s.bucket, now.Add(s.age))
				case "return":
					got = p.giveBack()
				}
				if got != s.want {
					t.Fatalf("step %d (%s %s at +%s) = %v, want %v", i, s.op, s.bucket, s.age, got, s.want)
				}
			}
		})
	}
}

func TestPregrantAbsent(t *testing.T) {
	for _, m := range []*proto.Pregrant{nil, {}} {
		p := pregrantFrom(m)
		_, a := p.consume("", time.Now())
		_, b := p.consume("ineo.spotify", time.Now())
		if a || b {
			t.Fatalf("%v: an absent pre-grant was consumed", m)
		}
		if p.giveBack() {
			t.Fatalf("%v: an absent pre-grant was reported unused", m)
		}
	}
}

// TestPregrantRace: a send taking the pre-grant and the call's end
// returning it race; exactly one wins, every time.
func TestPregrantRace(t *testing.T) {
	for range 1000 {
		p := pregrantFrom(&proto.Pregrant{Bucket: "b.x", GrantedAtUnixNs: time.Now().UnixNano()})
		var used, returned atomic.Bool
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _, ok := p.consume("b.x", time.Now()); used.Store(ok) }()
		go func() { defer wg.Done(); returned.Store(p.giveBack()) }()
		wg.Wait()
		if used.Load() == returned.Load() {
			t.Fatalf("used %v, returned %v: exactly one must win", used.Load(), returned.Load())
		}
	}
}

// fakeHost counts Acquire RPCs and always grants at once.
type fakeHost struct {
	acquires atomic.Int32
	// onAcquire, if set, runs in every Acquire (the real host would wait
	// out a pause there).
	onAcquire func()
	// useBy, if set, gives each grant's use-by (Unix ns) by call number.
	useBy func(n int32) int64
}

func (h *fakeHost) Acquire(context.Context, *proto.AcquireRequest, ...grpc.CallOption) (*proto.AcquireResponse, error) {
	n := h.acquires.Add(1)
	if h.onAcquire != nil {
		h.onAcquire()
	}
	resp := &proto.AcquireResponse{GrantedAtUnixMs: time.Now().UnixMilli(), Seq: 1}
	if h.useBy != nil {
		resp.UseByUnixNs = h.useBy(n)
	}
	return resp, nil
}

func (h *fakeHost) Pause(context.Context, *proto.PauseRequest, ...grpc.CallOption) (*proto.PauseResponse, error) {
	return &proto.PauseResponse{}, nil
}

func (h *fakeHost) Progress(context.Context, *proto.ProgressRequest, ...grpc.CallOption) (*proto.ProgressResponse, error) {
	return &proto.ProgressResponse{}, nil
}

// Outstanding: this fake keeps no log, so the grant stays where it is.
func (h *fakeHost) Outstanding(_ context.Context, r *proto.OutstandingRequest, _ ...grpc.CallOption) (*proto.OutstandingResponse, error) {
	return &proto.OutstandingResponse{GrantedAtUnixNs: r.GetGrantedAtUnixNs()}, nil
}

// The fleet's RPCs: a fake host is a single host.
func (h *fakeHost) Turn(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[proto.TurnRequest, proto.TurnResponse], error) {
	return nil, status.Error(codes.FailedPrecondition, "not a fleet member")
}

func (h *fakeHost) GuardClaim(context.Context, *proto.GuardClaimRequest, ...grpc.CallOption) (*proto.GuardClaimResponse, error) {
	return &proto.GuardClaimResponse{}, nil
}

func (h *fakeHost) GuardSettle(context.Context, *proto.GuardSettleRequest, ...grpc.CallOption) (*proto.GuardSettleResponse, error) {
	return nil, status.Error(codes.FailedPrecondition, "not a fleet member")
}

func callWith(pg *proto.Pregrant) (context.Context, *Request) {
	r := &Request{ID: "r1", MaxWait: time.Second, stats: &callStats{}, pregrant: pregrantFrom(pg)}
	return withCall(context.Background(), r), r
}

func TestUpstreamAcquireUsesPregrant(t *testing.T) {
	fresh := func(bucket string) *proto.Pregrant {
		return &proto.Pregrant{Bucket: bucket, GrantedAtUnixNs: time.Now().UnixNano()}
	}
	cases := []struct {
		name     string
		pregrant *proto.Pregrant
		bucket   string
		// rpcs is how many Host.Acquire calls two Acquires of bucket make.
		rpcs int32
		// unused: the call's end reports the pre-grant unused.
		unused bool
	}{
		{"fresh saves the first round trip", fresh("p.a"), "p.a", 1, false},
		{"none", nil, "p.a", 2, false},
		{"stale", &proto.Pregrant{Bucket: "p.a", GrantedAtUnixNs: time.Now().Add(-time.Second).UnixNano(), UseByUnixNs: time.Now().Add(-time.Second / 2).UnixNano()}, "p.a", 2, true},
		{"other bucket", fresh("p.b"), "p.a", 2, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			host := &fakeHost{}
			u := newUpstream(host, nil)
			ctx, r := callWith(tc.pregrant)
			for range 2 {
				if err := u.Acquire(ctx, tc.bucket); err != nil {
					t.Fatal(err)
				}
			}
			if got := host.acquires.Load(); got != tc.rpcs {
				t.Fatalf("%d Host.Acquire calls, want %d", got, tc.rpcs)
			}
			if got := r.pregrant.giveBack(); got != tc.unused {
				t.Fatalf("returned unused = %v, want %v", got, tc.unused)
			}
		})
	}
}

// TestUpstreamPregrantThroughLimitWait: a provider's LimitWait copy of the
// call shares the one pre-grant.
func TestUpstreamPregrantThroughLimitWait(t *testing.T) {
	host := &fakeHost{}
	u := newUpstream(host, nil)
	ctx, r := callWith(&proto.Pregrant{Bucket: "p.a", GrantedAtUnixNs: time.Now().UnixNano()})
	if err := u.Acquire(LimitWait(ctx, time.Millisecond), "p.a"); err != nil {
		t.Fatal(err)
	}
	if err := u.Acquire(ctx, "p.a"); err != nil {
		t.Fatal(err)
	}
	if host.acquires.Load() != 1 || r.pregrant.giveBack() {
		t.Fatalf("%d RPCs; the pre-grant must be used once across copies", host.acquires.Load())
	}
}

// TestUpstreamPregrantInsidePause: a pre-grant that falls inside this
// plugin's own pause is spent like any grant there: not sent with, not
// released, and a new grant is acquired once the pause is over.
func TestUpstreamPregrantInsidePause(t *testing.T) {
	host := &fakeHost{}
	u := newUpstream(host, nil)
	setPause := func(until time.Time) {
		u.pausedMu.Lock()
		u.paused["p.a"] = until.UnixNano()
		u.pausedMu.Unlock()
	}
	// The host's grant comes after the pause.
	host.onAcquire = func() { setPause(time.Time{}) }
	ctx, r := callWith(&proto.Pregrant{Bucket: "p.a", GrantedAtUnixNs: time.Now().UnixNano()})
	setPause(time.Now().Add(30 * time.Millisecond))
	start := time.Now()
	if err := u.Acquire(ctx, "p.a"); err != nil {
		t.Fatal(err)
	}
	if n := host.acquires.Load(); n != 1 {
		t.Fatalf("%d RPCs: a grant inside the pause must be replaced by one more", n)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("the new grant was asked for after %s, inside the pause", d)
	}
	if r.pregrant.giveBack() {
		t.Fatal("a pre-grant spent inside a pause was reported unused")
	}
}

// fakeStream is a Provider_CallServer recording what the plugin sent.
type fakeStream struct {
	grpc.ServerStream
	ctx     context.Context
	mu      sync.Mutex
	sent    []*proto.CallChunk
	trailer metadata.MD
}

func (s *fakeStream) Context() context.Context { return s.ctx }
func (s *fakeStream) Send(c *proto.CallChunk) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, c)
	return nil
}
func (s *fakeStream) SetTrailer(md metadata.MD) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trailer = metadata.Join(s.trailer, md)
}

// providerFunc is a Provider whose Call is a function.
type providerFunc func(ctx context.Context, req *Request, w *ResponseWriter, up *Upstream) error

func (f providerFunc) Describe() *proto.Description            { return &proto.Description{} }
func (f providerFunc) Configure(context.Context, []byte) error { return nil }
func (f providerFunc) Call(ctx context.Context, req *Request, w *ResponseWriter, up *Upstream) error {
	return f(ctx, req, w, up)
}

func TestServerCallReportsUnusedPregrant(t *testing.T) {
	send := func(ctx context.Context, _ *Request, w *ResponseWriter, up *Upstream) error {
		if err := up.Acquire(ctx, "p.a"); err != nil {
			return err
		}
		return w.WriteHead(http.StatusOK, nil, CacheHint{})
	}
	reject := func(context.Context, *Request, *ResponseWriter, *Upstream) error {
		return problem.BadParam("x", "bad x")
	}
	fail := func(ctx context.Context, _ *Request, w *ResponseWriter, up *Upstream) error {
		if err := up.Acquire(ctx, "p.a"); err != nil {
			return err
		}
		return errors.New("upstream broke")
	}
	fresh := &proto.Pregrant{Bucket: "p.a", GrantedAtUnixNs: time.Now().UnixNano()}
	cases := []struct {
		name     string
		impl     providerFunc
		pregrant *proto.Pregrant
		unused   bool
		rpcs     int32
	}{
		{"used by the send", send, fresh, false, 0},
		{"rejected locally", reject, fresh, true, 0},
		{"used, then failed", fail, fresh, false, 0},
		{"stale, a fresh grant sent", send, &proto.Pregrant{Bucket: "p.a", GrantedAtUnixNs: 1, UseByUnixNs: 2}, true, 1},
		{"no pre-grant", reject, nil, false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			host := &fakeHost{}
			s := &server{impl: tc.impl, up: newUpstream(host, nil)}
			st := &fakeStream{ctx: context.Background()}
			if err := s.Call(&proto.CallRequest{Operation: "op", Pregrant: tc.pregrant}, st); err != nil {
				t.Fatal(err)
			}
			got := st.trailer.Get(PregrantTrailer)
			if unused := len(got) == 1 && got[0] == PregrantUnused; unused != tc.unused || (!tc.unused && len(got) != 0) {
				t.Fatalf("trailer %v, want unused=%v", got, tc.unused)
			}
			if n := host.acquires.Load(); n != tc.rpcs {
				t.Fatalf("%d Host.Acquire calls, want %d", n, tc.rpcs)
			}
		})
	}
}

// TestServerCallNotConfiguredReportsUnused: a plugin not configured yet
// never sends; the host may release the pre-grant.
func TestServerCallNotConfiguredReportsUnused(t *testing.T) {
	s := &server{impl: providerFunc(nil)}
	st := &fakeStream{ctx: context.Background()}
	if err := s.Call(&proto.CallRequest{Pregrant: &proto.Pregrant{Bucket: "p.a", GrantedAtUnixNs: time.Now().UnixNano()}}, st); err != nil {
		t.Fatal(err)
	}
	if got := st.trailer.Get(PregrantTrailer); len(got) != 1 || got[0] != PregrantUnused {
		t.Fatalf("trailer %v", got)
	}
}

// TestServerCallLateSendRefused: a goroutine the provider left behind
// cannot use the pre-grant once the call reported it unused.
func TestServerCallLateSendRefused(t *testing.T) {
	host := &fakeHost{}
	ctxCh := make(chan context.Context, 1)
	s := &server{up: newUpstream(host, nil), impl: providerFunc(func(ctx context.Context, _ *Request, _ *ResponseWriter, _ *Upstream) error {
		ctxCh <- ctx
		return problem.BadParam("x", "bad x")
	})}
	st := &fakeStream{ctx: context.Background()}
	if err := s.Call(&proto.CallRequest{Pregrant: &proto.Pregrant{Bucket: "p.a", GrantedAtUnixNs: time.Now().UnixNano()}}, st); err != nil {
		t.Fatal(err)
	}
	if got := st.trailer.Get(PregrantTrailer); len(got) != 1 {
		t.Fatalf("trailer %v", got)
	}
	if err := s.up.Acquire(<-ctxCh, "p.a"); err != nil {
		t.Fatal(err)
	}
	if host.acquires.Load() != 1 {
		t.Fatal("a returned pre-grant was used after the call ended")
	}
}

// TestUpstreamDoLateGrant: a grant whose use-by passes before the send
// (here: already past when it arrives) is not sent with; Do asks again and
// sends once, on the fresh grant.
func TestUpstreamDoLateGrant(t *testing.T) {
	var sends atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { sends.Add(1) }))
	defer srv.Close()
	host := &fakeHost{useBy: func(n int32) int64 {
		if n == 1 {
			return time.Now().Add(-time.Millisecond).UnixNano()
		}
		return time.Now().Add(time.Minute).UnixNano()
	}}
	u := newUpstream(host, nil)
	var builds int
	resp, err := u.Do(context.Background(), "p.a", func(ctx context.Context) (*http.Request, error) {
		builds++
		return http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if host.acquires.Load() != 2 || builds != 2 || sends.Load() != 1 {
		t.Fatalf("acquires %d, builds %d, sends %d; want 2, 2, 1", host.acquires.Load(), builds, sends.Load())
	}
}

// TestUpstream429PausesAtOnce: an answer asking to wait (a 429, or a 5xx
// with Retry-After) pauses this plugin's sends into the bucket for its
// Retry-After from its head, before the provider has even read the body,
// and a caller whose max wait is shorter hears 429 without a send. A 5xx
// without Retry-After asks for nothing.
func TestUpstream429PausesAtOnce(t *testing.T) {
	cases := []struct {
		name       string
		status     int
		retryAfter string
		pause      bool
	}{
		{"429 Retry-After", http.StatusTooManyRequests, "30", true},
		{"503 Retry-After", http.StatusServiceUnavailable, "30", true},
		{"500 without Retry-After", http.StatusInternalServerError, "", false},
		// Other 5xx leave a Retry-After to the plugin: a pause the host
		// never hears of would not show in status.
		{"502 Retry-After", http.StatusBadGateway, "30", false},
		// Capped: a proxy's 10 days silences nothing beyond an hour.
		{"429 Retry-After 10 days", http.StatusTooManyRequests, "864000", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var sends atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				sends.Add(1)
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			u := newUpstream(&fakeHost{}, nil)
			build := func(ctx context.Context) (*http.Request, error) {
				return http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			}
			resp, err := u.Do(context.Background(), "p.a", build)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.pausedNow("p.a"); got != tc.pause {
				t.Fatalf("local pause while the body is still unread: %v, want %v", got, tc.pause)
			}
			if until := u.pausedUntil("p.a"); time.Until(until) > maxLocalPause {
				t.Fatalf("local pause until %v, beyond the %s cap", until, maxLocalPause)
			}
			resp.Body.Close()
			ctx, _ := callWith(nil) // max wait 1s, far below the 30s pause
			// AwaitPause tells a provider beforehand what Do would answer.
			var rp *problem.Problem
			if _, err := u.AwaitPause(ctx, "p.a"); (err != nil) != tc.pause || (err != nil && (!errors.As(err, &rp) || rp.Status != http.StatusTooManyRequests)) {
				t.Fatalf("AwaitPause = %v, want a 429 problem: %v", err, tc.pause)
			}
			if !tc.pause {
				return
			}
			_, err = u.Do(ctx, "p.a", build)
			var p *problem.Problem
			if !errors.As(err, &p) || p.Status != http.StatusTooManyRequests || sends.Load() != 1 {
				t.Fatalf("second Do: %v after %d sends; want a 429 problem and no send", err, sends.Load())
			}
		})
	}
}

// TestUpstreamNeverResends: a server that reads a request on a kept-alive
// connection and hangs up without answering makes net/http re-send a GET
// by itself, on a new connection, past the scheduler. Upstream sends every
// request once: the caller gets an error, the server counts one arrival per
// grant, and the request still goes out without a body.
func TestUpstreamNeverResends(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var arrived atomic.Int32
	var framing atomic.Value
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					framing.Store(fmt.Sprintf("content-length %d, transfer-encoding %v", req.ContentLength, req.TransferEncoding))
					if arrived.Add(1) == 2 {
						return // read it, then hang up with no answer
					}
					fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}(c)
		}
	}()
	u := newUpstream(&fakeHost{}, nil)
	for i, wantErr := range []bool{false, true} {
		resp, err := u.Do(context.Background(), "p.a", func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ln.Addr().String()+"/x", nil)
		})
		if (err != nil) != wantErr {
			t.Fatalf("request %d: err = %v, want an error: %v", i+1, err, wantErr)
		}
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	if n := arrived.Load(); n != 2 {
		t.Fatalf("the server saw %d requests for 2 grants", n)
	}
	if f := framing.Load(); f != "content-length 0, transfer-encoding []" {
		t.Fatalf("request framing: %v, want no body", f)
	}
}
