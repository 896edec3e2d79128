package e2e

import (
	"bytes"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// TestSecretsNeverLeak runs happy and failure paths with distinctive
// credentials and looks for them in every answer, the status, and the
// daemon's and plugins' log.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	const key, auth = "777001:SECRETaccesskeyXYZZY", "888002:SECRETtmanageQUUX"
	env := testenv.Start(t, testenv.Options{AccessKey: key, TmanageAuth: auth,
		SpotifyLimit: ineosim.Limit{Requests: 6, Window: 500 * time.Millisecond}})
	ctx := testenv.Ctx(t, time.Minute)
	var seen bytes.Buffer
	call := func(method, path string, q url.Values, hdr http.Header) {
		r, err := env.Client.Call(ctx, method, path, q, nil, hdr)
		if r != nil {
			seen.Write(r.Body)
			for k, vs := range r.Header {
				seen.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
			}
		}
		if err != nil {
			seen.WriteString(err.Error())
		}
	}
	call("GET", "/v1/ineo/spotify.php", url.Values{"trackId": {"6fx5VOjqYNBHcDf5GIF5g5"}}, nil)
	call("GET", "/v1/ineo/spotify.php", url.Values{"trackId": {"0000000000000000000602"}}, nil)
	call("GET", "/v1/ineo/spotify.php", url.Values{"trackId": {"bad"}}, nil)
	call("GET", "/v1/ineo/tmanage-v2.php", url.Values{"action": {"sendcode"}, "phone": {"989012345678"}}, nil)
	call("GET", "/v1/ineo/tmanage-v2.php", url.Values{"action": {"information"}, "phone": {"989012345678"}}, nil)
	env.Ineo.FailNext(ineosim.ServiceSpotify, 10)
	call("GET", "/v1/ineo/spotify.php", url.Values{"trackId": {"6fx5VOjqYNBHcDf5GIF5g7"}}, http.Header{"Cache-Control": {"no-cache"}})
	call("GET", "/v1/ineo/spotify.php", url.Values{"trackId": {"6fx5VOjqYNBHcDf5GIF5g8"}}, http.Header{"Sluice-Max-Wait": {"1s"}})
	// Upstream unreachable: the error must not carry the request URL.
	env.Ineo.Close()
	env.Ineo.SetDelay(0)
	call("GET", "/v1/ineo/tmanage-v2.php", url.Values{"action": {"logout"}, "phone": {"989012345678"}}, nil)
	// A plugin crash, and a broken config with a secret on the bad line.
	st, err := env.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(st.Providers[0].PID, syscall.SIGKILL)
	env.WriteConfig(strings.Replace(env.ConfigText(), "access_key = ", "access_key = 12 ", 1))
	call("POST", "/v1/reload", nil, nil)
	call("GET", "/v1/status", nil, nil)
	call("GET", "/v1/cache", nil, nil)
	env.StopDaemon()
	logb, err := os.ReadFile(env.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	all := seen.String() + string(logb)
	for _, secret := range []string{key, auth, "SECRETaccesskey", "SECRETtmanage", url.QueryEscape(key)} {
		if strings.Contains(all, secret) {
			i := strings.Index(all, secret)
			t.Fatalf("secret %q leaked: ...%s...", secret, all[max(0, i-200):min(len(all), i+100)])
		}
	}
	if !strings.Contains(all, "upstream unreachable") {
		t.Fatalf("the unreachable path was not exercised:\n%s", seen.String())
	}
}
