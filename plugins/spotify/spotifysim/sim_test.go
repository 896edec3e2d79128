package spotifysim

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// env is a started simulator and a plain client.
type env struct {
	sim           *Sim
	api, accounts string
}

func start(t *testing.T, o Options) *env {
	t.Helper()
	s, api, acc, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return &env{sim: s, api: api, accounts: acc}
}

func do(t *testing.T, req *http.Request) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func (e *env) tokenRequest(t *testing.T, method, contentType, body string, basic *[2]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.accounts+"/api/token", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if basic != nil {
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(basic[0]+":"+basic[1])))
	}
	status, _, b := do(t, req)
	return status, b
}

func (e *env) token(t *testing.T) string {
	t.Helper()
	status, b := e.tokenRequest(t, "POST", "application/x-www-form-urlencoded", "grant_type=client_credentials", &[2]string{DefaultClientID, DefaultClientSecret})
	var ans tokenAnswer
	if status != 200 || json.Unmarshal(b, &ans) != nil || ans.AccessToken == "" {
		t.Fatalf("token: %d %s", status, b)
	}
	return ans.AccessToken
}

func (e *env) get(t *testing.T, path, auth string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", e.api+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return do(t, req)
}

func TestTokenEndpoint(t *testing.T) {
	e := start(t, Options{TokenLifetime: 90 * time.Minute})
	form := "application/x-www-form-urlencoded"
	good := &[2]string{DefaultClientID, DefaultClientSecret}
	cases := []struct {
		name, method, ct, body string
		basic                  *[2]string
		status                 int
		errCode, desc          string
	}{
		{"basic auth", "POST", form, "grant_type=client_credentials", good, 200, "", ""},
		{"form credentials", "POST", form, "grant_type=client_credentials&client_id=" + DefaultClientID + "&client_secret=" + DefaultClientSecret, nil, 200, "", ""},
		{"wrong secret", "POST", form, "grant_type=client_credentials", &[2]string{DefaultClientID, "nope"}, 400, "invalid_client", "Invalid client secret"},
		{"wrong id", "POST", form, "grant_type=client_credentials", &[2]string{"nope", DefaultClientSecret}, 400, "invalid_client", "Invalid client"},
		{"no credentials", "POST", form, "grant_type=client_credentials", nil, 400, "invalid_client", "Invalid client"},
		{"no grant_type", "POST", form, "", good, 400, "unsupported_grant_type", "grant_type parameter is missing"},
		{"other grant_type", "POST", form, "grant_type=password", good, 400, "unsupported_grant_type", ""},
		{"JSON body", "POST", "application/json", `{"grant_type":"client_credentials"}`, good, 400, "invalid_request", ""},
		{"GET", "GET", "", "", good, 405, "invalid_request", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, b := e.tokenRequest(t, tc.method, tc.ct, tc.body, tc.basic)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, b)
			}
			if tc.status == 200 {
				var ans tokenAnswer
				if err := json.Unmarshal(b, &ans); err != nil || ans.TokenType != "bearer" || ans.ExpiresIn != 5400 || ans.AccessToken == "" {
					t.Fatalf("answer %s", b)
				}
				return
			}
			var oe oauthError
			if err := json.Unmarshal(b, &oe); err != nil || oe.Error != tc.errCode || (tc.desc != "" && oe.Description != tc.desc) {
				t.Fatalf("error %s, want %s %q", b, tc.errCode, tc.desc)
			}
		})
	}
	if got := e.sim.Counts().TokenRequests; got != len(cases) {
		t.Fatalf("token requests %d, want %d", got, len(cases))
	}
}

func apiErr(t *testing.T, b []byte) errorObject {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("not an error object: %s", b)
	}
	return e.Error
}

