package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// TestAnswersMatchTheOpenAPIDescription sends a spread of catalogue requests
// to the simulator and validates every answer: successes against their
// operation's response schema, errors against the shared error responses.
func TestAnswersMatchTheOpenAPIDescription(t *testing.T) {
	ctx := context.Background()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile("../testdata/spotify-web-api.openapi.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(ctx); err != nil {
		t.Fatalf("the description itself: %v", err)
	}
	sim, apiURL, accountsURL, err := spotifysim.Start(spotifysim.Options{Limit: spotifysim.Limit{Requests: 1000, Window: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	// Route against the simulator instead of api.spotify.com.
	doc.Servers = openapi3.Servers{{URL: apiURL + "/v1"}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	token := fetchToken(t, accountsURL)

	const (
		artist = spotifysim.Artist95ID
		album  = spotifysim.SampleAlbumID
		track  = spotifysim.SampleTrackID
	)
	cases := []struct {
		path   string
		auth   bool
		status int
		// errorResponse names the components/responses entry an error
		// answer must match when the operation does not list its status.
		errorResponse string
	}{
		{"/v1/search?q=BTS&type=artist&limit=5", true, 200, ""},
		{"/v1/search?q=BTS&type=album,track,playlist,show,episode,audiobook&market=KR&limit=10&offset=3", true, 200, ""},
		{"/v1/search?q=" + url.QueryEscape(`artist:"Miles Davis" year:1980-1990`) + "&type=track,album&limit=10", true, 200, ""},
		{"/v1/artists/" + artist, true, 200, ""},
		{"/v1/artists/" + artist + "/albums", true, 200, ""},
		{"/v1/artists/" + artist + "/albums?include_groups=appears_on,compilation&market=JP&limit=10&offset=10", true, 200, ""},
		{"/v1/albums/" + album, true, 200, ""},
		{"/v1/albums/" + spotifysim.MilesDavisCompleteSessions + "?market=US", true, 200, ""},
		{"/v1/albums/" + spotifysim.MilesDavisCompleteSessions + "/tracks?limit=50&offset=50&market=KR", true, 200, ""},
		{"/v1/tracks/" + track, true, 200, ""},
		{"/v1/tracks/" + track + "?market=SE", true, 200, ""},
		// Several by ids, known ids only: Spotify answers null for an
		// unknown one, which ManyTracks/ManyAlbums/ManyArtists do not allow
		// for (only ManyAudiobooks' description mentions it).
		{"/v1/tracks?ids=" + track + "," + track + "&market=KR", true, 200, ""},
		{"/v1/albums?ids=" + album + "," + spotifysim.MilesDavisCompleteSessions, true, 200, ""},
		{"/v1/artists?ids=" + artist + "," + spotifysim.TaniaBowraID, true, 200, ""},
		{"/v1/tracks?ids=" + track + ",abc", true, 400, "BadRequest"},
		{"/v1/tracks/" + track, false, 401, ""},
		{"/v1/tracks/abc", true, 400, "BadRequest"},
		{"/v1/search?q=BTS&type=artist&limit=11", true, 400, "BadRequest"},
		{"/v1/tracks/0000000000000000000000", true, 404, "NotFound"},
		// Last, under a window of 1 per minute: the rolling limit's 429.
		{"/v1/tracks/" + track, true, 429, ""},
	}
	for i, tc := range cases {
		if i == len(cases)-1 {
			sim.SetLimit(spotifysim.Limit{Requests: 1, Window: time.Minute})
		}
		t.Run(tc.path, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %.300s", resp.StatusCode, tc.status, body)
			}
			if tc.errorResponse != "" {
				validateAgainst(t, doc, tc.errorResponse, body)
				return
			}
			route, params, err := router.FindRoute(req)
			if err != nil {
				t.Fatalf("no route: %v", err)
			}
			in := &openapi3filter.ResponseValidationInput{
				RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
					Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
				Status: resp.StatusCode,
				Header: resp.Header,
				Body:   io.NopCloser(bytes.NewReader(body)),
				// A status the operation does not document is a failure too.
				Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
			}
			if err := openapi3filter.ValidateResponse(ctx, in); err != nil {
				t.Fatalf("answer does not match the description: %v\n%.500s", err, body)
			}
			if strings.HasPrefix(tc.path, "/v1/search") && resp.StatusCode == 200 {
				// Each requested type has its page.
				var m map[string]json.RawMessage
				if json.Unmarshal(body, &m) != nil {
					t.Fatal("search answer is not an object")
				}
				q, _ := url.ParseQuery(strings.SplitN(tc.path, "?", 2)[1])
				if got, want := len(m), len(strings.Split(q.Get("type"), ",")); got != want {
					t.Fatalf("%d pages for %d types", got, want)
				}
			}
		})
	}
}

// TestValidatorIsNotVacuous: the same validation rejects an answer that
// breaks the description, so a pass above means something.
func TestValidatorIsNotVacuous(t *testing.T) {
	ctx := context.Background()
	doc, err := openapi3.NewLoader().LoadFromFile("../testdata/spotify-web-api.openapi.yml")
	if err != nil {
		t.Fatal(err)
	}
	doc.Servers = openapi3.Servers{{URL: "http://sim.invalid/v1"}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://sim.invalid/v1/artists/"+spotifysim.Artist95ID+"/albums", nil)
	route, params, err := router.FindRoute(req)
	if err != nil {
		t.Fatal(err)
	}
	item := `{"album_type":"%s","total_tracks":1,"available_markets":["KR"],"external_urls":{"spotify":"x"},"href":"x","id":"x",` +
		`"images":[],"name":"x","release_date":"2020","release_date_precision":"year","type":"album","uri":"x","artists":[]%s}`
	page := `{"href":"x","limit":1,"next":null,"offset":0,"previous":null,"total":1,"items":[` + item + `]}`
	cases := []struct {
		name string
		body string
		ok   bool
	}{
		{"valid", fmt.Sprintf(page, "album", `,"album_group":"album"`), true},
		{"album_type not in the enum", fmt.Sprintf(page, "ep", `,"album_group":"album"`), false},
		{"album_group missing", fmt.Sprintf(page, "album", ""), false},
	}
	for _, tc := range cases {
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
			Status:                 200,
			Header:                 http.Header{"Content-Type": {"application/json"}},
			Body:                   io.NopCloser(strings.NewReader(tc.body)),
			Options:                &openapi3filter.Options{IncludeResponseStatus: true},
		}
		if err := openapi3filter.ValidateResponse(ctx, in); (err == nil) != tc.ok {
			t.Errorf("%s: validation error %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// validateAgainst checks body against the JSON schema of a shared response
// (components/responses/NAME, application/json).
func validateAgainst(t *testing.T, doc *openapi3.T, name string, body []byte) {
	t.Helper()
	ref := doc.Components.Responses[name]
	if ref == nil || ref.Value == nil {
		t.Fatalf("no components/responses/%s", name)
	}
	mt := ref.Value.Content.Get("application/json")
	if mt == nil || mt.Schema == nil {
		t.Fatalf("components/responses/%s has no JSON schema", name)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("not JSON: %s", body)
	}
	if err := mt.Schema.Value.VisitJSON(v); err != nil {
		t.Fatalf("answer does not match components/responses/%s: %v\n%s", name, err, body)
	}
}

func fetchToken(t *testing.T, accountsURL string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, accountsURL+"/api/token", strings.NewReader("grant_type=client_credentials"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(spotifysim.DefaultClientID, spotifysim.DefaultClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || ans.AccessToken == "" {
		t.Fatalf("token: %d %v", resp.StatusCode, err)
	}
	return ans.AccessToken
}
