package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	zspotify "github.com/zmb3/spotify/v2"
	"golang.org/x/oauth2"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// The Spotify end-to-end tests: the real daemon and the real
// sluice-spotify plugin subprocess against spotifysim, started in the test
// process. Each environment costs a few seconds to start under -race, so
// scenarios that can share one run in sequence inside one test (the order
// is part of each test), and the tests run in parallel.

// spotifyEnv is a daemon with the Spotify provider enabled against a
// simulator.
type spotifyEnv struct {
	*testenv.Env
	Sim *spotifysim.Sim
	API string
}

// spotifyOpts shape one Spotify environment.
type spotifyOpts struct {
	sim spotifysim.Options
	// extra is appended inside [providers.spotify].
	extra string
	// requests per 30 s for [providers.spotify.limits.api] and the
	// simulator's window alike; zero means 50, the documented default.
	requests int
	secret   string
}

func startSpotify(t *testing.T, o spotifyOpts) *spotifyEnv {
	t.Helper()
	if o.requests == 0 {
		o.requests = 50
	}
	o.sim.Limit = spotifysim.Limit{Requests: o.requests, Window: 30 * time.Second}
	sim, apiURL, accountsURL, err := spotifysim.Start(o.sim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	if o.secret == "" {
		o.secret = spotifysim.DefaultClientSecret
	}
	extra := testenv.SpotifySection(apiURL, accountsURL, spotifysim.DefaultClientID, o.secret, o.extra) +
		fmt.Sprintf("[providers.spotify.limits.api]\nrequests = %d\nwindow = \"30s\"\n", o.requests)
	env := testenv.Start(t, testenv.Options{Extra: extra})
	return &spotifyEnv{Env: env, Sim: sim, API: apiURL}
}

func (e *spotifyEnv) get(ctx context.Context, path string, q url.Values, h http.Header) (*client.Response, error) {
	return e.Client.Call(ctx, http.MethodGet, "/v1/spotify/"+strings.TrimPrefix(path, "/"), q, nil, h)
}

// spPageJSON is the part of a paging object the tests read.
type spPageJSON struct {
	Href     string            `json:"href"`
	Items    []json.RawMessage `json:"items"`
	Total    int               `json:"total"`
	Limit    int               `json:"limit"`
	Offset   int               `json:"offset"`
	Next     *string           `json:"next"`
	Previous *string           `json:"previous"`
}

func spDecode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

func spProblem(err error) *problem.Problem {
	var p *problem.Problem
	if errors.As(err, &p) {
		return p
	}
	return nil
}

// distinct is the i-th of many different cacheable calls: a search page.
func spDistinct(i int) url.Values {
	return url.Values{"q": {"a"}, "type": {"track"}, "limit": {"1"}, "offset": {strconv.Itoa(i)}}
}

// concurrently runs n calls at once and returns their errors (a non-200
// answer is an error too).
func spConcurrently(n int, call func(i int) (*client.Response, error)) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := call(i)
			if err == nil && r.Status != http.StatusOK {
				err = fmt.Errorf("status %d: %s", r.Status, r.Body)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return errs
}

func spNoErrors(t *testing.T, errs []error) {
	t.Helper()
	for i, err := range errs {
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestSpotifyCatalogue runs the catalogue through the socket, with path
// prefixes on both upstream URLs and a default market: local rejections
// cost nothing, links lead back through sluice, a plain HTTP client and a
// third-party Spotify library page through the socket, identical searches
// coalesce and hit the cache, and upstream errors are relayed or retried
// as documented.
func TestSpotifyCatalogue(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{
		sim:   spotifysim.Options{APIPrefix: "/gw/spotify-api", AccountsPrefix: "/gw/accounts"},
		extra: `default_market = "KR"`,
	})
	ctx := testenv.Ctx(t, 2*time.Minute)

	t.Run("invalid calls cost nothing", func(t *testing.T) {
		id := spotifysim.Artist95ID
		cases := []struct {
			name, method, path string
			q                  url.Values
			status             int
			param              string
		}{
			{"short id", "GET", "v1/artists/3Nrfpe0tUJi4K4DXYWgMU", nil, 400, "id"},
			{"id with a dash", "GET", "v1/albums/3Nrfpe0tUJi4K4DXYWgMU-", nil, 400, "id"},
			{"uri as id", "GET", "v1/tracks/spotify:track:" + id, nil, 400, "id"},
			{"album tracks bad id", "GET", "v1/albums/x/tracks", nil, 400, "id"},
			{"search without q", "GET", "v1/search", url.Values{"type": {"artist"}}, 400, "q"},
			{"search without type", "GET", "v1/search", url.Values{"q": {"BTS"}}, 400, "type"},
			{"search bad type", "GET", "v1/search", url.Values{"q": {"BTS"}, "type": {"artist,singer"}}, 400, "type"},
			{"search limit 11", "GET", "v1/search", url.Values{"q": {"BTS"}, "type": {"artist"}, "limit": {"11"}}, 400, "limit"},
			{"search limit 0", "GET", "v1/search", url.Values{"q": {"BTS"}, "type": {"artist"}, "limit": {"0"}}, 400, "limit"},
			{"search offset 1001", "GET", "v1/search", url.Values{"q": {"BTS"}, "type": {"artist"}, "offset": {"1001"}}, 400, "offset"},
			{"search q twice", "GET", "v1/search", url.Values{"q": {"BTS", "IU"}, "type": {"artist"}}, 400, "q"},
			{"market three letters", "GET", "v1/tracks/" + id, url.Values{"market": {"KOR"}}, 400, "market"},
			{"albums limit 11", "GET", "v1/artists/" + id + "/albums", url.Values{"limit": {"11"}}, 400, "limit"},
			{"albums negative offset", "GET", "v1/artists/" + id + "/albums", url.Values{"offset": {"-1"}}, 400, "offset"},
			{"albums bad group", "GET", "v1/artists/" + id + "/albums", url.Values{"include_groups": {"album,ep"}}, 400, "include_groups"},
			{"album tracks limit 51", "GET", "v1/albums/" + id + "/tracks", url.Values{"limit": {"51"}}, 400, "limit"},
			{"unknown path", "GET", "v1/playlists/" + id, nil, 404, ""},
			{"POST", "POST", "v1/artists/" + id, nil, 405, ""},
		}
		for _, tc := range cases {
			_, err := e.Client.Call(ctx, tc.method, "/v1/spotify/"+tc.path, tc.q, nil, nil)
			p := spProblem(err)
			if p == nil || p.Status != tc.status || p.Param != tc.param {
				t.Errorf("%s: got %v, want a %d problem naming %q", tc.name, err, tc.status, tc.param)
			}
		}
		if c := e.Sim.Counts(); c.TokenRequests != 0 || c.APIRequests != 0 {
			t.Fatalf("invalid calls cost %d token and %d API requests", c.TokenRequests, c.APIRequests)
		}
	})

	t.Run("links lead back through sluice", func(t *testing.T) {
		r, err := e.get(ctx, "v1/search", url.Values{"q": {"BTS"}, "type": {"artist"}, "limit": {"5"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		res := spDecode[struct {
			Artists spPageJSON `json:"artists"`
		}](t, r.Body)
		if len(res.Artists.Items) != 5 || res.Artists.Next == nil {
			t.Fatalf("search: %d items, next %v", len(res.Artists.Items), res.Artists.Next)
		}
		for _, link := range []string{res.Artists.Href, *res.Artists.Next} {
			if !strings.HasPrefix(link, "http://sluice/v1/spotify/v1/search?") {
				t.Fatalf("link %q does not lead back through sluice", link)
			}
		}
		if strings.Contains(string(r.Body), e.API) {
			t.Fatalf("answer still names the upstream %s", e.API)
		}
		if !strings.Contains(*res.Artists.Next, "market=KR") {
			t.Fatalf("default_market not applied: %s", *res.Artists.Next)
		}
		// Distinct ids under one operation are distinct answers.
		for _, id := range []string{spotifysim.Artist95ID, spotifysim.TaniaBowraID, spotifysim.Artist95ID} {
			r, err := e.get(ctx, "v1/artists/"+id, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			a := spDecode[struct {
				ID   string `json:"id"`
				Href string `json:"href"`
			}](t, r.Body)
			if a.ID != id || a.Href != "http://sluice/v1/spotify/v1/artists/"+id {
				t.Fatalf("artist %s answered id %s href %s", id, a.ID, a.Href)
			}
		}
	})

	t.Run("a plain client follows next to the last page", func(t *testing.T) {
		hc := e.Client.HTTPClient()
		next := "http://sluice/v1/spotify/v1/artists/" + spotifysim.Artist95ID + "/albums?limit=10"
		seen := map[string]bool{}
		for pages := 0; next != ""; pages++ {
			if pages > 20 {
				t.Fatal("more than 20 pages")
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, next, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var p struct {
				Next  *string `json:"next"`
				Items []struct {
					ID string `json:"id"`
				} `json:"items"`
			}
			err = json.NewDecoder(resp.Body).Decode(&p)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("page %d: status %d, %v", pages, resp.StatusCode, err)
			}
			for _, it := range p.Items {
				seen[it.ID] = true
			}
			next = ""
			if p.Next != nil {
				next = *p.Next
				if !strings.HasPrefix(next, "http://sluice/v1/spotify/v1/artists/") {
					t.Fatalf("next link %q leaves sluice", next)
				}
			}
		}
		// default_market KR hides the albums sold in Japan only.
		r, err := e.get(ctx, "v1/artists/"+spotifysim.Artist95ID+"/albums", url.Values{"limit": {"1"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := spDecode[spPageJSON](t, r.Body).Total; len(seen) != want || want >= spotifysim.Artist95Albums {
			t.Fatalf("walked %d distinct albums, want %d (fewer than %d: KR only)", len(seen), want, spotifysim.Artist95Albums)
		}
	})

	t.Run("a third-party Spotify library works unchanged", func(t *testing.T) {
		// The library expects an *http.Client that authenticates; any token
		// does, sluice never forwards it.
		hc := oauth2.NewClient(context.WithValue(ctx, oauth2.HTTPClient, e.Client.HTTPClient()),
			oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "dummy"}))
		sp := zspotify.New(hc, zspotify.WithBaseURL("http://sluice/v1/spotify/v1/"))

		res, err := sp.Search(ctx, "BTS", zspotify.SearchTypeArtist, zspotify.Limit(5))
		if err != nil {
			t.Fatal(err)
		}
		if res.Artists == nil || len(res.Artists.Artists) != 5 || res.Artists.Artists[0].ID != spotifysim.Artist95ID {
			t.Fatalf("search: %+v", res.Artists)
		}
		total := int(res.Artists.Total)
		names := len(res.Artists.Artists)
		// The library decodes each page into the same result, and JSON null
		// leaves its Next untouched, so the end is told by offset and
		// total, as with the real service.
		for pages := 0; int(res.Artists.Offset)+len(res.Artists.Artists) < total; pages++ {
			if pages > 10 {
				t.Fatal("too many pages")
			}
			if err := sp.NextArtistResults(ctx, res); err != nil {
				t.Fatal(err)
			}
			names += len(res.Artists.Artists)
		}
		if names != total || total < 6 {
			t.Fatalf("paged through %d of %d artists", names, total)
		}

		albums, err := sp.GetArtistAlbums(ctx, zspotify.ID(spotifysim.Artist95ID), nil, zspotify.Limit(10), zspotify.Market("US"))
		if err != nil {
			t.Fatal(err)
		}
		count := len(albums.Albums)
		for {
			err := sp.NextPage(ctx, albums)
			if errors.Is(err, zspotify.ErrNoMorePages) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			count += len(albums.Albums)
		}
		if count != int(albums.Total) || count < 80 {
			t.Fatalf("the library paged through %d of %d albums", count, albums.Total)
		}
		tr, err := sp.GetTrack(ctx, zspotify.ID(spotifysim.SampleTrackID))
		if err != nil || tr.ID != spotifysim.SampleTrackID {
			t.Fatalf("track: %v %v", tr, err)
		}
		if _, err := sp.GetTrack(ctx, "0000000000000000000000"); err == nil || !strings.Contains(err.Error(), "Resource not found") {
			t.Fatalf("unknown track: %v, want Spotify's 404 message", err)
		}
	})

	t.Run("identical searches coalesce and hit the cache", func(t *testing.T) {
		e.Sim.SetDelay(300 * time.Millisecond)
		defer e.Sim.SetDelay(0)
		before := e.Sim.Counts().APIRequests
		hc := e.Client.HTTPClient()
		// Parameter order and the caller's Authorization differ; the key
		// ignores both.
		urls := []string{"http://sluice/v1/spotify/v1/search?q=IU&type=artist", "http://sluice/v1/spotify/v1/search?type=artist&q=IU"}
		spNoErrors(t, spConcurrently(20, func(i int) (*client.Response, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, urls[i%2], nil)
			if err != nil {
				return nil, err
			}
			req.Header.Set("Authorization", fmt.Sprintf("Bearer caller-%d", i))
			resp, err := hc.Do(req)
			if err != nil {
				return nil, err
			}
			resp.Body.Close()
			return &client.Response{Status: resp.StatusCode}, nil
		}))
		if got := e.Sim.Counts().APIRequests - before; got != 1 {
			t.Fatalf("20 identical searches cost %d API requests, want 1", got)
		}
		r, err := e.get(ctx, "v1/search", url.Values{"q": {"IU"}, "type": {"artist"}}, http.Header{"Cache-Control": {"only-if-cached"}})
		if err != nil {
			t.Fatal(err)
		}
		if cs := r.Header.Get("Cache-Status"); !strings.Contains(cs, "hit") {
			t.Fatalf("Cache-Status %q, want a hit", cs)
		}
	})

	t.Run("upstream errors", func(t *testing.T) {
		unknownTrack := "0000000000000000000000"
		cases := []struct {
			name     string
			inject   func()
			path     string
			q        url.Values
			status   int
			requests int // upstream requests it costs
			message  string
		}{
			{"503 twice then ok", func() { e.Sim.Force5xx(503, 2) }, "v1/search", spDistinct(1), 200, 3, ""},
			{"500 for good, relayed", func() { e.Sim.Force5xx(500, 4) }, "v1/search", spDistinct(2), 500, 4, "Internal Server Error"},
			{"404 unknown id", func() {}, "v1/tracks/" + unknownTrack, nil, 404, 1, "Resource not found"},
			{"404 again, not cached", func() {}, "v1/tracks/" + unknownTrack, nil, 404, 1, "Resource not found"},
			{"400 unknown market", func() {}, "v1/tracks/" + spotifysim.SampleTrackID, url.Values{"market": {"ZZ"}}, 400, 1, "Invalid market code"},
		}
		for _, tc := range cases {
			before := e.Sim.Counts().APIRequests
			tc.inject()
			r, err := e.get(ctx, tc.path, tc.q, nil)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if r.Status != tc.status {
				t.Fatalf("%s: status %d, want %d: %s", tc.name, r.Status, tc.status, r.Body)
			}
			if tc.message != "" {
				body := spDecode[struct {
					Error struct {
						Status  int    `json:"status"`
						Message string `json:"message"`
					} `json:"error"`
				}](t, r.Body)
				if body.Error.Status != tc.status || body.Error.Message != tc.message {
					t.Fatalf("%s: body %s, want Spotify's error object verbatim", tc.name, r.Body)
				}
			}
			if got := e.Sim.Counts().APIRequests - before; got != tc.requests {
				t.Fatalf("%s cost %d upstream requests, want %d", tc.name, got, tc.requests)
			}
		}
	})

	if c := e.Sim.Counts(); c.TokenRequests != 1 || c.Throttled != 0 {
		t.Fatalf("counts %+v: want one token for everything and no 429", c)
	}
}

// TestSpotifyTokens: 50 callers that need a token at once cause one token
// request; a token that dies early costs one refresh and no caller sees the
// 401; a short-lived token is replaced before it expires.
func TestSpotifyTokens(t *testing.T) {
	t.Parallel()
	// A scaled-up budget: this test is about tokens, not about queueing.
	e := startSpotify(t, spotifyOpts{requests: 500, extra: `token_refresh_margin = "1s"`})
	ctx := testenv.Ctx(t, 2*time.Minute)

	// A slow token endpoint keeps the first fetch in flight while the
	// others arrive.
	e.Sim.SetTokenDelay(300 * time.Millisecond)
	spNoErrors(t, spConcurrently(50, func(i int) (*client.Response, error) { return e.get(ctx, "v1/search", spDistinct(i), nil) }))
	if c := e.Sim.Counts(); c.TokenRequests != 1 || c.APIRequests != 50 || c.Unauthorized != 0 {
		t.Fatalf("50 concurrent callers: %+v, want 1 token request, 50 API requests, no 401", c)
	}

	// Expiry mid-run: every caller in flight meets a 401.
	e.Sim.ExpireTokens()
	e.Sim.SetTokenDelay(200 * time.Millisecond)
	spNoErrors(t, spConcurrently(30, func(i int) (*client.Response, error) { return e.get(ctx, "v1/search", spDistinct(100+i), nil) }))
	c := e.Sim.Counts()
	if c.TokenRequests != 2 {
		t.Fatalf("token requests %d after an expiry, want 2 (one refresh)", c.TokenRequests)
	}
	if c.Unauthorized == 0 {
		t.Fatal("the simulator never answered 401: the test did not exercise the refresh")
	}

	// Short-lived tokens: the next token lives 2 s; with a 1 s margin it
	// is replaced before it expires, so the simulator never says 401.
	e.Sim.SetTokenDelay(0)
	e.Sim.SetTokenLifetime(2 * time.Second)
	e.Sim.ExpireTokens()
	if _, err := e.get(ctx, "v1/search", spDistinct(200), nil); err != nil {
		t.Fatal(err)
	}
	base := e.Sim.Counts()
	// Paced load, not synchronisation: one call every 100 ms for 3 s.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		if _, err := e.get(ctx, "v1/search", spDistinct(300+i), nil); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		<-tick.C
	}
	c = e.Sim.Counts()
	if got := c.Unauthorized - base.Unauthorized; got != 0 {
		t.Fatalf("the simulator answered 401 %d times: the token was not refreshed in time", got)
	}
	if got := c.TokenRequests - base.TokenRequests; got < 2 || got > 4 {
		t.Fatalf("%d token requests over 3 s of 2 s tokens refreshed 1 s early, want 2 to 4", got)
	}
}

// pausedUntil returns the end of the spotify.api pause, or nil.
func spPausedUntil(ctx context.Context, t *testing.T, c *client.Client) *time.Time {
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range st.Buckets {
		if b.Name == "spotify.api" && b.PausedUntil != nil && b.PausedUntil.After(time.Now()) {
			return b.PausedUntil
		}
	}
	return nil
}

// TestNoTokenRequestDuringRetryAfter: a caller that arrives while
// Spotify's Retry-After runs, its token due for a refresh, asks for the
// new token only once the pause is over. Spotify counts any request during
// a Retry-After, the token endpoint's too.
func TestNoTokenRequestDuringRetryAfter(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{extra: `max_retry_after = "30s"`})
	ctx := testenv.Ctx(t, 2*time.Minute)
	// Tokens of 2 s are refreshed 1 s after they are fetched (the margin
	// is capped at half the life).
	e.Sim.SetTokenLifetime(2 * time.Second)
	e.Sim.ExpireTokens()
	if _, err := e.get(ctx, "v1/search", spDistinct(0), nil); err != nil {
		t.Fatal(err)
	}
	due := time.Now().Add(1200 * time.Millisecond)
	before := e.Sim.Counts()
	e.Sim.Force429(8, 1)
	wait := http.Header{"Sluice-Max-Wait": {"25s"}}
	errs := make(chan error, 2)
	call := func(i int) {
		r, err := e.get(ctx, "v1/search", spDistinct(i), wait)
		if err == nil && r.Status != http.StatusOK {
			err = fmt.Errorf("status %d", r.Status)
		}
		errs <- err
	}
	go call(1) // meets the 429
	testenv.Eventually(t, 5*time.Second, "spotify.api paused", func() bool {
		return spPausedUntil(ctx, t, e.Client) != nil
	})
	// Not synchronisation: the token has to grow old enough to be due.
	select {
	case <-time.After(time.Until(due)):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if until := spPausedUntil(ctx, t, e.Client); until == nil || time.Until(*until) < time.Second {
		t.Fatal("the 8 s pause ended before the token was due: the test did not exercise a refresh during it")
	}
	go call(2) // arrives during the pause, its token due
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	spNothingDuringRetryAfter(t, e, before)
}

// spNothingDuringRetryAfter fails unless no token or API request reached
// Spotify during its Retry-After since before, and a token was fetched
// (after it): without one, the test showed nothing.
func spNothingDuringRetryAfter(t *testing.T, e *spotifyEnv, before spotifysim.Counts) {
	t.Helper()
	c := e.Sim.Counts()
	if c.TokensDuringRetryAfter != before.TokensDuringRetryAfter || c.DuringRetryAfter != before.DuringRetryAfter {
		t.Fatalf("%d token and %d API requests reached Spotify during its Retry-After, want none",
			c.TokensDuringRetryAfter-before.TokensDuringRetryAfter, c.DuringRetryAfter-before.DuringRetryAfter)
	}
	if c.TokenRequests == before.TokenRequests {
		t.Fatal("no token was fetched after the pause: the test did not exercise a token request")
	}
}

// TestNoTokenRequestDuringRetryAfterAfterRestart: a Retry-After that
// outlives the daemon's restart holds the first token request of the new
// plugin too, which has not seen the 429 itself.
func TestNoTokenRequestDuringRetryAfterAfterRestart(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{extra: `max_retry_after = "30s"`})
	ctx := testenv.Ctx(t, 2*time.Minute)
	if _, err := e.get(ctx, "v1/search", spDistinct(0), nil); err != nil {
		t.Fatal(err)
	}
	before := e.Sim.Counts()
	e.Sim.Force429(8, 1)
	// A caller that may not wait meets the 429 and is refused at once.
	if r, err := e.get(ctx, "v1/search", spDistinct(1), http.Header{"Sluice-Max-Wait": {"1s"}}); problemStatus(err) != http.StatusTooManyRequests {
		t.Fatalf("the 429: %v %v, want a 429 problem", r, err)
	}
	e.StopDaemon()
	e.StartDaemon()
	if until := spPausedUntil(ctx, t, e.Client); until == nil || time.Until(*until) < time.Second {
		t.Fatal("the pause did not outlive the restart by a second: the test cannot show the token request waiting")
	}
	// Callers that may not wait so long, arriving with one that may, do
	// not get the token fetch they share refused for it.
	short := make(chan error, 4)
	for i := range 4 {
		go func() {
			_, err := e.get(ctx, "v1/search", spDistinct(10+i), http.Header{"Sluice-Max-Wait": {"1s"}})
			short <- err
		}()
	}
	r, err := e.get(ctx, "v1/search", spDistinct(2), http.Header{"Sluice-Max-Wait": {"25s"}})
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("after the pause: %v %v", r, err)
	}
	for range 4 {
		// Refused, or served after joining the long caller's wait for
		// the token (a joined fetch does not apply the joiner's own
		// max wait); never anything else.
		if err := <-short; err != nil && problemStatus(err) != http.StatusTooManyRequests {
			t.Errorf("a caller that may wait 1 s of a longer pause: %v, want 200 or a 429 problem", err)
		}
	}
	spNothingDuringRetryAfter(t, e, before)
}

// TestSpotifyRateLimits: a 429 pauses spotify.api for every caller; callers
// that may wait are served after it, nothing reaches Spotify during it, and
// callers that may not wait that long get a 429 problem at once.
func TestSpotifyRateLimits(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{sim: spotifysim.Options{LowerCaseRetryAfter: true}, extra: `max_retry_after = "10s"`})
	ctx := testenv.Ctx(t, 2*time.Minute)
	if _, err := e.get(ctx, "v1/search", spDistinct(0), nil); err != nil { // token and connection warm
		t.Fatal(err)
	}

	t.Run("Retry-After 3 pauses every caller", func(t *testing.T) {
		before := e.Sim.Counts()
		e.Sim.Force429(3, 1) // sent as lower-case retry-after
		first := make(chan error, 1)
		go func() {
			r, err := e.get(ctx, "v1/search", spDistinct(1), nil)
			if err == nil && r.Status != 200 {
				err = fmt.Errorf("status %d", r.Status)
			}
			first <- err
		}()
		var until *time.Time
		testenv.Eventually(t, 5*time.Second, "spotify.api paused", func() bool {
			until = spPausedUntil(ctx, t, e.Client)
			return until != nil
		})
		// A caller that may wait only 1 s is told at once, with Spotify's
		// Retry-After.
		start := time.Now()
		_, err := e.get(ctx, "v1/search", spDistinct(2), http.Header{"Sluice-Max-Wait": {"1s"}})
		if p := spProblem(err); p == nil || p.Status != 429 || p.RetryAfter < time.Second || p.RetryAfter > 4*time.Second {
			t.Fatalf("Sluice-Max-Wait 1s during a 3 s pause: %v, want a 429 problem with retry_after about 3 s", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("the impatient caller waited %s", took)
		}
		spNoErrors(t, spConcurrently(10, func(i int) (*client.Response, error) { return e.get(ctx, "v1/search", spDistinct(10+i), nil) }))
		if err := <-first; err != nil {
			t.Fatalf("the caller that met the 429: %v", err)
		}
		if time.Now().Before(*until) {
			t.Fatal("callers were served before the pause ended")
		}
		c := e.Sim.Counts()
		if c.DuringRetryAfter != 0 {
			t.Fatalf("%d requests reached the simulator while its Retry-After ran", c.DuringRetryAfter)
		}
		var at429 time.Time
		for _, a := range e.Sim.RequestLog() {
			if a.Status == http.StatusTooManyRequests {
				at429 = a.At
			} else if !at429.IsZero() && a.At.Sub(at429) < 3*time.Second {
				t.Fatalf("a request arrived %s after the 429", a.At.Sub(at429))
			}
		}
		if got := c.APIRequests - before.APIRequests; got != 12 {
			t.Fatalf("API requests %d, want 12 (the 429, its retry, 10 callers)", got)
		}
	})

	t.Run("no request is on its way when a 429 comes back", func(t *testing.T) {
		// Spotify takes a while to answer; ten callers at once. Any request
		// sent while the first one's 429 was still on its way would arrive
		// inside the Retry-After: spotify.api takes one request at a time.
		e.Sim.SetDelay(30 * time.Millisecond)
		defer e.Sim.SetDelay(0)
		before := e.Sim.Counts()
		e.Sim.Force429(1, 1)
		spNoErrors(t, spConcurrently(10, func(i int) (*client.Response, error) { return e.get(ctx, "v1/search", spDistinct(50+i), nil) }))
		c := e.Sim.Counts()
		if n := c.DuringRetryAfter - before.DuringRetryAfter; n != 0 {
			t.Fatalf("%d requests arrived while the Retry-After ran", n)
		}
		if got := c.APIRequests - before.APIRequests; got != 11 {
			t.Fatalf("API requests %d, want 11 (the 429, its retry, 9 more callers)", got)
		}
	})

	t.Run("missing Retry-After means 5 s", func(t *testing.T) {
		before := e.Sim.Counts().APIRequests
		e.Sim.Force429(-1, 1)
		start := time.Now()
		if _, err := e.get(ctx, "v1/search", spDistinct(30), nil); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 5*time.Second {
			t.Fatalf("retried after %s, want at least the 5 s default", took)
		}
		if got := e.Sim.Counts().APIRequests - before; got != 2 {
			t.Fatalf("API requests %d, want 2", got)
		}
	})

	t.Run("QUOTA_EXCEEDED is never retried", func(t *testing.T) {
		before := e.Sim.Counts().APIRequests
		e.Sim.ForceQuotaExceeded(1)
		start := time.Now()
		_, err := e.get(ctx, "v1/search", spDistinct(31), nil)
		if p := spProblem(err); p == nil || p.Status != 429 || !strings.Contains(p.Detail, "QUOTA_EXCEEDED") {
			t.Fatalf("got %v, want a 429 problem naming QUOTA_EXCEEDED", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("took %s", took)
		}
		if got := e.Sim.Counts().APIRequests - before; got != 1 {
			t.Fatalf("API requests %d, want 1", got)
		}
	})

	// Last: it pauses the bucket for an hour.
	t.Run("Retry-After 3600 fails every caller fast", func(t *testing.T) {
		testenv.Eventually(t, 5*time.Second, "the quota pause to end", func() bool { return spPausedUntil(ctx, t, e.Client) == nil })
		before := e.Sim.Counts().APIRequests
		e.Sim.Force429(3600, 1)
		for i, who := range []string{"the caller that met the 429", "a later caller"} {
			start := time.Now()
			_, err := e.get(ctx, "v1/search", spDistinct(40+i), nil)
			p := spProblem(err)
			if p == nil || p.Status != http.StatusTooManyRequests {
				t.Fatalf("%s: got %v, want a 429 problem", who, err)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("%s waited %s", who, took)
			}
			if p.RetryAfter < 3599*time.Second || p.RetryAfter > 3600*11/10*time.Second {
				t.Fatalf("%s: retry_after %s, want about an hour", who, p.RetryAfter)
			}
		}
		if got := e.Sim.Counts().APIRequests - before; got != 1 {
			t.Fatalf("API requests %d, want only the one answered 429", got)
		}
	})
}

// TestSpotifyRejectedCredentials: a wrong secret is permanent: one token
// request, a clear problem, a loud log line, and the secret nowhere.
func TestSpotifyRejectedCredentials(t *testing.T) {
	t.Parallel()
	const wrong = "0123456789abcdef-WRONG-SECRET"
	e := startSpotify(t, spotifyOpts{secret: wrong})
	ctx := testenv.Ctx(t, time.Minute)
	for i := range 3 {
		r, err := e.get(ctx, "v1/search", spDistinct(i), nil)
		p := spProblem(err)
		if p == nil || p.Status != http.StatusServiceUnavailable || !strings.Contains(p.Detail, "invalid_client") {
			t.Fatalf("call %d: %v, want a 503 problem naming invalid_client", i, err)
		}
		if strings.Contains(string(r.Body), wrong) {
			t.Fatal("the answer carries the secret")
		}
	}
	if c := e.Sim.Counts(); c.TokenRequests != 1 || c.APIRequests != 0 {
		t.Fatalf("counts %+v, want exactly 1 token request and no API request", c)
	}
	testenv.Eventually(t, 5*time.Second, "the rejection in the daemon log", func() bool {
		return strings.Contains(e.Log(), "SPOTIFY CREDENTIALS REJECTED")
	})
	if log := e.Log(); strings.Contains(log, wrong) || strings.Contains(log, "Basic ") {
		t.Fatal("the daemon log carries the secret or the Basic credentials")
	}
}

// TestSpotifyCtl drives the real sluicectl: --all over the 95-album artist,
// tables and --json, the id forms, and download through iNeo.
func TestSpotifyCtl(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{})
	id := spotifysim.Artist95ID
	type run struct {
		args []string
		out  string
		code int
	}
	runs := []*run{
		{args: []string{"--json", "spotify", "albums", "spotify:artist:" + id, "--all"}},
		{args: []string{"spotify", "albums", "https://open.spotify.com/artist/" + id + "?si=x", "--all", "--groups", "album,single"}},
		{args: []string{"spotify", "search", "BTS", "--type", "artist", "--all"}},
		{args: []string{"spotify", "artist", id}},
		{args: []string{"spotify", "album", spotifysim.MilesDavisCompleteSessions}},
		{args: []string{"spotify", "track", "spotify:album:" + id}},
		{args: []string{"spotify", "track", "0000000000000000000000"}},
	}
	// The invocations are independent: run them at once.
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.out, r.code = ctl(t, e.Env, r.args...)
		}()
	}
	wg.Wait()

	all := spDecode[spPageJSON](t, []byte(runs[0].out))
	if runs[0].code != 0 || len(all.Items) != spotifysim.Artist95Albums || all.Total != spotifysim.Artist95Albums || all.Next != nil {
		t.Fatalf("albums --all --json: exit %d, %d items of %d, next %v", runs[0].code, len(all.Items), all.Total, all.Next)
	}
	if out := runs[1].out; runs[1].code != 0 || !strings.HasPrefix(out, "ALBUMS: ") || !strings.Contains(out, "RELEASED") {
		t.Fatalf("albums table: exit %d:\n%s", runs[1].code, out)
	} else {
		n, _ := strconv.Atoi(strings.Fields(out)[1])
		if rows := strings.Count(out, "\n") - 2; n < 30 || rows != n {
			t.Fatalf("albums table has %d rows for %d albums:\n%s", rows, n, out)
		}
	}
	if out := runs[2].out; runs[2].code != 0 || !strings.Contains(out, "ARTISTS: 7\n") || strings.Count(out, "\n") != 9 {
		t.Fatalf("search --all: exit %d:\n%s", runs[2].code, out)
	}
	if out := runs[3].out; runs[3].code != 0 || !strings.Contains(out, "BTS") || !strings.Contains(out, "k-pop") {
		t.Fatalf("artist: exit %d:\n%s", runs[3].code, out)
	}
	if out := runs[4].out; runs[4].code != 0 || strings.Count(out, "\n") < 63+10 || !strings.Contains(out, "The Complete Sessions") {
		t.Fatalf("album with 63 tracks: exit %d:\n%s", runs[4].code, out)
	}
	if out := runs[5].out; runs[5].code != 2 || !strings.Contains(out, "not a track") {
		t.Fatalf("wrong kind: exit %d: %s", runs[5].code, out)
	}
	if out := runs[6].out; runs[6].code != 2 || !strings.Contains(out, "Resource not found") {
		t.Fatalf("unknown track: exit %d: %s", runs[6].code, out)
	}

	track := spotifysim.SampleTrackID
	out, code := ctl(t, e.Env, "spotify", "download", "https://open.spotify.com/track/"+track)
	if code != 0 || !strings.Contains(out, "download") || !strings.Contains(out, "/dl/"+track+".mp3") {
		t.Fatalf("download: exit %d:\n%s", code, out)
	}
	if got := e.Ineo.Requests("spotify"); got != 1 {
		t.Fatalf("download asked iNeo %d times", got)
	}
	out, code = ctl(t, e.Env, "--json", "spotify", "download", track)
	if code != 0 {
		t.Fatalf("download --json: exit %d: %s", code, out)
	}
	both := spDecode[struct {
		Track struct {
			ID string `json:"id"`
		} `json:"track"`
		Ineo struct {
			StatusCode int `json:"status_code"`
		} `json:"ineo"`
	}](t, []byte(out))
	if both.Track.ID != track || both.Ineo.StatusCode != 200 {
		t.Fatalf("download --json: %s", out)
	}
	if c := e.Sim.Counts(); c.TokenRequests != 1 || c.Throttled != 0 {
		t.Fatalf("simulator counts %+v", c)
	}
}
