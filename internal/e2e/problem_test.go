package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
)

// TestProblemCarriesErrorObject: sluice's own refusals on provider routes
// carry Spotify's error object next to the problem members, so a Spotify
// client library pointed at the socket reports sluice's reason.
func TestProblemCarriesErrorObject(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{})
	ctx := testenv.Ctx(t, time.Minute)
	tests := []struct {
		name   string
		path   string
		query  url.Values
		status int
	}{
		{"invalid parameter", "/v1/ineo/spotify.php", url.Values{"trackId": {"not a track"}}, 400},
		{"unknown operation", "/v1/ineo/nothing.php", nil, 404},
		{"unknown provider", "/v1/nobody/x", nil, 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := env.Client.Call(ctx, http.MethodGet, tc.path, tc.query, nil, nil)
			if err == nil || r == nil || r.Status != tc.status {
				t.Fatalf("got %v, %v; want a %d problem", r, err, tc.status)
			}
			var body struct {
				Status int    `json:"status"`
				Detail string `json:"detail"`
				Error  struct {
					Status  int    `json:"status"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(r.Body, &body); err != nil {
				t.Fatal(err)
			}
			if body.Status != tc.status || body.Error.Status != tc.status || body.Error.Message == "" || body.Error.Message != body.Detail {
				t.Fatalf("body %s: want status %d in both and error.message = detail", r.Body, tc.status)
			}
		})
	}
}
