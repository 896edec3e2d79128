package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// TestSpotifyOwnLinks: with search_max_limit = 3, below Spotify's default
// search page of 5, a caller who never chose a limit walks a search and an
// artist's albums to the end by following next with a plain HTTP client.
// Every page answers 200, the walk covers every item the simulator's
// catalogue holds, no page exceeds the operation's cap, and each page costs
// exactly one upstream request. Before the plugin named the page size
// itself, the search's first next link (limit=5) was refused with "limit
// must be a whole number from 1 to 3".
func TestSpotifyOwnLinks(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{extra: "search_max_limit = 3"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hc := e.Client.HTTPClient()
	const base = "http://sluice/v1/spotify/v1/"

	cases := []struct {
		name, first string
		// field is the paging object's key in a search answer, "" when
		// the answer is the paging object itself.
		field string
		// max is the largest page the operation accepts: search_max_limit
		// for search, Spotify's 10 for an artist's albums.
		max int
		// want is the simulator's own count of the items.
		want int
	}{
		{"search", base + "search?q=BTS&type=artist", "artists", 3,
			ownLinksCatalogueTotal(t, "/v1/search?q=BTS&type=artist&limit=1", "artists")},
		{"an artist's albums", base + "artists/" + spotifysim.Artist95ID + "/albums", "", 10, spotifysim.Artist95Albums},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.Sim.Counts().APIRequests
			seen := map[string]bool{}
			pages := 0
			var last spPageJSON
			for next := tc.first; next != ""; {
				if pages++; pages > 50 {
					t.Fatal("more than 50 pages")
				}
				last = ownLinksPage(ctx, t, hc, next, tc.field)
				if last.Limit < 1 || last.Limit > tc.max || len(last.Items) > tc.max {
					// Not fatal: the walk goes on to show whether the next
					// link, holding this limit, is refused too.
					t.Errorf("page %d (%s): limit %d, %d items; want at most %d", pages, next, last.Limit, len(last.Items), tc.max)
				}
				for _, raw := range last.Items {
					var it struct {
						ID string `json:"id"`
					}
					if err := json.Unmarshal(raw, &it); err != nil || it.ID == "" {
						t.Fatalf("page %d: item %s, %v", pages, raw, err)
					}
					seen[it.ID] = true
				}
				next = ""
				if last.Next != nil {
					next = *last.Next
					if !strings.HasPrefix(next, base) {
						t.Fatalf("next link %q leaves sluice", next)
					}
				}
			}
			t.Logf("%d items in %d pages", len(seen), pages)
			if len(seen) != tc.want || last.Total != tc.want || pages < 2 {
				t.Fatalf("walked %d distinct items in %d pages, total %d; the catalogue holds %d (more than one page)",
					len(seen), pages, last.Total, tc.want)
			}
			if got := e.Sim.Counts().APIRequests - before; got != pages {
				t.Fatalf("%d upstream requests for %d pages", got, pages)
			}
			// The way back is sluice's own link too.
			if last.Previous == nil {
				t.Fatal("last page without previous")
			}
			ownLinksPage(ctx, t, hc, *last.Previous, tc.field)
		})
	}
}

// ownLinksPage fetches a link sluice wrote with a plain client and returns
// its paging object; anything but a 200 fails the test.
func ownLinksPage(ctx context.Context, t *testing.T, hc *http.Client, link, field string) spPageJSON {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %d, %v: %s", link, resp.StatusCode, err, body)
	}
	if field != "" {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		body = m[field]
	}
	return spDecode[spPageJSON](t, body)
}

// ownLinksCatalogueTotal asks a simulator of its own (the same generated catalogue,
// outside the daemon's budget and the test's request counts) how many items
// a paged answer holds.
func ownLinksCatalogueTotal(t *testing.T, path, field string) int {
	t.Helper()
	sim := spotifysim.New(spotifysim.Options{})
	api := httptest.NewServer(sim.APIHandler())
	acc := httptest.NewServer(sim.AccountsHandler())
	defer func() { api.Close(); acc.Close(); sim.Close() }()
	req, _ := http.NewRequest(http.MethodPost, acc.URL+"/api/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(spotifysim.DefaultClientID, spotifysim.DefaultClientSecret)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := ownLinksGetJSON(req, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token: %v", err)
	}
	req, _ = http.NewRequest(http.MethodGet, api.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	var m map[string]spPageJSON
	if err := ownLinksGetJSON(req, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m[field].Total
}

func ownLinksGetJSON(req *http.Request, v any) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: status %d", req.Method, req.URL.Path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
