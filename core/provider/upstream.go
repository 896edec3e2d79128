package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/proto"
)

// Upstream is a plugin's only way to reach its upstream. Every request,
// whether a first try, a retry, a token fetch or a page follow-up, asks the
// host's scheduler for a grant first, then builds the HTTP request — so
// whatever must be fresh (a signature timestamp, the current token) is made
// after the wait, not before.
type Upstream struct {
	host    proto.HostClient
	client  *http.Client
	timeout atomic.Int64

	// paused remembers the pauses this plugin asked for, by bucket (Unix
	// ns), so a request granted just before a pause is not sent into it.
	pausedMu sync.Mutex
	paused   map[string]int64
}

func newUpstream(host proto.HostClient) *Upstream {
	u := &Upstream{host: host, paused: map[string]int64{}, client: &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		// Redirects would be requests the scheduler never granted.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	u.timeout.Store(int64(30 * time.Second))
	return u
}

// SetTimeout sets the bound on one upstream exchange, headers and body.
func (u *Upstream) SetTimeout(d time.Duration) {
	if d > 0 {
		u.timeout.Store(int64(d))
	}
}

// Builder makes the HTTP request after the grant; it is called once per
// attempt.
type Builder func(ctx context.Context) (*http.Request, error)

// Do waits for a grant from bucket, builds the request and sends it. The
// response body must be closed; closing it also ends the exchange's timeout.
// Errors are problems: 429 when the budget cannot serve within the caller's
// max wait, 504 on timeout, 502 when the upstream cannot be reached. They
// never include the request URL, which may carry credentials.
func (u *Upstream) Do(ctx context.Context, bucket string, build Builder) (*http.Response, error) {
	if err := u.Acquire(ctx, bucket); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(u.timeout.Load()))
	req, err := build(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("building upstream request: %w", err)
	}
	resp, err := u.send(ctx, req)
	if err != nil {
		cancel()
		return nil, transportProblem(ctx, err)
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// DoStream is Do for answers that may be large (files): the timeout bounds
// only the wait for the response headers, not the body, so a 100 MB file on
// a slow link is not cut off. The caller's context still cancels it.
func (u *Upstream) DoStream(ctx context.Context, bucket string, build Builder) (*http.Response, error) {
	if err := u.Acquire(ctx, bucket); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	req, err := build(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("building upstream request: %w", err)
	}
	timer := time.AfterFunc(time.Duration(u.timeout.Load()), cancel)
	resp, err := u.send(ctx, req)
	if !timer.Stop() && err != nil {
		cancel()
		return nil, problem.New(http.StatusGatewayTimeout, "upstream did not answer in time")
	}
	if err != nil {
		cancel()
		return nil, transportProblem(ctx, err)
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// Acquire obtains one grant without sending anything, for plugins whose
// transport is not plain HTTP. Most plugins use Do.
func (u *Upstream) Acquire(ctx context.Context, bucket string) error {
	// A grant handed out just before another request of this plugin paused
	// the bucket (a 429 seen meanwhile) must not be used: the upstream said
	// stop. The grant is spent, but nothing is sent; ask again, which waits
	// out the pause for every caller alike.
	for {
		if err := u.acquireOnce(ctx, bucket); err != nil {
			return err
		}
		if !u.pausedNow(bucket) {
			return nil
		}
	}
}

func (u *Upstream) pausedNow(bucket string) bool {
	u.pausedMu.Lock()
	defer u.pausedMu.Unlock()
	return time.Now().UnixNano() < u.paused[bucket]
}

func (u *Upstream) acquireOnce(ctx context.Context, bucket string) error {
	var maxWait time.Duration
	var id string
	if r := callFrom(ctx); r != nil {
		maxWait, id = r.MaxWait, r.ID
	}
	start := time.Now()
	g, err := u.host.Acquire(ctx, &proto.AcquireRequest{Bucket: bucket, MaxWaitMs: maxWait.Milliseconds(), RequestId: id})
	if st := statsFrom(ctx); st != nil {
		st.waitNs.Add(int64(time.Since(start)))
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for rate budget: %w", ctx.Err())
		}
		return problem.New(http.StatusServiceUnavailable, "scheduler unavailable: "+err.Error())
	}
	if g.GetDenied() {
		return problem.RateLimited(time.Duration(g.GetRetryAfterMs())*time.Millisecond, g.GetReason())
	}
	return nil
}

// send performs one exchange (up to the response head) and records it.
func (u *Upstream) send(ctx context.Context, req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := u.client.Do(req)
	if st := statsFrom(ctx); st != nil {
		st.upstreamNs.Add(int64(time.Since(start)))
		st.attempts.Add(1)
	}
	return resp, err
}

func statsFrom(ctx context.Context) *callStats {
	if r := callFrom(ctx); r != nil {
		return r.stats
	}
	return nil
}

// Pause stops bucket for every caller until the given time.
func (u *Upstream) Pause(ctx context.Context, bucket string, until time.Time, reason string) error {
	u.pausedMu.Lock()
	if n := until.UnixNano(); n > u.paused[bucket] {
		u.paused[bucket] = n
	}
	u.pausedMu.Unlock()
	_, err := u.host.Pause(ctx, &proto.PauseRequest{Bucket: bucket, UntilUnixMs: until.UnixMilli(), Reason: reason})
	return err
}

// ReadBody reads a whole (JSON-sized) body with a bound, turning a body
// that breaks off mid-way into a 502 and a stalled one into a 504.
func ReadBody(ctx context.Context, resp *http.Response, limit int64) ([]byte, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, transportProblem(ctx, err)
	}
	if int64(len(b)) > limit {
		return nil, problem.New(http.StatusBadGateway, fmt.Sprintf("upstream answer larger than %d bytes", limit))
	}
	return b, nil
}

func transportProblem(ctx context.Context, err error) *problem.Problem {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return problem.New(http.StatusGatewayTimeout, "upstream did not answer in time")
	}
	// *url.Error's message embeds the URL, which may carry a credential in
	// the query: render only what it wraps.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return problem.New(http.StatusBadGateway, "upstream unreachable: "+err.Error())
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
