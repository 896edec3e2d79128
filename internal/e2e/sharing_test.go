package e2e

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

var (
	policyRE = regexp.MustCompile(`^"ineo\.spotify";q=6;w=7$`)
	budgetRE = regexp.MustCompile(`^"ineo\.spotify";r=[0-6];t=\d+$`)
)

// TestSharingIsVisible: apps can see and use what sluice shares. Every
// provider answer carries the RateLimit headers of its bucket and a strong
// ETag, on the full path and in the fast lane alike; If-None-Match gets a
// 304 from the cache at no upstream cost; /metrics counts the upstream
// requests saved and each bucket's remaining budget; status gives each
// provider's calls and savings.
func TestSharingIsVisible(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	const target = "/v1/ineo/spotify.php?trackId=6fx5VOjqYNBHcDf5GIF5g5"
	get := func(extra string) (*http.Response, []byte) {
		return rawGet(t, env.Socket, "GET "+target+" HTTP/1.1\r\nHost: sluice\r\n"+extra+"\r\n")
	}
	miss, _ := get("")                               // full path: a miss
	full, _ := get("Cache-Control: max-stale=0\r\n") // full path: a hit (the header hands it over)
	lane, body := get("")                            // fast lane: a hit
	for name, r := range map[string]*http.Response{"miss": miss, "full-path hit": full, "lane hit": lane} {
		if r.StatusCode != 200 {
			t.Fatalf("%s: %d", name, r.StatusCode)
		}
		if p, b := r.Header.Get("RateLimit-Policy"), r.Header.Get("RateLimit"); !policyRE.MatchString(p) || !budgetRE.MatchString(b) {
			t.Errorf("%s: RateLimit-Policy %q, RateLimit %q", name, p, b)
		}
		if tag := r.Header.Get("ETag"); !strings.HasPrefix(tag, `"`) || tag != miss.Header.Get("ETag") {
			t.Errorf("%s: ETag %q, want the miss's strong %q", name, tag, miss.Header.Get("ETag"))
		}
	}
	// The miss's own grant is counted in what its answer says is left:
	// read before the grant, it said 6 (a request that was no longer
	// there to spend).
	if b := miss.Header.Get("RateLimit"); !strings.Contains(b, ";r=") || strings.Contains(b, ";r=6;") {
		t.Errorf("miss: RateLimit %q, want at most 5 left after its own grant", b)
	}
	if !strings.Contains(lane.Header.Get("Cache-Status"), "hit") || len(body) == 0 {
		t.Fatalf("lane: %q", lane.Header.Get("Cache-Status"))
	}
	before := env.Ineo.Requests(ineosim.ServiceSpotify)
	nm, nmBody := get("If-None-Match: " + miss.Header.Get("ETag") + "\r\n")
	if nm.StatusCode != http.StatusNotModified || len(nmBody) != 0 || nm.Header.Get("ETag") != miss.Header.Get("ETag") {
		t.Fatalf("If-None-Match: %d (%d bytes), ETag %q; want 304 with the ETag and no body", nm.StatusCode, len(nmBody), nm.Header.Get("ETag"))
	}
	if other, _ := get(`If-None-Match: "other"` + "\r\n"); other.StatusCode != 200 {
		t.Fatalf("If-None-Match with another tag: %d, want 200", other.StatusCode)
	}
	if got := env.Ineo.Requests(ineosim.ServiceSpotify); got != before {
		t.Fatalf("%d upstream requests for conditional requests of a cached answer", got-before)
	}

	// 1 miss, 4 answered from the cache (a 304 among them).
	if v := metricValue(t, env, `sluice_upstream_requests_saved_total{provider="ineo",reason="cache"}`); v != 4 {
		t.Errorf("saved by the cache: %v, want 4", v)
	}
	if v := metricValue(t, env, `sluice_scheduler_remaining_requests{bucket="ineo.spotify"}`); v < 0 || v > 5 {
		t.Errorf("remaining budget gauge %v, want 0..5 after one grant", v)
	}
	st, err := env.Client.Status(testenv.Ctx(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Providers {
		if p.Name == "ineo" && (p.Calls != 5 || p.Saved != 4) {
			t.Errorf("status: ineo calls %d, saved %d; want 5, 4", p.Calls, p.Saved)
		}
	}
}

// TestETagFollowsTheCallersHost: an answer whose links carry the caller's
// base has a validator per base: another host's tag gets the full answer.
func TestETagFollowsTheCallersHost(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{})
	target := "/v1/spotify/v1/artists/" + spotifysim.Artist95ID + "/albums?limit=10"
	a, _ := rawGet(t, e.Socket, "GET "+target+" HTTP/1.1\r\nHost: sluice\r\n\r\n")
	b, _ := rawGet(t, e.Socket, "GET "+target+" HTTP/1.1\r\nHost: localhost\r\n\r\n")
	if a.Header.Get("ETag") == "" || a.Header.Get("ETag") == b.Header.Get("ETag") {
		t.Fatalf("ETags %q and %q: want one per base", a.Header.Get("ETag"), b.Header.Get("ETag"))
	}
	if r, _ := rawGet(t, e.Socket, "GET "+target+" HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: "+a.Header.Get("ETag")+"\r\n\r\n"); r.StatusCode != 200 {
		t.Fatalf("localhost with sluice's tag: %d, want 200", r.StatusCode)
	}
	if r, _ := rawGet(t, e.Socket, "GET "+target+" HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: "+b.Header.Get("ETag")+"\r\n\r\n"); r.StatusCode != 304 {
		t.Fatalf("localhost with its own tag: %d, want 304", r.StatusCode)
	}
}

// TestNoStoreAndRevalidation: a request's Cache-Control: no-store keeps its
// answer out of the cache (RFC 9111 5.2.1.5), and a revalidation (no-cache
// with If-None-Match) whose answer has the caller's validator is a 304
// (RFC 9110 13.2.1), not the whole body again.
func TestNoStoreAndRevalidation(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{})
	target := "/v1/spotify/v1/artists/" + spotifysim.Artist95ID
	get := func(extra string) (*http.Response, []byte) {
		return rawGet(t, e.Socket, "GET "+target+" HTTP/1.1\r\nHost: sluice\r\n"+extra+"\r\n")
	}
	before := e.Sim.Counts().APIRequests
	ns, _ := get("Cache-Control: no-store\r\n")
	if ns.StatusCode != 200 || strings.Contains(ns.Header.Get("Cache-Status"), "stored") {
		t.Fatalf("no-store: %d, Cache-Status %q; want 200, not stored", ns.StatusCode, ns.Header.Get("Cache-Status"))
	}
	miss, _ := get("")
	if miss.StatusCode != 200 || !strings.Contains(miss.Header.Get("Cache-Status"), "fwd=miss") {
		t.Fatalf("after no-store: %d, Cache-Status %q; want a miss (nothing was stored)", miss.StatusCode, miss.Header.Get("Cache-Status"))
	}
	reval, body := get("Cache-Control: no-cache\r\nIf-None-Match: " + miss.Header.Get("ETag") + "\r\n")
	if reval.StatusCode != http.StatusNotModified || len(body) != 0 || reval.Header.Get("ETag") != miss.Header.Get("ETag") {
		t.Fatalf("no-cache with If-None-Match: %d (%d bytes), ETag %q; want 304 with the ETag %q", reval.StatusCode, len(body), reval.Header.Get("ETag"), miss.Header.Get("ETag"))
	}
	if got := e.Sim.Counts().APIRequests - before; got != 3 {
		t.Fatalf("%d Spotify requests, want 3 (no-store, the miss after it, the revalidation)", got)
	}
}

