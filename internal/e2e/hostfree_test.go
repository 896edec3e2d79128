package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/hellorf/hellorfsim"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// rawGet sends one raw HTTP/1.1 request on a fresh connection to the
// daemon's socket and returns the answer with its body read.
func rawGet(t *testing.T, socket, raw string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", raw, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// TestHostNeverSplitsTheCache: one lookup asked five ways a client may name
// the host (Python's and Node's default Host: localhost over a socket, a
// forwarder's 127.0.0.1:PORT, an absolute-form target, a GET with a body)
// is one cache entry and one upstream request: five of iNeo's six per 7 s
// before (invariant 7).
func TestHostNeverSplitsTheCache(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	const target = "/v1/ineo/spotify.php?trackId=6fx5VOjqYNBHcDf5GIF5g5"
	ways := []struct{ name, raw string }{
		{"Host: sluice", "GET " + target + " HTTP/1.1\r\nHost: sluice\r\n\r\n"},
		{"Host: localhost", "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n\r\n"},
		{"Host: 127.0.0.1:PORT", "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1:8750\r\n\r\n"},
		{"absolute form", "GET http://x" + target + " HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"GET with a body", "GET " + target + " HTTP/1.1\r\nHost: other\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"},
	}
	before := env.Ineo.Requests(ineosim.ServiceSpotify)
	var first []byte
	for i, w := range ways {
		resp, body := rawGet(t, env.Socket, w.raw)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", w.name, resp.StatusCode, body)
		}
		if i == 0 {
			first = body
		} else if string(body) != string(first) {
			t.Errorf("%s: another answer than the first", w.name)
		}
		if i > 0 && !strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
			t.Errorf("%s: Cache-Status %q, want a hit", w.name, resp.Header.Get("Cache-Status"))
		}
	}
	if got := env.Ineo.Requests(ineosim.ServiceSpotify) - before; got != 1 {
		t.Fatalf("%d upstream requests for one lookup asked %d ways, want 1", got, len(ways))
	}
}

