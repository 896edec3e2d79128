package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// TestLongWaitShowsItself: a call waiting for rate budget can be seen
// before its answer exists, by any client: GET /v1/requests/{id} (the
// caller's own Sluice-Request-Id) says it waits for ineo.spotify with the
// budget used up and when the next slot comes, and a caller that sends
// Sluice-Progress: 102 gets 102 interim responses saying the same, then
// its answer.
func TestLongWaitShowsItself(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{SpotifyLimit: ineosim.Limit{Requests: 1, Window: 4 * time.Second}})
	ctx := testenv.Ctx(t, time.Minute)
	if _, err := track(ctx, env.Client, trackID(1), nil); err != nil {
		t.Fatal(err)
	}

	c, err := net.Dial("unix", env.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	_, err = io.WriteString(c, "GET /v1/ineo/spotify.php?trackId="+trackID(2)+" HTTP/1.1\r\nHost: sluice\r\n"+
		"Sluice-Request-Id: wait-1\r\nSluice-Progress: 102\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}

	// Meanwhile, the request's state by its id.
	var seen api.RequestStatus
	testenv.Eventually(t, 10*time.Second, "the call waiting for budget in /v1/requests/wait-1", func() bool {
		r, err := env.Client.Call(ctx, http.MethodGet, "/v1/requests/wait-1", nil, nil, nil)
		if err != nil || json.Unmarshal(r.Body, &seen) != nil {
			return false
		}
		return seen.Stage == "budget"
	})
	if seen.Bucket != "ineo.spotify" || seen.Budget == nil || seen.Budget.Used != 1 || seen.Budget.Limit != 1 || seen.Expected == nil {
		t.Fatalf("request state %+v (budget %+v): want waiting for ineo.spotify, 1 of 1 used, an expected start", seen, seen.Budget)
	}

	br := bufio.NewReader(c)
	interim := 0
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusProcessing {
			p := resp.Header.Get("Sluice-Progress")
			if !strings.Contains(p, "stage=budget") || !strings.Contains(p, `bucket="ineo.spotify"`) || !strings.Contains(p, "used=1; limit=1") || !strings.Contains(p, "next=") {
				t.Fatalf("102 with Sluice-Progress %q", p)
			}
			interim++
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("Sluice-Request-Id") != "wait-1" {
			t.Fatalf("answer %d, request id %q", resp.StatusCode, resp.Header.Get("Sluice-Request-Id"))
		}
		break
	}
	if interim == 0 {
		t.Fatal("no 102 while waiting for budget")
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := env.Client.Call(cctx, http.MethodGet, "/v1/requests/wait-1", nil, nil, nil); problemStatus(err) != http.StatusNotFound {
		t.Fatalf("/v1/requests/wait-1 after the answer: %v, want 404", err)
	}
}
