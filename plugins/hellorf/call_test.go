package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/provider"
	"github.com/sluice-dev/sluice/plugins/hellorf/hellorfsim"
)

// These tests run the plugin's whole call path against the simulator, with
// a fake Upstream in place of the daemon's scheduler.

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func provHint() provider.CacheHint { return provider.CacheHint{} }

// testClock is real time plus an adjustable offset, shared by the plugin and
// the simulator so a test can move both forward (a long queue wait, the end
// of the purchase guard) without sleeping.
type testClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *testClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.off) }
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// fakeUp stands in for *provider.Upstream: a grant is immediate (or what
// wait does), then the builder runs and the request is sent.
type fakeUp struct {
	client  *http.Client
	timeout time.Duration
	// wait runs between the grant and the builder: the time a request
	// spends in the scheduler's queue.
	wait func()
	// deny, if set, is returned instead of a grant.
	deny error

	mu     sync.Mutex
	grants int
	pauses []string
}

func newFakeUp() *fakeUp {
	return &fakeUp{client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, timeout: 5 * time.Second}
}

func (f *fakeUp) grant() error {
	if f.deny != nil {
		return f.deny
	}
	f.mu.Lock()
	f.grants++
	f.mu.Unlock()
	if f.wait != nil {
		f.wait()
	}
	return nil
}

