package main

import (
	"errors"
	"net/url"
	"regexp"
	"testing"

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
	// shared/upstream/README.md §1c: codes that mean "stop sending now".
	for _, c := range []int{10, 408, 429, 12, 66, 2001, 6} {
		if got := codes.Lookup(c); got.Class != provider.Stop || got.Pause <= 0 {
			t.Errorf("code %d: %+v, want a Stop code with a pause", c, got)
		}
	}
	for _, c := range []int{4001, 401, 403, 405, 1, 3, 8, 72, 101, 36, 606, 22, 32, 903} {
		if got := codes.Lookup(c); got.Class != provider.CallerError {
			t.Errorf("code %d: %+v, want a caller error", c, got)
		}
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