func TestBearerChecks(t *testing.T) {
	e := start(t, Options{})
	tok := e.token(t)
	path := "/v1/artists/" + Artist95ID
	cases := []struct {
		name, auth string
		status     int
		message    string
	}{
		{"valid", "Bearer " + tok, 200, ""},
		{"scheme in any case", "bearer " + tok, 200, ""},
		{"missing", "", 401, "No token provided"},
		{"unknown token", "Bearer BQnot-a-token", 401, "Invalid access token"},
		{"basic instead", "Basic " + base64.StdEncoding.EncodeToString([]byte("a:b")), 400, "Only valid bearer authentication supported"},
	}
	for _, tc := range cases {
		status, _, b := e.get(t, path, tc.auth)
		if status != tc.status {
			t.Fatalf("%s: status %d: %s", tc.name, status, b)
		}
		if tc.message != "" {
			if eo := apiErr(t, b); eo.Status != tc.status || eo.Message != tc.message {
				t.Fatalf("%s: %+v", tc.name, eo)
			}
		}
	}
	e.sim.ExpireTokens()
	status, _, b := e.get(t, path, "Bearer "+tok)
	if eo := apiErr(t, b); status != 401 || eo.Message != "The access token expired" {
		t.Fatalf("expired: %d %s", status, b)
	}
	if c := e.sim.Counts(); c.Unauthorized != 3 {
		t.Fatalf("401 count %d, want 3", c.Unauthorized)
	}
}

