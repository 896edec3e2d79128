package e2e

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	zspotify "github.com/zmb3/spotify/v2"

	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// Third-party Spotify client libraries, each set up as docs/clients.md
// shows, against a real daemon over its Unix socket: the Go library in
// this process, the Python and Node ones as child processes that print one
// JSON line (scripts in testdata/clients). A client whose interpreter or
// packages are missing is skipped with the reason; .ci/run installs them
// (npm ci, Debian's python3-requests-unixsocket), make test never touches
// the network.

// clientWalk is what each client reports: the pages and albums it walked
// by following next, and the name of the track it read.
type clientWalk struct {
	Client   string `json:"client"`
	Pages    int    `json:"pages"`
	Albums   int    `json:"albums"`
	Distinct int    `json:"distinct"`
	Total    int    `json:"total"`
	Track    string `json:"track"`
}

// TestClientLibraries walks an artist's 95 albums ten at a time with each
// client library, following next, and reads a track: every page stays on
// the socket, the first walk costs one upstream request per page, later
// walks by other libraries are answered from the same cache entries (how a
// client names the host never changes the key), and the dummy tokens the
// libraries send never reach Spotify.
func TestClientLibraries(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{})
	ctx := testenv.Ctx(t, 4*time.Minute)

	r, err := e.get(ctx, "v1/tracks/"+spotifysim.SampleTrackID, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	trackName := spDecode[struct {
		Name string `json:"name"`
	}](t, r.Body).Name
	want := clientWalk{Pages: 10, Albums: spotifysim.Artist95Albums, Distinct: spotifysim.Artist95Albums,
		Total: spotifysim.Artist95Albums, Track: trackName}

	clients := []struct {
		name string
		walk func(t *testing.T, ctx context.Context, socket, artist, track string) clientWalk
	}{
		{"zmb3-spotify", walkZmb3},
	}
	walked := 0 // clients that completed a walk: the pages are cached after the first
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			before := e.Sim.Counts().APIRequests
			got := c.walk(t, ctx, e.Socket, spotifysim.Artist95ID, spotifysim.SampleTrackID)
			spent := e.Sim.Counts().APIRequests - before
			t.Logf("%s: %d pages, %d albums (%d distinct of %d), track %q; %d upstream requests",
				got.Client, got.Pages, got.Albums, got.Distinct, got.Total, got.Track, spent)
			got.Client = ""
			if got != want {
				t.Fatalf("walked %+v, want %+v", got, want)
			}
			wantSpent := 0
			if walked == 0 {
				wantSpent = want.Pages // the track was read above
			}
			if spent != wantSpent {
				t.Errorf("the walk cost %d upstream requests, want %d (%d clients walked the same pages before)", spent, wantSpent, walked)
			}
			walked++
		})
	}
	// Every library sends an Authorization header of its own (a made-up
	// token); a forwarded one would be a 401 from the simulator.
	if c := e.Sim.Counts(); c.Unauthorized != 0 || c.TokenRequests != 1 {
		t.Fatalf("simulator saw %d 401s and %d token requests, want 0 and 1", c.Unauthorized, c.TokenRequests)
	}
}

// walkZmb3 is github.com/zmb3/spotify/v2 with the smallest setting: an
// http.Client that dials the socket, and the base URL. No oauth2 client:
// sluice needs no token.
func walkZmb3(t *testing.T, ctx context.Context, socket, artist, track string) clientWalk {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	defer tr.CloseIdleConnections()
	sp := zspotify.New(&http.Client{Transport: tr}, zspotify.WithBaseURL("http://sluice/v1/spotify/v1/"))

	page, err := sp.GetArtistAlbums(ctx, zspotify.ID(artist), nil, zspotify.Limit(10))
	if err != nil {
		t.Fatal(err)
	}
	w := clientWalk{Client: "zmb3/spotify", Total: int(page.Total)}
	seen := map[zspotify.ID]bool{}
	for {
		w.Pages++
		for _, a := range page.Albums {
			w.Albums++
			seen[a.ID] = true
		}
		err := sp.NextPage(ctx, page) // follows page.Next literally
		if errors.Is(err, zspotify.ErrNoMorePages) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if w.Pages > 20 {
			t.Fatal("more than 20 pages")
		}
	}
	w.Distinct = len(seen)
	ft, err := sp.GetTrack(ctx, zspotify.ID(track))
	if err != nil {
		t.Fatal(err)
	}
	w.Track = ft.Name
	return w
}
