package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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

	turns turns
	// outstandingAfter is how long an exchange runs, per bucket, before
	// it is reported unanswered (see outstanding).
	outstandingAfter map[string]time.Duration
	// fleet: the daemon is a fleet member, and max_in_flight turns are
	// the fleet's (takeFleet).
	fleet atomic.Bool
}

func newUpstream(host proto.HostClient, desc *proto.Description) *Upstream {
	u := &Upstream{host: host, paused: map[string]int64{}, turns: turnsFor(desc), outstandingAfter: outstandingFirst(desc), client: &http.Client{
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
	ctx, done, err := u.take(ctx, bucket)
	if err != nil {
		return nil, err
	}
	defer done() // the head is back (or the exchange failed)
	timeout := time.Duration(u.timeout.Load())
	req, ctx, cancel, g, err := u.granted(ctx, bucket, build, func(ctx context.Context) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, timeout)
	})
	if err != nil {
		cancel()
		return nil, err
	}
	resp, err := u.send(ctx, bucket, req, g)
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
	ctx, done, err := u.take(ctx, bucket)
	if err != nil {
		return nil, err
	}
	defer done() // the head is back (or the exchange failed)
	req, ctx, cancel, g, err := u.granted(ctx, bucket, build, func(ctx context.Context) (context.Context, context.CancelFunc) {
		return context.WithCancel(ctx)
	})
	if err != nil {
		cancel()
		return nil, err
	}
	timer := time.AfterFunc(time.Duration(u.timeout.Load()), cancel)
	resp, err := u.send(ctx, bucket, req, g)
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

// granted waits for a grant and builds the request under a context made by
// exchange; it returns the request only while the grant may still be used:
// not past its use-by and not into a pause this plugin has seen meanwhile.
// Otherwise the grant is left unsent and the loop asks again. cancel is
// never nil (a no-op on error).
func (u *Upstream) granted(ctx context.Context, bucket string, build Builder,
	exchange func(context.Context) (context.Context, context.CancelFunc)) (*http.Request, context.Context, context.CancelFunc, grant, error) {
	for {
		g, err := u.acquire(ctx, bucket)
		if err != nil {
			return nil, nil, func() {}, grant{}, err
		}
		rctx, cancel := exchange(ctx)
		req, err := build(rctx)
		if err != nil {
			return nil, nil, cancel, grant{}, fmt.Errorf("building upstream request: %w", err)
		}
		if late(g.useBy) {
			cancel()
			continue
		}
		if err := turnLost(ctx, bucket); err != nil {
			// The grant stays counted, unsent: fail closed.
			cancel()
			return nil, nil, func() {}, grant{}, err
		}
		if u.pausedNow(bucket) {
			// A 429 arrived for another request since the grant.
			cancel()
			if ctx, err = u.waitPause(ctx, bucket); err != nil {
				return nil, nil, func() {}, grant{}, err
			}
			continue
		}
		return req, rctx, cancel, g, nil
	}
}

// grant is one scheduler grant as the plugin holds it: its time in the
// scheduler's log (zero if unknown) and its use-by (zero: no bound).
type grant struct{ at, useBy time.Time }

// late reports that a grant's use-by has passed before its send: building
// the request took too long (a token fetched first, a starved process).
// Sent now, the request could land in a window the scheduler has already
// filled, so the grant stays counted, unused, and the caller asks again.
func late(useBy time.Time) bool {
	return !useBy.IsZero() && time.Now().After(useBy)
}

// take waits out this plugin's own pause of bucket, then for a turn to
// send in it (turns.take), then out any pause that began meanwhile. The
// first wait lets a caller that cannot wait the pause out hear so at once,
// with its end, instead of queueing for a turn behind callers that are
// themselves waiting for it to end. The last one matters because the turn
// comes free the moment a 429's head is back: the next caller must see
// the pause that head set before it spends a grant the host, not told of
// the pause yet, would still give. Every wait here counts towards the
// caller's max wait and the request's logged wait.
func (u *Upstream) take(ctx context.Context, bucket string) (context.Context, func(), error) {
	if u.turns[bucket] == nil {
		return ctx, func() {}, nil
	}
	ctx, err := u.waitPause(ctx, bucket)
	if err != nil {
		return nil, nil, err
	}
	ctx, done, err := u.turns.take(ctx, bucket, func() { u.report(ctx, "turn", bucket, time.Time{}) })
	if err != nil {
		return nil, nil, err
	}
	if u.fleet.Load() {
		fctx, give, err := u.takeFleet(ctx, bucket, u.turns[bucket].n)
		if err != nil {
			done()
			return nil, nil, err
		}
		local := done
		ctx, done = fctx, func() {
			// Off the caller's path: the answer is not held up by the
			// release, and this host's next caller gets the local turn
			// only once the fleet's is free.
			go func() {
				give()
				local()
			}()
		}
	}
	if ctx, err = u.waitPause(ctx, bucket); err != nil {
		done()
		return nil, nil, err
	}
	return ctx, done, nil
}

// waited accounts for d spent waiting before a grant: it adds to the
// request's logged wait and comes off the max wait left, so waits in a row
// never add up to more than the caller allowed.
func waited(ctx context.Context, d time.Duration) context.Context {
	if d <= 0 {
		return ctx
	}
	if st := statsFrom(ctx); st != nil {
		st.waitNs.Add(int64(d))
	}
	if r := callFrom(ctx); r != nil && r.MaxWait > 0 {
		return LimitWait(ctx, max(r.MaxWait-d, time.Millisecond))
	}
	return ctx
}

// Acquire obtains one grant without sending anything, for plugins whose
// transport is not plain HTTP. Most plugins use Do. The request must be
// sent at once: a grant is only good for a fraction of the margin. It takes
// no turn of a bucket's max_in_flight: only Do and DoStream see when an
// answer is back.
func (u *Upstream) Acquire(ctx context.Context, bucket string) error {
	_, err := u.acquire(ctx, bucket)
	return err
}

// acquire obtains one grant.
func (u *Upstream) acquire(ctx context.Context, bucket string) (grant, error) {
	// A grant handed out just before another request of this plugin paused
	// the bucket (a 429 seen meanwhile) must not be used: the upstream said
	// stop. The grant is spent, but nothing is sent; ask again, which waits
	// out the pause for every caller alike.
	for {
		g, err := u.acquireOnce(ctx, bucket)
		if err != nil {
			return grant{}, err
		}
		if !u.pausedNow(bucket) {
			return g, nil
		}
		if ctx, err = u.waitPause(ctx, bucket); err != nil {
			return grant{}, err
		}
	}
}

func (u *Upstream) pausedNow(bucket string) bool {
	return !u.pausedUntil(bucket).IsZero()
}

// pausedUntil is the end of this plugin's own pause of bucket; zero if
// none is running.
func (u *Upstream) pausedUntil(bucket string) time.Time {
	u.pausedMu.Lock()
	defer u.pausedMu.Unlock()
	if n := u.paused[bucket]; time.Now().UnixNano() < n {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// pauseLocal extends this plugin's own record of a pause of bucket.
func (u *Upstream) pauseLocal(bucket string, until time.Time) {
	u.pausedMu.Lock()
	defer u.pausedMu.Unlock()
	if n := until.UnixNano(); n > u.paused[bucket] {
		u.paused[bucket] = n
	}
}

// waitPause waits out this plugin's own pause of bucket, within the
// caller's max wait: a grant taken now would only be spent unsent (the
// host may not have heard of the pause yet). The wait counts (see waited):
// the returned context carries what is left of the max wait.
func (u *Upstream) waitPause(ctx context.Context, bucket string) (context.Context, error) {
	until := u.pausedUntil(bucket)
	if until.IsZero() {
		return ctx, nil
	}
	if err := pauseRefusal(ctx, until); err != nil {
		return ctx, err
	}
	u.report(ctx, "paused", bucket, until)
	start := time.Now()
	err := Sleep(ctx, time.Until(until))
	ctx = waited(ctx, time.Since(start))
	if err != nil {
		return ctx, fmt.Errorf("waiting for rate budget: %w", err)
	}
	return ctx, nil
}

// report tells the host where ctx's call stands while this plugin makes it
// wait, so the caller can be shown (best effort: a host that does not know
// Progress answers Unimplemented, and nothing changes).
func (u *Upstream) report(ctx context.Context, stage, bucket string, until time.Time) {
	r := callFrom(ctx)
	if r == nil || r.ID == "" || u.host == nil {
		return
	}
	var ms int64
	if !until.IsZero() {
		ms = until.UnixMilli()
	}
	_, _ = u.host.Progress(ctx, &proto.ProgressRequest{RequestId: r.ID, Stage: stage, Bucket: bucket, UntilUnixMs: ms})
}

// AwaitPause waits out this plugin's own pause of bucket, as Do would
// before it asks for a grant, or answers at once the problem Do would when
// the pause outlasts ctx's caller's max wait. A provider calls it before
// work of its own that belongs after the pause (a token request, which
// must neither be wasted on a refused call nor reach an upstream still
// saying Retry-After). The context returned counts the wait against the
// caller's max wait.
func (u *Upstream) AwaitPause(ctx context.Context, bucket string) (context.Context, error) {
	return u.waitPause(ctx, bucket)
}

// pauseRefusal is the 429 for a caller whose max wait ends before a pause
// until does; nil if it can wait.
func pauseRefusal(ctx context.Context, until time.Time) error {
	d := time.Until(until)
	if r := callFrom(ctx); r != nil && r.MaxWait > 0 && d > r.MaxWait {
		return problem.NoBudget(d, "the upstream asked to wait (a 429, or a 503 with Retry-After); paused until "+until.UTC().Format(time.RFC3339))
	}
	return nil
}

// Sleep waits d, or returns ctx's error as soon as it is done.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (u *Upstream) acquireOnce(ctx context.Context, bucket string) (grant, error) {
	var maxWait time.Duration
	var id string
	if r := callFrom(ctx); r != nil {
		// The host's pre-grant for this call is a scheduler grant like any
		// other: used once, for this bucket, before its use-by, it saves
		// the round trip. Once taken it is never released.
		if g, ok := r.pregrant.consume(bucket, time.Now()); ok {
			return g, nil
		}
		maxWait, id = r.MaxWait, r.ID
	}
	start := time.Now()
	g, err := u.host.Acquire(ctx, &proto.AcquireRequest{Bucket: bucket, MaxWaitMs: maxWait.Milliseconds(), RequestId: id})
	if st := statsFrom(ctx); st != nil {
		st.waitNs.Add(int64(time.Since(start)))
	}
	if err != nil {
		if ctx.Err() != nil {
			return grant{}, fmt.Errorf("waiting for rate budget: %w", ctx.Err())
		}
		return grant{}, problem.New(http.StatusServiceUnavailable, "scheduler unavailable: "+err.Error())
	}
	if g.GetDenied() {
		retry := time.Duration(g.GetRetryAfterMs()) * time.Millisecond
		switch g.GetDenial() {
		case problem.ReasonStateUnwritable:
			return grant{}, problem.StateUnwritable(retry, g.GetReason())
		case problem.ReasonFleetUnreachable:
			return grant{}, problem.FleetUnreachable(retry, g.GetReason())
		case problem.ReasonFleetLimitMismatch:
			return grant{}, problem.FleetLimitMismatch(retry, g.GetReason())
		}
		return grant{}, problem.NoBudget(retry, g.GetReason())
	}
	return grant{at: unixTime(g.GetGrantedAtUnixNs()), useBy: unixTime(g.GetUseByUnixNs())}, nil
}

// send performs one exchange (up to the response head) and records it,
// with when its answer arrived (or the exchange failed): at the latest, the
// upstream counted the request then. While it is unanswered, the grant
// keeps counting (outstanding).
func (u *Upstream) send(ctx context.Context, bucket string, req *http.Request, g grant) (*http.Response, error) {
	onceOnly(req)
	start := time.Now()
	stop := u.outstanding(bucket, g.at)
	resp, err := u.client.Do(req)
	end := time.Now()
	at := stop()
	if st := statsFrom(ctx); st != nil {
		st.upstreamNs.Add(int64(end.Sub(start)))
		st.attempts.Add(1)
		st.answered(bucket, at, end)
	}
	if err == nil && AsksToWait(resp) {
		// Stop this plugin's other sends into the bucket the moment the
		// head arrives, before the provider has read the body and paused
		// the bucket for every caller: a request racing the 429 (or a
		// 503's Retry-After) would arrive inside the Retry-After.
		until := time.Now().Add(min(RetryAfter(resp.Header, time.Second), maxLocalPause))
		u.pauseLocal(bucket, until)
		if t, _ := ctx.Value(fleetTurnKey{}).(*fleetTurn); t != nil {
			// The fleet's turn is given back when this returns, and the
			// next member's request must find the bucket paused: the
			// provider's own Pause, after it has read the body, would
			// come too late for another host. Written before the turn
			// is released; the provider's Pause then only extends it.
			_, _ = u.host.Pause(context.WithoutCancel(ctx), &proto.PauseRequest{Bucket: bucket, UntilUnixMs: until.UnixMilli(),
				Reason: fmt.Sprintf("upstream answered %d with Retry-After", resp.StatusCode)})
		}
	}
	return resp, err
}

// onceOnly stops net/http from sending req a second time by itself. Its
// Transport re-sends a GET (or HEAD) whose kept-alive connection the server
// closed after reading it, a request the scheduler granted once and the
// upstream may count twice (a 7th iNeo request in its window is a ban; a
// deleteaccount twice is worse). It does so only for requests it deems
// replayable: no body, or one it can rewind. An empty body it cannot
// rewind makes the request not replayable, and goes out as no body at
// all (the Transport finds it empty before writing the head). A request
// that failed before any byte was written still fails rather than being
// re-sent; the plugin's own policy, through the scheduler, decides.
func onceOnly(req *http.Request) {
	if req.Body == nil || req.Body == http.NoBody {
		req.Body, req.GetBody = io.NopCloser(emptyReader{}), nil
	}
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, io.EOF }

// AsksToWait reports an answer that stops the bucket: a 429, or a 503
// carrying Retry-After ("temporarily unavailable, retry later", the 5xx
// RFC 9110 pairs with it). The SDK stops this plugin's own sends from its
// head on; the provider then pauses the bucket for every caller.
func AsksToWait(resp *http.Response) bool {
	return resp.StatusCode == http.StatusTooManyRequests ||
		(resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "")
}

// maxLocalPause bounds the pause the SDK sets by itself at an answer's
// head. It only closes the gap until the plugin pauses the bucket in the
// host, which is authoritative (and shows in status); a proxy's absurd
// Retry-After must not silence a plugin for days behind the host's back.
const maxLocalPause = time.Hour

// RetryAfter reads a Retry-After header (seconds or an HTTP date); def when
// it is missing, unparsable, not positive or absurd.
func RetryAfter(h http.Header, def time.Duration) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if n > 0 && n < 1e7 {
			return time.Duration(n * float64(time.Second))
		}
		return def
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return def
}

func statsFrom(ctx context.Context) *callStats {
	if r := callFrom(ctx); r != nil {
		return r.stats
	}
	return nil
}

// Pause stops bucket for every caller until the given time.
func (u *Upstream) Pause(ctx context.Context, bucket string, until time.Time, reason string) error {
	u.pauseLocal(bucket, until)
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
