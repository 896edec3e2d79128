package ineosim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testKey   = "111:spotifykey"
	testAuth  = "222:tmanageauth"
	testTrack = "6fx5VOjqYNBHcDf5GIF5g5"
	testPhone = "989012345678"
	ipA       = "192.0.2.1:4000"
	ipB       = "192.0.2.2:4000"
)

// clock is a manual clock so windows and bans are driven without sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type answer struct {
	OK         bool            `json:"ok"`
	Status     string          `json:"status"`
	StatusCode int             `json:"status_code"`
	Result     json.RawMessage `json:"result"`
}

// testSim builds a Sim with test tokens and small windows on a manual clock.
func testSim(t *testing.T, mod func(*Options)) (*Sim, *clock) {
	t.Helper()
	c := newClock()
	opts := Options{
		AccessKey:    testKey,
		TmanageAuth:  testAuth,
		SpotifyLimit: Limit{6, 300 * time.Millisecond},
		TmanageLimit: Limit{10, 330 * time.Millisecond},
		BanDuration:  time.Second,
		Now:          c.Now,
	}
	if mod != nil {
		mod(&opts)
	}
	s := New(opts)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, c
}

// call sends one request straight to the handler from remote and decodes the
// envelope, checking the transport-level contract on the way.
func call(t *testing.T, h http.Handler, r *http.Request, remote string) answer {
	t.Helper()
	r.RemoteAddr = remote
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		t.Fatalf("%s %s: HTTP %d, want 200", r.Method, r.URL, rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Fatalf("Content-Type = %q", ct)
	}
	var a answer
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatalf("decode %q: %v", rec.Body.String(), err)
	}
	if a.OK != (a.StatusCode == 200) {
		t.Fatalf("ok=%v with status_code %d", a.OK, a.StatusCode)
	}
	if a.StatusCode != 200 && len(a.Result) != 0 && string(a.Result) != "null" {
		t.Fatalf("error answer %d carries result %s", a.StatusCode, a.Result)
	}
	return a
}

func get(path string, q url.Values) *http.Request {
	return httptest.NewRequest(http.MethodGet, path+"?"+q.Encode(), nil)
}

func spotifyGet(key, track string) *http.Request {
	return get("/spotify.php", url.Values{"accessKey": {key}, "trackId": {track}})
}

func tmanageGet(q url.Values) *http.Request {
	q.Set("auth", testAuth)
	return get("/tmanage-v2.php", q)
}

func TestRateLimit(t *testing.T) {
	const w = 300 * time.Millisecond
	tests := []struct {
		name    string
		service string
		gaps    []time.Duration // before each request; len = number of requests
		// firstViolation is the index of the first violating request, -1
		// for none. From it on, every request answers 10 ip_blocked.
		firstViolation int
		violations     int
	}{
		{"six at once are fine", ServiceSpotify, repeat(6, 0), -1, 0},
		{"seventh at once violates", ServiceSpotify, repeat(7, 0), 6, 1},
		{"every arrival past the limit violates", ServiceSpotify, repeat(9, 0), 6, 3},
		{"spaced at window/5 never exceeds", ServiceSpotify, repeat(20, w/5), -1, 0},
		{"seventh exactly one window after the first violates", ServiceSpotify, repeat(7, w/6), 6, 1},
		{"seventh just over one window after the first is fine", ServiceSpotify, append(repeat(6, w/6), w/6+time.Nanosecond), -1, 0},
		{"ten at once are fine on tmanage", ServiceTmanage, repeat(10, 0), -1, 0},
		{"eleventh at once violates on tmanage", ServiceTmanage, repeat(11, 0), 10, 1},
		{"eleventh exactly one window later violates on tmanage", ServiceTmanage, repeat(11, 33*time.Millisecond), 10, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, c := testSim(t, nil)
			other := ServiceTmanage
			if tc.service == ServiceTmanage {
				other = ServiceSpotify
			}
			for i, gap := range tc.gaps {
				c.Advance(gap)
				var r *http.Request
				if tc.service == ServiceSpotify {
					r = spotifyGet(testKey, testTrack)
				} else {
					r = tmanageGet(url.Values{"action": {"sendcode"}, "phone": {testPhone}})
				}
				want := 200
				if tc.firstViolation >= 0 && i >= tc.firstViolation {
					want = 10
				}
				if a := call(t, s, r, ipA); a.StatusCode != want {
					t.Fatalf("request %d: status_code %d (%s), want %d", i, a.StatusCode, a.Status, want)
				} else if want == 10 && a.Status != "ip_blocked" {
					t.Fatalf("request %d: status %q, want ip_blocked", i, a.Status)
				}
			}
			if got := s.ViolationsFor(tc.service); got != tc.violations {
				t.Errorf("ViolationsFor(%s) = %d, want %d", tc.service, got, tc.violations)
			}
			if got := s.Violations(); got != tc.violations {
				t.Errorf("Violations() = %d, want %d", got, tc.violations)
			}
			if got := s.ViolationsFor(other); got != 0 {
				t.Errorf("ViolationsFor(%s) = %d, want 0", other, got)
			}
			if got := s.Requests(tc.service); got != len(tc.gaps) {
				t.Errorf("Requests = %d, want %d", got, len(tc.gaps))
			}
			if got := s.Banned(tc.service); got != (tc.violations > 0) {
				t.Errorf("Banned = %v, want %v", got, tc.violations > 0)
			}
			if s.Banned(other) {
				t.Errorf("Banned(%s) = true, want false", other)
			}
		})
	}
}

