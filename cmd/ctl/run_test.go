package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-dev/sluice/core/problem"
)

// fakeDaemon serves a handler on a Unix socket and records what reached it,
// so whole commands can run in-process without sluiced.
type fakeDaemon struct {
	socket string
	mu     sync.Mutex
	seen   []seenRequest
}

type seenRequest struct {
	Method, Path string
	Query        url.Values
	Form         url.Values
	Header       http.Header
}

func newFakeDaemon(t *testing.T, h http.HandlerFunc) *fakeDaemon {
	t.Helper()
	// Unix socket paths are short (108 bytes); t.TempDir can be too long.
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &fakeDaemon{socket: filepath.Join(dir, "s.sock")}
	ln, err := net.Listen("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		d.mu.Lock()
		d.seen = append(d.seen, seenRequest{r.Method, r.URL.Path, r.URL.Query(), form, r.Header.Clone()})
		d.mu.Unlock()
		h(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return d
}

func (d *fakeDaemon) requests() []seenRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]seenRequest(nil), d.seen...)
}

type result struct {
	code           int
	stdout, stderr string
}

func runCtl(t *testing.T, socket, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	env := func(string) string { return "" }
	code := run(context.Background(), append([]string{"--socket", socket}, args...),
		stdio{in: strings.NewReader(stdin), out: &out, err: &errb}, env)
	return result{code, out.String(), errb.String()}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func envelopeBody(code int, status string, result any) map[string]any {
	return map[string]any{"ok": code == 200, "status": status, "status_code": code, "result": result}
}

func TestRunStatusAndJSON(t *testing.T) {
	const doc = `{"version":"9.9.9","uptime":"1m0s","config":{"path":"/c.toml","last_reload_ok":true},` +
		`"providers":[{"name":"ineo","state":"ready","pid":7,"restarts":0}],` +
		`"buckets":[{"name":"ineo.spotify","requests":6,"window":"7s","in_window":1,"queued":0,"paused_until":null,"granted":3}],` +
		`"cache":{"entries":1,"bytes":10,"max_bytes":0,"hits":2,"misses":1,"coalesced":0}}`
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, doc)
	})
	r := runCtl(t, d.socket, "", "status")
	if r.code != 0 || !strings.Contains(r.stdout, "9.9.9") || !strings.Contains(r.stdout, "1/6 per 7s") ||
		!strings.Contains(r.stdout, "ineo      ready  7") {
		t.Fatalf("status: %+v", r)
	}
	r = runCtl(t, d.socket, "", "status", "--json")
	if r.code != 0 || r.stdout != doc {
		t.Fatalf("status --json is not verbatim: %+v", r)
	}
}

func TestRunUnreachable(t *testing.T) {
	r := runCtl(t, "/nonexistent/sluice.sock", "", "status")
	if r.code != 4 || !strings.Contains(r.stderr, "tried /nonexistent/sluice.sock (--socket): no such file") || !strings.HasPrefix(r.stderr, "sluicectl: ") ||
		strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("unreachable: %+v", r)
	}
}

func TestRunHealth(t *testing.T) {
	ok := true
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		if ok {
			writeJSON(w, 200, map[string]string{"status": "ok"})
			return
		}
		writeJSON(w, 503, map[string]string{"status": "unavailable", "detail": "ineo: plugin not ready"})
	})
	if r := runCtl(t, d.socket, "", "health"); r.code != 0 || r.stdout != "ok\n" {
		t.Fatalf("healthy: %+v", r)
	}
	ok = false
	if r := runCtl(t, d.socket, "", "health"); r.code != 6 || r.stdout != "unavailable: ineo: plugin not ready\n" || r.stderr != "" {
		t.Fatalf("unhealthy: %+v", r)
	}
}

