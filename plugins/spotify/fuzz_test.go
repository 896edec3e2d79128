package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// FuzzRetryAfter: any header value gives a positive wait, and whole
// seconds are honoured exactly.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "3", "3600", "-1", "1e400", "Wed, 21 Oct 2015 07:28:00 GMT", "2.5", " 7 ", "NaN", "Inf"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := retryAfter(http.Header{"Retry-After": {v}})
		if d <= 0 {
			t.Fatalf("Retry-After %q → %s, want a positive wait", v, d)
		}
	})
}

// FuzzRewriteLinks: the rewrite keeps valid JSON valid, leaves no string
// under the configured upstream base or Spotify's canonical one, and
// changes nothing else.
func FuzzRewriteLinks(f *testing.F) {
	const from, to = "http://127.0.0.1:9/gw", "http://sluice/v1/spotify"
	f.Add(`{"href":"https://api.spotify.com/v1/artists/x","next":null,"n":1.50}`)
	f.Add(`{"next":"https:\/\/api.spotify.com\/v1\/search?offset=5\u0026limit=5"}`)
	f.Add(`["https://api.spotify.com.evil.example/x","https://api.spotify.com/v1"]`)
	f.Add(`{"a":"\"https://api.spotify.com/v1/x"}`)
	f.Add(`{"href":"http://127.0.0.1:9/gw/v1/albums/x","u":"http://127.0.0.1:9/gwx"}`)
	f.Fuzz(func(t *testing.T, body string) {
		out := rewriteLinks([]byte(body), linkBases(from, to))
		if !json.Valid([]byte(body)) {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("valid JSON %q became invalid %q", body, out)
		}
		var walk func(any)
		walk = func(v any) {
			switch v := v.(type) {
			case string:
				for _, base := range []string{from, canonicalAPI} {
					if v == base || strings.HasPrefix(v, base+"/") || strings.HasPrefix(v, base+"?") {
						t.Fatalf("%q still leads to the upstream in %q", v, out)
					}
				}
			case []any:
				for _, e := range v {
					walk(e)
				}
			case map[string]any:
				for _, e := range v {
					walk(e)
				}
			}
		}
		var doc any
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.UseNumber()
		if dec.Decode(&doc) == nil {
			walk(doc)
		}
		if !strings.Contains(body, "api.spotify.com") && !strings.Contains(body, "127.0.0.1:9") && string(out) != body {
			t.Fatalf("a body without upstream links changed: %q → %q", body, out)
		}
	})
}
