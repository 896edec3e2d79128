package main

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// shapeCalls is one call of every operation Describe lists.
var shapeCalls = []struct {
	op, path string
	q        url.Values
}{
	{"search", "v1/search", url.Values{"q": {"BTS"}, "type": {"artist,track,album,playlist,show,episode,audiobook"}}},
	{"artist", "v1/artists/" + spotifysim.Artist95ID, nil},
	{"artist.albums", "v1/artists/" + spotifysim.Artist95ID + "/albums", nil},
	{"album", "v1/albums/" + spotifysim.SampleAlbumID, nil},
	{"album.tracks", "v1/albums/" + spotifysim.SampleAlbumID + "/tracks", nil},
	{"track", "v1/tracks/" + spotifysim.SampleTrackID, nil},
	{"tracks", "v1/tracks", url.Values{"ids": {spotifysim.SampleTrackID + ",0000000000000000000000"}}},
	{"albums", "v1/albums", url.Values{"ids": {spotifysim.SampleAlbumID}}},
	{"artists", "v1/artists", url.Values{"ids": {spotifysim.Artist95ID + "," + spotifysim.TaniaBowraID}}},
}

// TestNotTheDocumentedAnswerIs502 is what a 200 that is not Spotify's
// answer gets: a 502 problem, nothing written (so nothing for the gateway
// to cache), for every operation; the next call reaches Spotify again and
// is relayed. The documented answers of every operation still pass.
func TestNotTheDocumentedAnswerIs502(t *testing.T) {
	if len(shapeCalls) != len(new(spotify).Describe().Operations) {
		t.Fatalf("%d calls for %d operations: every operation needs one", len(shapeCalls), len(new(spotify).Describe().Operations))
	}
	bad := []struct {
		name              string
		status            int
		contentType, body string
	}{
		{"truncated JSON", http.StatusOK, "", spotifysim.TruncatedJSON},
		{"captive portal", http.StatusOK, "text/html; charset=utf-8", spotifysim.CaptivePortalHTML},
		{"JSON of another shape", http.StatusOK, "", `{"status_code":200,"result":[true]}`},
		{"blank", http.StatusOK, "", "\n"},
		// net/http sends no body with a 204, whatever the handler writes.
		{"204 No Content", http.StatusNoContent, "", "-"},
	}
	h := newHarness(t, "", nil)
	for _, c := range shapeCalls {
		for _, b := range bad {
			t.Run(c.op+"/"+b.name, func(t *testing.T) {
				before := h.sim.Counts().APIRequests
				h.sim.ForceBody(b.status, b.contentType, b.body)
				rec, err := h.call(c.op, c.path, c.q)
				var p *problem.Problem
				if !errors.As(err, &p) || p.Status != http.StatusBadGateway || !strings.Contains(p.Detail, "not the JSON the Web API documents") {
					t.Fatalf("err %v, want a 502 problem", err)
				}
				if rec.status != 0 || rec.body.Len() != 0 || rec.hint.Cacheable {
					t.Fatalf("answer written: %d %+v %q", rec.status, rec.hint, rec.body.String())
				}
				if got := h.sim.Counts().APIRequests - before; got != 1 {
					t.Fatalf("%d API requests, want 1 (a broken 200 is not retried)", got)
				}
				rec, err = h.call(c.op, c.path, c.q)
				if err != nil || rec.status != http.StatusOK || !rec.hint.Cacheable {
					t.Fatalf("next call: status %d hint %+v err %v", rec.status, rec.hint, err)
				}
				if got := h.sim.Counts().APIRequests - before; got != 2 {
					t.Fatalf("%d API requests, want 2", got)
				}
			})
		}
	}
}

func TestCheckShape(t *testing.T) {
	const page = `{"href":"h","items":[],"limit":1,"next":null,"offset":0,"previous":null,"total":0}`
	cases := []struct {
		op    string
		types string
		body  string
		ok    bool
	}{
		{"track", "", `{"id":"x","type":"track"}`, true},
		{"track", "", `{"id":"x","type":"episode"}`, false},
		{"track", "", `{"type":"track"}`, false},
		{"track", "", `{"id":null,"type":"track"}`, false},
		{"track", "", `[{"id":"x","type":"track"}]`, false},
		{"track", "", `null`, false},
		{"track", "", `{"id":"x","type":"track"} {}`, false},
		{"album", "", `{"id":"x","type":"album"}`, true},
		{"album", "", `{"id":"x","type":"track"}`, false},
		{"artist", "", `{"id":"x","type":"artist"}`, true},
		{"album.tracks", "", page, true},
		{"album.tracks", "", `{"href":"h","items":null}`, false},
		{"artist.albums", "", `{"items":[]}`, false},
		{"search", "track,artist", `{"tracks":` + page + `,"artists":` + page + `}`, true},
		{"search", "track,artist", `{"tracks":` + page + `}`, false},
		{"search", "track", `{"tracks":[]}`, false},
		{"search", "track", `{"tracks":{"href":"h"}}`, false},
		{"tracks", "", `{"tracks":[{"id":"x"},null]}`, true},
		{"tracks", "", `{"tracks":[]}`, true},
		{"tracks", "", `{"tracks":["x"]}`, false},
		{"tracks", "", `{"albums":[]}`, false},
		{"albums", "", `{"albums":[null]}`, true},
		{"artists", "", `{"artists":{}}`, false},
		{"unknown", "", `{}`, false},
	}
	for _, tc := range cases {
		err := checkShape(tc.op, url.Values{"type": {tc.types}}, []byte(tc.body))
		if (err == nil) != tc.ok {
			t.Errorf("%s %s: err %v, want ok=%v", tc.op, tc.body, err, tc.ok)
		}
	}
}