func repeat(n int, d time.Duration) []time.Duration { return slices.Repeat([]time.Duration{d}, n) }

func TestBanBlocksIPAndToken(t *testing.T) {
	s, c := testSim(t, nil)
	for range 7 {
		call(t, s, spotifyGet(testKey, testTrack), ipA)
	}
	if s.ViolationsFor(ServiceSpotify) != 1 {
		t.Fatalf("violations = %d, want 1", s.ViolationsFor(ServiceSpotify))
	}
	c.Advance(500 * time.Millisecond) // window has passed, ban (1s) has not

	steps := []struct {
		name   string
		r      *http.Request
		remote string
		want   int
	}{
		{"banned IP, same token", spotifyGet(testKey, testTrack), ipA, 10},
		{"banned IP, other token", spotifyGet("999:other", testTrack), ipA, 10},
		{"banned IP, no token", get("/spotify.php", url.Values{"trackId": {testTrack}}), ipA, 10},
		{"banned IP, wrong method", httptest.NewRequest(http.MethodPut, "/spotify.php", nil), ipA, 10},
		{"other IP, blocked token", spotifyGet(testKey, testTrack), ipB, 10},
		{"other IP, other token is answered normally", spotifyGet("999:other", testTrack), ipB, 401},
		{"other service is not banned", tmanageGet(url.Values{"action": {"sendcode"}, "phone": {testPhone}}), ipA, 200},
	}
	for _, st := range steps {
		if a := call(t, s, st.r, st.remote); a.StatusCode != st.want {
			t.Errorf("%s: status_code %d (%s), want %d", st.name, a.StatusCode, a.Status, st.want)
		}
	}
	if got := s.ViolationsFor(ServiceSpotify); got != 1 {
		t.Errorf("requests spread out while banned: violations = %d, want still 1", got)
	}

	// Requests while banned still count: a burst violates again and
	// restarts the ban.
	c.Advance(400 * time.Millisecond) // 0.9s: the steps above left the window
	for range 7 {
		call(t, s, spotifyGet(testKey, testTrack), ipA)
	}
	if got := s.ViolationsFor(ServiceSpotify); got != 2 {
		t.Errorf("burst while banned: violations = %d, want 2", got)
	}
	c.Advance(200 * time.Millisecond) // 1.1s after the first ban, 0.2s after the second
	if a := call(t, s, spotifyGet(testKey, testTrack), ipB); a.StatusCode != 10 {
		t.Errorf("ban restarted by the second violation: status_code %d, want 10", a.StatusCode)
	}
	c.Advance(time.Second)
	if s.Banned(ServiceSpotify) {
		t.Errorf("Banned after BanDuration = true")
	}
	if a := call(t, s, spotifyGet(testKey, testTrack), ipA); a.StatusCode != 200 {
		t.Errorf("after the ban: status_code %d (%s), want 200", a.StatusCode, a.Status)
	}
}

