package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/provider"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

func testConfig(t *testing.T, extra map[string]any) *config {
	t.Helper()
	m := map[string]any{"client_id": "id", "client_secret": "secret"}
	for k, v := range extra {
		m[k] = v
	}
	raw, _ := json.Marshal(m)
	cfg, err := parseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestParseConfig(t *testing.T) {
	cases := []struct {
		name    string
		in      map[string]any
		wantErr string
		check   func(*config) bool
	}{
		{"defaults", map[string]any{}, "", func(c *config) bool {
			return c.apiBase == defaultAPIURL && c.accountsBase == defaultAccountsURL && c.ttl == time.Hour &&
				c.refreshMargin == time.Minute && c.maxRetryAfter == time.Minute && c.searchMax == 10 && c.market == ""
		}},
		{"daemon's rendering", map[string]any{"api_url": "http://127.0.0.1:9/gw/api/", "accounts_url": "https://acc.example/x",
			"ttl": "1h0m0s", "token_refresh_margin": "30s", "max_retry_after": "1m0s", "search_max_limit": 50, "default_market": "kr", "timeout": "5s"},
			"", func(c *config) bool {
				return c.apiBase == "http://127.0.0.1:9/gw/api" && c.accountsBase == "https://acc.example/x" &&
					c.refreshMargin == 30*time.Second && c.searchMax == 50 && c.market == "KR" && c.timeout == 5*time.Second
			}},
		{"api_url with Spotify's /v1", map[string]any{"api_url": "https://api.spotify.com/v1"}, "", func(c *config) bool {
			return c.apiBase == "https://api.spotify.com"
		}},
		{"api_url with /v1/ and a prefix", map[string]any{"api_url": "http://127.0.0.1:9/gw/v1/"}, "", func(c *config) bool {
			return c.apiBase == "http://127.0.0.1:9/gw"
		}},
		{"api_url prefix merely ending in v1 kept", map[string]any{"api_url": "http://h/apiv1"}, "", func(c *config) bool {
			return c.apiBase == "http://h/apiv1"
		}},
		{"relative api_url", map[string]any{"api_url": "api.spotify.com"}, "api_url", nil},
		{"ftp accounts_url", map[string]any{"accounts_url": "ftp://x"}, "accounts_url", nil},
		{"query in api_url", map[string]any{"api_url": "https://x/?a=b"}, "api_url", nil},
		{"search_max_limit 51", map[string]any{"search_max_limit": 51}, "search_max_limit", nil},
		{"search_max_limit negative", map[string]any{"search_max_limit": -1}, "search_max_limit", nil},
		{"market three letters", map[string]any{"default_market": "KOR"}, "default_market", nil},
		{"bad duration", map[string]any{"ttl": "soon"}, "ttl", nil},
		{"zero duration", map[string]any{"max_retry_after": "0s"}, "max_retry_after", nil},
		{"no secret", map[string]any{"client_secret": ""}, "client_secret", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]any{"client_id": "id", "client_secret": "secret"}
			for k, v := range tc.in {
				m[k] = v
			}
			raw, _ := json.Marshal(m)
			cfg, err := parseConfig(raw)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one naming %s", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret\"") {
					t.Fatal("error quotes the secret")
				}
				return
			}
			if err != nil || !tc.check(cfg) {
				t.Fatalf("cfg %+v, err %v", cfg, err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	const id, id2 = "3Nrfpe0tUJi4K4DXYWgMUX", "08td7MxkoHQkXnWAYD8d6Q"
	ids := func(n int) string { return strings.TrimSuffix(strings.Repeat(id+",", n), ",") }
	plain := testConfig(t, nil)
	kr := testConfig(t, map[string]any{"default_market": "KR", "search_max_limit": 50})
	three := testConfig(t, map[string]any{"search_max_limit": 3})
	cases := []struct {
		name   string
		op     string
		path   string
		params url.Values
		cfg    *config
		param  string // expected BadParam, "" for success
		want   url.Values
	}{
		{"search", "search", "v1/search", url.Values{"q": {"BTS"}, "type": {"artist"}, "limit": {"5"}}, plain, "",
			url.Values{"q": {"BTS"}, "type": {"artist"}, "limit": {"5"}}},
		{"search default market", "search", "v1/search", url.Values{"q": {"BTS"}, "type": {"artist,track"}}, kr, "",
			url.Values{"q": {"BTS"}, "type": {"artist,track"}, "market": {"KR"}, "limit": {"5"}}},
		{"market upper-cased", "track", "v1/tracks/" + id, url.Values{"market": {"de"}}, kr, "", url.Values{"market": {"DE"}}},
		{"query alias of next links", "search", "v1/search", url.Values{"query": {"BTS"}, "type": {"artist"}}, plain, "",
			url.Values{"q": {"BTS"}, "type": {"artist"}, "limit": {"5"}}},
		{"unknown params dropped", "artist", "v1/artists/" + id, url.Values{"market": {"KR"}, "foo": {"bar"}}, plain, "", url.Values{}},
		{"artist takes no market", "artist", "v1/artists/" + id, nil, kr, "", url.Values{}},
		{"search limit 10 in dev mode", "search", "v1/search", url.Values{"q": {"x"}, "type": {"album"}, "limit": {"10"}}, plain, "",
			url.Values{"q": {"x"}, "type": {"album"}, "limit": {"10"}}},
		{"search limit 11 in dev mode", "search", "v1/search", url.Values{"q": {"x"}, "type": {"album"}, "limit": {"11"}}, plain, "limit", nil},
		{"search limit 50 extended", "search", "v1/search", url.Values{"q": {"x"}, "type": {"album"}, "limit": {"50"}}, kr, "",
			url.Values{"q": {"x"}, "type": {"album"}, "limit": {"50"}, "market": {"KR"}}},
		// Without a limit, the page size is sent: Spotify's default, or
		// search_max_limit when that is smaller, so that the limit Spotify
		// writes into next and previous is one validate accepts.
		{"search without limit below the default", "search", "v1/search", url.Values{"q": {"x"}, "type": {"album"}}, three, "",
			url.Values{"q": {"x"}, "type": {"album"}, "limit": {"3"}}},
		{"search limit above search_max_limit", "search", "v1/search", url.Values{"q": {"x"}, "type": {"album"}, "limit": {"5"}}, three, "limit", nil},
		{"albums without limit", "artist.albums", "v1/artists/" + id + "/albums", nil, three, "", url.Values{"limit": {"5"}}},
		{"album tracks without limit", "album.tracks", "v1/albums/" + id + "/tracks", nil, plain, "", url.Values{"limit": {"20"}}},
		{"search limit text", "search", "v1/search", url.Values{"q": {"x"}, "type": {"album"}, "limit": {"ten"}}, plain, "limit", nil},
		{"search offset 1000", "search", "v1/search", url.Values{"q": {"x"}, "type": {"album"}, "offset": {"1000"}}, plain, "",
			url.Values{"q": {"x"}, "type": {"album"}, "offset": {"1000"}, "limit": {"5"}}},
		{"search offset 1001", "search", "v1/search", url.Values{"q": {"x"}, "type": {"album"}, "offset": {"1001"}}, plain, "offset", nil},
		{"search blank q", "search", "v1/search", url.Values{"q": {"  "}, "type": {"album"}}, plain, "q", nil},
		{"search empty type entry", "search", "v1/search", url.Values{"q": {"x"}, "type": {"album,"}}, plain, "type", nil},
		{"search include_external", "search", "v1/search", url.Values{"q": {"x"}, "type": {"album"}, "include_external": {"video"}}, plain, "include_external", nil},
		{"duplicate limit", "album.tracks", "v1/albums/" + id + "/tracks", url.Values{"limit": {"1", "2"}}, plain, "limit", nil},
		{"album tracks limit 50", "album.tracks", "v1/albums/" + id + "/tracks", url.Values{"limit": {"50"}, "offset": {"5000"}}, plain, "",
			url.Values{"limit": {"50"}, "offset": {"5000"}}},
		{"albums limit 10", "artist.albums", "v1/artists/" + id + "/albums", url.Values{"limit": {"10"}, "include_groups": {"album,single,appears_on,compilation"}}, plain, "",
			url.Values{"limit": {"10"}, "include_groups": {"album,single,appears_on,compilation"}}},
		{"albums limit 11", "artist.albums", "v1/artists/" + id + "/albums", url.Values{"limit": {"11"}}, plain, "limit", nil},
		{"albums group ep", "artist.albums", "v1/artists/" + id + "/albums", url.Values{"include_groups": {"ep"}}, plain, "include_groups", nil},
		{"id 21 chars", "album", "v1/albums/" + id[1:], nil, plain, "id", nil},
		{"id with punctuation", "track", "v1/tracks/" + id[1:] + "-", nil, plain, "id", nil},
		{"market digits", "album", "v1/albums/" + id, url.Values{"market": {"K1"}}, plain, "market", nil},
		{"several tracks", "tracks", "v1/tracks", url.Values{"ids": {id + "," + id2}}, kr, "",
			url.Values{"ids": {id + "," + id2}, "market": {"KR"}}},
		{"several tracks 50", "tracks", "v1/tracks", url.Values{"ids": {ids(50)}}, plain, "", url.Values{"ids": {ids(50)}}},
		{"several tracks 51", "tracks", "v1/tracks", url.Values{"ids": {ids(51)}}, plain, "ids", nil},
		{"several albums 20", "albums", "v1/albums", url.Values{"ids": {ids(20)}, "market": {"jp"}}, plain, "",
			url.Values{"ids": {ids(20)}, "market": {"JP"}}},
		{"several albums 21", "albums", "v1/albums", url.Values{"ids": {ids(21)}}, plain, "ids", nil},
		{"several artists take no market", "artists", "v1/artists", url.Values{"ids": {id}, "market": {"KR"}}, kr, "", url.Values{"ids": {id}}},
		{"several artists 51", "artists", "v1/artists", url.Values{"ids": {ids(51)}}, plain, "ids", nil},
		{"several without ids", "tracks", "v1/tracks", nil, plain, "ids", nil},
		{"several blank ids", "artists", "v1/artists", url.Values{"ids": {" "}}, plain, "ids", nil},
		{"several empty element", "tracks", "v1/tracks", url.Values{"ids": {id + ",," + id2}}, plain, "ids", nil},
		{"several trailing comma", "albums", "v1/albums", url.Values{"ids": {id + ","}}, plain, "ids", nil},
		{"several spaced element", "artists", "v1/artists", url.Values{"ids": {id + ", " + id2}}, plain, "ids", nil},
		{"several bad id", "tracks", "v1/tracks", url.Values{"ids": {id + "," + id2[1:]}}, plain, "ids", nil},
		{"several ids twice", "tracks", "v1/tracks", url.Values{"ids": {id, id2}}, plain, "ids", nil},
		{"several market digits", "tracks", "v1/tracks", url.Values{"ids": {id}, "market": {"K1"}}, plain, "market", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			params := tc.params
			if params == nil {
				params = url.Values{}
			}
			path, got, err := validate(&provider.Request{Operation: tc.op, Method: "GET", Path: tc.path, Params: params}, tc.cfg)
			if tc.param != "" {
				var p *problem.Problem
				if !errors.As(err, &p) || p.Status != 400 || p.Param != tc.param {
					t.Fatalf("err %v, want a 400 naming %s", err, tc.param)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if path != "/"+tc.path {
				t.Fatalf("path %q", path)
			}
			if got.Encode() != tc.want.Encode() {
				t.Fatalf("params %s, want %s", got.Encode(), tc.want.Encode())
			}
		})
	}
}

func TestRewriteLinks(t *testing.T) {
	const to = "http://sluice/v1/spotify"
	cases := []struct {
		name, from, in, want string
	}{
		{"paging links", "https://api.spotify.com",
			`{"href":"https://api.spotify.com/v1/search?q=a&type=artist&offset=0&limit=5","next":"https://api.spotify.com/v1/search?offset=5","previous":null,"total":9}`,
			`{"href":"http://sluice/v1/spotify/v1/search?q=a&type=artist&offset=0&limit=5","next":"http://sluice/v1/spotify/v1/search?offset=5","previous":null,"total":9}`},
		{"prefix kept and stripped", "http://127.0.0.1:9/gw",
			`{"a":{"href":"http://127.0.0.1:9/gw/v1/albums/X"},"images":[{"url":"https://i.scdn.co/image/1"}]}`,
			`{"a":{"href":"http://sluice/v1/spotify/v1/albums/X"},"images":[{"url":"https://i.scdn.co/image/1"}]}`},
		{"prefix boundary", "http://h/gw", `["http://h/gwx/v1/a","http://h/gw/v1/a","http://h/gw"]`,
			`["http://h/gwx/v1/a","http://sluice/v1/spotify/v1/a","http://sluice/v1/spotify"]`},
		{"escaped slashes and quotes", "https://api.spotify.com",
			`{"n\"x":"say \"hi\"","href":"https:\/\/api.spotify.com\/v1\/tracks\/T"}`,
			`{"n\"x":"say \"hi\"","href":"http://sluice/v1/spotify/v1/tracks/T"}`},
		{"other hosts untouched", "https://api.spotify.com",
			`{"external_urls":{"spotify":"https://open.spotify.com/artist/A"},"uri":"spotify:artist:A"}`,
			`{"external_urls":{"spotify":"https://open.spotify.com/artist/A"},"uri":"spotify:artist:A"}`},
		{"key order and spacing kept", "https://api.spotify.com", "{\n  \"z\": 1.50,\n  \"href\": \"https://api.spotify.com/v1/x\"\n}",
			"{\n  \"z\": 1.50,\n  \"href\": \"http://sluice/v1/spotify/v1/x\"\n}"},
		{"not JSON", "https://api.spotify.com", `{"href":"https://api.spotify.com/v1/x`, `{"href":"https://api.spotify.com/v1/x`},
		// A fake at api_url that writes Spotify's own links.
		{"canonical links under a local api_url", "http://127.0.0.1:9",
			`{"href":"https://api.spotify.com/v1/artists/A/albums?offset=0&limit=5","next":"HTTPS://API.SPOTIFY.COM/v1/artists/A/albums?offset=5&limit=5","self":"http://127.0.0.1:9/v1/x"}`,
			`{"href":"http://sluice/v1/spotify/v1/artists/A/albums?offset=0&limit=5","next":"http://sluice/v1/spotify/v1/artists/A/albums?offset=5&limit=5","self":"http://sluice/v1/spotify/v1/x"}`},
		{"canonical links under a prefixed api_url", "http://127.0.0.1:9/gw",
			`{"href":"https://api.spotify.com/v1"}`, `{"href":"http://sluice/v1/spotify/v1"}`},
		{"canonical host outside v1 untouched", "http://127.0.0.1:9",
			`["https://api.spotify.com/v10/x","https://api.spotify.com/","http://api.spotify.com/v1/x"]`,
			`["https://api.spotify.com/v10/x","https://api.spotify.com/","http://api.spotify.com/v1/x"]`},
		{"escaped host", "http://127.0.0.1:9",
			`{"href":"http://127.0.0.1\u003a9/v1/tracks/T"}`, `{"href":"http://sluice/v1/spotify/v1/tracks/T"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(rewriteLinks([]byte(tc.in), linkBases(tc.from, to))); got != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	cases := []struct {
		header http.Header
		want   time.Duration
	}{
		{http.Header{"Retry-After": {"3"}}, 3 * time.Second},
		{http.Header{"Retry-After": {" 3600 "}}, time.Hour},
		{http.Header{"Retry-After": {"1.5"}}, 1500 * time.Millisecond},
		{http.Header{"Retry-After": {"0"}}, defaultRetryAfter},
		{http.Header{"Retry-After": {"-4"}}, defaultRetryAfter},
		{http.Header{"Retry-After": {"soon"}}, defaultRetryAfter},
		{http.Header{}, defaultRetryAfter},
		{http.Header{"Retry-After": {time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)}}, defaultRetryAfter},
	}
	for _, tc := range cases {
		if got := retryAfter(tc.header); got != tc.want {
			t.Errorf("retryAfter(%v) = %s, want %s", tc.header, got, tc.want)
		}
	}
	future := http.Header{"Retry-After": {time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)}}
	if got := retryAfter(future); got < 85*time.Second || got > 90*time.Second {
		t.Errorf("HTTP-date Retry-After gave %s", got)
	}
	// Lower-case names arrive canonicalised by net/http's reader.
	r, _ := http.ReadResponse(bufioReader("HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\nContent-Length: 0\r\n\r\n"), nil)
	if got := retryAfter(r.Header); got != 7*time.Second {
		t.Errorf("lower-case retry-after gave %s", got)
	}
	for i := range 50 {
		if j := jitter(3 * time.Second); j < 0 || j > 400*time.Millisecond {
			t.Fatalf("jitter %d: %s", i, j)
		}
	}
}

// fakeUp is the scheduler as a plugin sees it, reduced to what these tests
// need: it records grants per bucket and pauses, waits out a pause within
// maxWait and denies beyond it, and sends requests straight to the
// simulator.
type fakeUp struct {
	hc      *http.Client
	maxWait time.Duration

	mu     sync.Mutex
	grants map[string]int
	pauses map[string]time.Time
}

func newFakeUp() *fakeUp {
	return &fakeUp{hc: &http.Client{}, maxWait: time.Minute, grants: map[string]int{}, pauses: map[string]time.Time{}}
}

func (f *fakeUp) Do(ctx context.Context, bucket string, build provider.Builder) (*http.Response, error) {
	if _, err := f.AwaitPause(ctx, bucket); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.grants[bucket]++
	f.mu.Unlock()
	req, err := build(ctx)
	if err != nil {
		return nil, err
	}
	return f.hc.Do(req)
}

func (f *fakeUp) Pause(_ context.Context, bucket string, until time.Time, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if until.After(f.pauses[bucket]) {
		f.pauses[bucket] = until
	}
	return nil
}

func (f *fakeUp) SetTimeout(time.Duration) {}

func (f *fakeUp) AwaitPause(ctx context.Context, bucket string) (context.Context, error) {
	d := time.Until(f.pausedUntil(bucket))
	if d <= 0 {
		return ctx, nil
	}
	if d > f.maxWait {
		return ctx, problem.RateLimited(d, "paused")
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return ctx, nil
	case <-ctx.Done():
		return ctx, ctx.Err()
	}
}

func (f *fakeUp) pausedUntil(bucket string) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pauses[bucket]
}

func (f *fakeUp) granted(bucket string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.grants[bucket]
}

// recorder is an answerWriter that keeps the answer.
type recorder struct {
	status int
	header http.Header
	hint   provider.CacheHint
	body   bytes.Buffer
}

func (r *recorder) WriteHead(status int, h http.Header, hint provider.CacheHint) error {
	r.status, r.header, r.hint = status, h, hint
	return nil
}

func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

// harness is a configured plugin, a simulator behind httptest servers and a
// fake scheduler.
type harness struct {
	p   *spotify
	sim *spotifysim.Sim
	up  *fakeUp
	log *bytes.Buffer
}

// harnessOpts shape a harness; the zero value is the default simulator and
// credentials.
type harnessOpts struct {
	sim    spotifysim.Options
	secret string
	extra  map[string]any
	// apiURL, if set, turns the simulator's URL into the api_url configured.
	apiURL func(string) string
}

func newHarness(t *testing.T, secret string, extra map[string]any) *harness {
	t.Helper()
	return newHarnessWith(t, harnessOpts{secret: secret, extra: extra})
}

func newHarnessWith(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	if o.sim.Limit == (spotifysim.Limit{}) {
		o.sim.Limit = spotifysim.Limit{Requests: 1000, Window: time.Second}
	}
	if o.secret == "" {
		o.secret = spotifysim.DefaultClientSecret
	}
	sim := spotifysim.New(o.sim)
	api := httptest.NewServer(sim.APIHandler())
	acc := httptest.NewServer(sim.AccountsHandler())
	t.Cleanup(func() { api.Close(); acc.Close(); sim.Close() })
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&syncWriter{w: &log}, nil))
	p := newSpotify(logger)
	apiURL := api.URL
	if o.apiURL != nil {
		apiURL = o.apiURL(apiURL)
	}
	cfg := map[string]any{"api_url": apiURL, "accounts_url": acc.URL, "client_id": spotifysim.DefaultClientID,
		"client_secret": o.secret, "token_refresh_margin": "1s", "max_retry_after": "10s"}
	for k, v := range o.extra {
		cfg[k] = v
	}
	raw, _ := json.Marshal(cfg)
	if err := p.Configure(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	return &harness{p: p, sim: sim, up: newFakeUp(), log: &log}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func (h *harness) call(op, path string, q url.Values) (*recorder, error) {
	if q == nil {
		q = url.Values{}
	}
	rec := &recorder{}
	err := h.p.serve(context.Background(), &provider.Request{Operation: op, Method: "GET", Path: path, Params: q,
		PublicBase: "http://sluice/v1/spotify"}, rec, h.up)
	return rec, err
}

func searchQ(i int) url.Values {
	return url.Values{"q": {"a"}, "type": {"track"}, "limit": {"1"}, "offset": {fmt.Sprint(i)}}
}

func TestServeScenarios(t *testing.T) {
	cases := []struct {
		name string
		opts harnessOpts
		run  func(t *testing.T, h *harness)
	}{
		{"answer relayed with links rewritten and cache hint", harnessOpts{}, func(t *testing.T, h *harness) {
			rec, err := h.call("artist.albums", "v1/artists/"+spotifysim.Artist95ID+"/albums", url.Values{"limit": {"10"}})
			if err != nil {
				t.Fatal(err)
			}
			if rec.status != 200 || !rec.hint.Cacheable || rec.hint.TTL != time.Hour || rec.hint.Outcome != "spotify:200" {
				t.Fatalf("status %d hint %+v", rec.status, rec.hint)
			}
			var p struct{ Href, Next string }
			if err := json.Unmarshal(rec.body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(p.Next, "http://sluice/v1/spotify/v1/artists/"+spotifysim.Artist95ID+"/albums?") || !strings.Contains(p.Next, "offset=10") {
				t.Fatalf("next %q", p.Next)
			}
			if bytes.Contains(rec.body.Bytes(), []byte("127.0.0.1")) {
				t.Fatal("an upstream link survived")
			}
		}},
		{"concurrent callers share one token", harnessOpts{}, func(t *testing.T, h *harness) {
			h.sim.SetTokenDelay(200 * time.Millisecond)
			var wg sync.WaitGroup
			errs := make([]error, 20)
			for i := range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = h.call("search", "v1/search", searchQ(i))
				}()
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			if got := h.sim.Counts().TokenRequests; got != 1 || h.up.granted(bucketAccounts) != 1 {
				t.Fatalf("token requests %d, accounts grants %d, want 1", got, h.up.granted(bucketAccounts))
			}
		}},
		{"401 refreshes once and retries", harnessOpts{}, func(t *testing.T, h *harness) {
			if _, err := h.call("search", "v1/search", searchQ(0)); err != nil {
				t.Fatal(err)
			}
			h.sim.ExpireTokens()
			rec, err := h.call("search", "v1/search", searchQ(1))
			if err != nil || rec.status != 200 {
				t.Fatalf("status %d, %v", rec.status, err)
			}
			if c := h.sim.Counts(); c.TokenRequests != 2 || c.Unauthorized != 1 || c.APIRequests != 3 {
				t.Fatalf("counts %+v", c)
			}
		}},
		{"429 pauses the bucket and is waited out", harnessOpts{}, func(t *testing.T, h *harness) {
			h.sim.Force429(1, 1)
			start := time.Now()
			rec, err := h.call("search", "v1/search", searchQ(0))
			if err != nil || rec.status != 200 {
				t.Fatalf("status %d, %v", rec.status, err)
			}
			if time.Since(start) < time.Second {
				t.Fatal("retried before Retry-After")
			}
			if h.sim.Counts().DuringRetryAfter != 0 {
				t.Fatal("a request arrived during Retry-After")
			}
		}},
		{"429 longer than the wait is a 429 problem with Spotify's Retry-After", harnessOpts{}, func(t *testing.T, h *harness) {
			h.up.maxWait = 2 * time.Second
			h.sim.Force429(30, 1)
			_, err := h.call("search", "v1/search", searchQ(0))
			var p *problem.Problem
			if !errors.As(err, &p) || p.Status != 429 || p.RetryAfter < 30*time.Second || !strings.Contains(p.Detail, "Retry-After 30s") {
				t.Fatalf("err %v", err)
			}
		}},
		{"429 after every retry tells the caller when the pause ends", harnessOpts{}, func(t *testing.T, h *harness) {
			h.sim.Force429(1, maxThrottleRetries+1)
			_, err := h.call("search", "v1/search", searchQ(0))
			var p *problem.Problem
			if !errors.As(err, &p) || p.Status != 429 || p.RetryAfter < time.Second {
				t.Fatalf("err %v", err)
			}
			if end := time.Now().Add(p.RetryAfter); end.Before(h.up.pausedUntil(bucketAPI)) {
				t.Fatalf("retry_after %s ends before the pause does (%s later)", p.RetryAfter, h.up.pausedUntil(bucketAPI).Sub(end))
			}
			if c := h.sim.Counts(); c.APIRequests != maxThrottleRetries+1 || c.DuringRetryAfter != 0 {
				t.Fatalf("counts %+v", c)
			}
		}},
		{"QUOTA_EXCEEDED is not retried", harnessOpts{}, func(t *testing.T, h *harness) {
			h.sim.ForceQuotaExceeded(2)
			_, err := h.call("search", "v1/search", searchQ(0))
			var p *problem.Problem
			if !errors.As(err, &p) || p.Status != 429 || p.RetryAfter < 2*time.Second {
				t.Fatalf("err %v", err)
			}
			// The caller is told to come back no earlier than the pause
			// (Spotify's 2 s plus jitter) ends: sooner, it would only be
			// held or refused again.
			if end := time.Now().Add(p.RetryAfter); end.Before(h.up.pausedUntil(bucketAPI)) {
				t.Fatalf("retry_after %s ends before the pause does (%s later)", p.RetryAfter, h.up.pausedUntil(bucketAPI).Sub(end))
			}
			if c := h.sim.Counts(); c.APIRequests != 1 {
				t.Fatalf("API requests %d", c.APIRequests)
			}
		}},
		{"5xx retried then relayed", harnessOpts{}, func(t *testing.T, h *harness) {
			h.sim.Force5xx(502, 1)
			h.sim.Force5xx(504, 1)
			rec, err := h.call("search", "v1/search", searchQ(0))
			if err != nil || rec.status != 200 {
				t.Fatalf("status %d, %v", rec.status, err)
			}
			h.sim.Force5xx(503, max5xxRetries+1)
			rec, err = h.call("search", "v1/search", searchQ(1))
			if err != nil || rec.status != 503 || rec.hint.Cacheable {
				t.Fatalf("status %d hint %+v, %v", rec.status, rec.hint, err)
			}
			if c := h.sim.Counts(); c.APIRequests != 3+max5xxRetries+1 {
				t.Fatalf("API requests %d", c.APIRequests)
			}
		}},
		{"a token past its refresh time after a Retry-After is refreshed, not sent", harnessOpts{}, func(t *testing.T, h *harness) {
			// Lives 2 s; with the 1 s margin it is due for refresh after
			// 1 s, and the 429's Retry-After outlasts it entirely.
			h.sim.SetTokenLifetime(2 * time.Second)
			h.sim.Force429(2, 1)
			rec, err := h.call("search", "v1/search", searchQ(0))
			if err != nil || rec.status != 200 {
				t.Fatalf("status %d, %v", rec.status, err)
			}
			c := h.sim.Counts()
			if c.Unauthorized != 0 {
				t.Fatalf("%d requests went out with an expired token: %+v", c.Unauthorized, c)
			}
			if c.TokenRequests != 2 || h.up.granted(bucketAccounts) != 2 || c.APIRequests != 2 || c.DuringRetryAfter != 0 {
				t.Fatalf("counts %+v, accounts grants %d; want 2 tokens (each granted) and 2 API requests", c, h.up.granted(bucketAccounts))
			}
		}},
		{"canonical api.spotify.com links lead back through sluice", harnessOpts{sim: spotifysim.Options{CanonicalLinks: true}}, func(t *testing.T, h *harness) {
			path := "v1/artists/" + spotifysim.Artist95ID + "/albums"
			rec, err := h.call("artist.albums", path, url.Values{"limit": {"10"}})
			if err != nil || rec.status != 200 {
				t.Fatalf("status %d, %v", rec.status, err)
			}
			if b := rec.body.Bytes(); bytes.Contains(b, []byte("api.spotify.com")) || bytes.Contains(b, []byte("127.0.0.1")) {
				t.Fatalf("an upstream link survived: %s", b)
			}
			var pg struct{ Next string }
			if err := json.Unmarshal(rec.body.Bytes(), &pg); err != nil {
				t.Fatal(err)
			}
			const public = "http://sluice/v1/spotify/"
			next, err := url.Parse(pg.Next)
			if err != nil || !strings.HasPrefix(pg.Next, public+path+"?") {
				t.Fatalf("next %q, want it under %s%s", pg.Next, public, path)
			}
			// Following it as a client would reaches the second page.
			rec, err = h.call("artist.albums", strings.TrimPrefix(next.Path, "/v1/spotify/"), next.Query())
			var pg2 struct{ Offset int }
			if err != nil || rec.status != 200 || json.Unmarshal(rec.body.Bytes(), &pg2) != nil || pg2.Offset != 10 {
				t.Fatalf("following next: status %d offset %d, %v", rec.status, pg2.Offset, err)
			}
		}},
		{"a 5xx's Retry-After pauses the bucket for every caller", harnessOpts{}, func(t *testing.T, h *harness) {
			h.sim.InjectFaults(spotifysim.Fault{Status: http.StatusServiceUnavailable, RetryAfter: 2})
			first := make(chan error, 1)
			go func() {
				rec, err := h.call("search", "v1/search", searchQ(0))
				if err == nil && rec.status != 200 {
					err = fmt.Errorf("status %d", rec.status)
				}
				first <- err
			}()
			// Another caller arriving once the 503 is in must wait too.
			deadline := time.Now().Add(5 * time.Second)
			for h.up.pausedUntil(bucketAPI).IsZero() {
				if time.Now().After(deadline) {
					t.Fatal("the 503's Retry-After did not pause spotify.api")
				}
				time.Sleep(5 * time.Millisecond)
			}
			if until := time.Until(h.up.pausedUntil(bucketAPI)); until < 1500*time.Millisecond {
				t.Fatalf("paused for %s, want the 2 s Retry-After", until)
			}
			rec, err := h.call("search", "v1/search", searchQ(1))
			if err != nil || rec.status != 200 {
				t.Fatalf("second caller: status %d, %v", rec.status, err)
			}
			if err := <-first; err != nil {
				t.Fatalf("first caller: %v", err)
			}
			if c := h.sim.Counts(); c.DuringRetryAfter != 0 || c.APIRequests != 3 {
				t.Fatalf("counts %+v: a request arrived during the 503's Retry-After", c)
			}
		}},
		{"a 5xx's Retry-After longer than the caller may wait is relayed unretried", harnessOpts{}, func(t *testing.T, h *harness) {
			h.up.maxWait = 2 * time.Second
			h.sim.InjectFaults(spotifysim.Fault{Status: http.StatusServiceUnavailable, RetryAfter: 30})
			rec, err := h.call("search", "v1/search", searchQ(0))
			if err != nil || rec.status != 503 || rec.hint.Cacheable {
				t.Fatalf("status %d hint %+v, %v; want Spotify's 503 relayed", rec.status, rec.hint, err)
			}
			if c := h.sim.Counts(); c.APIRequests != 1 || c.DuringRetryAfter != 0 {
				t.Fatalf("counts %+v, want the one request", c)
			}
			if until := time.Until(h.up.pausedUntil(bucketAPI)); until < 29*time.Second {
				t.Fatalf("paused for %s, want the 30 s Retry-After", until)
			}
		}},
		{"api_url ending in Spotify's /v1", harnessOpts{apiURL: func(u string) string { return u + "/v1" }}, func(t *testing.T, h *harness) {
			rec, err := h.call("album.tracks", "v1/albums/"+spotifysim.SampleAlbumID+"/tracks", url.Values{"limit": {"2"}})
			if err != nil || rec.status != 200 {
				t.Fatalf("status %d, %v: %s", rec.status, err, rec.body.String())
			}
			if log := h.sim.RequestLog(); len(log) != 1 || log[0].Path != "/v1/albums/"+spotifysim.SampleAlbumID+"/tracks" {
				t.Fatalf("request log %+v", log)
			}
			if bytes.Contains(rec.body.Bytes(), []byte("127.0.0.1")) {
				t.Fatal("an upstream link survived")
			}
		}},
		{"several ids in one request, cacheable", harnessOpts{}, func(t *testing.T, h *harness) {
			const unknown = "0000000000000000000000"
			rec, err := h.call("tracks", "v1/tracks", url.Values{"ids": {spotifysim.SampleTrackID + "," + unknown}})
			if err != nil || rec.status != 200 || !rec.hint.Cacheable {
				t.Fatalf("status %d hint %+v, %v", rec.status, rec.hint, err)
			}
			var m struct{ Tracks []*struct{ ID, Href string } }
			if err := json.Unmarshal(rec.body.Bytes(), &m); err != nil || len(m.Tracks) != 2 || m.Tracks[0].ID != spotifysim.SampleTrackID || m.Tracks[1] != nil ||
				!strings.HasPrefix(m.Tracks[0].Href, "http://sluice/v1/spotify/v1/tracks/") {
				t.Fatalf("answer %s, %v", rec.body.String(), err)
			}
			if c := h.sim.Counts(); c.APIRequests != 1 {
				t.Fatalf("counts %+v", c)
			}
		}},
		{"a malformed ids element costs nothing upstream", harnessOpts{}, func(t *testing.T, h *harness) {
			_, err := h.call("albums", "v1/albums", url.Values{"ids": {spotifysim.SampleAlbumID + ",,"}})
			var p *problem.Problem
			if !errors.As(err, &p) || p.Status != 400 || p.Param != "ids" {
				t.Fatalf("err %v, want a 400 naming ids", err)
			}
			if c := h.sim.Counts(); c.APIRequests != 0 || c.TokenRequests != 0 {
				t.Fatalf("counts %+v, want nothing sent", c)
			}
		}},
		{"404 relayed at once, not cacheable", harnessOpts{}, func(t *testing.T, h *harness) {
			rec, err := h.call("track", "v1/tracks/0000000000000000000000", nil)
			if err != nil || rec.status != 404 || rec.hint.Cacheable || !strings.Contains(rec.body.String(), `"message":"Resource not found"`) {
				t.Fatalf("status %d hint %+v body %s, %v", rec.status, rec.hint, rec.body.String(), err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newHarnessWith(t, tc.opts))
		})
	}
}

// TestPausedCallCostsNoTokenRequest: a call the pause of spotify.api
// refuses locally (longer than its max wait) must not first spend a token
// request, even when the token has reached its refresh time.
func TestPausedCallCostsNoTokenRequest(t *testing.T) {
	h := newHarness(t, "", nil)
	// A caller that may wait 2 s meets a 429 with Retry-After 30 s: it is
	// answered 429 and spotify.api stays paused for every caller.
	h.up.maxWait = 2 * time.Second
	h.sim.Force429(30, 1)
	_, err := h.call("search", "v1/search", searchQ(0))
	var p *problem.Problem
	if !errors.As(err, &p) || p.Status != http.StatusTooManyRequests {
		t.Fatalf("first call: %v, want a 429", err)
	}
	before := h.sim.Counts()
	if before.TokenRequests != 1 || before.APIRequests != 1 {
		t.Fatalf("counts %+v, want one token and one API request", before)
	}
	// The token reaches its refresh time while the pause runs.
	h.p.tokens.mu.Lock()
	h.p.tokens.refreshAt = time.Now().Add(-time.Millisecond)
	h.p.tokens.mu.Unlock()

	h.up.maxWait = time.Second
	err = h.p.serve(context.Background(), &provider.Request{Operation: "search", Method: http.MethodGet, Path: "v1/search",
		Params: searchQ(1), MaxWait: time.Second}, &recorder{}, h.up)
	if !errors.As(err, &p) || p.Status != http.StatusTooManyRequests || p.RetryAfter < 29*time.Second {
		t.Fatalf("second call: %v, want a 429 with the pause's Retry-After", err)
	}
	if after := h.sim.Counts(); after.TokenRequests != before.TokenRequests || after.APIRequests != before.APIRequests {
		t.Fatalf("counts %+v after %+v: the refused call reached Spotify", after, before)
	}
	if g := h.up.granted(bucketAccounts); g != 1 {
		t.Fatalf("accounts grants %d, want 1", g)
	}
}

// TestAccountsServerErrorIsRetried: the accounts service's 5xx is
// "temporary: retry later", as the API's is. A token fetch tries again,
// each attempt a grant of its own, a bounded number of times.
func TestAccountsServerErrorIsRetried(t *testing.T) {
	cases := []struct {
		name     string
		faults   []int
		ok       bool
		requests int
	}{
		{"one 503, then a token", []int{503}, true, 2},
		{"two 500s, then a token", []int{500, 502}, true, 3},
		{"three 500s: given up", []int{500, 500, 500}, false, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, "", nil)
			h.sim.InjectAccountsFaults(tc.faults...)
			_, err := h.call("search", "v1/search", searchQ(0))
			if (err == nil) != tc.ok {
				t.Fatalf("call: %v, want success: %v", err, tc.ok)
			}
			if got := h.sim.Counts().TokenRequests; got != tc.requests {
				t.Fatalf("%d token requests, want %d", got, tc.requests)
			}
			if g := h.up.granted(bucketAccounts); g != tc.requests {
				t.Fatalf("accounts grants %d, want one per token request (%d)", g, tc.requests)
			}
		})
	}
}

func TestRejectedCredentialsArePermanentUntilReconfigured(t *testing.T) {
	h := newHarness(t, "wrong-secret-value", nil)
	for range 3 {
		_, err := h.call("search", "v1/search", searchQ(0))
		var p *problem.Problem
		if !errors.As(err, &p) || p.Status != 503 || !strings.Contains(p.Detail, "invalid_client: Invalid client secret") {
			t.Fatalf("err %v", err)
		}
		if strings.Contains(p.Detail, "wrong-secret-value") {
			t.Fatal("the problem carries the secret")
		}
	}
	if c := h.sim.Counts(); c.TokenRequests != 1 || c.APIRequests != 0 {
		t.Fatalf("counts %+v, want one token request", c)
	}
	if log := h.log.String(); !strings.Contains(log, "SPOTIFY CREDENTIALS REJECTED") || strings.Contains(log, "wrong-secret-value") {
		t.Fatalf("log:\n%s", log)
	}
	// Fixing the secret (a reload) clears the rejection.
	cfg := *h.p.config()
	raw, _ := json.Marshal(map[string]any{"api_url": cfg.apiBase, "accounts_url": cfg.accountsBase,
		"client_id": spotifysim.DefaultClientID, "client_secret": spotifysim.DefaultClientSecret})
	if err := h.p.Configure(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	if rec, err := h.call("search", "v1/search", searchQ(0)); err != nil || rec.status != 200 {
		t.Fatalf("after the fix: %v", err)
	}
}

func TestDescribe(t *testing.T) {
	d := newSpotify(nil).Describe()
	if d.GetName() != "spotify" {
		t.Fatal(d.GetName())
	}
	want := map[string]string{"search": "v1/search", "artist": "v1/artists/{id}", "artist.albums": "v1/artists/{id}/albums",
		"album": "v1/albums/{id}", "album.tracks": "v1/albums/{id}/tracks", "track": "v1/tracks/{id}",
		"tracks": "v1/tracks", "albums": "v1/albums", "artists": "v1/artists"}
	for _, op := range d.GetOperations() {
		if want[op.GetName()] != op.GetPath() || op.GetBucket() != bucketAPI || op.GetDestructive() {
			t.Errorf("operation %s at %s bucket %s", op.GetName(), op.GetPath(), op.GetBucket())
		}
		// Every catalogue lookup is cacheable; the host keys on the path.
		if !op.GetCacheable() {
			t.Errorf("operation %s is not cacheable", op.GetName())
		}
		if _, ok := rules[op.GetName()]; !ok {
			t.Errorf("operation %s has no validation rule", op.GetName())
		}
		delete(want, op.GetName())
	}
	if len(want) != 0 {
		t.Fatalf("missing operations %v", want)
	}
	buckets := map[string]int32{}
	for _, b := range d.GetBuckets() {
		buckets[b.GetName()] = b.GetRequests()
	}
	if buckets[bucketAPI] != 50 || buckets[bucketAccounts] == 0 {
		t.Fatalf("buckets %v", buckets)
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
