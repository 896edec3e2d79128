package e2e

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// TestHeadIsSafe: a HEAD (curl -I, a link checker) may only read what a
// GET of a cacheable operation would: on an operation with side effects it
// is refused locally, and on a cacheable one the whole GET answer is
// fetched and stored, so the GET after it is a hit with the full body.
func TestHeadIsSafe(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, time.Minute)

	refused := []struct {
		name  string
		query url.Values
	}{
		{"sendcode texts a login code", url.Values{"action": {"sendcode"}, "phone": {"989012345678"}}},
		{"information is never cached", url.Values{"action": {"information"}}},
		{"deleteaccount deletes the account", url.Values{"action": {"deleteaccount"}, "access": {"yes"}}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			_, err := env.Client.Call(ctx, http.MethodHead, "/v1/ineo/tmanage-v2.php", tc.query, nil, nil)
			var p *problem.Problem
			if !errors.As(err, &p) || p.Status != http.StatusMethodNotAllowed {
				t.Fatalf("HEAD: %v, want 405", err)
			}
		})
	}
	if n := env.Ineo.Requests(ineosim.ServiceTmanage); n != 0 {
		t.Fatalf("refused HEADs reached the upstream: %d requests", n)
	}

	q := url.Values{"trackId": {trackID(950)}}
	head, err := env.Client.Call(ctx, http.MethodHead, "/v1/ineo/spotify.php", q, nil, nil)
	if err != nil || head.Status != 200 || len(head.Body) != 0 {
		t.Fatalf("HEAD of a track: %v (status %v, %d body bytes)", err, head, len(head.Body))
	}
	get, err := track(ctx, env.Client, trackID(950), nil)
	if err != nil || get.Status != 200 {
		t.Fatalf("GET after HEAD: %v", err)
	}
	if cs := get.Header.Get("Cache-Status"); !strings.Contains(cs, "; hit") || len(get.Body) == 0 {
		t.Fatalf("GET after HEAD: Cache-Status %q, %d body bytes; want a hit with the whole answer", cs, len(get.Body))
	}
	if n := env.Ineo.Requests(ineosim.ServiceSpotify); n != 1 {
		t.Fatalf("HEAD then GET cost %d upstream requests, want 1", n)
	}
}