func TestRunReloadConfigError(t *testing.T) {
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		p := &problem.Problem{Type: problem.TypeConfig, Status: 422, Title: "Invalid config; the previous config keeps serving",
			Detail: "/etc/s.toml:4: cache.max_size: not a size", Extra: map[string]any{"file": "/etc/s.toml", "line": 4, "key": "cache.max_size"}}
		problem.Write(w, p)
	})
	r := runCtl(t, d.socket, "", "reload")
	want := "sluicectl: reload: Invalid config; the previous config keeps serving: /etc/s.toml:4: cache.max_size: not a size\n"
	if r.code != 2 || r.stderr != want || r.stdout != "" {
		t.Fatalf("reload: %+v\nwant stderr %q", r, want)
	}
	if got := d.requests(); len(got) != 1 || got[0].Method != "POST" || got[0].Path != "/v1/reload" {
		t.Fatalf("requests: %+v", got)
	}
}

func TestRunCachePurge(t *testing.T) {
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"provider": strings.TrimPrefix(r.URL.Path, "/v1/cache/"), "purged": 2})
	})
	if r := runCtl(t, d.socket, "", "cache", "purge", "ineo"); r.code != 0 || r.stdout != "purged 2 cached answers of ineo\n" {
		t.Fatalf("purge: %+v", r)
	}
	if got := d.requests(); got[0].Method != "DELETE" || got[0].Path != "/v1/cache/ineo" {
		t.Fatalf("requests: %+v", got)
	}
}

func TestRunCall(t *testing.T) {
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/ineo/spotify.php":
			w.Header().Set("Sluice-Upstream-Status", "10 ip_blocked")
			writeJSON(w, 200, envelopeBody(10, "ip_blocked", nil))
		case "/v1/limited/x":
			problem.Write(w, problem.RateLimited(0, "budget spent"))
		default:
			w.Header().Set("Cache-Status", "sluice; hit")
			io.WriteString(w, "raw")
		}
	})
	r := runCtl(t, d.socket, "", "call", "post", "spot/x", "a=1", "b=two words", "-H", "Sluice-Max-Wait: 20s", "-i")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "HTTP/1.1 200 OK\n") || !strings.Contains(r.stdout, "Cache-Status: sluice; hit\n") ||
		!strings.HasSuffix(r.stdout, "\n\nraw") {
		t.Fatalf("call -i: %+v", r)
	}
	got := d.requests()[0]
	if got.Method != "POST" || got.Path != "/v1/spot/x" || got.Form.Get("b") != "two words" || len(got.Query) != 0 ||
		got.Header.Get("Sluice-Max-Wait") != "20s" || got.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Fatalf("seen: %+v", got)
	}

	r = runCtl(t, d.socket, "", "call", "GET", "/v1/ineo/spotify.php", "trackId=x")
	if r.code != 3 || !strings.Contains(r.stdout, `"status_code":10`) || !strings.Contains(r.stderr, "status_code 10 ip_blocked") {
		t.Fatalf("call ineo error: %+v", r)
	}
	if q := d.requests()[1].Query; q.Get("trackId") != "x" {
		t.Fatalf("query: %v", q)
	}

	// Retry-After from the header when the body has no retry_after.
	d2 := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "9")
		w.Header().Set("Content-Type", problem.ContentType)
		w.WriteHeader(429)
		io.WriteString(w, `{"type":"urn:sluice:problem:rate-limited","title":"Rate budget exceeded","status":429,"detail":"budget spent"}`)
	})
	r = runCtl(t, d2.socket, "", "call", "GET", "limited/x")
	if r.code != 5 || r.stderr != "sluicectl: Rate budget exceeded: budget spent; retry after 9s\n" || !strings.Contains(r.stdout, "budget spent") {
		t.Fatalf("call 429: %+v", r)
	}

	if r := runCtl(t, d.socket, "", "call", "GET", "x", "novalue"); r.code != 2 || !strings.Contains(r.stderr, "want key=value") {
		t.Fatalf("bad pair: %+v", r)
	}
}

