package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// clientsDir holds the scripts and the npm lock file.
const clientsDir = "testdata/clients"

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
		{"python-requests-unixsocket", walkPython},
		{"node-web-api-ts-sdk", walkNode("ts-sdk.mjs", "@spotify/web-api-ts-sdk", "undici")},
		{"node-spotify-web-api-node", walkNode("web-api-node.mjs", "spotify-web-api-node")},
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

// walkPython runs walk.py with an interpreter that has requests and
// requests-unixsocket: python3 on PATH, else Debian's /usr/bin/python3
// (where python3-requests-unixsocket installs them; a pyenv or virtualenv
// python3 first on PATH does not see Debian's packages).
func walkPython(t *testing.T, ctx context.Context, socket, artist, track string) clientWalk {
	return walkPythonEnv(t, ctx, socket, artist, track)
}

// walkPythonEnv is walkPython with more of walk.py's environment
// (SLUICE_BASE=1: send Sluice-Base and follow links literally).
func walkPythonEnv(t *testing.T, ctx context.Context, socket, artist, track string, env ...string) clientWalk {
	t.Helper()
	var reasons []string
	var python string
	for _, cand := range []string{"python3", "/usr/bin/python3"} {
		p, err := exec.LookPath(cand)
		if err != nil {
			reasons = append(reasons, cand+": not found")
			continue
		}
		out, err := exec.CommandContext(ctx, p, "-c", "import requests, requests_unixsocket").CombinedOutput()
		if err != nil {
			reasons = append(reasons, fmt.Sprintf("%s: %s", p, lastLine(out)))
			continue
		}
		python = p
		break
	}
	if python == "" {
		t.Skipf("no python3 with requests and requests-unixsocket (Debian: apt-get install python3-requests python3-requests-unixsocket; .ci/run does): %s",
			strings.Join(reasons, "; "))
	}
	return runClientScript(t, ctx, socket, python, filepath.Join(clientsDir, "python", "walk.py"), artist, track, env...)
}

// walkNode runs one of the Node scripts, which needs the packages named.
func walkNode(script string, packages ...string) func(t *testing.T, ctx context.Context, socket, artist, track string) clientWalk {
	return func(t *testing.T, ctx context.Context, socket, artist, track string) clientWalk {
		node, err := exec.LookPath("node")
		if err != nil {
			t.Skip("node is not installed (Node.js 18.17 or later)")
		}
		dir := filepath.Join(clientsDir, "node")
		for _, p := range packages {
			if _, err := os.Stat(filepath.Join(dir, "node_modules", p, "package.json")); err != nil {
				t.Skipf("npm package %s is not installed: run `npm ci` in internal/e2e/%s (.ci/run does)", p, dir)
			}
		}
		// undici 6 needs Node 18.17; older nodes fail on its syntax.
		out, err := exec.CommandContext(ctx, node, "-e",
			`const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 18 || (a == 18 && b >= 17) ? 0 : 1)`).CombinedOutput()
		if err != nil {
			v, _ := exec.CommandContext(ctx, node, "--version").Output()
			t.Skipf("node %s is older than 18.17 %s", strings.TrimSpace(string(v)), out)
		}
		return runClientScript(t, ctx, socket, node, filepath.Join(dir, script), artist, track)
	}
}

// runClientScript runs a client script with SLUICE_SOCKET set and decodes
// the JSON line it prints last.
func runClientScript(t *testing.T, ctx context.Context, socket, interp, script, artist, track string, env ...string) clientWalk {
	t.Helper()
	cmd := exec.CommandContext(ctx, interp, script, artist, track)
	cmd.Env = append(append(os.Environ(), "SLUICE_SOCKET="+socket), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", interp, script, err, stdout.Bytes(), stderr.Bytes())
	}
	var w clientWalk
	if err := json.Unmarshal([]byte(lastLine(stdout.Bytes())), &w); err != nil {
		t.Fatalf("%s printed %q: %v (stderr: %s)", script, stdout.Bytes(), err, stderr.Bytes())
	}
	return w
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