func TestTokenLifetimeExpires(t *testing.T) {
	e := start(t, Options{TokenLifetime: 300 * time.Millisecond, Limit: Limit{Requests: 1000, Window: time.Second}})
	tok := e.token(t)
	if status, _, _ := e.get(t, "/v1/tracks/"+SampleTrackID, "Bearer "+tok); status != 200 {
		t.Fatalf("fresh token: %d", status)
	}
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C {
		status, _, b := e.get(t, "/v1/tracks/"+SampleTrackID, "Bearer "+tok)
		if status == 401 {
			if apiErr(t, b).Message != "The access token expired" {
				t.Fatalf("%s", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("token never expired")
		}
	}
}

func TestRollingWindowAndRetryAfter(t *testing.T) {
	e := start(t, Options{Limit: Limit{Requests: 3, Window: 2 * time.Second}, LowerCaseRetryAfter: true})
	auth := "Bearer " + e.token(t)
	for i := range 3 {
		if status, _, b := e.get(t, "/v1/tracks/"+SampleTrackID, auth); status != 200 {
			t.Fatalf("request %d: %d %s", i, status, b)
		}
	}
	status, h, b := e.get(t, "/v1/tracks/"+SampleTrackID, auth)
	if status != 429 || apiErr(t, b).Status != 429 {
		t.Fatalf("4th in window: %d %s", status, b)
	}
	if _, lower := h["Retry-After"]; !lower || h.Get("Retry-After") != "2" {
		t.Fatalf("Retry-After %q", h.Get("Retry-After"))
	}
	if !e.sim.RetryAfterRunning() {
		t.Fatal("no Retry-After running")
	}
	// Arriving during the Retry-After is counted, and refused.
	if status, _, _ := e.get(t, "/v1/tracks/"+SampleTrackID, auth); status != 429 {
		t.Fatalf("during Retry-After: %d", status)
	}
	if c := e.sim.Counts(); c.DuringRetryAfter != 1 || c.Throttled != 2 || c.APIRequests != 5 {
		t.Fatalf("counts %+v", c)
	}
}

func TestInjectedFaults(t *testing.T) {
	e := start(t, Options{})
	auth := "Bearer " + e.token(t)
	path := "/v1/tracks/" + SampleTrackID
	// Faults come after the token check: a request without a token does
	// not consume one.
	e.sim.Force5xx(503, 1)
	if status, _, _ := e.get(t, path, ""); status != 401 {
		t.Fatalf("no token: %d", status)
	}
	e.sim.Force429(-1, 1)
	e.sim.Force429(0, 1)
	e.sim.ForceQuotaExceeded(7)
	status, _, _ := e.get(t, path, auth)
	if status != 503 {
		t.Fatalf("forced 503: %d", status)
	}
	status, h, _ := e.get(t, path, auth)
	if _, has := h["Retry-After"]; status != 429 || has {
		t.Fatalf("429 without header: %d %v", status, h)
	}
	status, h, _ = e.get(t, path, auth)
	if status != 429 || h.Get("Retry-After") != "0" {
		t.Fatalf("429 with 0: %d %v", status, h)
	}
	status, h, b := e.get(t, path, auth)
	if eo := apiErr(t, b); status != 429 || eo.Reason != "QUOTA_EXCEEDED" || h.Get("Retry-After") != "7" {
		t.Fatalf("quota: %d %s", status, b)
	}
	// The quota's Retry-After now runs: even a request without a token is
	// refused (and counted) before its token is looked at.
	if status, _, _ := e.get(t, path, ""); status != 429 {
		t.Fatalf("during the quota Retry-After: %d", status)
	}
	if c := e.sim.Counts(); c.DuringRetryAfter != 1 {
		t.Fatalf("counts %+v", c)
	}
}

func TestServerErrorRetryAfter(t *testing.T) {
	e := start(t, Options{})
	auth := "Bearer " + e.token(t)
	path := "/v1/tracks/" + SampleTrackID
	e.sim.InjectFaults(Fault{Status: 502}, Fault{Status: 503, RetryAfter: 2})
	// A bare 5xx stays bare and starts nothing.
	status, h, _ := e.get(t, path, auth)
	if _, has := h["Retry-After"]; status != 502 || has || e.sim.RetryAfterRunning() {
		t.Fatalf("bare 502: %d %v", status, h)
	}
	status, h, b := e.get(t, path, auth)
	if eo := apiErr(t, b); status != 503 || eo.Status != 503 || h.Get("Retry-After") != "2" || !e.sim.RetryAfterRunning() {
		t.Fatalf("503 with Retry-After: %d %v %s", status, h, b)
	}
	// Arriving before it ends is counted and answered the same 503.
	status, h, _ = e.get(t, path, auth)
	if status != 503 || h.Get("Retry-After") == "" {
		t.Fatalf("during the 503's Retry-After: %d %v", status, h)
	}
	if c := e.sim.Counts(); c.DuringRetryAfter != 1 || c.Throttled != 0 || c.APIRequests != 3 {
		t.Fatalf("counts %+v", c)
	}
}

func TestCanonicalLinks(t *testing.T) {
	e := start(t, Options{APIPrefix: "/p/api", CanonicalLinks: true})
	auth := "Bearer " + e.token(t)
	status, _, b := e.get(t, "/v1/artists/"+Artist95ID+"/albums?limit=10&offset=10", auth)
	var p struct {
		Href, Next, Previous string
		Items                []struct{ Href string }
	}
	if status != 200 || json.Unmarshal(b, &p) != nil || len(p.Items) == 0 {
		t.Fatalf("%d %s", status, b)
	}
	for _, link := range []string{p.Href, p.Next, p.Previous, p.Items[0].Href} {
		if !strings.HasPrefix(link, CanonicalBase+"/") {
			t.Fatalf("link %q, want it under %s", link, CanonicalBase)
		}
	}
	if strings.Contains(string(b), "127.0.0.1") || strings.Contains(string(b), "/p/api") {
		t.Fatalf("the local address leaked into %s", b)
	}
}

func TestCatalogueAndPaging(t *testing.T) {
	e := start(t, Options{APIPrefix: "/p/api", AccountsPrefix: "acc/"})
	if !strings.HasSuffix(e.api, "/p/api") || !strings.HasSuffix(e.accounts, "/acc") {
		t.Fatalf("urls %s %s", e.api, e.accounts)
	}
	auth := "Bearer " + e.token(t)
	// Walk BTS's discography by following next links only.
	next := e.api + "/v1/artists/" + Artist95ID + "/albums?limit=10"
	var ids []string
	for next != "" {
		req, _ := http.NewRequest("GET", next, nil)
		req.Header.Set("Authorization", auth)
		status, _, b := do(t, req)
		var p struct {
			Href, Next string
			Total      int
			Items      []struct {
				ID string
			}
		}
		if status != 200 || json.Unmarshal(b, &p) != nil {
			t.Fatalf("%d %s", status, b)
		}
		if !strings.HasPrefix(p.Href, e.api+"/v1/artists/") || p.Total != Artist95Albums {
			t.Fatalf("href %s total %d", p.Href, p.Total)
		}
		for _, it := range p.Items {
			ids = append(ids, it.ID)
		}
		next = p.Next
	}
	if len(ids) != Artist95Albums {
		t.Fatalf("walked %d albums", len(ids))
	}
	cases := []struct {
		name, path string
		status     int
		message    string
		check      func([]byte) bool
	}{
		{"groups filter", "/v1/artists/" + Artist95ID + "/albums?include_groups=compilation&limit=10", 200, "", func(b []byte) bool {
			return strings.Contains(string(b), `"album_group":"compilation"`) && !strings.Contains(string(b), `"album_group":"single"`)
		}},
		{"market hides albums sold elsewhere", "/v1/artists/" + Artist95ID + "/albums?market=KR&limit=1", 200, "", func(b []byte) bool {
			var p page
			return json.Unmarshal(b, &p) == nil && p.Total < Artist95Albums && p.Total > 80
		}},
		{"album embeds 50 tracks and a next link", "/v1/albums/" + MilesDavisCompleteSessions, 200, "", func(b []byte) bool {
			var a struct{ Tracks page }
			return json.Unmarshal(b, &a) == nil && a.Tracks.Total == 63 && a.Tracks.Limit == 50 && a.Tracks.Next != nil
		}},
		{"track with market says playable", "/v1/tracks/" + SampleTrackID + "?market=KR", 200, "", func(b []byte) bool {
			return strings.Contains(string(b), `"is_playable":true`)
		}},
		{"search types", "/v1/search?q=BTS&type=artist,playlist&limit=2", 200, "", func(b []byte) bool {
			var m map[string]page
			return json.Unmarshal(b, &m) == nil && len(m) == 2 && m["artists"].Total == 7 && m["playlists"].Total == 0 &&
				strings.Contains(*m["artists"].Next, "type=artist") && !strings.Contains(*m["artists"].Next, "playlist")
		}},
		{"search filters", "/v1/search?q=" + url.QueryEscape(`artist:"miles davis" complete`) + "&type=album", 200, "", func(b []byte) bool {
			var m map[string]page
			return json.Unmarshal(b, &m) == nil && m["albums"].Total == 1
		}},
		{"search limit 11", "/v1/search?q=BTS&type=artist&limit=11", 400, "Invalid limit", nil},
		{"search offset 1001", "/v1/search?q=BTS&type=artist&offset=1001", 400, "Invalid offset", nil},
		{"search no q", "/v1/search?type=artist", 400, "No search query", nil},
		{"search bad type", "/v1/search?q=x&type=singer", 400, "Bad search type field singer", nil},
		{"albums limit 11", "/v1/artists/" + Artist95ID + "/albums?limit=11", 400, "Invalid limit", nil},
		{"albums bad group", "/v1/artists/" + Artist95ID + "/albums?include_groups=ep", 400, "Invalid include_groups value: ep", nil},
		{"tracks limit 51", "/v1/albums/" + SampleAlbumID + "/tracks?limit=51", 400, "Invalid limit", nil},
		{"bad market", "/v1/albums/" + SampleAlbumID + "?market=ZZ", 400, "Invalid market code", nil},
		{"bad id", "/v1/tracks/abc", 400, "Invalid base62 id", nil},
		{"unknown id", "/v1/tracks/0000000000000000000000", 404, "Resource not found", nil},
		{"unknown path", "/v1/playlists/" + SampleAlbumID, 404, "Service not found", nil},
		{"outside the prefix", "/../../v1/tracks/" + SampleTrackID, 404, "", nil},
		{"duplicate parameter", "/v1/albums/" + SampleAlbumID + "/tracks?limit=1&limit=2", 400, "Duplicate parameter limit", nil},
		{"several tracks in order, null for unknown", "/v1/tracks?market=KR&ids=" + SampleTrackID + ",0000000000000000000000," + SampleTrackID, 200, "", func(b []byte) bool {
			var m struct{ Tracks []*struct{ ID string } }
			return json.Unmarshal(b, &m) == nil && len(m.Tracks) == 3 && m.Tracks[0].ID == SampleTrackID && m.Tracks[1] == nil &&
				m.Tracks[2].ID == SampleTrackID && strings.Contains(string(b), `"is_playable":true`)
		}},
		{"several albums embed their tracks", "/v1/albums?ids=" + MilesDavisCompleteSessions + "," + SampleAlbumID, 200, "", func(b []byte) bool {
			var m struct {
				Albums []struct {
					ID     string
					Tracks page
				}
			}
			return json.Unmarshal(b, &m) == nil && len(m.Albums) == 2 && m.Albums[0].ID == MilesDavisCompleteSessions &&
				m.Albums[0].Tracks.Total == 63 && m.Albums[0].Tracks.Limit == 50 && m.Albums[1].ID == SampleAlbumID
		}},
		{"several artists", "/v1/artists?ids=" + TaniaBowraID + "," + Artist95ID, 200, "", func(b []byte) bool {
			var m struct{ Artists []struct{ ID, Name string } }
			return json.Unmarshal(b, &m) == nil && len(m.Artists) == 2 && m.Artists[0].ID == TaniaBowraID && m.Artists[1].ID == Artist95ID
		}},
		{"several without ids", "/v1/tracks", 400, "Missing required parameter ids", nil},
		{"several with a bad id", "/v1/artists?ids=" + Artist95ID + ",abc", 400, "Invalid base62 id", nil},
		{"several with an empty id", "/v1/artists?ids=" + Artist95ID + ",", 400, "Invalid base62 id", nil},
		{"21 albums", "/v1/albums?ids=" + strings.Repeat(SampleAlbumID+",", 20) + SampleAlbumID, 400, "Too many ids requested", nil},
		{"20 albums", "/v1/albums?ids=" + strings.Repeat(SampleAlbumID+",", 19) + SampleAlbumID, 200, "", nil},
		{"51 tracks", "/v1/tracks?ids=" + strings.Repeat(SampleTrackID+",", 50) + SampleTrackID, 400, "Too many ids requested", nil},
		{"several bad market", "/v1/tracks?ids=" + SampleTrackID + "&market=ZZ", 400, "Invalid market code", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, _, b := e.get(t, tc.path, auth)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, b)
			}
			if tc.message != "" && apiErr(t, b).Message != tc.message {
				t.Fatalf("message %s, want %q", b, tc.message)
			}
			if tc.check != nil && !tc.check(b) {
				t.Fatalf("unexpected answer: %.600s", b)
			}
		})
	}
	req, _ := http.NewRequest("POST", e.api+"/v1/tracks/"+SampleTrackID, nil)
	req.Header.Set("Authorization", auth)
	if status, _, b := do(t, req); status != 405 || apiErr(t, b).Message != "Method not allowed" {
		t.Fatalf("POST: %d %s", status, b)
	}
}