func TestRunTrack(t *testing.T) {
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("trackId")
		if id == "missing" {
			w.Header().Set("Sluice-Upstream-Status", "404 not_found")
			writeJSON(w, 200, envelopeBody(404, "not_found", nil))
			return
		}
		if id == "bad" {
			problem.Write(w, problem.BadParam("trackId", "not a track"))
			return
		}
		w.Header().Set("Cache-Status", "sluice; fwd=miss; stored")
		writeJSON(w, 200, envelopeBody(200, "successfully.", map[string]any{"title": "Song", "artists": []string{"A"},
			"album": "Al", "duration_ms": 61000, "download_link": "http://dl/x.mp3"}))
	})
	r := runCtl(t, d.socket, "", "ineo", "track", "spotify:track:abc")
	if r.code != 0 || !strings.Contains(r.stdout, "download  http://dl/x.mp3\n") || !strings.Contains(r.stdout, "duration  1:01\n") ||
		!strings.Contains(r.stdout, "cache     miss") {
		t.Fatalf("track: %+v", r)
	}
	if got := d.requests()[0]; got.Path != "/v1/ineo/spotify.php" || got.Query.Get("trackId") != "spotify:track:abc" {
		t.Fatalf("seen %+v", got)
	}
	r = runCtl(t, d.socket, "", "--json", "ineo", "track", "missing")
	if r.code != 3 || !strings.Contains(r.stdout, `"status_code":404`) || !strings.Contains(r.stderr, "404 not_found") {
		t.Fatalf("track not found: %+v", r)
	}
	r = runCtl(t, d.socket, "", "ineo", "track", "bad")
	if r.code != 2 || r.stderr != "sluicectl: Invalid parameter: not a track (parameter trackId)\n" {
		t.Fatalf("track bad: %+v", r)
	}
}

// tmanageDaemon is a tiny tmanage-v2.php: sendcode hands out a hash, login
// wants it and the code "12345".
func tmanageDaemon(t *testing.T) *fakeDaemon { return tmanageDaemonDelete(t, false) }

// tmanageDaemonDelete is tmanageDaemon with allow_delete_account set as
// given; like the iNeo plugin it checks that before access=yes.
func tmanageDaemonDelete(t *testing.T, allowDelete bool) *fakeDaemon {
	return newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		switch q.Get("action") {
		case "sendcode":
			writeJSON(w, 200, envelopeBody(200, "successfully.", map[string]string{"phone": q.Get("phone"), "random_hash": "h1"}))
		case "login":
			if q.Get("random_hash") != "h1" || q.Get("password") != "12345" {
				w.Header().Set("Sluice-Upstream-Status", "2003 login_fail")
				writeJSON(w, 200, envelopeBody(2003, "login_fail", nil))
				return
			}
			writeJSON(w, 200, envelopeBody(200, "login successfully.", map[string]any{"logged_in": true}))
		case "information":
			writeJSON(w, 200, envelopeBody(200, "successfully.", map[string]any{"app_configuration": map[string]any{
				"api_id": 1234567, "api_hash": "abcdef", "app_title": "T", "app_shortname": "S"}}))
		case "deleteaccount":
			switch {
			case !allowDelete:
				problem.Write(w, problem.Forbidden("disabled"))
			case q.Get("access") != "yes":
				problem.Write(w, problem.BadParam("access", "deleteaccount requires access=yes"))
			default:
				writeJSON(w, 200, envelopeBody(200, "successfully.", nil))
			}
		default:
			writeJSON(w, 200, envelopeBody(200, "successfully.", nil))
		}
	})
}