func TestSpotify(t *testing.T) {
	form := func(v url.Values) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/spotify.php", strings.NewReader(v.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return r
	}
	multi := func(v url.Values) *http.Request {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		for k := range v {
			if err := mw.WriteField(k, v.Get(k)); err != nil {
				panic(err)
			}
		}
		if err := mw.Close(); err != nil {
			panic(err)
		}
		r := httptest.NewRequest(http.MethodPost, "/spotify.php", &buf)
		r.Header.Set("Content-Type", mw.FormDataContentType())
		return r
	}
	both := url.Values{"accessKey": {testKey}, "trackId": {testTrack}}
	tests := []struct {
		name       string
		r          *http.Request
		wantCode   int
		wantStatus string
	}{
		{"GET", spotifyGet(testKey, testTrack), 200, "successfully."},
		{"POST form body", form(both), 200, "successfully."},
		{"POST multipart body", multi(both), 200, "successfully."},
		{"POST with query params", httptest.NewRequest(http.MethodPost, "/spotify.php?"+both.Encode(), nil), 200, "successfully."},
		{"POST key in query, track in body", func() *http.Request {
			r := form(url.Values{"trackId": {testTrack}})
			r.URL.RawQuery = url.Values{"accessKey": {testKey}}.Encode()
			return r
		}(), 200, "successfully."},
		{"missing accessKey", get("/spotify.php", url.Values{"trackId": {testTrack}}), 4001, "parameter_error"},
		{"empty accessKey", spotifyGet("", testTrack), 4001, "parameter_error"},
		{"missing trackId", get("/spotify.php", url.Values{"accessKey": {testKey}}), 4001, "parameter_error"},
		{"wrong key and missing trackId", get("/spotify.php", url.Values{"accessKey": {"x"}}), 4001, "parameter_error"},
		{"misspelt parameter name", get("/spotify.php", url.Values{"accesskey": {testKey}, "trackId": {testTrack}}), 4001, "parameter_error"},
		{"wrong key", spotifyGet("750394:wrong", testTrack), 401, "authentication_error"},
		{"short id", spotifyGet(testKey, "6fx5VO"), 404, "not_found"},
		{"non-base62 id", spotifyGet(testKey, "6fx5VOjqYNBHcDf5GIF5g-"), 404, "not_found"},
		{"spotify URI is not an id", spotifyGet(testKey, "spotify:track:"+testTrack), 404, "not_found"},
		{"SetNotFound id", spotifyGet(testKey, "4uLU6hMCjMI75M1A2tKUQC"), 404, "not_found"},
		{"reserved id", spotifyGet(testKey, ReservedDownloadErrorID), 602, "download_error"},
		{"oversized POST body", form(url.Values{"accessKey": {testKey}, "trackId": {testTrack}, "pad": {strings.Repeat("x", maxBody)}}), 400, "bad_request"},
		{"PUT", httptest.NewRequest(http.MethodPut, "/spotify.php?"+both.Encode(), nil), 405, "method_error"},
		{"DELETE", httptest.NewRequest(http.MethodDelete, "/spotify.php?"+both.Encode(), nil), 405, "method_error"},
		{"HEAD", httptest.NewRequest(http.MethodHead, "/spotify.php?"+both.Encode(), nil), 405, "method_error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := testSim(t, nil)
			s.SetNotFound("4uLU6hMCjMI75M1A2tKUQC")
			a := call(t, s, tc.r, ipA)
			if a.StatusCode != tc.wantCode || a.Status != tc.wantStatus {
				t.Fatalf("got %d %q, want %d %q", a.StatusCode, a.Status, tc.wantCode, tc.wantStatus)
			}
			if tc.wantCode != 200 {
				return
			}
			var tr Track
			if err := json.Unmarshal(a.Result, &tr); err != nil {
				t.Fatal(err)
			}
			if tr.TrackID != testTrack || !strings.HasPrefix(tr.Title, "Track 6fx5VO") || len(tr.Artists) == 0 || tr.Album == "" || tr.DurationMS < 120000 {
				t.Errorf("result %+v", tr)
			}
			if !strings.HasPrefix(tr.DownloadLink, "http://example.com/dl/"+testTrack+".mp3?token=") {
				t.Errorf("download_link %q", tr.DownloadLink)
			}
		})
	}
}

func TestTmanageRequestErrors(t *testing.T) {
	ok := url.Values{"auth": {testAuth}, "action": {"sendcode"}, "phone": {testPhone}}
	with := func(k, v string) url.Values {
		q := url.Values{}
		for kk, vv := range ok {
			q[kk] = vv
		}
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
		return q
	}
	tests := []struct {
		name       string
		r          *http.Request
		wantCode   int
		wantStatus string
	}{
		{"valid sendcode", get("/tmanage-v2.php", ok), 200, "successfully."},
		{"POST is refused", httptest.NewRequest(http.MethodPost, "/tmanage-v2.php?"+ok.Encode(), nil), 405, "method_error"},
		{"POST form is refused", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/tmanage-v2.php", strings.NewReader(ok.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}(), 405, "method_error"},
		{"PUT is refused", httptest.NewRequest(http.MethodPut, "/tmanage-v2.php?"+ok.Encode(), nil), 405, "method_error"},
		{"missing auth", get("/tmanage-v2.php", with("auth", "")), 4001, "parameter_error"},
		{"wrong auth", get("/tmanage-v2.php", with("auth", "222:wrong")), 401, "authentication_error"},
		{"spotify key is not a tmanage token", get("/tmanage-v2.php", with("auth", testKey)), 401, "authentication_error"},
		{"missing action", get("/tmanage-v2.php", with("action", "")), 4001, "parameter_error"},
		{"unknown action", get("/tmanage-v2.php", with("action", "register")), 400, "bad_request"},
		{"missing phone", get("/tmanage-v2.php", with("phone", "")), 4001, "parameter_error"},
		{"phone with plus", get("/tmanage-v2.php", with("phone", "+989012345678")), 36, "phone_error"},
		{"national format without country code", get("/tmanage-v2.php", with("phone", "09012345678")), 36, "phone_error"},
		{"phone with letters", get("/tmanage-v2.php", with("phone", "98901234567x")), 36, "phone_error"},
		{"phone too long", get("/tmanage-v2.php", with("phone", "9890123456789012")), 36, "phone_error"},
		{"login missing password", get("/tmanage-v2.php", url.Values{"auth": {testAuth}, "action": {"login"}, "phone": {testPhone}, "random_hash": {"ab"}}), 4001, "parameter_error"},
		{"createapplication missing url", get("/tmanage-v2.php", url.Values{"auth": {testAuth}, "action": {"createapplication"}, "phone": {testPhone}, "title": {"t"}, "shortname": {"s"}, "platform": {"web"}}), 4001, "parameter_error"},
		{"deleteaccount missing access", get("/tmanage-v2.php", url.Values{"auth": {testAuth}, "action": {"deleteaccount"}, "phone": {testPhone}}), 4001, "parameter_error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := testSim(t, nil)
			a := call(t, s, tc.r, ipA)
			if a.StatusCode != tc.wantCode || a.Status != tc.wantStatus {
				t.Fatalf("got %d %q, want %d %q", a.StatusCode, a.Status, tc.wantCode, tc.wantStatus)
			}
		})
	}
}