func (f *fakeUp) Do(ctx context.Context, bucket string, build provider.Builder) (*http.Response, error) {
	if bucket != bucketAPI {
		return nil, fmt.Errorf("unknown bucket %s", bucket)
	}
	if err := f.grant(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	req, err := build(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut {
			return nil, problem.New(http.StatusGatewayTimeout, "upstream did not answer in time")
		}
		return nil, problem.New(http.StatusBadGateway, "upstream unreachable")
	}
	resp.Body = &cancelOnClose{resp.Body, cancel}
	return resp, nil
}

func (f *fakeUp) DoStream(ctx context.Context, bucket string, build provider.Builder) (*http.Response, error) {
	if err := f.grant(); err != nil {
		return nil, err
	}
	req, err := build(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, problem.New(http.StatusBadGateway, "upstream unreachable")
	}
	return resp, nil
}

func (f *fakeUp) Pause(_ context.Context, bucket string, until time.Time, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pauses = append(f.pauses, bucket+": "+reason)
	return nil
}

func (f *fakeUp) SetTimeout(time.Duration) {}

// A single host: no fleet guard.
func (f *fakeUp) ClaimGuard(context.Context, string, time.Duration, time.Duration, bool) (provider.GuardClaim, error) {
	return provider.GuardClaim{Claimed: true}, nil
}

func (f *fakeUp) SettleGuard(context.Context, provider.GuardClaim, string, string, bool) error {
	return nil
}

func (f *fakeUp) grantCount() int { f.mu.Lock(); defer f.mu.Unlock(); return f.grants }

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error { err := c.ReadCloser.Close(); c.cancel(); return err }

// recorder is an answerWriter that keeps what it was given.
type recorder struct {
	status int
	header http.Header
	hint   provider.CacheHint
	body   bytes.Buffer
	writes int
	// maxWrite is the largest single Write.
	maxWrite int
}

func (r *recorder) WriteHead(status int, h http.Header, hint provider.CacheHint) error {
	if r.status != 0 {
		return errors.New("head written twice")
	}
	r.status, r.header, r.hint = status, h, hint
	return nil
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		return 0, errors.New("write before head")
	}
	r.writes++
	r.maxWrite = max(r.maxWrite, len(p))
	return r.body.Write(p)
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type harness struct {
	p    *hellorf
	sim  *hellorfsim.Sim
	up   *fakeUp
	clk  *testClock
	logs *logBuffer
	base string
	// stateDir is the plugin's state directory (the purchase guard's).
	stateDir string
	// raw is the config the plugin was given.
	raw []byte
}

// newHarness starts a simulator and a configured plugin. cfg is merged over
// a working config.
func newHarness(t *testing.T, simOpts hellorfsim.Options, cfg map[string]any) *harness {
	t.Helper()
	clk := &testClock{}
	if simOpts.Now == nil {
		simOpts.Now = clk.now
	}
	sim, base, err := hellorfsim.Start(simOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	logs := &logBuffer{}
	p := newHellorf(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	p.now = clk.now
	c := map[string]any{"base_url": base, "client_id": hellorfsim.DefaultClientID, "client_secret": hellorfsim.DefaultClientSecret,
		"allow_purchase": true, "purchase_guard": "10m0s", "categories_ttl": "24h0m0s", "search_ttl": "10m0s", "timeout": "5s"}
	for k, v := range cfg {
		c[k] = v
	}
	raw, _ := json.Marshal(c)
	stateDir := t.TempDir()
	if err := p.configure(stateDir, raw); err != nil {
		t.Fatal(err)
	}
	return &harness{p: p, sim: sim, up: newFakeUp(), clk: clk, logs: logs, base: base, stateDir: stateDir, raw: raw}
}

func (h *harness) call(t *testing.T, op string, params url.Values, hdr http.Header) (*recorder, error) {
	t.Helper()
	if params == nil {
		params = url.Values{}
	}
	if hdr == nil {
		hdr = http.Header{}
	}
	method := http.MethodGet
	if op == "audio.purchase" {
		method = http.MethodPost
	}
	rec := &recorder{}
	err := h.p.call(t.Context(), &provider.Request{Operation: op, Method: method, Params: params, Header: hdr}, rec, h.up)
	return rec, err
}

func (h *harness) mustCall(t *testing.T, op string, params url.Values, hdr http.Header) *recorder {
	t.Helper()
	rec, err := h.call(t, op, params, hdr)
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	return rec
}

func dataOf(t *testing.T, rec *recorder, v any) {
	t.Helper()
	var env struct {
		Result bool            `json:"result"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(rec.body.Bytes(), &env); err != nil || !env.Result {
		t.Fatalf("not a successful answer (%v): %s", err, rec.body.Bytes())
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		t.Fatalf("data: %v", err)
	}
}

func TestEveryEndpointAgainstSimulator(t *testing.T) {
	t.Parallel()
	h := newHarness(t, hellorfsim.Options{Prefix: "/open/v1"}, nil)
	audio := strconv.Itoa(hellorfsim.SampleAudioID)
	buy := h.mustCall(t, "audio.purchase", url.Values{"audio_id": {audio}, "permission_id": {"35"}, "warrant_name": {"云南 & Co = 1+1"}, "third_user_id": {"u 1"}}, nil)
	var bought struct {
		ID  int    `json:"id"`
		URL string `json:"url"`
	}
	dataOf(t, buy, &bought)
	pid := strconv.Itoa(bought.ID)
	start := h.clk.now()
	cases := []struct {
		op        string
		params    url.Values
		cacheable bool
		ttl       time.Duration
		linkBound bool // ExpiresAt bounded by the 10-minute rule
	}{
		{"audio.categories", nil, true, 24 * time.Hour, false},
		{"audio.search", url.Values{"keyword": {"云南 piano"}, "bpm_id": {"3"}, "per_page": {"5"}}, true, 10 * time.Minute, true},
		{"audio.search", url.Values{"keyword": {"a+b & c=d"}}, true, 10 * time.Minute, true},
		{"audio.detail", url.Values{"audio_id": {audio}}, true, 10 * time.Minute, true},
		{"audio.my-purchases", url.Values{"audio_id": {audio}, "begin_at": {"2020-01-01 00:00:00"}}, false, 0, false},
		{"audio.purchase-detail", url.Values{"purchase_id": {pid}}, true, 10 * time.Minute, true},
		{"audio.purchase-download", url.Values{"purchase_id": {pid}}, true, 0, false},
	}
	for _, tc := range cases {
		rec := h.mustCall(t, tc.op, tc.params, nil)
		if rec.status != 200 || rec.hint.Cacheable != tc.cacheable || rec.header.Get("Content-Type") != "application/json; charset=utf-8" {
			t.Fatalf("%s: %d cacheable=%v ct=%q %s", tc.op, rec.status, rec.hint.Cacheable, rec.header.Get("Content-Type"), rec.body.Bytes())
		}
		if tc.ttl != 0 && rec.hint.TTL != tc.ttl {
			t.Fatalf("%s: TTL %s, want %s", tc.op, rec.hint.TTL, tc.ttl)
		}
		if tc.linkBound && (rec.hint.ExpiresAt.IsZero() || rec.hint.ExpiresAt.After(h.clk.now().Add(linkLife)) || rec.hint.ExpiresAt.Before(start.Add(linkLife-2*time.Second))) {
			t.Fatalf("%s: ExpiresAt %v not about 10 min ahead", tc.op, rec.hint.ExpiresAt)
		}
		if exp, ok := linkExpiry(rec.body.Bytes()); ok && rec.hint.Cacheable && rec.hint.ExpiresAt.After(exp) {
			t.Fatalf("%s: ExpiresAt %v after a link's Expires %v", tc.op, rec.hint.ExpiresAt, exp)
		}
	}
	// purchase-download is bounded by its URL's Expires (less the most
	// hellorf's clock may be ahead, about a second here) and the 10-minute
	// rule.
	sent := h.clk.now()
	rec := h.mustCall(t, "audio.purchase-download", url.Values{"purchase_id": {pid}}, nil)
	exp, ok := linkExpiry(rec.body.Bytes())
	if !ok || rec.hint.ExpiresAt.After(exp) || rec.hint.ExpiresAt.Before(exp.Add(-3*time.Second)) || rec.hint.ExpiresAt.After(h.clk.now().Add(linkLife)) ||
		rec.hint.TTL <= 0 || rec.hint.TTL > 10*time.Minute || rec.hint.ExpiresAt.Before(sent.Add(linkLife-3*time.Second)) {
		t.Fatalf("purchase-download hint %+v, link expires %v", rec.hint, exp)
	}
	// Every request carried client_id, a fresh nonce and a sign, and
	// nothing the caller could not have sent.
	for _, a := range h.sim.RequestLog() {
		if a.Code != 0 {
			t.Fatalf("simulator refused %s: code %d", a.Path, a.Code)
		}
		if a.Params.Get("client_secret") != "" {
			t.Fatal("client_secret was sent")
		}
	}
	if n := h.sim.TotalRequests(); n != len(cases)+2 {
		t.Fatalf("%d upstream requests, want %d", n, len(cases)+2)
	}
}

// TestNonceMadeAfterQueueWait: a request that waits in the queue longer than
// the nonce validity still goes out with a fresh nonce, because the builder
// runs after the grant. The negative control shows the simulator would
// refuse a nonce made before the wait.
func TestNonceMadeAfterQueueWait(t *testing.T) {
	t.Parallel()
	h := newHarness(t, hellorfsim.Options{}, nil)
	h.up.wait = func() { h.clk.add(11 * time.Minute) } // longer than the 10-minute window
	rec := h.mustCall(t, "audio.categories", nil, nil)
	if rec.status != 200 {
		t.Fatalf("after an 11-minute queue wait: %d %s", rec.status, rec.body.Bytes())
	}

	var ex exchange
	s := h.p.cfg.Load()
	req, err := ex.builder(s, opsByName["audio.categories"], url.Values{}, h.clk.now)(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	h.clk.add(11 * time.Minute)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(b), strconv.Itoa(hellorfsim.CodeNonceExpired)) {
		t.Fatalf("a nonce made before the wait was accepted: %d %s", resp.StatusCode, b)
	}
}

func TestErrorsPassThroughAndAreNotCached(t *testing.T) {
	t.Parallel()
	h := newHarness(t, hellorfsim.Options{}, nil)
	rec := h.mustCall(t, "audio.detail", url.Values{"audio_id": {"1"}}, nil)
	want := `{"result":false,"message":"音乐不存在","code":1005}` + "\n"
	if rec.status != 404 || rec.body.String() != want || rec.hint.Cacheable || rec.hint.Outcome != "hellorf:1005" {
		t.Fatalf("got %d %q %+v", rec.status, rec.body.String(), rec.hint)
	}
	// The document names no code, so neither does sluice; a 404 blames
	// the request.
	if rec.header.Get("Sluice-Upstream-Status") != "1005 code_1005" || rec.header.Get("Sluice-Upstream-Class") != "caller-error" {
		t.Fatalf("headers %v", rec.header)
	}
	h.sim.FailNext(hellorfsim.PathSearch, hellorfsim.Failure{Status: 200, Code: 7777, Message: "稍后再试"})
	rec = h.mustCall(t, "audio.search", nil, nil)
	if rec.status != 200 || rec.hint.Cacheable || rec.header.Get("Sluice-Upstream-Status") != "7777 code_7777" || rec.header.Get("Sluice-Upstream-Class") != "unknown" {
		t.Fatalf("HTTP 200 failure: %d %+v %v", rec.status, rec.hint, rec.header)
	}
	// "sign" inside another word is no signature problem.
	h.sim.FailNext(hellorfsim.PathPurchaseDetail, hellorfsim.Failure{Status: 400, Code: 1001, Message: "cannot assign this design"})
	rec = h.mustCall(t, "audio.purchase-detail", url.Values{"purchase_id": {"178"}}, nil)
	if rec.status != 400 || rec.header.Get("Sluice-Upstream-Status") != "1001 code_1001" || rec.header.Get("Sluice-Upstream-Class") != "caller-error" {
		t.Fatalf("assign/design: %d %v", rec.status, rec.header)
	}
	if strings.Contains(h.logs.String(), "configuration problem") {
		t.Fatalf("an ordinary failure was logged as a configuration problem:\n%s", h.logs.String())
	}
}

// TestLinksCachedOnlyWhileAliveWhenHellorfClockIsAhead: Expires= is on
// hellorf's clock. With that clock ahead of ours, the cache verdict must
// still end before the link dies on ours, which the simulator's object
// store checks on its own (skewed) clock.
func TestLinksCachedOnlyWhileAliveWhenHellorfClockIsAhead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		linkLife time.Duration
	}{
		// Expires= reads 15 minutes ahead on our clock.
		{"10-minute links", 10 * time.Minute},
		// Expires= reads 9 minutes ahead: the 10-minute rule does not
		// help, only the offset measured from Date does.
		{"4-minute links", 4 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, op := range []string{"audio.purchase-download", "audio.search"} {
				h := newHarness(t, hellorfsim.Options{ClockSkew: 5 * time.Minute, LinkLife: tc.linkLife}, nil)
				params := url.Values{"purchase_id": {strconv.Itoa(hellorfsim.SeededPurchaseID)}}
				if op == "audio.search" {
					params = url.Values{"keyword": {"piano"}, "per_page": {"1"}}
				}
				before := h.clk.now()
				rec := h.mustCall(t, op, params, nil)
				after := h.clk.now()
				if rec.status != 200 || !rec.hint.Cacheable {
					t.Fatalf("%s: %d %+v %s", op, rec.status, rec.hint, rec.body.Bytes())
				}
				// The link was issued between before and after (our clock)
				// and lives tc.linkLife.
				if rec.hint.ExpiresAt.IsZero() || rec.hint.ExpiresAt.After(after.Add(tc.linkLife)) {
					t.Fatalf("%s: cached until %s, but its links die by %s", op, rec.hint.ExpiresAt.Format(time.TimeOnly), after.Add(tc.linkLife).Format(time.TimeOnly))
				}
				if rec.hint.ExpiresAt.Before(before.Add(tc.linkLife - 3*time.Second)) {
					t.Fatalf("%s: cached until %s, needlessly short", op, rec.hint.ExpiresAt.Format(time.TimeOnly))
				}
				if op == "audio.purchase-download" && (rec.hint.TTL <= 0 || rec.hint.TTL > tc.linkLife) {
					t.Fatalf("%s: TTL %s for a link that lives %s", op, rec.hint.TTL, tc.linkLife)
				}
				// The simulator agrees: just before the verdict ends, the
				// link still works.
				var link string
				if m := regexp.MustCompile(`"(http://[^"]*Expires=[^"]*)"`).FindSubmatch(rec.body.Bytes()); m != nil {
					link = string(m[1])
				}
				if link == "" {
					t.Fatalf("%s: no link in %s", op, rec.body.Bytes())
				}
				h.clk.add(rec.hint.ExpiresAt.Sub(h.clk.now()) - 100*time.Millisecond)
				resp, err := http.Get(link)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("%s: the link answers %d while the cache verdict still holds", op, resp.StatusCode)
				}
			}
		})
	}
}

func TestBadSecretIsAConfigurationProblem(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		cfg     map[string]any
		skew    time.Duration
		code    int
		logWant []string
	}{
		{"wrong secret", map[string]any{"client_secret": "wrong-secret-value"}, 0, hellorfsim.CodeBadSign,
			[]string{"configuration problem", "code=1004", "clock_offset="}},
		{"wrong client_id", map[string]any{"client_id": "someone"}, 0, hellorfsim.CodeInvalidClient, []string{"configuration problem", "code=1002"}},
		{"clock 20 min behind", nil, 20 * time.Minute, hellorfsim.CodeNonceExpired,
			[]string{"configuration problem", "code=1003", "clock_offset=20m", "ahead of ours"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, hellorfsim.Options{ClockSkew: tc.skew}, tc.cfg)
			rec := h.mustCall(t, "audio.categories", nil, nil)
			if rec.status != 401 || !strings.Contains(rec.body.String(), fmt.Sprintf(`"code":%d`, tc.code)) || rec.hint.Cacheable {
				t.Fatalf("got %d %s", rec.status, rec.body.String())
			}
			log := h.logs.String()
			for _, w := range tc.logWant {
				if !strings.Contains(log, w) {
					t.Errorf("log lacks %q:\n%s", w, log)
				}
			}
			if strings.Contains(log, "wrong-secret-value") || strings.Contains(log, hellorfsim.DefaultClientSecret) || strings.Contains(log, "sign=") {
				t.Fatalf("log leaks a secret or signature:\n%s", log)
			}
		})
	}
}

// TestRateLimitedAnswerPausesBucket: an answer asking to wait (a 429, or a
// 503 with Retry-After) pauses hellorf.api for every caller; another 5xx
// does not.
func TestRateLimitedAnswerPausesBucket(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		failure hellorfsim.Failure
		pauses  int
	}{
		{"429", hellorfsim.Failure{Status: 429, Code: 429, Message: "too many requests"}, 1},
		{"503 with Retry-After", hellorfsim.Failure{Status: 503, Code: 503, Message: "维护中", RetryAfter: "5"}, 1},
		{"503 without Retry-After", hellorfsim.Failure{Status: 503, Code: 503, Message: "维护中"}, 0},
		{"502 with Retry-After", hellorfsim.Failure{Status: 502, Code: 502, Message: "bad gateway", RetryAfter: "5"}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, hellorfsim.Options{}, nil)
			h.sim.FailNext(hellorfsim.PathCategories, tc.failure)
			rec := h.mustCall(t, "audio.categories", nil, nil)
			if rec.status != tc.failure.Status || rec.hint.Cacheable {
				t.Fatalf("answer: %d %+v", rec.status, rec.hint)
			}
			if len(h.up.pauses) != tc.pauses || (tc.pauses > 0 && !strings.HasPrefix(h.up.pauses[0], "hellorf.api")) {
				t.Fatalf("pauses %v, want %d of hellorf.api", h.up.pauses, tc.pauses)
			}
		})
	}
}

func TestLocalRejectionCostsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, hellorfsim.Options{}, map[string]any{"allow_purchase": false})
	cases := []struct {
		op     string
		params url.Values
		status int
		param  string
	}{
		{"audio.search", url.Values{"bpm_id": {"x"}}, 400, "bpm_id"},
		{"audio.search", url.Values{"sort": {"hot"}}, 400, "sort"},
		{"audio.detail", url.Values{}, 400, "audio_id"},
		{"audio.my-purchases", url.Values{"end_at": {"2017-01-01"}}, 400, "end_at"},
		{"audio.purchase", url.Values{"audio_id": {"1"}, "permission_id": {"2"}, "warrant_name": {"x"}}, 403, ""},
		{"audio.nope", url.Values{}, 404, ""},
	}
	for _, tc := range cases {
		_, err := h.call(t, tc.op, tc.params, nil)
		var p *problem.Problem
		if !errors.As(err, &p) || p.Status != tc.status || p.Param != tc.param {
			t.Errorf("%s %v: %v, want %d %q", tc.op, tc.params, err, tc.status, tc.param)
		}
	}
	if n := h.sim.TotalRequests() + h.up.grantCount(); n != 0 {
		t.Fatalf("local rejections cost %d grants/requests", n)
	}
}

func TestPurchaseGuard(t *testing.T) {
	t.Parallel()
	h := newHarness(t, hellorfsim.Options{}, map[string]any{"purchase_guard": "10m0s"})
	buy := url.Values{"audio_id": {strconv.Itoa(hellorfsim.SampleAudioID)}, "permission_id": {"35"}, "warrant_name": {"ACME"}}
	first := h.mustCall(t, "audio.purchase", buy, nil)
	var d struct {
		ID int `json:"id"`
	}
	dataOf(t, first, &d)
	if first.hint.Cacheable {
		t.Fatal("a purchase answer marked cacheable")
	}

	dup := h.mustCall(t, "audio.purchase", url.Values{"audio_id": {"0" + buy.Get("audio_id")}, "permission_id": {"35"}, "warrant_name": {"ACME"}}, nil)
	var p problem.Problem
	if dup.status != 409 || dup.header.Get("Content-Type") != problem.ContentType || json.Unmarshal(dup.body.Bytes(), &p) != nil {
		t.Fatalf("duplicate: %d %s", dup.status, dup.body.Bytes())
	}
	if p.Extra["purchase_id"] != float64(d.ID) || !strings.Contains(p.Detail, strconv.Itoa(d.ID)) || !strings.Contains(p.Detail, "Sluice-Confirm: repeat-purchase") {
		t.Fatalf("409 does not name purchase %d: %+v", d.ID, p)
	}
	if n := len(h.sim.Purchases()); n != 1 {
		t.Fatalf("simulator recorded %d purchases, want 1", n)
	}
	// Another licensee is another purchase.
	other := h.mustCall(t, "audio.purchase", url.Values{"audio_id": buy["audio_id"], "permission_id": {"35"}, "warrant_name": {"ACME"}, "third_user_id": {"7"}}, nil)
	if other.status != 200 {
		t.Fatalf("different third_user_id: %d", other.status)
	}
	// Confirmed, the repeat goes through.
	again := h.mustCall(t, "audio.purchase", buy, http.Header{"Sluice-Confirm": {"repeat-purchase"}})
	if again.status != 200 || len(h.sim.Purchases()) != 3 {
		t.Fatalf("confirmed repeat: %d, %d purchases", again.status, len(h.sim.Purchases()))
	}
	// After the window it is allowed without confirmation.
	h.clk.add(10*time.Minute + time.Second)
	if late := h.mustCall(t, "audio.purchase", buy, nil); late.status != 200 {
		t.Fatalf("after purchase_guard: %d %s", late.status, late.body.Bytes())
	}
	if n := len(h.sim.Purchases()); n != 4 {
		t.Fatalf("%d purchases, want 4", n)
	}
}

func TestConcurrentIdenticalPurchasesBuyOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, hellorfsim.Options{}, nil)
	buy := url.Values{"audio_id": {strconv.Itoa(hellorfsim.SampleAudioID)}, "permission_id": {"33"}, "warrant_name": {"Race Ltd"}}
	const n = 12
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := &recorder{}
			err := h.p.call(context.Background(), &provider.Request{Operation: "audio.purchase", Method: "POST", Params: buy, Header: http.Header{}}, rec, h.up)
			if err != nil {
				t.Error(err)
			}
			statuses[i] = rec.status
		}()
	}
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		switch s {
		case 200:
			ok++
		case 409:
		default:
			t.Fatalf("status %d", s)
		}
	}
	if ok != 1 || len(h.sim.Purchases()) != 1 {
		t.Fatalf("%d successes, %d recorded purchases; want 1 and 1", ok, len(h.sim.Purchases()))
	}
}

func TestPurchaseOutcomes(t *testing.T) {
	t.Parallel()
	audio := strconv.Itoa(hellorfsim.SampleAudioID)
	buy := url.Values{"audio_id": {audio}, "permission_id": {"35"}, "warrant_name": {"Lost Answer Ltd"}}

	t.Run("answer lost: unknown, refused until confirmed", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, hellorfsim.Options{}, nil)
		h.up.timeout = 200 * time.Millisecond
		h.sim.StallNext(hellorfsim.PathPurchase, time.Minute)
		_, err := h.call(t, "audio.purchase", buy, nil)
		var p *problem.Problem
		if !errors.As(err, &p) || p.Status != 504 || !strings.Contains(p.Detail, "my-purchases?audio_id="+audio) || !strings.Contains(p.Detail, "may have been made") {
			t.Fatalf("lost answer: %v", err)
		}
		if len(h.sim.Purchases()) != 1 {
			t.Fatal("the stalled purchase was not recorded")
		}
		h.up.timeout = 5 * time.Second
		rec := h.mustCall(t, "audio.purchase", buy, nil)
		var dup problem.Problem
		if rec.status != 409 || json.Unmarshal(rec.body.Bytes(), &dup) != nil || dup.Extra["outcome"] != "unknown" || !strings.Contains(dup.Detail, "my-purchases") {
			t.Fatalf("after a lost answer: %d %s", rec.status, rec.body.Bytes())
		}
		if len(h.sim.Purchases()) != 1 {
			t.Fatal("the guard let a second purchase out")
		}
		if rec := h.mustCall(t, "audio.purchase", buy, http.Header{"Sluice-Confirm": {"repeat-purchase"}}); rec.status != 200 {
			t.Fatalf("confirmed after unknown: %d", rec.status)
		}
	})
	t.Run("refused upstream: key released", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, hellorfsim.Options{}, nil)
		h.sim.FailNext(hellorfsim.PathPurchase, hellorfsim.Failure{Status: 400, Code: 1001, Message: "余额不足"})
		rec := h.mustCall(t, "audio.purchase", buy, nil)
		if rec.status != 400 || !strings.Contains(rec.body.String(), "余额不足") {
			t.Fatalf("refused: %d %s", rec.status, rec.body.String())
		}
		if rec := h.mustCall(t, "audio.purchase", buy, nil); rec.status != 200 {
			t.Fatalf("retry after a refusal: %d %s", rec.status, rec.body.String())
		}
	})
	t.Run("server error: outcome unknown, refused until confirmed", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, hellorfsim.Options{}, nil)
		h.sim.FailNext(hellorfsim.PathPurchase, hellorfsim.Failure{Status: 502, Code: 5000, Message: "服务器内部错误"})
		rec := h.mustCall(t, "audio.purchase", buy, nil)
		if rec.status != 502 || !strings.Contains(rec.body.String(), "服务器内部错误") {
			t.Fatalf("server error: %d %s", rec.status, rec.body.String())
		}
		// A 5xx may have come after the charge: no immediate repeat.
		rec = h.mustCall(t, "audio.purchase", buy, nil)
		var dup problem.Problem
		if rec.status != 409 || json.Unmarshal(rec.body.Bytes(), &dup) != nil || dup.Extra["outcome"] != "unknown" || !strings.Contains(dup.Detail, "my-purchases") {
			t.Fatalf("after a 5xx: %d %s", rec.status, rec.body.Bytes())
		}
		if n := h.sim.Requests(hellorfsim.PathPurchase); n != 1 {
			t.Fatalf("%d purchase requests reached hellorf, want 1", n)
		}
		if rec := h.mustCall(t, "audio.purchase", buy, http.Header{"Sluice-Confirm": {"repeat-purchase"}}); rec.status != 200 {
			t.Fatalf("confirmed after a 5xx: %d", rec.status)
		}
	})
	t.Run("refused with HTTP 200: key released", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, hellorfsim.Options{}, nil)
		h.sim.FailNext(hellorfsim.PathPurchase, hellorfsim.Failure{Status: 200, Code: 1001, Message: "余额不足"})
		if rec := h.mustCall(t, "audio.purchase", buy, nil); rec.status != 200 || !strings.Contains(rec.body.String(), "余额不足") {
			t.Fatalf("refused: %d %s", rec.status, rec.body.String())
		}
		if rec := h.mustCall(t, "audio.purchase", buy, nil); rec.status != 200 || len(h.sim.Purchases()) != 1 {
			t.Fatalf("retry after a refusal: %d %s", rec.status, rec.body.String())
		}
	})
	t.Run("not sent (budget): key released", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, hellorfsim.Options{}, nil)
		h.up.deny = problem.RateLimited(time.Second, "budget")
		if _, err := h.call(t, "audio.purchase", buy, nil); problem.From(err).Status != 429 {
			t.Fatalf("denied: %v", err)
		}
		h.up.deny = nil
		if rec := h.mustCall(t, "audio.purchase", buy, nil); rec.status != 200 {
			t.Fatalf("after a denied grant: %d", rec.status)
		}
	})
	t.Run("connection refused: key released", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := "http://" + ln.Addr().String()
		ln.Close()
		h := newHarness(t, hellorfsim.Options{}, map[string]any{"base_url": dead})
		_, err = h.call(t, "audio.purchase", buy, nil)
		if p := problem.From(err); p.Status != 502 || strings.Contains(p.Detail, "may have been made") {
			t.Fatalf("refused connection: %v", err)
		}
		if _, prev, err := h.p.guard.reserve(guardKey(buy), h.clk.now(), time.Minute, false); prev != nil || err != nil {
			t.Fatalf("a purchase that was never sent still blocks: %v", err)
		}
	})
}

func TestWarrantStreams(t *testing.T) {
	t.Parallel()
	const size = 5 << 20
	h := newHarness(t, hellorfsim.Options{WarrantSize: size}, nil)
	pid := strconv.Itoa(hellorfsim.SeededPurchaseID)
	rec := h.mustCall(t, "audio.download-warrant", url.Values{"purchase_id": {pid}}, nil)
	want, n, err := h.sim.WarrantSHA256(hellorfsim.SeededPurchaseID)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(rec.body.Bytes())
	if rec.status != 200 || hex.EncodeToString(sum[:]) != want || int64(rec.body.Len()) != n {
		t.Fatalf("warrant: %d, %d bytes, checksum ok %v", rec.status, rec.body.Len(), hex.EncodeToString(sum[:]) == want)
	}
	if rec.header.Get("Content-Type") != "application/pdf" || rec.header.Get("Content-Length") != strconv.FormatInt(n, 10) ||
		!strings.Contains(rec.header.Get("Content-Disposition"), "warrant-178.pdf") || rec.hint.Cacheable {
		t.Fatalf("head %v %+v", rec.header, rec.hint)
	}
	if rec.maxWrite > copyChunk || rec.writes < size/copyChunk {
		t.Fatalf("not streamed in chunks: %d writes, largest %d", rec.writes, rec.maxWrite)
	}
	// A JSON failure instead of the file is relayed like any answer.
	rec = h.mustCall(t, "audio.download-warrant", url.Values{"purchase_id": {"99999"}}, nil)
	if rec.status != 404 || !strings.Contains(rec.body.String(), `"code":1006`) {
		t.Fatalf("missing purchase: %d %s", rec.status, rec.body.String())
	}
}

// TestWarrantFailureUnderNonJSONContentType: a PHP server answers its
// failure object to download-warrant with HTTP 200 and PHP's default
// text/html. It must reach the caller as hellorf's failure (JSON, logged as
// a configuration problem), not as a 200 "certificate".
func TestWarrantFailureUnderNonJSONContentType(t *testing.T) {
	t.Parallel()
	h := newHarness(t, hellorfsim.Options{}, nil)
	const want = `{"result":false,"message":"sign 签名错误","code":1004}` + "\n"
	h.sim.FailNext(hellorfsim.PathDownloadWarrant, hellorfsim.Failure{Status: 200, Code: hellorfsim.CodeBadSign, Message: "sign 签名错误", ContentType: "text/html; charset=UTF-8"})
	rec := h.mustCall(t, "audio.download-warrant", url.Values{"purchase_id": {strconv.Itoa(hellorfsim.SeededPurchaseID)}}, nil)
	if rec.body.String() != want || rec.hint.Outcome != "hellorf:1004" || rec.hint.Cacheable {
		t.Fatalf("got %d %+v %q", rec.status, rec.hint, rec.body.String())
	}
	if !isJSON(rec.header.Get("Content-Type")) || rec.header.Get("Sluice-Upstream-Status") != "1004 bad_sign" || rec.header.Get("Sluice-Upstream-Class") != "server-error" {
		t.Fatalf("head %v", rec.header)
	}
	if log := h.logs.String(); !strings.Contains(log, "configuration problem") || strings.Contains(log, hellorfsim.DefaultClientSecret) {
		t.Fatalf("log:\n%s", log)
	}
	// The next warrant is the PDF again.
	rec = h.mustCall(t, "audio.download-warrant", url.Values{"purchase_id": {strconv.Itoa(hellorfsim.SeededPurchaseID)}}, nil)
	if rec.status != 200 || rec.header.Get("Content-Type") != "application/pdf" || !strings.HasPrefix(rec.body.String(), "%PDF-") {
		t.Fatalf("warrant after the failure: %d %v", rec.status, rec.header)
	}
}

// TestWarrantPeekKeepsFiles: looking for the envelope at the start of a
// FILE answer must not take a file for it, nor lose the bytes looked at.
func TestWarrantPeekKeepsFiles(t *testing.T) {
	t.Parallel()
	big := append([]byte(`{"result":false,"message":"x","code":1,"pad":"`), bytes.Repeat([]byte("p"), envelopePeek)...)
	big = append(big, `"}`...)
	for _, tc := range []struct {
		name     string
		body     []byte
		envelope bool
	}{
		{"a PDF", []byte("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"), false},
		{"JSON that is no envelope", []byte(`{"certificate":"ACME"}`), false},
		{"starts like JSON, is not", []byte("{\x00\x01binary"), false},
		{"an envelope-shaped body longer than any failure object", big, false},
		{"empty", nil, false},
		{"only white space", []byte(" \n\t"), false},
		{"an envelope after white space", []byte("\r\n  {\"result\":false,\"message\":\"购买记录不存在\",\"code\":1006}"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html; charset=UTF-8")
				w.Write(tc.body)
			}))
			t.Cleanup(srv.Close)
			h := newHarness(t, hellorfsim.Options{}, map[string]any{"base_url": srv.URL})
			rec := h.mustCall(t, "audio.download-warrant", url.Values{"purchase_id": {"1"}}, nil)
			if rec.status != 200 || !bytes.Equal(rec.body.Bytes(), tc.body) {
				t.Fatalf("%d, %d bytes relayed of %d", rec.status, rec.body.Len(), len(tc.body))
			}
			if got := rec.hint.Outcome != "hellorf:file"; got != tc.envelope {
				t.Fatalf("relayed as an envelope: %v, want %v (%+v, %v)", got, tc.envelope, rec.hint, rec.header)
			}
			if tc.envelope && (!isJSON(rec.header.Get("Content-Type")) || rec.header.Get("Sluice-Upstream-Status") != "1006 code_1006") {
				t.Fatalf("envelope head %v", rec.header)
			}
			if !tc.envelope && rec.header.Get("Content-Type") != "text/html; charset=UTF-8" {
				t.Fatalf("file head %v", rec.header)
			}
		})
	}
}
