package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// headerTimeout is the daemon's ReadHeaderTimeout. An answer that only
// comes once it has run out (or never) misses the deadlines below, which
// are half of it: what is asserted is that an answer comes at all, not how
// fast.
const headerTimeout = 10 * time.Second

// rawAnswer sends raw on a new connection and reads one answer before
// headerTimeout/2.
func rawAnswer(t *testing.T, socket, raw string) laneAnswer {
	t.Helper()
	c, br := dialRaw(t, socket)
	c.SetDeadline(time.Now().Add(headerTimeout / 2))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to %q: %v", raw, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return laneAnswer{resp.StatusCode, resp.Header, string(b)}
}

// TestBrowsersRefused: a request a browser sends for a web page (no-cors
// with Sec-Fetch-Site cross-site and no Origin, any Sec-Fetch-Site but
// none, an Origin even empty, a Referer) is refused with one problem
// before it costs an upstream request, whether the answer is cached (the
// fast lane's hits), not cached, or a side effect (sendcode texts a
// Telegram code). Sec-Fetch-Site none, a request the user made, is served.
func TestBrowsersRefused(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, time.Minute)
	cached, missed := trackID(1200), trackID(1201)
	if r, err := track(ctx, env.Client, cached, nil); err != nil || r.Status != http.StatusOK {
		t.Fatalf("priming: %v %v", r, err)
	}
	upstream := func() int {
		return env.Ineo.Requests(ineosim.ServiceSpotify) + env.Ineo.Requests(ineosim.ServiceTmanage)
	}
	targets := map[string]string{
		"cached":   "/v1/ineo/spotify.php?trackId=" + cached,
		"miss":     "/v1/ineo/spotify.php?trackId=" + missed,
		"sendcode": "/v1/ineo/tmanage-v2.php?action=sendcode&phone=989012345678",
	}
	before := upstream()
	var detail string
	for name, target := range targets {
		for _, h := range []string{
			"Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: image",
			"Sec-Fetch-Site: same-site", "Sec-Fetch-Site: same-origin",
			"Origin: ", "Origin: null", "Referer: http://evil.example/",
		} {
			t.Run(name+"/"+h, func(t *testing.T) {
				a := rawAnswer(t, env.Socket, "GET "+target+" HTTP/1.1\r\nHost: sluice\r\n"+h+"\r\n\r\n")
				var p problem.Problem
				if err := json.Unmarshal([]byte(a.body), &p); err != nil || a.status != http.StatusForbidden || p.Type != "urn:sluice:problem:forbidden" {
					t.Fatalf("answer %d %s, want a 403 forbidden problem", a.status, a.body)
				}
				if detail == "" {
					detail = p.Detail
				} else if p.Detail != detail {
					t.Fatalf("problem %q; another got %q: every refusal must read alike", p.Detail, detail)
				}
			})
		}
	}
	if n := upstream() - before; n != 0 {
		t.Fatalf("%d upstream requests for refused browser requests, want 0", n)
	}
	if !strings.Contains(detail, "browser") {
		t.Errorf("problem %q does not say why", detail)
	}

	// Sec-Fetch-Site none: the user typed the address; served, from the
	// cache and from upstream alike.
	a := rawAnswer(t, env.Socket, "GET "+targets["cached"]+" HTTP/1.1\r\nHost: sluice\r\nSec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\n\r\n")
	if a.status != http.StatusOK || !strings.HasPrefix(a.header.Get("Cache-Status"), "sluice; hit") {
		t.Fatalf("cached with Sec-Fetch-Site none: %d %q", a.status, a.header.Get("Cache-Status"))
	}
	a = rawAnswer(t, env.Socket, "GET "+targets["miss"]+" HTTP/1.1\r\nHost: sluice\r\nSec-Fetch-Site: none\r\n\r\n")
	if a.status != http.StatusOK || upstream()-before != 1 {
		t.Fatalf("miss with Sec-Fetch-Site none: %d, %d upstream requests", a.status, upstream()-before)
	}
}

// TestBareLFAnswered: a request head whose lines end in a bare LF is
// answered (net/http reads it) instead of waiting out the header timeout,
// for a daemon route and for a cached provider answer.
func TestBareLFAnswered(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, time.Minute)
	id := trackID(1300)
	if r, err := track(ctx, env.Client, id, nil); err != nil || r.Status != http.StatusOK {
		t.Fatalf("priming: %v %v", r, err)
	}
	for _, tc := range []struct{ name, raw, cache string }{
		{"health", "GET /v1/health HTTP/1.1\nHost: x\n\n", ""},
		{"cached track", "GET /v1/ineo/spotify.php?trackId=" + id + " HTTP/1.1\nHost: sluice\n\n", "sluice; hit"},
		{"mixed endings", "GET /v1/ineo/spotify.php?trackId=" + id + " HTTP/1.1\r\nHost: sluice\n\r\n", "sluice; hit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := rawAnswer(t, env.Socket, tc.raw)
			if a.status != http.StatusOK || !strings.HasPrefix(a.header.Get("Cache-Status"), tc.cache) {
				t.Fatalf("answer %d (Cache-Status %q) %s, want 200", a.status, a.header.Get("Cache-Status"), a.body)
			}
		})
	}
}