func TestTmanageStateMachine(t *testing.T) {
	const other = "447700900123"
	s, c := testSim(t, func(o *Options) { o.LoginCode = "HwcSfg-EHjw" })
	app := url.Values{"action": {"createapplication"}, "phone": {testPhone}, "title": {"iNeoTeam"}, "shortname": {"ineo"}, "url": {"https://example.org"}, "platform": {"web"}}
	withPlatform := func(p string) url.Values {
		q := url.Values{}
		for k, v := range app {
			q[k] = v
		}
		q.Set("platform", p)
		return q
	}
	act := func(action, phone string, kv ...string) url.Values {
		q := url.Values{"action": {action}, "phone": {phone}}
		for i := 0; i+1 < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		return q
	}
	const hashVar = "{hash}" // replaced by the random_hash of the latest sendcode
	steps := []struct {
		name       string
		q          url.Values
		wantCode   int
		wantStatus string
	}{
		{"information before anything", act("information", testPhone), 606, "login_error"},
		{"login before sendcode", act("login", testPhone, "random_hash", "abc", "password", "HwcSfg-EHjw"), 606, "login_error"},
		{"createapplication before login", app, 606, "login_error"},
		{"deleteaccount before login", act("deleteaccount", testPhone, "access", "yes"), 606, "login_error"},
		{"logout before login", act("logout", testPhone), 36, "login_fail"},
		{"sendcode", act("sendcode", testPhone), 200, "successfully."},
		{"login wrong code", act("login", testPhone, "random_hash", hashVar, "password", "12345"), 2003, "login_fail"},
		{"login wrong hash", act("login", testPhone, "random_hash", "9777980f45cd4ac6cc", "password", "HwcSfg-EHjw"), 2003, "login_fail"},
		{"login", act("login", testPhone, "random_hash", hashVar, "password", "HwcSfg-EHjw"), 200, "login successfully."},
		{"a code logs in once", act("login", testPhone, "random_hash", hashVar, "password", "HwcSfg-EHjw"), 606, "login_error"},
		{"other phone is not logged in", act("information", other), 606, "login_error"},
		{"information before createapplication", act("information", testPhone), 404, "data_error"},
		{"bad platform", withPlatform("Web"), 903, "platform_fail"},
		{"unknown platform", withPlatform("linux"), 903, "platform_fail"},
		{"createapplication", app, 200, "successfully."},
		{"createapplication twice", withPlatform("android"), 32, "ceateapp_error"},
		{"information", act("information", testPhone), 200, "successfully."},
		{"logout", act("logout", testPhone), 200, "successfully."},
		{"logout twice", act("logout", testPhone), 36, "login_fail"},
		{"information after logout", act("information", testPhone), 606, "login_error"},
		{"sendcode again", act("sendcode", testPhone), 200, "successfully."},
		{"login again", act("login", testPhone, "random_hash", hashVar, "password", "HwcSfg-EHjw"), 200, "login successfully."},
		{"app survives logout", act("information", testPhone), 200, "successfully."},
		{"deleteaccount not confirmed", act("deleteaccount", testPhone, "access", "no"), 22, "delete_cancel"},
		{"deleteaccount confirmation is exact", act("deleteaccount", testPhone, "access", "YES"), 22, "delete_cancel"},
		{"deleteaccount", act("deleteaccount", testPhone, "access", "yes"), 200, "successfully."},
		{"deleted account is forgotten", act("information", testPhone), 606, "login_error"},
		{"sendcode after deletion", act("sendcode", testPhone), 200, "successfully."},
		{"login after deletion", act("login", testPhone, "random_hash", hashVar, "password", "HwcSfg-EHjw"), 200, "login successfully."},
		{"no app after deletion", act("information", testPhone), 404, "data_error"},
	}
	var hash string
	for i, st := range steps {
		c.Advance(time.Second) // stay well inside the spam limit
		q := url.Values{}
		for k, v := range st.q {
			q[k] = slices.Clone(v)
		}
		if q.Get("random_hash") == hashVar {
			q.Set("random_hash", hash)
		}
		a := call(t, s, tmanageGet(q), ipA)
		if a.StatusCode != st.wantCode || a.Status != st.wantStatus {
			t.Fatalf("step %d %q: got %d %q, want %d %q", i, st.name, a.StatusCode, a.Status, st.wantCode, st.wantStatus)
		}
		if a.StatusCode != 200 {
			continue
		}
		switch q.Get("action") {
		case "sendcode":
			var r SendCodeResult
			if err := json.Unmarshal(a.Result, &r); err != nil || r.Phone != testPhone || len(r.RandomHash) != 18 {
				t.Fatalf("step %q: result %s (%v)", st.name, a.Result, err)
			}
			hash = r.RandomHash
		case "login":
			var r SessionResult
			if err := json.Unmarshal(a.Result, &r); err != nil || !r.LoggedIn || r.Phone != testPhone {
				t.Fatalf("step %q: result %s (%v)", st.name, a.Result, err)
			}
		case "information":
			// Check the wire names the v1 client code reads, not our struct.
			var r struct {
				App struct {
					APIID        int    `json:"api_id"`
					APIHash      string `json:"api_hash"`
					AppTitle     string `json:"app_title"`
					AppShortname string `json:"app_shortname"`
				} `json:"app_configuration"`
				Servers map[string]string `json:"available_mtproto_servers"`
			}
			if err := json.Unmarshal(a.Result, &r); err != nil {
				t.Fatal(err)
			}
			if r.App.APIID < 1_000_000 || r.App.APIID > 9_999_999 || len(r.App.APIHash) != 32 || r.App.AppTitle != "iNeoTeam" || r.App.AppShortname != "ineo" {
				t.Fatalf("step %q: app_configuration %+v", st.name, r.App)
			}
			for _, k := range []string{"test_configuration", "production_docfiguration", "public_keys"} {
				if r.Servers[k] == "" {
					t.Fatalf("step %q: available_mtproto_servers lacks %s: %s", st.name, k, a.Result)
				}
			}
		}
	}
	if got := s.Deletions(); !slices.Equal(got, []string{testPhone}) {
		t.Errorf("Deletions = %v", got)
	}
	if v := s.Violations(); v != 0 {
		t.Errorf("Violations = %d", v)
	}
}

