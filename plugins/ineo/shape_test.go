package main

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/provider"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// TestSuccessWithoutLinkIs502: a spotify.php success that carries no
// download link is not iNeo's answer: a 502 problem naming the operation
// and quoting none of the body, nothing written (so nothing for the
// gateway to cache), not retried; the next call reaches iNeo again and is
// relayed and cacheable.
func TestSuccessWithoutLinkIs502(t *testing.T) {
	// Each body carries the marker, so a detail that quotes it shows.
	const marker = "QUOTED"
	bad := []struct{ name, body string }{
		{"no result", `{"ok":true,"status":"successfully.","status_code":200,"note":"` + marker + `"}`},
		{"bare status_code", `{"status_code":200,"x":"` + marker + `"}`},
		{"null result", `{"ok":true,"status":"successfully.","status_code":200,"result":null,"x":"` + marker + `"}`},
		{"result not an object", `{"ok":true,"status":"successfully.","status_code":200,"result":["https://` + marker + `.example/a.mp3"]}`},
		{"result a string", `{"ok":true,"status":"successfully.","status_code":200,"result":"https://` + marker + `.example/a.mp3"}`},
		{"empty result", `{"ok":true,"status":"successfully.","status_code":200,"result":{},"x":"` + marker + `"}`},
		{"link not a URL", `{"ok":true,"status":"successfully.","status_code":200,"result":{"download_link":"` + marker + `"}}`},
		{"link relative", `{"ok":true,"status":"successfully.","status_code":200,"result":{"download_link":"/dl/` + marker + `.mp3"}}`},
		{"link not http", `{"ok":true,"status":"successfully.","status_code":200,"result":{"download_link":"ftp://` + marker + `.example/a.mp3"}}`},
		{"link null", `{"ok":true,"status":"successfully.","status_code":200,"result":{"title":"` + marker + `","download_link":null}}`},
	}
	req := &provider.Request{Operation: "spotify.track", Method: http.MethodGet,
		Params: url.Values{"trackId": {"6fx5VOjqYNBHcDf5GIF5g5"}}}
	up := &fakeUp{hc: &http.Client{}}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			// A simulator each: two calls a case stay within iNeo's 6 in 7 s.
			p, sim := newSimPlugin(t, "")
			before := sim.Requests(ineosim.ServiceSpotify)
			sim.InjectBody(ineosim.ServiceSpotify, b.body)
			rec := &recorder{}
			err := p.serve(context.Background(), req, rec, up)
			var pr *problem.Problem
			if !errors.As(err, &pr) || pr.Status != http.StatusBadGateway || !strings.Contains(pr.Detail, "spotify.track") {
				t.Fatalf("err %v, want a 502 problem naming spotify.track", err)
			}
			if strings.Contains(pr.Detail, marker) || strings.Contains(pr.Title, marker) {
				t.Fatalf("problem quotes the body: %+v", pr)
			}
			if rec.status != 0 || rec.body.Len() != 0 || rec.hint.Cacheable {
				t.Fatalf("answer written: %d %+v %q", rec.status, rec.hint, rec.body.String())
			}
			if got := sim.Requests(ineosim.ServiceSpotify) - before; got != 1 {
				t.Fatalf("%d requests, want 1 (a broken success is not retried)", got)
			}
			rec = &recorder{}
			if err := p.serve(context.Background(), req, rec, up); err != nil || rec.status != http.StatusOK || !rec.hint.Cacheable {
				t.Fatalf("next call: status %d hint %+v err %v", rec.status, rec.hint, err)
			}
			if got := sim.Requests(ineosim.ServiceSpotify) - before; got != 2 {
				t.Fatalf("%d requests, want 2", got)
			}
		})
	}
}

func TestCheckShape(t *testing.T) {
	const env = `{"ok":true,"status":"successfully.","status_code":200,"result":`
	cases := []struct {
		op, body string
		ok       bool
	}{
		{"spotify.track", env + `{"download_link":"https://cdn.example/a.mp3"}}`, true},
		{"spotify.track", env + `{"track_id":"x","download_link":"http://cdn.example/a.mp3?t=1"}}`, true},
		// The originals do not name the field: another spelling, or a
		// nested one, is still a link.
		{"spotify.track", env + `{"link":"https://cdn.example/a.mp3"}}`, true},
		{"spotify.track", env + `{"track":{"urls":["https://cdn.example/a.mp3"]}}}`, true},
		{"spotify.track", env + `{"download_link":""}}`, false},
		{"spotify.track", env + `{"download_link":"https://"}}`, false},
		{"spotify.track", env + `{"download_link":42}}`, false},
		{"spotify.track", env + `true}`, false},
		{"spotify.track", `{"status_code":200}`, false},
		{"spotify.track", `{"status_code":200,"result":{"download_link":"https://cdn.example/a.mp3"}} trailing`, false},
		{"spotify.track", `not json`, false},
		{"tmanage.information", env + `{}}`, false},
	}
	for _, tc := range cases {
		err := checkShape(tc.op, []byte(tc.body))
		if (err == nil) != tc.ok {
			t.Errorf("%s %s: err %v, want ok=%v", tc.op, tc.body, err, tc.ok)
		}
	}
}
