package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/core/problem"
)

var watchNow = time.Date(2026, 11, 27, 22, 0, 0, 0, time.UTC)

// watchFixture has a bucket in use with a queue, a paused bucket, a pause
// that is over, a plugin that is down with a multi-line error, and a cache
// with traffic.
func watchFixture() *api.Status {
	return &api.Status{
		Version: "1.2.3", Uptime: "3h0m0s", Config: api.ConfigStatus{LastReloadOK: true},
		Providers: []api.ProviderStatus{
			{Name: "ineo", State: "ready", PID: 4242, Calls: 1341, Saved: 1234},
			{Name: "hellorf", State: "backoff", Restarts: 3, LastError: "exec: \"sluice-hellorf\":\n executable file not found in $PATH"},
		},
		Buckets: []api.BucketStatus{
			{Name: "ineo.spotify", Requests: 6, Window: "7s", InWindow: 3, Queued: 1},
			{Name: "ineo.tmanage", Requests: 10, Window: "1m0s", PausedUntil: ptr(watchNow.Add(59 * time.Second)),
				PauseReason: "iNeo status_code 10"},
			{Name: "old.pause", Requests: 1, Window: "1s", PausedUntil: ptr(watchNow.Add(-time.Second)), PauseReason: "over"},
		},
		Cache: api.CacheStats{Entries: 12, Bytes: 1536, Hits: 8, Misses: 2, Coalesced: 3},
	}
}

var sgr = regexp.MustCompile("\x1b\\[[0-9;]*m")

// visible strips colour and bold, leaving what takes up columns.
func visible(s string) string { return sgr.ReplaceAllString(s, "") }

func TestUseBar(t *testing.T) {
	for _, tc := range []struct {
		used, limit, n int
		want           string
	}{
		{0, 6, 10, "[----------]"},
		{3, 6, 10, "[#####-----]"},
		{6, 6, 10, "[##########]"},
		{1, 100, 10, "[#---------]"},  // any use shows
		{99, 100, 10, "[#########-]"}, // not full until the limit
		{9, 6, 10, "[##########]"},    // over the limit (a shrunk budget) stays in the box
		{5, 0, 10, "[----------]"},    // no limit known
		{2, 3, 5, "[###--]"},
	} {
		if got := useBar(tc.used, tc.limit, tc.n); got != tc.want {
			t.Errorf("useBar(%d, %d, %d) = %q, want %q", tc.used, tc.limit, tc.n, got, tc.want)
		}
	}
}

