package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// tcpEnv is a daemon with Spotify and the TCP listener on a free port.
type tcpEnv struct {
	*testenv.Env
	Sim   *spotifysim.Sim
	Addr  string // the TCP listener, host:port
	extra string
}

const tcpToken = "e2e-admin-token-7f3a"

func startTCP(t *testing.T) *tcpEnv {
	t.Helper()
	sim, apiURL, accountsURL, err := spotifysim.Start(spotifysim.Options{Limit: spotifysim.Limit{Requests: 50, Window: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	extra := testenv.SpotifySection(apiURL, accountsURL, spotifysim.DefaultClientID, spotifysim.DefaultClientSecret, "") +
		"[providers.spotify.limits.api]\nrequests = 50\nwindow = \"30s\"\n"
	env := testenv.Start(t, testenv.Options{Extra: extra,
		Top: fmt.Sprintf("http_listen = \"127.0.0.1:0\"\nhttp_hosts = [\"sluice.test\"]\nhttp_admin_token = %q", tcpToken)})
	e := &tcpEnv{Env: env, Sim: sim, extra: extra}
	re := regexp.MustCompile(`"msg":"sluiced listening on TCP","addr":"([0-9.:]+)"`)
	testenv.Eventually(t, 10*time.Second, "the TCP listener's address in the log", func() bool {
		m := re.FindStringSubmatch(env.Log())
		if m != nil {
			e.Addr = m[1]
		}
		return m != nil
	})
	return e
}

// tcpGet sends one request on a new TCP connection, raw, so that Host and
// every header are exactly what the test says.
func tcpGet(t *testing.T, addr, method, target, host string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	raw := method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\n"
	for _, h := range hdr {
		raw += h + "\r\n"
	}
	if method == http.MethodPost {
		raw += "Content-Length: 0\r\n"
	}
	if _, err := io.WriteString(c, raw+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// TestTCPListener: the opt-in loopback listener, end to end: a DNS
// rebinding Host gets 421 and costs nothing upstream, browsers are refused
// as on the socket, the caller's uid decides its tier (this root process:
// admin), a foreign Authorization on a read route is ignored and never
// reaches Spotify, and links in an answer point at the listener, so
// following them literally stays on sluice and on the same cache entries.
func TestTCPListener(t *testing.T) {
	t.Parallel()
	e := startTCP(t)
	_, port, _ := net.SplitHostPort(e.Addr)
	track := "/v1/spotify/v1/tracks/" + spotifysim.SampleTrackID
	albums := "/v1/spotify/v1/artists/" + spotifysim.Artist95ID + "/albums?limit=10"

	t.Run("side effects need the token", func(t *testing.T) {
		// An <img> on a web page sends exactly this from an older
		// browser: no Origin, no Sec-Fetch-Site, the browser user's uid.
		target := "/v1/ineo/tmanage-v2.php?action=sendcode&phone=%2B989121234567"
		before := e.Ineo.Requests(ineosim.ServiceTmanage)
		if st, _, body := tcpGet(t, e.Addr, http.MethodGet, target, e.Addr); st != http.StatusForbidden || !strings.Contains(body, "admin token") {
			t.Fatalf("sendcode over TCP without the token: %d %s, want 403", st, body)
		}
		if got := e.Ineo.Requests(ineosim.ServiceTmanage); got != before {
			t.Fatalf("%d tmanage requests for a refused call", got-before)
		}
		if st, _, body := tcpGet(t, e.Addr, http.MethodGet, target, e.Addr, "Authorization: Bearer "+tcpToken); st == http.StatusForbidden {
			t.Fatalf("sendcode over TCP with the token: %d %s", st, body)
		}
	})

	t.Run("rebinding", func(t *testing.T) {
		before := e.Sim.Counts().APIRequests
		for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.nip.io:" + port, ""} {
			st, _, body := tcpGet(t, e.Addr, http.MethodGet, track, host)
			if st != http.StatusMisdirectedRequest || !strings.Contains(body, "misdirected") {
				t.Fatalf("Host %q: %d %s, want 421", host, st, body)
			}
		}
		// Cached now: the fast lane refuses alike.
		if st, _, body := tcpGet(t, e.Addr, http.MethodGet, track, e.Addr); st != http.StatusOK {
			t.Fatalf("own address: %d %s", st, body)
		}
		if st, _, _ := tcpGet(t, e.Addr, http.MethodGet, track, "evil.example:"+port); st != http.StatusMisdirectedRequest {
			t.Fatalf("a cached answer under a foreign Host: %d, want 421", st)
		}
		for _, host := range []string{"localhost:" + port, "sluice.test:" + port} {
			if st, _, body := tcpGet(t, e.Addr, http.MethodGet, track, host); st != http.StatusOK {
				t.Fatalf("Host %q: %d %s, want 200", host, st, body)
			}
		}
		if got := e.Sim.Counts().APIRequests - before; got != 1 {
			t.Fatalf("%d upstream requests, want 1 (the one allowed miss)", got)
		}
	})

	t.Run("browsers", func(t *testing.T) {
		before := e.Sim.Counts().APIRequests
		for _, h := range []string{"Origin: http://evil.example", "Origin: null", "Sec-Fetch-Site: cross-site", "Sec-Fetch-Site: same-origin"} {
			for _, target := range []string{track, "/v1/spotify/v1/tracks/" + spotifysim.Artist95ID} {
				if st, _, body := tcpGet(t, e.Addr, http.MethodGet, target, e.Addr, h); st != http.StatusForbidden || !strings.Contains(body, "browser") {
					t.Fatalf("%s: %d %s, want 403", h, st, body)
				}
			}
		}
		if got := e.Sim.Counts().APIRequests - before; got != 0 {
			t.Fatalf("%d upstream requests, want 0", got)
		}
	})

	t.Run("root is admin", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("the test process is not root")
		}
		if st, _, body := tcpGet(t, e.Addr, http.MethodPost, "/v1/reload", e.Addr); st != http.StatusOK {
			t.Fatalf("reload over TCP as root: %d %s", st, body)
		}
	})

	t.Run("foreign authorization", func(t *testing.T) {
		album := albumOf(t, e)
		before := e.Sim.Counts()
		// A miss (its request goes upstream) and a hit, with an SDK's
		// own bearer token.
		for _, target := range []string{"/v1/spotify/v1/albums/" + album, track} {
			st, _, body := tcpGet(t, e.Addr, http.MethodGet, target, e.Addr, "Authorization: Bearer BQDsdk-made-up-token")
			if st != http.StatusOK {
				t.Fatalf("%s: %d %s, want 200", target, st, body)
			}
		}
		after := e.Sim.Counts()
		if after.Unauthorized != before.Unauthorized || after.APIRequests-before.APIRequests != 1 {
			t.Fatalf("simulator: %d 401s, %d requests; want 0 and 1 (the caller's token forwarded would be a 401)",
				after.Unauthorized-before.Unauthorized, after.APIRequests-before.APIRequests)
		}
	})

	t.Run("links point at the listener", func(t *testing.T) {
		before := e.Sim.Counts().APIRequests
		walk := func(host string) int {
			base := "http://" + host + "/v1/spotify/"
			next := "http://" + host + albums
			pages := 0
			for next != "" {
				u, err := url.Parse(next)
				if err != nil || !strings.HasPrefix(next, base) {
					t.Fatalf("link %q does not start with %q", next, base)
				}
				st, _, body := tcpGet(t, e.Addr, http.MethodGet, u.RequestURI(), host)
				if st != http.StatusOK {
					t.Fatalf("%s: %d %s", next, st, body)
				}
				var p struct{ Next *string }
				json.Unmarshal([]byte(body), &p)
				next = ""
				if p.Next != nil {
					next = *p.Next
				}
				pages++
			}
			return pages
		}
		if n := walk(e.Addr); n != 10 {
			t.Fatalf("%d pages, want 10", n)
		}
		spent := e.Sim.Counts().APIRequests - before
		// The same pages under another name: links follow the name, the
		// cache entries are the same.
		if n := walk("localhost:" + port); n != 10 {
			t.Fatalf("%d pages under localhost, want 10", n)
		}
		if again := e.Sim.Counts().APIRequests - before - spent; spent != 10 || again != 0 {
			t.Fatalf("upstream requests: %d for the first walk, %d for the second; want 10 and 0", spent, again)
		}
		// A client following links literally, with the plain net/http
		// client: the listener is a base URL like any other.
		resp, err := http.Get("http://" + e.Addr + albums)
		if err != nil {
			t.Fatal(err)
		}
		var p struct{ Next string }
		json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if !strings.HasPrefix(p.Next, "http://"+e.Addr+"/v1/spotify/v1/artists/") {
			t.Fatalf("next %q", p.Next)
		}
	})
}

// albumOf is an album of the 95-album artist (read over the socket).
func albumOf(t *testing.T, e *tcpEnv) string {
	t.Helper()
	r, err := e.Client.Call(testenv.Ctx(t, time.Minute), http.MethodGet, "/v1/spotify/v1/artists/"+spotifysim.Artist95ID+"/albums",
		url.Values{"limit": {"1"}, "offset": {"3"}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var p struct{ Items []struct{ ID string } }
	if json.Unmarshal(r.Body, &p); len(p.Items) != 1 {
		t.Fatalf("no album in %s", r.Body)
	}
	return p.Items[0].ID
}

// TestTCPListenerOtherUID: a client running as uid 65534 (nobody) gets
// nobody's tier: none, until [access] lists it; the admin token makes it
// admin; a wrong token is ignored, never a 401.
func TestTCPListenerOtherUID(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("running a client as another uid needs root")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	e := startTCP(t)
	ctx := testenv.Ctx(t, 2*time.Minute)
	// curl as nobody: the status code alone.
	as := func(method, path string, hdr ...string) int {
		args := []string{"-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method}
		for _, h := range hdr {
			args = append(args, "-H", h)
		}
		cmd := exec.CommandContext(ctx, curl, append(args, "http://"+e.Addr+path)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd.Dir = "/"
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("curl: %v", err)
		}
		var code int
		fmt.Sscan(string(out), &code)
		return code
	}
	track := "/v1/spotify/v1/tracks/" + spotifysim.SampleTrackID
	before := e.Sim.Counts().APIRequests
	for _, tc := range []struct {
		name, method, path string
		hdr                []string
		want               int
	}{
		{"health", "GET", "/v1/health", nil, http.StatusForbidden},
		{"provider", "GET", track, nil, http.StatusForbidden},
		{"foreign bearer", "GET", "/v1/health", []string{"Authorization: Bearer BQDsdk"}, http.StatusForbidden},
		{"wrong token, admin route", "POST", "/v1/reload", []string{"Authorization: Bearer " + tcpToken + "x"}, http.StatusForbidden},
		{"token, admin route", "POST", "/v1/reload", []string{"Authorization: Bearer " + tcpToken}, http.StatusOK},
	} {
		if got := as(tc.method, tc.path, tc.hdr...); got != tc.want {
			t.Fatalf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	if got := e.Sim.Counts().APIRequests - before; got != 0 {
		t.Fatalf("%d upstream requests for refused callers", got)
	}
	// Listed as a reader, nobody reads (the foreign token ignored) but
	// may not reload.
	e.WriteConfig(e.ConfigText() + "\n[access]\nread_uids = [65534]\n")
	if _, err := e.Client.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got := as("GET", track, "Authorization: Bearer BQDsdk"); got != http.StatusOK {
		t.Fatalf("listed reader: %d, want 200", got)
	}
	if got := as("POST", "/v1/reload"); got != http.StatusForbidden {
		t.Fatalf("listed reader reloading: %d, want 403", got)
	}
	if c := e.Sim.Counts(); c.Unauthorized != 0 {
		t.Fatalf("simulator answered %d 401s: a caller's token went upstream", c.Unauthorized)
	}
}

// TestSluiceBaseOverSocket: a Unix-socket caller names the base its links
// are written under with Sluice-Base; the cache entry is the one every
// other caller shares, and an invalid base is refused before any upstream
// request. requests-unixsocket then walks every page following next as it
// is.
func TestSluiceBaseOverSocket(t *testing.T) {
	t.Parallel()
	e := startTCP(t)
	ctx := testenv.Ctx(t, 3*time.Minute)
	base := "http+unix://" + url.QueryEscape(e.Socket)
	path := "/v1/spotify/v1/artists/" + spotifysim.Artist95ID + "/albums"
	q := url.Values{"limit": {"10"}}
	before := e.Sim.Counts().APIRequests
	r, err := e.Client.Call(ctx, http.MethodGet, path, q, nil, http.Header{"Sluice-Base": {base}})
	if err != nil {
		t.Fatal(err)
	}
	var p struct{ Next string }
	json.Unmarshal(r.Body, &p)
	if want := base + "/v1/spotify/v1/artists/" + spotifysim.Artist95ID + "/albums?"; !strings.HasPrefix(p.Next, want) {
		t.Fatalf("next %q, want it under %q", p.Next, want)
	}
	// The same answer over TCP, from the same cache entry.
	st, _, body := tcpGet(t, e.Addr, http.MethodGet, path+"?limit=10", e.Addr)
	if st != http.StatusOK || !strings.Contains(body, `"next":"http://`+e.Addr+`/v1/spotify/`) {
		t.Fatalf("over TCP: %d %s", st, body)
	}
	if got := e.Sim.Counts().APIRequests - before; got != 1 {
		t.Fatalf("%d upstream requests, want 1 (how a caller names the base never changes the key)", got)
	}
	for _, bad := range []string{"ftp://x", "http://a/?q", "http://u@h", "http://h/\"x"} {
		_, err := e.Client.Call(ctx, http.MethodGet, "/v1/spotify/v1/tracks/"+spotifysim.SampleTrackID, nil, nil, http.Header{"Sluice-Base": {bad}})
		if p := spProblem(err); p == nil || p.Status != http.StatusBadRequest || p.Param != "Sluice-Base" {
			t.Fatalf("Sluice-Base %q: %v, want 400", bad, err)
		}
	}
	if got := e.Sim.Counts().APIRequests - before; got != 1 {
		t.Fatalf("an invalid Sluice-Base cost %d upstream requests", got-1)
	}

	t.Run("requests-unixsocket", func(t *testing.T) {
		w := walkPythonEnv(t, ctx, e.Socket, spotifysim.Artist95ID, spotifysim.SampleTrackID, "SLUICE_BASE=1")
		if w.Pages != 10 || w.Distinct != spotifysim.Artist95Albums || w.Total != spotifysim.Artist95Albums || w.Track == "" {
			t.Fatalf("walked %+v", w)
		}
		if c := e.Sim.Counts(); c.Unauthorized != 0 {
			t.Fatalf("%d 401s upstream", c.Unauthorized)
		}
	})
}
