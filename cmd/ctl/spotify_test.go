package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/core/problem"
)

func TestSpotifyRef(t *testing.T) {
	const id = "3Nrfpe0tUJi4K4DXYWgMUX"
	cases := []struct {
		kind, in, want string
		errPart        string
	}{
		{"artist", id, id, ""},
		{"artist", " " + id + "\n", id, ""},
		{"artist", "spotify:artist:" + id, id, ""},
		{"track", "https://open.spotify.com/track/" + id + "?si=abc", id, ""},
		{"album", "open.spotify.com/intl-ko/album/" + id, id, ""},
		{"album", "http://open.spotify.com/album/" + id + "/", id, ""},
		{"track", "spotify:album:" + id, "", "is a Spotify album, not a track"},
		{"artist", "https://open.spotify.com/track/" + id, "", "is a Spotify track, not a artist"},
		{"track", id[1:], "", "not a Spotify track"},
		{"track", "https://evil.example/track/" + id, "", "not a Spotify track"},
		{"track", "spotify:track:" + id + "x", "", "not a Spotify track"},
	}
	for _, tc := range cases {
		got, err := spotifyRef(tc.kind, tc.in)
		if tc.errPart != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errPart) || exitCode(err) != exitCaller {
				t.Errorf("spotifyRef(%s, %q): %v, want a usage error containing %q", tc.kind, tc.in, err, tc.errPart)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("spotifyRef(%s, %q) = %q, %v", tc.kind, tc.in, got, err)
		}
	}
}

func TestSpotifyNext(t *testing.T) {
	cases := []struct {
		link, path string
		ok         bool
	}{
		{"http://sluice/v1/spotify/v1/artists/X/albums?offset=10&limit=10", "v1/artists/X/albums", true},
		{"/v1/spotify/v1/search?q=a&offset=5", "v1/search", true},
		{"https://api.spotify.com/v1/artists/X/albums?offset=10", "", false},
		{"http://evil.example/v1/spotify/v1/search", "", false},
		{"http://sluice/v1/ineo/spotify.php", "", false},
	}
	for _, tc := range cases {
		path, _, err := spotifyNext(tc.link)
		if (err == nil) != tc.ok || path != tc.path {
			t.Errorf("spotifyNext(%q) = %q, %v", tc.link, path, err)
		}
	}
}

// spFakeAlbums serves an artist's albums in pages of limit, with next links
// back to the daemon as sluiced writes them.
func spFakeAlbums(total int, nextHost string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		off, _ := strconv.Atoi(q.Get("offset"))
		limit, _ := strconv.Atoi(q.Get("limit"))
		if limit == 0 {
			limit = 5
		}
		items := []map[string]any{}
		for i := off; i < total && i < off+limit; i++ {
			items = append(items, map[string]any{"id": fmt.Sprintf("album%02d", i), "name": fmt.Sprintf("Album %d", i),
				"album_type": "album", "album_group": "appears_on", "release_date": "2020-01-02", "total_tracks": 9,
				"artists": []map[string]string{{"name": "BTS"}}})
		}
		page := map[string]any{"href": "http://sluice" + r.URL.String(), "items": items, "limit": limit, "offset": off, "total": total, "next": nil, "previous": nil}
		if off+limit < total {
			page["next"] = fmt.Sprintf("http://%s%s?offset=%d&limit=%d", nextHost, r.URL.Path, off+limit, limit)
		}
		writeJSON(w, 200, page)
	}
}

func TestSpotifyAlbumsAll(t *testing.T) {
	const id = "3Nrfpe0tUJi4K4DXYWgMUX"
	d := newFakeDaemon(t, spFakeAlbums(23, "sluice"))
	r := runCtl(t, d.socket, "", "--json", "spotify", "albums", "spotify:artist:"+id, "--all", "--groups", "album,appears_on")
	if r.code != 0 {
		t.Fatalf("albums --all: %+v", r)
	}
	var p spPage
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || len(p.Items) != 23 || p.Next != nil || p.Total != 23 {
		t.Fatalf("merged page: %v %s", err, r.stdout)
	}
	seen := d.requests()
	if len(seen) != 3 {
		t.Fatalf("%d requests, want 3 pages of 10", len(seen))
	}
	for i, s := range seen {
		if s.Path != "/v1/spotify/v1/artists/"+id+"/albums" || s.Query.Get("limit") != "10" {
			t.Fatalf("request %d: %+v", i, s)
		}
	}
	if seen[0].Query.Get("include_groups") != "album,appears_on" {
		t.Fatalf("groups not sent: %v", seen[0].Query)
	}

	r = runCtl(t, d.socket, "", "spotify", "albums", id, "--limit", "3")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ALBUMS: 3 of 23 (offset 0)\n") || !strings.Contains(r.stdout, "album (appears_on)") ||
		strings.Count(r.stdout, "\n") != 5 {
		t.Fatalf("albums table: %+v", r)
	}
}

func TestSpotifyWalkRefusesForeignLinks(t *testing.T) {
	d := newFakeDaemon(t, spFakeAlbums(23, "api.spotify.com"))
	r := runCtl(t, d.socket, "", "spotify", "albums", "3Nrfpe0tUJi4K4DXYWgMUX", "--all")
	if r.code != exitUpstream || !strings.Contains(r.stderr, "does not lead back through sluiced") {
		t.Fatalf("foreign next link: %+v", r)
	}
	if n := len(d.requests()); n != 1 {
		t.Fatalf("%d requests: followed a foreign link", n)
	}
}

