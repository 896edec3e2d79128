package e2e

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/hellorf/hellorfsim"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// brokenMarker is in every broken body below, so one that reaches the
// caller shows.
const brokenMarker = "BROKEN-SUCCESS"

// wantShape502 checks a call's result is a 502 problem naming op, with no
// trace of the broken body.
func wantShape502(t *testing.T, r *client.Response, err error, op string) {
	t.Helper()
	var p *problem.Problem
	if !errors.As(err, &p) || p.Status != http.StatusBadGateway || !strings.Contains(p.Detail, op) {
		if r != nil {
			t.Fatalf("answer %d (Cache-Status %q) %q, err %v: want a 502 problem naming %s", r.Status, r.Header.Get("Cache-Status"), r.Body, err, op)
		}
		t.Fatalf("err %v: want a 502 problem naming %s", err, op)
	}
	if strings.Contains(p.Detail, brokenMarker) || (r != nil && strings.Contains(string(r.Body), brokenMarker)) {
		t.Fatalf("the broken body reached the caller: %+v", p)
	}
}

// TestIneoSuccessWithoutLinkIsNotCached: a spotify.php answer with
// status_code 200 but no result (so no download link) reaches the caller
// as a 502 problem and is not cached: the same request again goes to iNeo
// again, and iNeo's real answer is the one cached.
func TestIneoSuccessWithoutLinkIsNotCached(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, time.Minute)
	const id = "6fx5VOjqYNBHcDf5GIF5g5"
	env.Ineo.InjectBody(ineosim.ServiceSpotify, `{"status_code":200,"note":"`+brokenMarker+`"}`)
	r, err := track(ctx, env.Client, id, nil)
	wantShape502(t, r, err, "spotify.track")
	if _, err := track(ctx, env.Client, id, http.Header{"Cache-Control": {"only-if-cached"}}); problemStatus(err) != http.StatusGatewayTimeout {
		t.Fatalf("after the broken success, only-if-cached: %v, want 504 (nothing cached)", err)
	}
	r, err = track(ctx, env.Client, id, nil)
	if err != nil || !strings.Contains(string(r.Body), `"download_link"`) {
		t.Fatalf("second call: %+v, %v", r, err)
	}
	if got := env.Ineo.Requests(ineosim.ServiceSpotify); got != 2 {
		t.Fatalf("%d spotify.php requests, want 2: the second call must go upstream again", got)
	}
	// iNeo's own answer is cached as usual.
	testenv.Eventually(t, 5*time.Second, "the real answer cached", func() bool {
		_, err := track(ctx, env.Client, id, http.Header{"Cache-Control": {"only-if-cached"}})
		return err == nil
	})
}

// TestHellorfSuccessWithoutDataIsNotCached: an audio/categories answer
// with result true and data null reaches the caller as a 502 problem and
// is not cached: the same request again goes to hellorf again.
func TestHellorfSuccessWithoutDataIsNotCached(t *testing.T) {
	t.Parallel()
	env, sim := startHellorf(t, hellorfEnv{})
	ctx := testenv.Ctx(t, time.Minute)
	sim.BodyNext(hellorfsim.PathCategories, `{"result":true,"data":null,"note":"`+brokenMarker+`"}`)
	r, err := hcall(ctx, env, http.MethodGet, "categories", nil, nil)
	wantShape502(t, r, err, "audio.categories")
	if _, err := hcall(ctx, env, http.MethodGet, "categories", nil, http.Header{"Cache-Control": {"only-if-cached"}}); problemStatus(err) != http.StatusGatewayTimeout {
		t.Fatalf("after the broken success, only-if-cached: %v, want 504 (nothing cached)", err)
	}
	r, err = hcall(ctx, env, http.MethodGet, "categories", nil, nil)
	if err != nil || !strings.Contains(string(r.Body), `"genres"`) {
		t.Fatalf("second call: %+v, %v", r, err)
	}
	if got := sim.Requests(hellorfsim.PathCategories); got != 2 {
		t.Fatalf("%d audio/categories requests, want 2: the second call must go upstream again", got)
	}
	testenv.Eventually(t, 5*time.Second, "the real answer cached", func() bool {
		_, err := hcall(ctx, env, http.MethodGet, "categories", nil, http.Header{"Cache-Control": {"only-if-cached"}})
		return err == nil
	})
}