func TestCatalogueIsDeterministic(t *testing.T) {
	a, b := newCatalogue(), newCatalogue()
	if len(a.albums) != len(b.albums) || len(a.tracks) != len(b.tracks) {
		t.Fatal("catalogue differs between runs")
	}
	for id, al := range a.albums {
		if b.albums[id] == nil || b.albums[id].Name != al.Name || !idRE.MatchString(id) {
			t.Fatalf("album %s differs or has a bad id", id)
		}
	}
	checks := map[string]bool{
		"BTS has 95 albums":            len(a.byID[Artist95ID].Albums) == Artist95Albums,
		"sample album is BTS's newest": a.byID[Artist95ID].Albums[0].ID == SampleAlbumID,
		"sample track":                 a.tracks[SampleTrackID] != nil && a.tracks[SampleTrackID].Album.ID == SampleAlbumID,
		"63-track album":               a.albums[MilesDavisCompleteSessions] != nil && len(a.albums[MilesDavisCompleteSessions].Tracks) == 63,
		"Tania Bowra":                  a.byID[TaniaBowraID] != nil && len(a.byID[TaniaBowraID].Albums) == 3,
	}
	for what, ok := range checks {
		if !ok {
			t.Error(what)
		}
	}
}

// TestDocumentedIDs: every id the documentation and sluicectl's help use
// resolves in the simulated catalogue (it answered 404 before), and adding
// them left the generated catalogue's ids and counts as they were.
func TestDocumentedIDs(t *testing.T) {
	e := start(t, Options{})
	auth := "Bearer " + e.token(t)
	for _, tc := range []struct {
		path, want string
	}{
		{"/v1/albums/" + DocAlbumID, `"name":"Global Warming"`},
		{"/v1/albums/" + DocAlbumID + "/tracks", `"id":"` + DocTrackID + `"`},
		{"/v1/tracks/" + DocTrackID, `"album_type":"album"`},
		{"/v1/tracks/" + DocTrack2ID, `"name":"Cut To The Feeling"`},
		{"/v1/artists/" + Artist95ID, `"name":"BTS"`},
		{"/v1/albums/" + SampleAlbumID, `"id":"` + SampleAlbumID + `"`},
		{"/v1/tracks/" + SampleTrackID, `"id":"` + SampleTrackID + `"`},
		{"/v1/albums/" + MilesDavisCompleteSessions, `"total":63`},
		{"/v1/artists/" + Artist95ID + "/albums?limit=1", fmt.Sprintf(`"total":%d`, Artist95Albums)},
		{"/v1/artists/" + TaniaBowraID + "/albums", `"total":3`},
		{"/v1/search?type=album&q=" + url.QueryEscape(`artist:"Miles Davis" year:1959`), `"total":2`},
	} {
		status, _, b := e.get(t, tc.path, auth)
		if status != 200 || !strings.Contains(string(b), tc.want) {
			t.Errorf("GET %s: %d, want 200 with %s\n%.300s", tc.path, status, tc.want, b)
		}
	}
}

