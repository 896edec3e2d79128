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
	"github.com/sluice-dev/sluice/plugins/hellorf/hellorfsim"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
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

// TestSecretsNeverLeakAnyProvider runs hellorf and Spotify's happy paths,
// then reloads with wrong (equally distinctive) secrets for their failure
// paths — bad signature, rejected client — and looks for every secret in
// answers, status, metrics and the daemon's and plugins' log.
func TestSecretsNeverLeakAnyProvider(t *testing.T) {
	t.Parallel()
	const hID, hSecret, hWrong = "hellorfIDqwerty42", "SECREThellorfZXCVB", "SECRETwronghellorfPLMOK"
	const sID, sSecret, sWrong = "spotifyIDasdfgh77", "SECRETspotifyYUIOP", "SECRETwrongspotifyQAZWS"
	hsim, hURL, err := hellorfsim.Start(hellorfsim.Options{ClientID: hID, ClientSecret: hSecret})
	if err != nil {
		t.Fatal(err)
	}
	defer hsim.Close()
	ssim, sAPI, sAcct, err := spotifysim.Start(spotifysim.Options{ClientID: sID, ClientSecret: sSecret})
	if err != nil {
		t.Fatal(err)
	}
	defer ssim.Close()
	section := func(hs, ss string) string {
		return testenv.HellorfSection(hURL, hID, hs, "allow_purchase = true") + testenv.SpotifySection(sAPI, sAcct, sID, ss)
	}
	env := testenv.Start(t, testenv.Options{Extra: section(hSecret, sSecret)})
	ctx := testenv.Ctx(t, time.Minute)
	var seen bytes.Buffer
	var hdr http.Header
	call := func(method, path string, q url.Values) {
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
	calls := func() {
		call("GET", "/v1/hellorf/audio/categories", nil)
		call("GET", "/v1/hellorf/audio/search", url.Values{"keyword": {"piano"}})
		call("GET", "/v1/hellorf/audio/detail", url.Values{"audio_id": {"505947"}})
		call("GET", "/v1/hellorf/audio/detail", url.Values{"audio_id": {"x"}})
		call("GET", "/v1/hellorf/audio/my-purchases", nil)
		call("GET", "/v1/spotify/v1/search", url.Values{"q": {"BTS"}, "type": {"artist"}})
		call("GET", "/v1/spotify/v1/artists/3Nrfpe0tUJi4K4DXYWgMUX", nil)
		call("GET", "/v1/spotify/v1/artists/bad", nil)
	}
	calls()
	env.WriteConfig(strings.Replace(env.ConfigText(), section(hSecret, sSecret), section(hWrong, sWrong), 1))
	if _, err := env.Client.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	hdr = http.Header{"Cache-Control": {"no-cache"}}
	calls()
	call("GET", "/v1/status", nil)
	call("GET", "/metrics", nil)
	env.StopDaemon()
	logb, err := os.ReadFile(env.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	all := seen.String() + string(logb)
	for _, secret := range []string{hSecret, hWrong, sSecret, sWrong} {
		if i := strings.Index(all, secret); i >= 0 {
			t.Fatalf("secret %q leaked: ...%s...", secret, all[max(0, i-200):min(len(all), i+100)])
		}
	}
	// The failure paths really ran.
	if !strings.Contains(strings.ToLower(all), "invalid_client") && !strings.Contains(all, "CREDENTIALS REJECTED") {
		t.Errorf("the rejected-client path was not exercised")
	}
}
