package main

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/core/provider"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// TestOwnLinksAreAccepted walks every paged operation from a first call
// without limit to the last page by following next, against the
// simulator: a caller who never chose a page size must get every item, and
// no next or previous link sluice wrote may be refused by sluice itself.
// search_max_limit = 3 is below Spotify's default search page of 5, the
// case that used to end the walk after the first page with "limit must be
// a whole number from 1 to 3".
func TestOwnLinksAreAccepted(t *testing.T) {
	const public = "http://sluice/v1/spotify/"
	cases := []struct {
		name  string
		extra map[string]any
		op    string
		path  string
		q     url.Values
		// field is the paging object's key in a search answer, "" when
		// the answer is the paging object itself.
		field string
		// max is the largest page the operation accepts under extra; want
		// the items the walk must cover, 0 for the first page's total.
		max, want int
	}{
		{"search below Spotify's default page", map[string]any{"search_max_limit": 3}, "search", "v1/search",
			url.Values{"q": {"BTS"}, "type": {"artist"}}, "artists", 3, 0},
		{"search of two types below the default page", map[string]any{"search_max_limit": 3}, "search", "v1/search",
			url.Values{"q": {"Tania Bowra"}, "type": {"track,artist"}}, "tracks", 3, 0},
		{"search at the default cap", nil, "search", "v1/search",
			url.Values{"q": {"BTS"}, "type": {"artist"}}, "artists", 10, 0},
		{"an artist's albums", map[string]any{"search_max_limit": 3}, "artist.albums", "v1/artists/" + spotifysim.Artist95ID + "/albums",
			nil, "", 10, spotifysim.Artist95Albums},
		{"an album's tracks", nil, "album.tracks", "v1/albums/" + spotifysim.MilesDavisCompleteSessions + "/tracks",
			nil, "", 50, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, "", tc.extra)
			cfg := h.p.config()
			path, q := tc.path, tc.q
			seen := map[string]bool{}
			total, pages := -1, 0
			for {
				if pages++; pages > 200 {
					t.Fatal("more than 200 pages")
				}
				rec, err := h.call(tc.op, path, q)
				if err != nil || rec.status != 200 {
					t.Fatalf("page %d (%s?%s): status %d, %v", pages, path, q.Encode(), rec.status, err)
				}
				body := rec.body.Bytes()
				if tc.field != "" {
					var m map[string]json.RawMessage
					if err := json.Unmarshal(body, &m); err != nil {
						t.Fatal(err)
					}
					body = m[tc.field]
				}
				var p struct {
					Items []struct {
						ID string `json:"id"`
					} `json:"items"`
					Total, Limit   int
					Next, Previous *string
				}
				if err := json.Unmarshal(body, &p); err != nil {
					t.Fatalf("page %d: %v: %s", pages, err, body)
				}
				if p.Limit < 1 || p.Limit > tc.max || len(p.Items) > tc.max {
					// Not fatal: the walk goes on to show whether the link
					// holding this limit is refused too.
					t.Errorf("page %d: limit %d, %d items; want at most %d", pages, p.Limit, len(p.Items), tc.max)
				}
				if total < 0 {
					total = p.Total
				}
				for _, it := range p.Items {
					seen[it.ID] = true
				}
				// previous is checked as the plugin would check it, not
				// fetched: the walk forward fetches every page already.
				if p.Previous != nil {
					op, pp, pq := linkCall(t, public, *p.Previous)
					if _, _, err := validate(&provider.Request{Operation: op, Method: "GET", Path: pp, Params: pq}, cfg); err != nil {
						t.Fatalf("page %d: previous link %s refused: %v", pages, *p.Previous, err)
					}
				}
				if p.Next == nil {
					break
				}
				_, path, q = linkCall(t, public, *p.Next)
			}
			want := tc.want
			if want == 0 {
				want = total
			}
			t.Logf("walked %d distinct items in %d pages", len(seen), pages)
			if len(seen) != want || total != want || pages < 2 {
				t.Fatalf("walked %d distinct items in %d pages; total %d, want %d (more than one page)", len(seen), pages, total, want)
			}
		})
	}
}

// linkCall turns a link sluice wrote into the call it makes: the operation
// (search or a paged one), the path below public and the parameters.
func linkCall(t *testing.T, public, link string) (op, path string, q url.Values) {
	t.Helper()
	if !strings.HasPrefix(link, public) {
		t.Fatalf("link %q is not under %s", link, public)
	}
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	path = strings.TrimPrefix(u.Path, strings.TrimSuffix(mustPath(t, public), "/")+"/")
	switch {
	case path == "v1/search":
		op = "search"
	case strings.HasSuffix(path, "/albums"):
		op = "artist.albums"
	case strings.HasSuffix(path, "/tracks"):
		op = "album.tracks"
	default:
		t.Fatalf("link %q is no paged call", link)
	}
	return op, path, u.Query()
}

func mustPath(t *testing.T, s string) string {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u.Path
}

// TestNoNextPastSearchEnd: near search's last offset (1000) Spotify still
// writes a next link starting past it, which sluice (and Spotify) would
// refuse; sluice hands out null instead, and every link it does hand out
// validates.
func TestNoNextPastSearchEnd(t *testing.T) {
	const public = "http://sluice/v1/spotify/"
	h := newHarness(t, "", map[string]any{"search_max_limit": 3})
	cfg := h.p.config()
	for _, tc := range []struct {
		offset   string
		wantNext bool
	}{{"996", true}, {"997", true}, {"998", false}, {"999", false}, {"1000", false}} {
		rec, err := h.call("search", "v1/search", url.Values{"q": {"BTS"}, "type": {"track"}, "offset": {tc.offset}})
		if err != nil || rec.status != 200 {
			t.Fatalf("offset %s: status %d, %v", tc.offset, rec.status, err)
		}
		var m struct {
			Tracks struct {
				Total          int
				Next, Previous *string
			}
		}
		if err := json.Unmarshal(rec.body.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		if m.Tracks.Total <= 1003 {
			t.Fatalf("the simulator's BTS tracks total %d; the test needs more than 1003", m.Tracks.Total)
		}
		if got := m.Tracks.Next != nil; got != tc.wantNext {
			t.Errorf("offset %s: next %v, want a link: %v", tc.offset, m.Tracks.Next, tc.wantNext)
		}
		for _, link := range []*string{m.Tracks.Next, m.Tracks.Previous} {
			if link == nil {
				continue
			}
			op, pp, pq := linkCall(t, public, *link)
			if _, _, err := validate(&provider.Request{Operation: op, Method: "GET", Path: pp, Params: pq}, cfg); err != nil {
				t.Errorf("offset %s: link %s refused: %v", tc.offset, *link, err)
			}
		}
	}
}