func TestFailNext(t *testing.T) {
	tests := []struct {
		service    string
		code       int
		wantStatus string
	}{
		{ServiceSpotify, 429, "too_many_requests"},
		{ServiceSpotify, 66, "offline"},
		{ServiceSpotify, 2001, "update"},
		{ServiceSpotify, 408, "user_blocked"},
		{ServiceTmanage, 10, "ip_blocked"},
		{ServiceTmanage, 6, "no_charge"},
		{ServiceTmanage, 12, "ip_limited"},
		{ServiceTmanage, 502, "server_error"},
	}
	for _, tc := range tests {
		t.Run(tc.service+"/"+tc.wantStatus, func(t *testing.T) {
			s, c := testSim(t, nil)
			bad := spotifyGet("wrong", testTrack)
			goodReq := func() *http.Request { return spotifyGet(testKey, testTrack) }
			if tc.service == ServiceTmanage {
				goodReq = func() *http.Request {
					return tmanageGet(url.Values{"action": {"sendcode"}, "phone": {testPhone}})
				}
				bad = get("/tmanage-v2.php", url.Values{"auth": {"wrong"}, "action": {"sendcode"}, "phone": {testPhone}})
			}
			s.FailNext(tc.service, tc.code)
			s.FailNext(tc.service, tc.code)
			steps := []struct {
				r          *http.Request
				wantCode   int
				wantStatus string
			}{
				{bad, 401, "authentication_error"}, // auth wins and does not consume
				{goodReq(), tc.code, tc.wantStatus},
				{goodReq(), tc.code, tc.wantStatus}, // calls queue
				{goodReq(), 200, ""},
			}
			for i, st := range steps {
				c.Advance(time.Second)
				a := call(t, s, st.r, ipA)
				if a.StatusCode != st.wantCode || (st.wantStatus != "" && a.Status != st.wantStatus) {
					t.Fatalf("step %d: got %d %q, want %d %q", i, a.StatusCode, a.Status, st.wantCode, st.wantStatus)
				}
			}
			if got := s.Requests(tc.service); got != len(steps) {
				t.Errorf("Requests = %d, want %d", got, len(steps))
			}
			if s.Banned(tc.service) {
				t.Errorf("an injected code must not ban for real")
			}
		})
	}
}

