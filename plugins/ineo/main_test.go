package main

import (
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/provider"
)

func TestNormaliseTrackID(t *testing.T) {
	const id = "6fx5VOjqYNBHcDf5GIF5g5"
	cases := []struct {
		in   string
		want string
		ok   bool
	}{
		{id, id, true},
		{" " + id + " ", id, true},
		{"spotify:track:" + id, id, true},
		{"https://open.spotify.com/track/" + id, id, true},
		{"https://open.spotify.com/track/" + id + "?si=abc123", id, true},
		{"open.spotify.com/intl-de/track/" + id, id, true},
		{"http://open.spotify.com/track/" + id + "/", id, true},
		{"", "", false},
		{id[:21], "", false},
		{id + "x", "", false},
		{"6fx5VOjqYNBHcDf5GIF5g!", "", false},
		{"spotify:album:" + id, "", false},
		{"https://open.spotify.com/album/" + id, "", false},
		{"https://evil.example/track/" + id, "", false},
	}
	for _, tc := range cases {
		got, ok := normaliseTrackID(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("normaliseTrackID(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestValidate(t *testing.T) {
	p := newIneo(nil)
	allow := &settings{AllowDeleteAccount: true}
	deny := &settings{}
	app := url.Values{"phone": {"989012345678"}, "title": {"t"}, "shortname": {"s"}, "url": {"https://x.example"}, "platform": {"web"}}
	with := func(v url.Values, k, val string) url.Values {
		out := url.Values{}
		for kk, vv := range v {
			out[kk] = vv
		}
		out.Set(k, val)
		return out
	}
	cases := []struct {
		name   string
		op     string
		params url.Values
		s      *settings
		status int
		param  string
		bucket string
	}{
		{"track ok", "spotify.track", url.Values{"trackId": {"6fx5VOjqYNBHcDf5GIF5g5"}}, deny, 0, "", bucketSpotify},
		{"track bad", "spotify.track", url.Values{"trackId": {"x"}}, deny, 400, "trackId", ""},
		{"phone plus", "tmanage.sendcode", url.Values{"phone": {"+989012345678"}}, deny, 400, "phone", ""},
		{"phone short", "tmanage.sendcode", url.Values{"phone": {"98901"}}, deny, 400, "phone", ""},
		{"phone leading zero", "tmanage.sendcode", url.Values{"phone": {"09012345678"}}, deny, 400, "phone", ""},
		{"phone ok", "tmanage.sendcode", url.Values{"phone": {"989012345678"}}, deny, 0, "", bucketTmanage},
		{"app ok", "tmanage.createapplication", app, deny, 0, "", bucketTmanage},
		{"app platform", "tmanage.createapplication", with(app, "platform", "Web"), deny, 400, "platform", ""},
		{"app url", "tmanage.createapplication", with(app, "url", "not a url"), deny, 400, "url", ""},
		{"delete disabled", "tmanage.deleteaccount", url.Values{"phone": {"989012345678"}, "access": {"yes"}}, deny, 403, "", ""},
		{"delete no access", "tmanage.deleteaccount", url.Values{"phone": {"989012345678"}, "access": {"no"}}, allow, 400, "access", ""},
		{"delete allowed", "tmanage.deleteaccount", url.Values{"phone": {"989012345678"}, "access": {"yes"}}, allow, 0, "", bucketTmanage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, bucket, err := p.validate(&provider.Request{Operation: tc.op, Params: tc.params}, tc.s)
			if tc.status == 0 {
				if err != nil || bucket != tc.bucket {
					t.Fatalf("got %v bucket %q", err, bucket)
				}
				if out.Get("accessKey") != "" || out.Get("auth") != "" {
					t.Fatal("validate must not add credentials")
				}
				return
			}
			var pr *problem.Problem
			if !errors.As(err, &pr) || pr.Status != tc.status || pr.Param != tc.param {
				t.Fatalf("got %v, want %d param %q", err, tc.status, tc.param)
			}
		})
	}
}

func TestCodeTableStopCodes(t *testing.T) {
	// docs/upstreams.md, "iNeo": codes that mean "stop sending now".
	for _, c := range []int{10, 408, 429, 12, 66, 2001, 6} {
		if got := codes.Lookup(c); got.Class != provider.Stop || got.Pause <= 0 {
			t.Errorf("code %d: %+v, want a Stop code with a pause", c, got)
		}
	}
	// §1c's caller's-fault list, less 401: the token is sluice's, not the
	// caller's (see below).
	for _, c := range []int{4001, 403, 405, 1, 3, 8, 72, 101, 36, 606, 22, 32, 903} {
		if got := codes.Lookup(c); got.Class != provider.CallerError {
			t.Errorf("code %d: %+v, want a caller error", c, got)
		}
	}
	// A wrong access token (401) and a host outside Iran (2) are the
	// operator's to fix: server errors, so neither cached nor blamed on
	// the caller, and no pause.
	for _, c := range []int{401, 2} {
		if got := codes.Lookup(c); got.Class != provider.ServerError || got.Pause != 0 {
			t.Errorf("code %d: %+v, want a server error (configuration), no pause", c, got)
		}
	}
}

// TestJudge: the body's status_code decides whatever the HTTP status, and
// an HTTP 429 or 503 pauses the bucket even without an envelope.
func TestJudge(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	code := func(c int) envelope { return envelope{StatusCode: &c} }
	hdr := func(ra string) http.Header {
		if ra == "" {
			return http.Header{}
		}
		return http.Header{"Retry-After": {ra}}
	}
	cases := []struct {
		name      string
		http      int
		retry     string
		env       envelope
		pause     time.Duration // 0: none
		reason    string        // substring of the pause reason
		problem   int           // 0: relay the body
		retryAft  time.Duration // the problem's Retry-After
		cacheable bool
	}{
		{"200 success", 200, "", code(200), 0, "", 0, 0, true},
		{"200 ban", 200, "", code(10), time.Hour, "status_code 10 ip_blocked", 0, 0, false},
		{"403 ban", 403, "", code(10), time.Hour, "status_code 10 ip_blocked", 0, 0, false},
		{"500 offline", 500, "", code(66), 5 * time.Minute, "status_code 66 offline", 0, 0, false},
		{"429 envelope 429", 429, "", code(429), 30 * time.Second, "status_code 429 too_many_requests", 0, 0, false},
		{"429 Retry-After beats a shorter code", 429, "120", code(429), 2 * time.Minute, "HTTP 429", 0, 0, false},
		{"503 envelope server error", 503, "", code(503), httpStopPause, "HTTP 503", 0, 0, false},
		{"502 envelope server error", 502, "", code(502), 0, "", 0, 0, false},
		{"404 caller error", 404, "", code(404), 0, "", 0, 0, false},
		{"bare 429", 429, "120", envelope{}, 2 * time.Minute, "HTTP 429", 502, 2 * time.Minute, false},
		{"bare 429 no Retry-After", 429, "", envelope{}, httpStopPause, "HTTP 429", 502, httpStopPause, false},
		{"bare 503 bad Retry-After", 503, "soon", envelope{}, httpStopPause, "HTTP 503", 502, httpStopPause, false},
		{"bare 500", 500, "", envelope{}, 0, "", 502, 0, false},
		{"200 not JSON", 200, "", envelope{}, 0, "", 502, 0, false},
		{"success under 403", 403, "", code(200), 0, "", 502, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := judge(tc.http, hdr(tc.retry), tc.env, now)
			if tc.pause == 0 {
				if !v.pauseUntil.IsZero() {
					t.Fatalf("paused until %s; want no pause", v.pauseUntil)
				}
			} else if got := v.pauseUntil.Sub(now); got != tc.pause || !strings.Contains(v.reason, tc.reason) {
				t.Fatalf("pause %s reason %q; want %s, reason containing %q", got, v.reason, tc.pause, tc.reason)
			}
			if tc.problem == 0 {
				if v.problem != nil {
					t.Fatalf("problem %v; want the body relayed", v.problem)
				}
				if want := codes.Lookup(*tc.env.StatusCode); v.code != want {
					t.Fatalf("code %+v, want %+v", v.code, want)
				}
			} else if v.problem == nil || v.problem.Status != tc.problem || v.problem.RetryAfter != tc.retryAft {
				t.Fatalf("problem %+v; want %d with Retry-After %s", v.problem, tc.problem, tc.retryAft)
			}
			if v.cacheable != tc.cacheable {
				t.Fatalf("cacheable %v, want %v", v.cacheable, tc.cacheable)
			}
		})
	}
}

// TestTrackPatternAgrees: the pattern the host applies and the plugin's own
// normaliser must accept the same spellings and extract the same id.
func TestTrackPatternAgrees(t *testing.T) {
	re := regexp.MustCompile("^(?:" + trackPattern + ")$")
	for _, in := range []string{
		"6fx5VOjqYNBHcDf5GIF5g5", "spotify:track:6fx5VOjqYNBHcDf5GIF5g5",
		"https://open.spotify.com/track/6fx5VOjqYNBHcDf5GIF5g5?si=x", "open.spotify.com/intl-de/track/6fx5VOjqYNBHcDf5GIF5g5",
		"6fx5VOjqYNBHcDf5GIF5g", "spotify:album:6fx5VOjqYNBHcDf5GIF5g5", "https://evil.example/track/6fx5VOjqYNBHcDf5GIF5g5", "",
	} {
		want, ok := normaliseTrackID(in)
		m := re.FindStringSubmatch(in)
		if (m != nil) != ok {
			t.Errorf("%q: pattern match %v, normaliser %v", in, m != nil, ok)
			continue
		}
		if m == nil {
			continue
		}
		got := ""
		for _, g := range m[1:] {
			if g != "" {
				got = g
				break
			}
		}
		if got != want {
			t.Errorf("%q: pattern gives %q, normaliser %q", in, got, want)
		}
	}
}
