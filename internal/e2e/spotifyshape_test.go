package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// TestSpotifyBrokenOKIsNotCached: a 200 from something between sluice and
// Spotify (a captive portal's page, a JSON body cut short) reaches the
// caller as a 502 problem and is not cached: the same request asked again
// goes to Spotify again, and Spotify's real answer is the one cached.
func TestSpotifyBrokenOKIsNotCached(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{})
	ctx := testenv.Ctx(t, 60*time.Second)
	for _, tc := range []struct {
		name, contentType, body string
		op, path                string
		q                       url.Values
	}{
		{"truncated JSON", "", spotifysim.TruncatedJSON, "search", "v1/search", url.Values{"q": {"IU"}, "type": {"track"}}},
		{"captive portal", "text/html; charset=utf-8", spotifysim.CaptivePortalHTML, "track", "v1/tracks/" + spotifysim.SampleTrackID, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.Sim.Counts().APIRequests
			e.Sim.ForceBody(http.StatusOK, tc.contentType, tc.body)
			r, err := e.get(ctx, tc.path, tc.q, nil)
			p := spProblem(err)
			if p == nil || p.Status != http.StatusBadGateway || !strings.Contains(p.Detail, "not the JSON the Web API documents") {
				if r != nil {
					t.Fatalf("answer %d (Cache-Status %q) %q, err %v: want a 502 problem", r.Status, r.Header.Get("Cache-Status"), r.Body, err)
				}
				t.Fatalf("err %v: want a 502 problem", err)
			}
			if strings.Contains(string(r.Body), "Wi-Fi") || strings.Contains(string(r.Body), "album_type") {
				t.Fatalf("the broken body reached the caller: %s", r.Body)
			}
			r, err = e.get(ctx, tc.path, tc.q, nil)
			if err != nil || r.Status != http.StatusOK {
				t.Fatalf("second call: %+v, %v", r, err)
			}
			if cs := r.Header.Get("Cache-Status"); strings.Contains(cs, "hit") {
				t.Fatalf("second call answered from the cache: Cache-Status %q", cs)
			}
			if got := e.Sim.Counts().APIRequests - before; got != 2 {
				t.Fatalf("%d API requests, want 2: the second call must go upstream again", got)
			}
			// Spotify's own answer is cached as usual.
			r, err = e.get(ctx, tc.path, tc.q, nil)
			if err != nil || !strings.Contains(r.Header.Get("Cache-Status"), "hit") {
				t.Fatalf("third call: Cache-Status %q, %v", r.Header.Get("Cache-Status"), err)
			}
		})
	}
}