func TestCountdown(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{300 * time.Millisecond, "1s"}, // still paused: never "0s"
		{time.Second, "1s"},
		{59 * time.Second, "59s"},
		{59*time.Second + time.Millisecond, "1m00s"},
		{245 * time.Second, "4m05s"},
		{time.Hour - time.Second, "59m59s"},
		{time.Hour, "1h00m"},
		{2*time.Hour + 3*time.Minute, "2h03m"},
		{2*time.Hour + 3*time.Minute + time.Second, "2h04m"},
		{30 * time.Hour, "30h00m"},
	} {
		if got := countdown(tc.d); got != tc.want {
			t.Errorf("countdown(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestPauseText(t *testing.T) {
	for _, tc := range []struct {
		name   string
		until  *time.Time
		reason string
		want   string
	}{
		{"not paused", nil, "", ""},
		{"over", ptr(watchNow.Add(-time.Second)), "x", ""},
		{"ends now", ptr(watchNow), "x", ""},
		{"no reason", ptr(watchNow.Add(90 * time.Second)), "", "paused 1m30s"},
		{"reason folded", ptr(watchNow.Add(5 * time.Second)), "ip_blocked\n\tby  iNeo", "paused 5s (ip_blocked; by iNeo)"},
	} {
		b := &api.BucketStatus{PausedUntil: tc.until, PauseReason: tc.reason}
		if got := pauseText(b, watchNow); got != tc.want {
			t.Errorf("%s: pauseText = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestHitRatio(t *testing.T) {
	for _, tc := range []struct {
		hits, misses uint64
		want         string
	}{
		{0, 0, "-"},
		{8, 2, "80%"},
		{2, 1, "66%"},
		{999, 1, "99%"}, // 100% only without misses
		{5, 0, "100%"},
		{0, 7, "0%"},
	} {
		if got := hitRatio(&api.CacheStats{Hits: tc.hits, Misses: tc.misses}); got != tc.want {
			t.Errorf("hitRatio(%d, %d) = %q, want %q", tc.hits, tc.misses, got, tc.want)
		}
	}
}

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		s      string
		width  int
		indent int
		want   []string
	}{
		{"short", 10, 2, []string{"short"}},
		{"no limit at all here", 0, 2, []string{"no limit at all here"}},
		{"a  b  c  d", 7, 2, []string{"a  b  c", "  d"}}, // spacing kept up to the break
		{"one two three four", 9, 1, []string{"one two", " three", " four"}},
		{"averyveryverylongword x", 5, 2, []string{"averyveryverylongword", "  x"}}, // a long word stays whole
		{"nospace", 3, 2, []string{"nospace"}},
		{"  lead ing", 6, 4, []string{"  lead", "   ing"}}, // indent capped at half the width
	} {
		if got := wrap(tc.s, tc.width, tc.indent); !equalStrings(got, tc.want) {
			t.Errorf("wrap(%q, %d, %d) = %q, want %q", tc.s, tc.width, tc.indent, got, tc.want)
		}
	}
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00") && len(a) == len(b)
}

func TestRenderWatchPlain(t *testing.T) {
	got := renderWatch(watchFixture(), watchNow, 80, false)
	want := "2026-11-27T22:00:00Z ineo.spotify 3/6 q=1 | ineo.tmanage 0/10 q=0 paused 59s (iNeo status_code 10) | " +
		"old.pause 0/1 q=0 | cache 80% 12 entries 1.5 KiB 3 coalesced | " +
		"ineo ready saved=1234/1341, hellorf backoff restarts=3 (exec: \"sluice-hellorf\": executable file not found in $PATH)\n"
	if got != want {
		t.Fatalf("plain line\n got %q\nwant %q", got, want)
	}
	// The time is UTC whatever the zone of now.
	east := time.FixedZone("UTC+8", 8*3600)
	if got := renderWatch(&api.Status{}, watchNow.In(east), 0, false); got !=
		"2026-11-27T22:00:00Z no rate buckets | cache - 0 entries 0 B 0 coalesced | no providers\n" {
		t.Errorf("empty status: %q", got)
	}
}

func TestRenderWatchTerminal(t *testing.T) {
	got := renderWatch(watchFixture(), watchNow, 80, true)
	want := ansiBold + "sluiced 1.2.3  up 3h0m0s  22:00:00" + ansiReset + "\n" +
		"\n" +
		ansiBold + "BUCKETS" + ansiReset + "\n" +
		"ineo.spotify  [#####-----]  3/6 per 7s     q=1\n" +
		ansiRed + "ineo.tmanage  [----------]  0/10 per 1m0s  q=0  paused 59s (iNeo status_code 10)" + ansiReset + "\n" +
		"old.pause     [----------]  0/1 per 1s     q=0\n" +
		"\n" +
		ansiBold + "CACHE" + ansiReset + "\n" +
		"80% hits  12 entries  1.5 KiB  3 coalesced\n" +
		"\n" +
		ansiBold + "PLUGINS" + ansiReset + "\n" +
		"ineo     ready    pid 4242  restarts 0\n" +
		ansiRed + `hellorf  backoff  pid -     restarts 3  last error: exec: "sluice-hellorf":` + ansiReset + "\n" +
		ansiRed + "    executable file not found in $PATH" + ansiReset + "\n" +
		"\n" +
		ansiBold + "SHARING" + ansiReset + "\n" +
		"ineo     saved 1,234 upstream requests (92 % of calls) since start\n" +
		"hellorf  no calls since start\n"
	if got != want {
		t.Fatalf("terminal frame at 80 columns:\n%s\nwant:\n%s", got, want)
	}

	st := watchFixture()
	st.Config = api.ConfigStatus{LastReloadOK: false, LastError: "config.toml:3: bad\nmore"}
	st.StateError = "state dir not writable"
	got = renderWatch(st, watchNow, 200, true)
	for _, want := range []string{
		"config reload FAILED (the previous config keeps serving): config.toml:3: bad; more",
		"state: state dir not writable",
		"[###############---------------]", // maxBar on a wide terminal
	} {
		if !strings.Contains(got, want) {
			t.Errorf("wide frame lacks %q:\n%s", want, got)
		}
	}
}

// TestRenderWatchNarrow checks that a narrowing terminal costs the bars
// first and then only line breaks: every fact stays on screen.
func TestRenderWatchNarrow(t *testing.T) {
	facts := []string{
		"sluiced 1.2.3", "3h0m0s", "22:00:00",
		"ineo.spotify", "3/6 per 7s", "q=1",
		"ineo.tmanage", "0/10 per 1m0s", "paused 59s", "(iNeo status_code 10)",
		"old.pause", "0/1 per 1s",
		"80% hits", "12 entries", "1.5 KiB", "3 coalesced",
		"ineo", "ready", "pid 4242", "hellorf", "backoff", "restarts 3",
		`last error: exec: "sluice-hellorf": executable file not found in $PATH`,
	}
	lastBar := maxBar + 1
	for _, tc := range []struct {
		width int
		bar   int // inner width of the bars; 0: none
	}{
		{200, maxBar}, {100, 30}, {80, 10}, {76, 6}, {75, 5}, {74, 0}, {60, 0}, {40, 0}, {20, 0},
	} {
		frame := visible(renderWatch(watchFixture(), watchNow, tc.width, true))
		// Joining continuation lines back must give every fact in full.
		joined := strings.Join(strings.Fields(frame), " ")
		for _, f := range facts {
			if !strings.Contains(joined, f) {
				t.Errorf("width %d: %q is missing:\n%s", tc.width, f, frame)
			}
		}
		for line := range strings.Lines(frame) {
			line = strings.TrimSuffix(line, "\n")
			if displayWidth(line) > tc.width && strings.Contains(strings.TrimSpace(line), " ") {
				t.Errorf("width %d: line of %d columns could have been broken: %q", tc.width, displayWidth(line), line)
			}
		}
		bar := 0
		if m := regexp.MustCompile(`\[([#-]+)\]`).FindStringSubmatch(frame); m != nil {
			bar = len(m[1])
		}
		if bar != tc.bar {
			t.Errorf("width %d: bar of %d cells, want %d:\n%s", tc.width, bar, tc.bar, frame)
		}
		if bar > lastBar {
			t.Errorf("width %d: bar grew as the terminal narrowed", tc.width)
		}
		lastBar = bar
	}
}

func TestRenderWatchError(t *testing.T) {
	unreachable := &client.UnreachableError{Socket: "/run/s.sock", Err: errors.New("connect: no such file or directory")}
	if got, want := renderWatchError(unreachable, "/run/s.sock", watchNow, 0, false),
		"2026-11-27T22:00:00Z daemon unreachable (is sluiced running? socket /run/s.sock)\n"; got != want {
		t.Errorf("plain unreachable: %q, want %q", got, want)
	}
	got := renderWatchError(fmt.Errorf("status: %w", unreachable), "/run/s.sock", watchNow, 30, true)
	if v := visible(got); !strings.Contains(strings.Join(strings.Fields(v), " "),
		"daemon unreachable (is sluiced running? socket /run/s.sock); retrying") || !strings.Contains(got, ansiRed) {
		t.Errorf("terminal unreachable: %q", got)
	}
	p := &problem.Problem{Status: 500, Title: "Internal Server Error", Detail: "boom"}
	if got, want := renderWatchError(p, "/s", watchNow, 0, false),
		"2026-11-27T22:00:00Z error: Internal Server Error: boom\n"; got != want {
		t.Errorf("plain problem: %q, want %q", got, want)
	}
}

func TestRenderWatchPlainHasNoEscapes(t *testing.T) {
	frames := []string{
		renderWatch(watchFixture(), watchNow, 20, false),
		renderWatch(&api.Status{}, watchNow, 0, false),
		renderWatchError(&client.UnreachableError{Socket: "/s", Err: io.EOF}, "/s", watchNow, 20, false),
		renderWatchError(errors.New("x"), "/s", watchNow, 20, false),
	}
	for _, f := range frames {
		if strings.ContainsRune(f, '\x1b') || strings.Count(f, "\n") != 1 || !strings.HasSuffix(f, "\n") {
			t.Errorf("plain frame is not one clean line: %q", f)
		}
	}
}

func TestRedraw(t *testing.T) {
	got := redraw("a\nbb\n")
	if want := ansiHome + "a" + ansiEraseLine + "\nbb" + ansiEraseLine + "\n" + ansiEraseBelow; got != want {
		t.Errorf("redraw = %q, want %q", got, want)
	}
}

// lineWriter collects output and cancels the run once it holds n
// occurrences of sep: the loop's own output is the synchronisation, so no
// test waits on the clock.
type lineWriter struct {
	buf    bytes.Buffer
	sep    string
	n      int
	cancel context.CancelFunc
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if strings.Count(w.buf.String(), w.sep) >= w.n {
		w.cancel()
	}
	return len(p), nil
}

func runWatch(t *testing.T, ctx context.Context, out io.Writer, tty bool, args ...string) (int, string) {
	t.Helper()
	var errb bytes.Buffer
	code := run(ctx, args, stdio{in: strings.NewReader(""), out: out, err: &errb, tty: tty}, func(string) string { return "" })
	return code, errb.String()
}

const watchDoc = `{"version":"9.9.9","uptime":"1m0s","config":{"path":"/c.toml","last_reload_ok":true},
  "providers":[{"name":"ineo","state":"ready","pid":7,"restarts":0}],
  "buckets":[{"name":"ineo.spotify","requests":6,"window":"7s","in_window":1,"queued":2,"paused_until":null,"granted":3}],
  "cache":{"entries":1,"bytes":10,"max_bytes":0,"hits":3,"misses":1,"coalesced":0}}`

func statusDaemon(t *testing.T) *fakeDaemon {
	return newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/status" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, watchDoc)
	})
}

func TestRunWatchOnce(t *testing.T) {
	d := statusDaemon(t)
	var out bytes.Buffer
	code, stderr := runWatch(t, context.Background(), &out, false, "--socket", d.socket, "watch", "--once")
	if code != 0 || stderr != "" {
		t.Fatalf("watch --once: code %d, stderr %q", code, stderr)
	}
	line := out.String()
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ineo.spotify 1/6 q=2 \| cache 75% 1 entry 10 B 0 coalesced \| ineo ready\n$`).MatchString(line) {
		t.Errorf("watch --once to a pipe: %q", line)
	}

	out.Reset()
	code, _ = runWatch(t, context.Background(), &out, true, "--socket", d.socket, "watch", "--once")
	if code != 0 || !strings.Contains(out.String(), "BUCKETS") || strings.Contains(out.String(), ansiHome) ||
		strings.Contains(out.String(), ansiHideCursor) {
		t.Errorf("watch --once on a terminal should print one frame without redrawing: %q", out.String())
	}

	out.Reset()
	code, _ = runWatch(t, context.Background(), &out, true, "--socket", d.socket, "--json", "watch", "--once")
	var compact bytes.Buffer
	json.Compact(&compact, []byte(watchDoc))
	if code != 0 || out.String() != compact.String()+"\n" {
		t.Errorf("watch --once --json: code %d, %q", code, out.String())
	}
	if n := len(d.requests()); n != 3 {
		t.Errorf("%d requests for three --once runs", n)
	}
}

func TestRunWatchOnceUnreachable(t *testing.T) {
	var out bytes.Buffer
	code, stderr := runWatch(t, context.Background(), &out, false, "--socket", "/nonexistent/s.sock", "watch", "--once")
	if code != exitUnreachable || !strings.Contains(stderr, "s.sock (--socket): no such file") || out.Len() != 0 {
		t.Errorf("unreachable --once: code %d, stdout %q, stderr %q", code, out.String(), stderr)
	}
}

func TestRunWatchRefreshesUntilCancelled(t *testing.T) {
	d := statusDaemon(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &lineWriter{sep: "\n", n: 3, cancel: cancel}
	code, stderr := runWatch(t, ctx, w, false, "--socket", d.socket, "watch", "--interval", "1ms")
	if code != 0 || stderr != "" {
		t.Fatalf("watch ended with %d, %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(w.buf.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 lines, one per refresh, got %q", w.buf.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, "ineo.spotify 1/6 q=2") || strings.ContainsRune(l, '\x1b') {
			t.Errorf("refresh line %q", l)
		}
	}
	if n := len(d.requests()); n < 3 {
		t.Errorf("%d requests for 3 refreshes", n)
	}
}

func TestRunWatchKeepsRetryingUnreachable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &lineWriter{sep: "\n", n: 2, cancel: cancel}
	code, stderr := runWatch(t, ctx, w, false, "--socket", "/nonexistent/s.sock", "watch", "--interval", "1ms")
	if code != 0 || stderr != "" {
		t.Fatalf("watch without --once must not give up: code %d, stderr %q", code, stderr)
	}
	for _, l := range strings.Split(strings.TrimSuffix(w.buf.String(), "\n"), "\n") {
		if !strings.HasSuffix(l, " daemon unreachable (is sluiced running? socket /nonexistent/s.sock)") {
			t.Errorf("retry line %q", l)
		}
	}
}

func TestRunWatchRedrawsOnTerminal(t *testing.T) {
	d := statusDaemon(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &lineWriter{sep: ansiEraseBelow, n: 2, cancel: cancel}
	code, _ := runWatch(t, ctx, w, true, "--socket", d.socket, "watch", "--interval", "1ms")
	got := w.buf.String()
	if code != 0 || !strings.HasPrefix(got, ansiHideCursor+ansiHome) || !strings.HasSuffix(got, ansiEraseBelow+ansiShowCursor) ||
		strings.Count(got, ansiHome) != 2 || !strings.Contains(got, "ineo.spotify  [") {
		t.Errorf("terminal watch: code %d, %q", code, got)
	}
}

func TestRunWatchBadInterval(t *testing.T) {
	var out bytes.Buffer
	code, stderr := runWatch(t, context.Background(), &out, false, "--socket", "/s", "watch", "--interval", "0s")
	if code != exitCaller || !strings.Contains(stderr, "--interval must be positive") {
		t.Errorf("--interval 0: code %d, %q", code, stderr)
	}
}

func TestRunWatchHonoursTimeout(t *testing.T) {
	// A daemon that never answers: an explicit --timeout bounds each refresh.
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	var out bytes.Buffer
	code, stderr := runWatch(t, context.Background(), &out, false, "--socket", d.socket, "--timeout", "50ms", "watch", "--once")
	if code != exitUpstream || !strings.Contains(stderr, "within --timeout 50ms") {
		t.Errorf("hung daemon: code %d, stderr %q", code, stderr)
	}
}
