package gateway

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/proto"
)

// FuzzPathMatches: a template matches only paths with as many segments,
// and a {param} never matches an empty segment.
func FuzzPathMatches(f *testing.F) {
	for _, s := range [][2]string{{"spotify.php", "spotify.php"}, {"v1/artists/{id}/albums", "v1/artists/x/albums"},
		{"v1/artists/{id}", "v1/artists//"}, {"audio/search", "audio/../search"}, {"{a}", ""}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		if !pathMatches(pattern, path) {
			return
		}
		ps, xs := strings.Split(strings.Trim(pattern, "/"), "/"), strings.Split(strings.Trim(path, "/"), "/")
		if len(ps) != len(xs) {
			t.Fatalf("%q matched %q with different segment counts", pattern, path)
		}
		for i := range ps {
			if strings.HasPrefix(ps[i], "{") && strings.HasSuffix(ps[i], "}") && xs[i] == "" {
				t.Fatalf("%q matched an empty segment of %q", pattern, path)
			}
		}
	})
}

// FuzzParseMaxWait: never more than the configured bound, never negative.
func FuzzParseMaxWait(f *testing.F) {
	for _, s := range []string{"", "20s", "0", "1", "-5s", "1h", "99999999999999999999", "1.5s", "abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		const bound = 2 * time.Minute
		d, err := parseMaxWait(v, bound)
		if err == nil && (d < 0 || d > bound) {
			t.Fatalf("%q → %s outside [0, %s]", v, d, bound)
		}
	})
}

// FuzzReadParams: any query, body and content type yield parameters or a
// 4xx problem, never a panic.
func FuzzReadParams(f *testing.F) {
	f.Add("trackId=6fx5VOjqYNBHcDf5GIF5g5", "", "")
	f.Add("", "trackId=x&accessKey=y", "application/x-www-form-urlencoded")
	f.Add("a=1", `{"audio_id": 5, "x": true, "n": null}`, "application/json")
	f.Add("%zz", "%zz", "application/x-www-form-urlencoded; charset=utf-8")
	f.Fuzz(func(t *testing.T, query, body, ct string) {
		r := httptest.NewRequest(http.MethodPost, "/v1/p/x", strings.NewReader(body))
		r.URL.RawQuery = query
		r.Header.Set("Content-Type", ct)
		_, _, _, _, err := readParams(r)
		if err != nil && problemStatus(err) >= 500 {
			t.Fatalf("server error for client input: %v", err)
		}
	})
}

// FuzzCanonicalise: a value that passes a pattern is replaced by a capture
// that matches the pattern's group, or kept.
func FuzzCanonicalise(f *testing.F) {
	const pat = `([0-9A-Za-z]{22})|spotify:track:([0-9A-Za-z]{22})`
	f.Add("6fx5VOjqYNBHcDf5GIF5g5")
	f.Add("spotify:track:6fx5VOjqYNBHcDf5GIF5g5")
	f.Add("spotify:track:")
	f.Fuzz(func(t *testing.T, v string) {
		var pc patternCache
		params := url.Values{"id": {v}}
		err := canonicalise(&pc, &proto.Param{Name: "id", Pattern: pat}, params)
		if err == nil && len(params.Get("id")) != 22 {
			t.Fatalf("%q accepted as %q", v, params.Get("id"))
		}
		// The remembered answer is the computed one.
		again := url.Values{"id": {v}}
		err2 := canonicalise(&pc, &proto.Param{Name: "id", Pattern: pat}, again)
		if (err == nil) != (err2 == nil) || again.Get("id") != params.Get("id") {
			t.Fatalf("%q: first %q (%v), remembered %q (%v)", v, params.Get("id"), err, again.Get("id"), err2)
		}
	})
}