func TestPrefixAndDownload(t *testing.T) {
	tests := []struct {
		prefix, wantSuffix string
	}{
		{"", ""},
		{"/api", "/api"},
		{"api/v1/", "/api/v1"},
	}
	for _, tc := range tests {
		t.Run("prefix="+tc.prefix, func(t *testing.T) {
			s, base, err := Start(Options{AccessKey: testKey, TmanageAuth: testAuth, Prefix: tc.prefix})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := s.Close(); err != nil {
					t.Error(err)
				}
			}()
			if !strings.HasPrefix(base, "http://127.0.0.1:") || !strings.HasSuffix(base, tc.wantSuffix) {
				t.Fatalf("base URL %q", base)
			}
			httpGet := func(u string) (*http.Response, []byte) {
				t.Helper()
				resp, err := http.Get(u)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				return resp, body
			}

			resp, body := httpGet(base + "/spotify.php?" + url.Values{"accessKey": {testKey}, "trackId": {testTrack}}.Encode())
			var a answer
			if err := json.Unmarshal(body, &a); err != nil || resp.StatusCode != 200 || a.StatusCode != 200 {
				t.Fatalf("spotify.php: HTTP %d %s (%v)", resp.StatusCode, body, err)
			}
			var tr Track
			if err := json.Unmarshal(a.Result, &tr); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(tr.DownloadLink, base+"/dl/"+testTrack+".mp3?token=") {
				t.Fatalf("download_link %q not under %q", tr.DownloadLink, base)
			}

			resp, body = httpGet(tr.DownloadLink)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "audio/mpeg" || !bytes.HasPrefix(body, []byte("ID3")) {
				t.Errorf("download: HTTP %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			if resp, _ := httpGet(base + "/dl/" + testTrack + ".mp3?token=forged"); resp.StatusCode != http.StatusForbidden {
				t.Errorf("forged token: HTTP %d, want 403", resp.StatusCode)
			}
			if resp, _ := httpGet(strings.Replace(tr.DownloadLink, testTrack, "4uLU6hMCjMI75M1A2tKUQC", 1)); resp.StatusCode != http.StatusForbidden {
				t.Errorf("token for another track: HTTP %d, want 403", resp.StatusCode)
			}

			resp, body = httpGet(base + "/tmanage-v2.php?" + url.Values{"auth": {testAuth}, "action": {"sendcode"}, "phone": {testPhone}}.Encode())
			if err := json.Unmarshal(body, &a); err != nil || a.StatusCode != 200 {
				t.Fatalf("tmanage-v2.php: HTTP %d %s", resp.StatusCode, body)
			}

			root := strings.TrimSuffix(base, tc.wantSuffix)
			notFound := []string{base + "/other.php", base + "/spotify.php/x", base + "/tmanage.php"}
			if tc.wantSuffix != "" {
				notFound = append(notFound, root+"/spotify.php", root+"/tmanage-v2.php")
			}
			for _, u := range notFound {
				if resp, _ := httpGet(u); resp.StatusCode != http.StatusNotFound {
					t.Errorf("%s: HTTP %d, want 404", u, resp.StatusCode)
				}
			}
			if got := s.Requests(ServiceSpotify); got != 1 {
				t.Errorf("Requests(spotify) = %d, want 1 (downloads and 404s are not API requests)", got)
			}
		})
	}
}

func TestRequestLogRedactsSecrets(t *testing.T) {
	s, c := testSim(t, nil)
	post := httptest.NewRequest(http.MethodPost, "/spotify.php?AccessKey=typo", strings.NewReader(url.Values{"accessKey": {testKey}, "trackId": {testTrack}}.Encode()))
	post.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	call(t, s, post, ipA)
	c.Advance(time.Millisecond)
	call(t, s, tmanageGet(url.Values{"action": {"login"}, "phone": {testPhone}, "random_hash": {"ab"}, "password": {"12345"}}), ipA)

	sl := s.RequestLog(ServiceSpotify)
	if len(sl) != 1 || sl[0].Method != http.MethodPost || !sl[0].At.Equal(newClock().Now()) {
		t.Fatalf("spotify log %+v", sl)
	}
	if want := (url.Values{"trackId": {testTrack}}); !equalValues(sl[0].Query, want) {
		t.Errorf("spotify log query %v, want %v", sl[0].Query, want)
	}
	tl := s.RequestLog(ServiceTmanage)
	if want := (url.Values{"action": {"login"}, "phone": {testPhone}, "random_hash": {"ab"}}); len(tl) != 1 || !equalValues(tl[0].Query, want) {
		t.Errorf("tmanage log %+v, want query %v", tl, want)
	}
	// The log is a copy.
	tl[0].Query.Set("phone", "x")
	if s.RequestLog(ServiceTmanage)[0].Query.Get("phone") != testPhone {
		t.Error("RequestLog shares memory with the Sim")
	}
}