func TestSpotifyErrors(t *testing.T) {
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/v1/tracks/0000000000000000000000"):
			writeJSON(w, 404, map[string]any{"error": map[string]any{"status": 404, "message": "Resource not found"}})
		case strings.HasPrefix(r.URL.Path, "/v1/spotify/v1/search"):
			problem.Write(w, problem.RateLimited(3600e9, "Spotify answered 429 with Retry-After 1h0m0s"))
		default:
			writeJSON(w, 500, map[string]any{"error": map[string]any{"status": 500, "message": "Server error."}})
		}
	})
	cases := []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"spotify", "track", "0000000000000000000000"}, exitCaller, "HTTP 404 Not Found: Spotify: Resource not found"},
		{[]string{"spotify", "search", "BTS"}, exitRateLimited, "retry after 3600s"},
		{[]string{"spotify", "album", "0000000000000000000001"}, exitUpstream, "HTTP 500"},
		{[]string{"spotify", "search", "BTS", "--type", "singer"}, exitCaller, "--type \"singer\""},
		{[]string{"spotify", "albums", "0000000000000000000001", "--groups", "ep"}, exitCaller, "--groups \"ep\""},
		{[]string{"spotify", "artist", "nope"}, exitCaller, "not a Spotify artist"},
	}
	for _, tc := range cases {
		r := runCtl(t, d.socket, "", tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) || strings.Count(r.stderr, "\n") > 2 {
			t.Errorf("%v: %+v, want exit %d and %q", tc.args, r, tc.code, tc.stderr)
		}
	}
	// Usage errors sent nothing.
	if n := len(d.requests()); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
}

func TestSpotifySearchTables(t *testing.T) {
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		page := func(items ...map[string]any) map[string]any {
			return map[string]any{"href": "http://sluice/x", "items": items, "limit": 5, "offset": 0, "total": len(items) + 10, "next": nil, "previous": nil}
		}
		writeJSON(w, 200, map[string]any{
			"artists": page(map[string]any{"id": "a1", "name": "BTS", "popularity": 90, "followers": map[string]any{"href": nil, "total": 1234}, "genres": []string{"k-pop"}}),
			"tracks": page(map[string]any{"id": "t1", "name": "Dynamite", "duration_ms": 199054, "artists": []map[string]string{{"name": "BTS"}},
				"album": map[string]string{"name": "BE"}}),
		})
	})
	r := runCtl(t, d.socket, "", "spotify", "search", "BTS", "--type", "artist,track", "--market", "KR")
	want := "ARTISTS: 1 of 11 (offset 0)\n" +
		"NAME  POPULARITY  FOLLOWERS  GENRES  ID\n" +
		"BTS   90          1234       k-pop   a1\n" +
		"\n" +
		"TRACKS: 1 of 11 (offset 0)\n" +
		"NAME      ARTISTS  ALBUM  DURATION  ID\n" +
		"Dynamite  BTS      BE     3:19      t1\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("search table:\n%s\nwant:\n%s\n%+v", r.stdout, want, r)
	}
	q := d.requests()[0].Query
	if q.Get("q") != "BTS" || q.Get("type") != "artist,track" || q.Get("market") != "KR" || q.Has("limit") {
		t.Fatalf("query %v", q)
	}
	r = runCtl(t, d.socket, "", "--json", "spotify", "search", "BTS")
	if r.code != 0 || !strings.HasPrefix(r.stdout, `{"artists":`) {
		t.Fatalf("--json is not the daemon's body: %+v", r)
	}
}

func TestSpotifyDownload(t *testing.T) {
	const id = "2RzoBbbGTK7OgBSHci53be"
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/spotify/v1/tracks/" + id:
			writeJSON(w, 200, map[string]any{"id": id, "name": "Crystal Heart", "duration_ms": 200000, "explicit": false,
				"artists": []map[string]string{{"name": "BTS"}}, "album": map[string]string{"name": "Crystal Heart"}, "uri": "spotify:track:" + id})
		case "/v1/ineo/spotify.php":
			w.Header().Set("Cache-Status", "sluice; fwd=miss; stored")
			writeJSON(w, 200, envelopeBody(200, "successfully", map[string]any{"download_link": "http://dl.example/" + id + ".mp3"}))
		default:
			http.NotFound(w, r)
		}
	})
	r := runCtl(t, d.socket, "", "spotify", "download", "https://open.spotify.com/track/"+id)
	if r.code != 0 || !spHasRow(r.stdout, "download", "http://dl.example/"+id+".mp3") || !spHasRow(r.stdout, "artists", "BTS") ||
		!spHasRow(r.stdout, "cache", "miss (sluice; fwd=miss; stored)") {
		t.Fatalf("download: %+v", r)
	}
	seen := d.requests()
	if len(seen) != 2 || seen[1].Query.Get("trackId") != id {
		t.Fatalf("requests %+v", seen)
	}
	r = runCtl(t, d.socket, "", "--json", "spotify", "download", id)
	var both struct {
		Track struct{ ID string } `json:"track"`
		Ineo  struct {
			StatusCode int `json:"status_code"`
		} `json:"ineo"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &both) != nil || both.Track.ID != id || both.Ineo.StatusCode != 200 {
		t.Fatalf("download --json: %+v", r)
	}
}

// spHasRow reports whether a key/value table has the row key → value.
func spHasRow(out, key, value string) bool {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == key && strings.Join(f[1:], " ") == value {
			return true
		}
	}
	return false
}