// TestMaxInFlight: requests sent one after another are one in flight at a
// time; requests overlapping before their heads are written are counted
// together.
func TestMaxInFlight(t *testing.T) {
	e := start(t, Options{})
	auth := "Bearer " + e.token(t)
	for range 3 {
		if status, _, b := e.get(t, "/v1/tracks/"+SampleTrackID, auth); status != 200 {
			t.Fatalf("%d %s", status, b)
		}
	}
	if n := e.sim.Counts().MaxInFlight; n != 1 {
		t.Fatalf("MaxInFlight %d after sequential requests, want 1", n)
	}
	// Answers held until Close: three requests surely overlap.
	e.sim.SetDelay(time.Hour)
	done := make(chan struct{}, 3)
	for range 3 {
		go func() {
			defer func() { done <- struct{}{} }()
			req, _ := http.NewRequest("GET", e.api+"/v1/tracks/"+SampleTrackID, nil)
			req.Header.Set("Authorization", auth)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.sim.Counts().APIRequests < 6 {
		if time.Now().After(deadline) {
			t.Fatal("the three requests did not arrive")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := e.sim.Counts().MaxInFlight; n != 3 {
		t.Fatalf("MaxInFlight %d with three requests on hand, want 3", n)
	}
	e.sim.Close()
	for range 3 {
		<-done
	}
}