// TestMaxAgeAndMinFresh: a request's max-age=N takes no cached answer
// older than N seconds, and min-fresh=N none that stays fresh for less
// than N more (RFC 9111 5.2.1.1, 5.2.1.3); such a request goes upstream,
// the others are hits.
func TestMaxAgeAndMinFresh(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{})
	target := "/v1/spotify/v1/artists/" + spotifysim.Artist95ID
	get := func(cc string) *http.Response {
		extra := ""
		if cc != "" {
			extra = "Cache-Control: " + cc + "\r\n"
		}
		resp, body := rawGet(t, e.Socket, "GET "+target+" HTTP/1.1\r\nHost: sluice\r\n"+extra+"\r\n")
		if resp.StatusCode != 200 {
			t.Fatalf("%q: %d %s", cc, resp.StatusCode, body)
		}
		return resp
	}
	hit := func(r *http.Response) bool { return strings.HasPrefix(r.Header.Get("Cache-Status"), "sluice; hit") }
	before := e.Sim.Counts().APIRequests
	get("")
	if r := get("min-fresh=60"); !hit(r) {
		t.Errorf("min-fresh=60 on an answer fresh for an hour: %q, want a hit", r.Header.Get("Cache-Status"))
	}
	if r := get("min-fresh=99999999"); hit(r) {
		t.Errorf("min-fresh past the answer's freshness: %q, want it fetched", r.Header.Get("Cache-Status"))
	}
	testenv.Eventually(t, 30*time.Second, "the cached answer to be 2 s old", func() bool {
		age, _ := strconv.Atoi(get("").Header.Get("Age"))
		return age >= 2
	})
	if r := get("max-age=3600"); !hit(r) {
		t.Errorf("max-age=3600: %q, want a hit", r.Header.Get("Cache-Status"))
	}
	if r := get("max-age=1"); hit(r) {
		t.Errorf("max-age=1 on an answer 2 s old: %q, want it fetched", r.Header.Get("Cache-Status"))
	}
	if got := e.Sim.Counts().APIRequests - before; got != 3 {
		t.Fatalf("%d Spotify requests, want 3 (the first, min-fresh, max-age)", got)
	}
}