// TestLinksFollowTheCallersHost: the same album page asked through two
// host names costs one Spotify request, and each caller's next link is on
// its own base, on the full path and in the fast lane alike.
func TestLinksFollowTheCallersHost(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{})
	target := "/v1/spotify/v1/artists/" + spotifysim.Artist95ID + "/albums?limit=10"
	before := e.Sim.Counts().APIRequests
	// Each host twice: the first of localhost's is a hit on the entry
	// sluice's stored; the second of each comes from the fast lane.
	for _, host := range []string{"sluice", "localhost:8750", "sluice", "localhost:8750"} {
		resp, body := rawGet(t, e.Socket, "GET "+target+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("Host %s: %d %s", host, resp.StatusCode, body)
		}
		var page struct {
			Href string  `json:"href"`
			Next *string `json:"next"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("Host %s: %v: %s", host, err, body)
		}
		want := "http://" + host + "/v1/spotify/v1/artists/" + spotifysim.Artist95ID + "/albums"
		if page.Next == nil || !strings.HasPrefix(*page.Next, want) || !strings.HasPrefix(page.Href, want) {
			t.Fatalf("Host %s: href %q, next %v; want both under %s", host, page.Href, page.Next, want)
		}
		if strings.Contains(string(body), "invalid") {
			t.Fatalf("Host %s: the link marker leaked: %s", host, body)
		}
		if cl := resp.ContentLength; cl != int64(len(body)) {
			t.Fatalf("Host %s: Content-Length %d for %d bytes", host, cl, len(body))
		}
	}
	if got := e.Sim.Counts().APIRequests - before; got != 1 {
		t.Fatalf("%d Spotify requests for one page asked through two hosts, want 1", got)
	}
}

// TestSpellingsOfOneUpstreamRequest: requests the plugin sends upstream as
// one request (an undocumented parameter it drops, a market in lower case,
// the default page size named or left out, Spotify's query alias for q)
// share one cache entry and cost one upstream request; a parameter given
// twice is refused before anything is spent. iNeo's case matters most:
// each extra request is one of the 6 per 7 s it bans beyond.
func TestSpellingsOfOneUpstreamRequest(t *testing.T) {
	t.Parallel()
	t.Run("ineo", func(t *testing.T) {
		t.Parallel()
		env := testenv.Start(t, testenv.Options{})
		const target = "/v1/ineo/spotify.php?trackId=6fx5VOjqYNBHcDf5GIF5g5"
		before := env.Ineo.Requests(ineosim.ServiceSpotify)
		for _, q := range []string{"", "&foo=1", "&Foo=2&auth=x"} {
			resp, body := rawGet(t, env.Socket, "GET "+target+q+" HTTP/1.1\r\nHost: sluice\r\n\r\n")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d %s", q, resp.StatusCode, body)
			}
		}
		resp, body := rawGet(t, env.Socket, "GET "+target+"&trackId=4uLU6hMCjMI75M1A2tKUQC HTTP/1.1\r\nHost: sluice\r\n\r\n")
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("trackId given twice: %d %s, want 400", resp.StatusCode, body)
		}
		if got := env.Ineo.Requests(ineosim.ServiceSpotify) - before; got != 1 {
			t.Fatalf("%d iNeo requests for one track asked with extra and repeated parameters, want 1", got)
		}
	})
	t.Run("hellorf", func(t *testing.T) {
		t.Parallel()
		env, sim := startHellorf(t, hellorfEnv{})
		const search = "/v1/hellorf/audio/search?keyword=calm"
		groups := [][]string{
			{search, search + "&page=1", search + "&page=001", search + "&page=", search + "&per_page=30&mood_id=", search + "&is_vhifun="},
			{search + "&genre_id=7", search + "&genre_id=07", search + "&genre_id=007&page=01"},
		}
		for _, g := range groups {
			before := sim.Requests(hellorfsim.PathSearch)
			for _, target := range g {
				resp, body := rawGet(t, env.Socket, "GET "+target+" HTTP/1.1\r\nHost: sluice\r\n\r\n")
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s: %d %s", target, resp.StatusCode, body)
				}
			}
			if got := sim.Requests(hellorfsim.PathSearch) - before; got != 1 {
				t.Errorf("%d hellorf requests for %q, want 1", got, g)
			}
		}
		// A filter of white space only is refused, not dropped (which
		// would widen the search), and costs nothing.
		before := sim.Requests(hellorfsim.PathSearch)
		for _, q := range []string{"&genre_id=%20", "&page=%20", "&duration_from=%09"} {
			resp, body := rawGet(t, env.Socket, "GET "+search+q+" HTTP/1.1\r\nHost: sluice\r\n\r\n")
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: %d %s, want 400", q, resp.StatusCode, body)
			}
		}
		if got := sim.Requests(hellorfsim.PathSearch) - before; got != 0 {
			t.Errorf("%d hellorf requests for blank filters, want 0", got)
		}
	})
	t.Run("spotify", func(t *testing.T) {
		t.Parallel()
		e := startSpotify(t, spotifyOpts{extra: "search_max_limit = 3\ndefault_market = \"KR\"\n"})
		albums := "/v1/spotify/v1/artists/" + spotifysim.Artist95ID + "/albums?"
		groups := [][]string{
			{albums + "limit=2&offset=0", albums + "limit=2&offset=0&foo=bar", albums + "offset=0&limit=2&market=kr", albums + "offset=0&limit=2&market=KR"},
			{albums + "offset=5", albums + "offset=5&limit=5"},
			// Spotify's own href and previous links spell out offset=0.
			{albums + "limit=4", albums + "limit=4&offset=0", albums + "limit=4&offset=00"},
			{"/v1/spotify/v1/search?q=Queen&type=artist", "/v1/spotify/v1/search?q=Queen&type=artist&limit=3", "/v1/spotify/v1/search?query=Queen&type=artist",
				"/v1/spotify/v1/search?q=Queen%20&type=artist", "/v1/spotify/v1/search?q=%09Queen&type=artist%20"},
		}
		for _, g := range groups {
			before := e.Sim.Counts().APIRequests
			for _, target := range g {
				resp, body := rawGet(t, e.Socket, "GET "+target+" HTTP/1.1\r\nHost: sluice\r\n\r\n")
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s: %d %s", target, resp.StatusCode, body)
				}
			}
			if got := e.Sim.Counts().APIRequests - before; got != 1 {
				t.Errorf("%d Spotify requests for %q, want 1", got, g)
			}
		}
	})
}

// TestLaneRefusesAHostThatIsNoHost: a Host that is no host[:port] becomes
// no base of a link. The page is cached first, so the fast lane would
// answer it; a quote in the Host would otherwise rewrite the JSON.
func TestLaneRefusesAHostThatIsNoHost(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{})
	target := "/v1/spotify/v1/artists/" + spotifysim.Artist95ID + "/albums?limit=10"
	if resp, body := rawGet(t, e.Socket, "GET "+target+" HTTP/1.1\r\nHost: sluice\r\n\r\n"); resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	for _, host := range []string{`x","injected":"yes`, `x"y`, "a b", "a<b>"} {
		resp, body := rawGet(t, e.Socket, "GET "+target+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("Host %q: %d %s, want 400", host, resp.StatusCode, body)
		}
	}
}