func TestRunLogin(t *testing.T) {
	d := tmanageDaemon(t)
	r := runCtl(t, d.socket, "12345\n", "ineo", "tg", "login", "989012345678")
	if r.code != 0 || r.stdout != "Logged in 989012345678.\n" || r.stderr != "Code sent to 989012345678 by Telegram. Enter it: " {
		t.Fatalf("login with prompt: %+v", r)
	}
	reqs := d.requests()
	if len(reqs) != 2 || reqs[1].Query.Get("action") != "login" || reqs[1].Query.Get("random_hash") != "h1" ||
		reqs[1].Query.Get("password") != "12345" || reqs[1].Query.Get("phone") != "989012345678" {
		t.Fatalf("requests: %+v", reqs)
	}

	if r := runCtl(t, d.socket, "", "ineo", "tg", "login", "989012345678", "--code", "12345"); r.code != 0 || r.stderr != "" {
		t.Fatalf("login --code: %+v", r)
	}
	r = runCtl(t, d.socket, "", "--json", "ineo", "tg", "login", "989012345678", "--code", "nope")
	if r.code != 3 || !strings.Contains(r.stdout, `"status_code":2003`) || strings.Contains(r.stdout, "h1") ||
		!strings.Contains(r.stderr, "login: iNeo answered status_code 2003 login_fail") {
		t.Fatalf("login wrong code: %+v", r)
	}
	if r := runCtl(t, d.socket, "", "ineo", "tg", "login", "989012345678"); r.code != 2 || !strings.Contains(r.stderr, "no code entered") {
		t.Fatalf("login without input: %+v", r)
	}
}

func TestRunInfo(t *testing.T) {
	d := tmanageDaemon(t)
	r := runCtl(t, d.socket, "", "ineo", "tg", "info", "989012345678")
	if r.code != 0 || !strings.Contains(r.stdout, "api_id     1234567\n") || !strings.Contains(r.stdout, "api_hash   abcdef\n") {
		t.Fatalf("info: %+v", r)
	}
}

func TestRunDelete(t *testing.T) {
	d := tmanageDaemonDelete(t, true)
	deletes := func() (n int) {
		for _, r := range d.requests() {
			if r.Query.Get("access") == "yes" {
				n++
			}
		}
		return n
	}
	r := runCtl(t, d.socket, "989000000000\n", "ineo", "tg", "delete", "989012345678")
	if r.code != 2 || !strings.Contains(r.stderr, "WARNING") || !strings.Contains(r.stderr, "nothing was deleted") {
		t.Fatalf("mismatch: %+v", r)
	}
	if r := runCtl(t, d.socket, "", "ineo", "tg", "delete", "989012345678", "--confirm", "1"); r.code != 2 {
		t.Fatalf("--confirm mismatch: %+v", r)
	}
	if n := deletes(); n != 0 {
		t.Fatalf("an unconfirmed delete sent %d deletions", n)
	}
	r = runCtl(t, d.socket, "989012345678\n", "ineo", "tg", "delete", "989012345678")
	if r.code != 0 || r.stdout != "Deleted Telegram account 989012345678.\n" || deletes() != 1 {
		t.Fatalf("confirmed: %+v", r)
	}
}

// TestRunDeleteDisabledSaysSoFirst: when the daemon has deleteaccount
// disabled, sluicectl says so before asking for the number again, and sends
// no deletion.
func TestRunDeleteDisabledSaysSoFirst(t *testing.T) {
	d := tmanageDaemonDelete(t, false)
	r := runCtl(t, d.socket, "989012345678\n", "ineo", "tg", "delete", "989012345678")
	if r.code != 2 || !strings.Contains(r.stderr, "Operation disabled by policy: disabled") || strings.Contains(r.stderr, "WARNING") {
		t.Fatalf("disabled: %+v", r)
	}
	for _, got := range d.requests() {
		if got.Query.Get("access") != "" {
			t.Fatalf("the check carried access: %+v", got)
		}
	}
	// --confirm asks nothing; the daemon's refusal is the answer.
	r = runCtl(t, d.socket, "", "ineo", "tg", "delete", "989012345678", "--confirm", "989012345678")
	if r.code != 2 || !strings.Contains(r.stderr, "Operation disabled by policy") {
		t.Fatalf("disabled, --confirm: %+v", r)
	}
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"cache", "bogus"}, {"call", "GET"}, {"status", "--bogus"},
		{"ineo", "tg", "createapp", "1"}, {"--timeout", "-1s", "status"}} {
		r := runCtl(t, "/nonexistent", "", args...)
		if r.code != 2 || !strings.HasPrefix(r.stderr, "sluicectl: ") {
			t.Errorf("%v: %+v", args, r)
		}
	}
	if r := runCtl(t, "/nonexistent", "", "--help"); r.code != 0 || !strings.Contains(r.stdout, "Exit status:") {
		t.Errorf("--help: %+v", r)
	}
}