func equalValues(a, b url.Values) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func TestSetDelay(t *testing.T) {
	s, base, err := Start(Options{AccessKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	u := base + "/spotify.php?" + url.Values{"accessKey": {testKey}, "trackId": {testTrack}}.Encode()

	const d = 30 * time.Millisecond
	s.SetDelay(d)
	start := time.Now()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if el := time.Since(start); el < d || resp.StatusCode != 200 {
		t.Errorf("answered after %v with HTTP %d, want >= %v and 200", el, resp.StatusCode, d)
	}

	// A delay longer than the client waits: the client times out, and Close
	// still returns promptly because it releases delayed answers.
	s.SetDelay(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("request under a 1h delay answered")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestConcurrentArrivalsAreAllCounted(t *testing.T) {
	// Default limit 6 per 7 s: 40 concurrent requests arrive well inside one
	// window, so exactly 34 are violations whatever the interleaving.
	s, base, err := Start(Options{AccessKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer http.DefaultClient.CloseIdleConnections()
	u := base + "/spotify.php?" + url.Values{"accessKey": {testKey}, "trackId": {testTrack}}.Encode()
	const n = 40
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, err := http.Get(u)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var a answer
			if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
				t.Error(err)
				return
			}
			codes <- a.StatusCode
		})
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	if count[200] != 6 || count[10] != n-6 {
		t.Errorf("answers %v, want 6×200 and %d×10", count, n-6)
	}
	if s.Requests(ServiceSpotify) != n || s.ViolationsFor(ServiceSpotify) != n-6 || !s.Banned(ServiceSpotify) {
		t.Errorf("requests %d violations %d banned %v", s.Requests(ServiceSpotify), s.ViolationsFor(ServiceSpotify), s.Banned(ServiceSpotify))
	}
}

func TestReset(t *testing.T) {
	s, c := testSim(t, nil)
	for range 7 {
		call(t, s, spotifyGet(testKey, testTrack), ipA)
	}
	call(t, s, tmanageGet(url.Values{"action": {"sendcode"}, "phone": {testPhone}}), ipA)
	s.FailNext(ServiceTmanage, 66)
	s.SetNotFound(testTrack)
	s.Reset()

	if s.Violations() != 0 || s.Requests(ServiceSpotify) != 0 || s.Banned(ServiceSpotify) || len(s.RequestLog(ServiceTmanage)) != 0 {
		t.Fatalf("after Reset: violations %d requests %d banned %v", s.Violations(), s.Requests(ServiceSpotify), s.Banned(ServiceSpotify))
	}
	c.Advance(time.Millisecond)
	if a := call(t, s, spotifyGet(testKey, testTrack), ipA); a.StatusCode != 200 {
		t.Errorf("spotify after Reset: %d %s", a.StatusCode, a.Status)
	}
	// The pending sendcode is forgotten, and FailNext no longer applies.
	if a := call(t, s, tmanageGet(url.Values{"action": {"login"}, "phone": {testPhone}, "random_hash": {"x"}, "password": {DefaultLoginCode}}), ipA); a.StatusCode != 606 {
		t.Errorf("login after Reset: %d %s, want 606", a.StatusCode, a.Status)
	}
}

func TestDefaults(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	if s.opts.SpotifyLimit != (Limit{6, 7 * time.Second}) || s.opts.TmanageLimit != (Limit{10, 11 * time.Second}) ||
		s.opts.BanDuration != 24*time.Hour || s.opts.LoginCode != "12345" || s.opts.AccessKey != DefaultAccessKey || s.opts.TmanageAuth != DefaultTmanageAuth {
		t.Errorf("defaults: %+v", s.opts)
	}
	s2 := New(Options{SpotifyLimit: Limit{Requests: 3}})
	defer s2.Close()
	if s2.opts.SpotifyLimit != (Limit{3, 7 * time.Second}) {
		t.Errorf("partial limit: %+v", s2.opts.SpotifyLimit)
	}
}

func TestUnknownServicePanics(t *testing.T) {
	s, _ := testSim(t, nil)
	defer func() {
		if recover() == nil {
			t.Error("ViolationsFor(\"Spotify\") did not panic")
		}
	}()
	s.ViolationsFor("Spotify")
}

// TestInjectHTTPFault: the opt-in non-200 answers carry the requested HTTP
// status, envelope (or none) and Retry-After, queue with InjectFault in
// call order, are counted as arrivals, and leave the next answer a normal
// HTTP 200 envelope.
func TestInjectHTTPFault(t *testing.T) {
	s, c := testSim(t, nil)
	s.InjectHTTPFault(ServiceSpotify, HTTPFault{Status: http.StatusForbidden, Envelope: true, StatusCode: codeIPBlocked})
	s.InjectFault(ServiceSpotify, FaultNotJSON)
	s.InjectHTTPFault(ServiceSpotify, HTTPFault{Status: http.StatusTooManyRequests, RetryAfter: "120"})
	s.InjectHTTPFault(ServiceTmanage, HTTPFault{Status: http.StatusServiceUnavailable, Envelope: true, StatusCode: 0, RetryAfter: "7"})

	do := func(r *http.Request) *httptest.ResponseRecorder {
		c.Advance(time.Second)
		r.RemoteAddr = ipA
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, r)
		return rec
	}
	envelopeOf := func(rec *httptest.ResponseRecorder) answer {
		t.Helper()
		var a answer
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
			t.Fatalf("body %q is not the envelope: %v", rec.Body.String(), err)
		}
		return a
	}

	rec := do(spotifyGet(testKey, testTrack))
	if a := envelopeOf(rec); rec.Code != http.StatusForbidden || a.StatusCode != codeIPBlocked || a.Status != "ip_blocked" || a.OK {
		t.Fatalf("enveloped fault: HTTP %d %+v", rec.Code, a)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" || rec.Header().Get("Retry-After") != "" {
		t.Fatalf("enveloped fault headers: %v", rec.Header())
	}
	if rec := do(spotifyGet(testKey, testTrack)); rec.Code != http.StatusOK || json.Valid(rec.Body.Bytes()) {
		t.Fatalf("queued FaultNotJSON: HTTP %d %q", rec.Code, rec.Body.String())
	}
	rec = do(spotifyGet(testKey, testTrack))
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "120" || json.Valid(rec.Body.Bytes()) {
		t.Fatalf("bare fault: HTTP %d Retry-After %q body %q", rec.Code, rec.Header().Get("Retry-After"), rec.Body.String())
	}
	rec = do(tmanageGet(url.Values{"action": {"sendcode"}, "phone": {testPhone}}))
	if a := envelopeOf(rec); rec.Code != http.StatusServiceUnavailable || a.StatusCode != 0 || a.Status != "unknown_error" || rec.Header().Get("Retry-After") != "7" {
		t.Fatalf("tmanage fault: HTTP %d %+v Retry-After %q", rec.Code, a, rec.Header().Get("Retry-After"))
	}
	// The queue is drained: answers are back to HTTP 200.
	if a := call(t, s, spotifyGet(testKey, testTrack), ipA); a.StatusCode != codeOK {
		t.Fatalf("after the faults: %d %s", a.StatusCode, a.Status)
	}
	if got := s.Requests(ServiceSpotify); got != 4 {
		t.Errorf("spotify Requests = %d, want 4 (faulted answers are arrivals too)", got)
	}
	if got := s.Requests(ServiceTmanage); got != 1 {
		t.Errorf("tmanage Requests = %d, want 1", got)
	}

	defer func() {
		if recover() == nil {
			t.Error("InjectHTTPFault with HTTP 200 did not panic")
		}
	}()
	s.InjectHTTPFault(ServiceSpotify, HTTPFault{Status: http.StatusOK, Envelope: true, StatusCode: 10})
}

// TestInjectBody: the opt-in body comes verbatim under HTTP 200, once, is
// an arrival, and the next answer is the service's own again.
func TestInjectBody(t *testing.T) {
	s, c := testSim(t, nil)
	const body = `{"ok":true,"status":"successfully.","status_code":200}`
	s.InjectBody(ServiceSpotify, body)
	c.Advance(time.Second)
	r := spotifyGet(testKey, testTrack)
	r.RemoteAddr = ipA
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK || rec.Body.String() != body || rec.Header().Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("injected body: HTTP %d %v %q", rec.Code, rec.Header(), rec.Body.String())
	}
	c.Advance(time.Second)
	if a := call(t, s, spotifyGet(testKey, testTrack), ipA); a.StatusCode != codeOK || a.Result == nil {
		t.Fatalf("after the injected body: %+v", a)
	}
	if got := s.Requests(ServiceSpotify); got != 2 {
		t.Errorf("spotify Requests = %d, want 2", got)
	}
}
