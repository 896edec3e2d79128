package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// TestStaleWhenExhausted: an answer past its TTL is served stale (RFC 9211's
// negative ttl, with Age) when Spotify's 429 leaves no fresh answer within
// the caller's max wait, instead of a refusal; while the pause lasts, stale
// answers cost no upstream request. no-cache never gets a stale answer;
// only-if-cached with max-stale gets one without going upstream.
func TestStaleWhenExhausted(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{extra: `ttl = "1s"` + "\n"})
	ctx := testenv.Ctx(t, 2*time.Minute)
	path := "v1/artists/" + spotifysim.Artist95ID
	if r, err := e.get(ctx, path, nil, nil); err != nil || r.Status != 200 {
		t.Fatalf("first answer: %v", err)
	}
	first, _ := e.get(ctx, path, nil, nil)
	// Poll until the answer is no longer fresh.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := e.get(ctx, path, nil, http.Header{"Cache-Control": {"only-if-cached"}})
		if problemStatus(err) == http.StatusGatewayTimeout {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the answer stayed fresh past its 1s TTL")
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}

	e.Sim.Force429(600, 1)
	before := e.Sim.Counts().APIRequests
	short := http.Header{"Sluice-Max-Wait": {"2s"}}
	r, err := e.get(ctx, path, nil, short)
	if err != nil || r.Status != 200 {
		t.Fatalf("after the 429: %v, want the stale answer", err)
	}
	cs := r.Header.Get("Cache-Status")
	if !strings.HasPrefix(cs, "sluice; hit; ttl=-") || r.Header.Get("Age") == "" {
		t.Fatalf("Cache-Status %q, Age %q: want a stale hit with a negative ttl", cs, r.Header.Get("Age"))
	}
	if string(r.Body) != string(first.Body) {
		t.Fatal("the stale answer is not the stored one")
	}
	if got := e.Sim.Counts().APIRequests - before; got != 1 {
		t.Fatalf("%d API requests, want 1 (the one answered 429)", got)
	}
	// The bucket is paused now: stale at once, nothing upstream.
	for range 3 {
		r, err := e.get(ctx, path, nil, short)
		if err != nil || !strings.Contains(r.Header.Get("Cache-Status"), "ttl=-") {
			t.Fatalf("during the pause: %v, want a stale answer", err)
		}
	}
	if got := e.Sim.Counts().APIRequests - before; got != 1 {
		t.Fatalf("%d API requests during the pause, want none more", got-1)
	}
	// A caller holding the stale answer's validator gets a 304 for it
	// (RFC 9110 13.2.1), still marked stale.
	nm, nmBody := rawGet(t, e.Socket, "GET /v1/spotify/"+path+" HTTP/1.1\r\nHost: sluice\r\nSluice-Max-Wait: 2s\r\nIf-None-Match: "+r.Header.Get("ETag")+"\r\n\r\n")
	if nm.StatusCode != http.StatusNotModified || len(nmBody) != 0 || !strings.Contains(nm.Header.Get("Cache-Status"), "ttl=-") {
		t.Fatalf("If-None-Match on the stale answer: %d, Cache-Status %q, %d bytes; want a stale 304", nm.StatusCode, nm.Header.Get("Cache-Status"), len(nmBody))
	}
	if _, err := e.get(ctx, path, nil, http.Header{"Sluice-Max-Wait": {"2s"}, "Cache-Control": {"no-cache"}}); problemStatus(err) != http.StatusTooManyRequests {
		t.Fatalf("no-cache during the pause: %v, want 429 (never stale)", err)
	}
	r, err = e.get(ctx, path, nil, http.Header{"Cache-Control": {"only-if-cached, max-stale"}})
	if err != nil || !strings.Contains(r.Header.Get("Cache-Status"), "ttl=-") {
		t.Fatalf("only-if-cached, max-stale: %v, want the stale answer", err)
	}
	if _, err := e.get(ctx, path, nil, http.Header{"Cache-Control": {"only-if-cached, max-stale=0"}}); problemStatus(err) != http.StatusGatewayTimeout {
		t.Fatalf("only-if-cached, max-stale=0 on an answer stale for over a second: %v, want 504", err)
	}
	// Another artist, never fetched: a plain 429.
	if _, err := e.get(ctx, "v1/artists/"+spotifysim.Artist95ID[:21]+"x", nil, short); problemStatus(err) != http.StatusTooManyRequests {
		t.Fatalf("uncached lookup during the pause: %v, want 429", err)
	}
}