// TestClientSocket: with no socket of their own, sluicectl dials the system
// service's, so a member of group sluice needs no --socket.
func TestClientSocket(t *testing.T) {
	dir := t.TempDir()
	own, system := filepath.Join(dir, "own.sock"), filepath.Join(dir, "system.sock")
	if got := clientSocket(own, system); got != own {
		t.Fatalf("neither exists: %q, want the user's own", got)
	}
	ln, err := net.Listen("unix", system)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := clientSocket(own, system); got != system {
		t.Fatalf("only the system socket exists: %q, want it", got)
	}
	ln2, err := net.Listen("unix", own)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if got := clientSocket(own, system); got != own {
		t.Fatalf("both exist: %q, want the user's own", got)
	}
}

// TestVersionStamped: the Makefile's -X main.version reaches sluicectl as it
// does sluiced (it used to be ignored, and sluicectl said "devel").
func TestVersionStamped(t *testing.T) {
	if testing.Short() {
		t.Skip("builds sluicectl")
	}
	bin := filepath.Join(t.TempDir(), "sluicectl")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, _ := exec.Command(bin, "--socket", "/nonexistent/s.sock", "--json", "version").Output()
	var v versionInfo
	if err := json.Unmarshal(out, &v); err != nil || v.Sluicectl != "v9.8.7-test" {
		t.Fatalf("version: %s (%v)", out, err)
	}
}

// TestJSONPrintsProblem: with --json a failure still puts the document on
// stdout (the daemon's problem, or the upstream's error body), and the
// one-line message on stderr.
func TestJSONPrintsProblem(t *testing.T) {
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/reload":
			problem.Write(w, &problem.Problem{Type: problem.TypeConfig, Status: 422, Title: "Invalid config", Detail: "/c.toml:4: x: bad"})
		case strings.HasPrefix(r.URL.Path, "/v1/spotify/"):
			writeJSON(w, 404, map[string]any{"error": map[string]any{"status": 404, "message": "Resource not found"}})
		case r.URL.Path == "/v1/ineo/spotify.php":
			problem.Write(w, problem.BadParam("trackId", "not a track"))
		case strings.HasPrefix(r.URL.Path, "/v1/hellorf/"):
			problem.Write(w, problem.Forbidden("purchases are disabled"))
		default:
			problem.Write(w, problem.Forbidden("no"))
		}
	})
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
	}{
		{[]string{"reload"}, exitCaller, `"status":422`},
		{[]string{"spotify", "track", "0000000000000000000000"}, exitCaller, `"message":"Resource not found"`},
		{[]string{"ineo", "track", "6fx5VOjqYNBHcDf5GIF5g5"}, exitCaller, `"param":"trackId"`},
		{[]string{"hellorf", "detail", "505947"}, exitCaller, `purchases are disabled`},
		{[]string{"cache", "stats"}, exitCaller, `"status":403`},
	} {
		r := runCtl(t, d.socket, "", append([]string{"--json"}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stdout, tc.stdout) || strings.Count(r.stdout, tc.stdout) != 1 ||
			!strings.HasPrefix(r.stderr, "sluicectl: ") {
			t.Errorf("%v: %+v, want exit %d and %s on stdout once", tc.args, r, tc.code, tc.stdout)
		}
		if !json.Valid([]byte(r.stdout)) {
			t.Errorf("%v: stdout is not one JSON document: %q", tc.args, r.stdout)
		}
	}
	// version swallows the daemon's failure: its stdout is its own document.
	r := runCtl(t, d.socket, "", "--json", "version")
	var v map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil || v["sluicectl"] == nil {
		t.Errorf("version --json: %+v", r)
	}
}
