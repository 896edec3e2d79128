package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api/client"
)

// runCtlTerm runs a whole command in-process as if stderr (errTTY) and
// stdout (tty) were terminals or not: the terminal check is injected.
func runCtlTerm(t *testing.T, socket string, tty, errTTY bool, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"--socket", socket}, args...),
		stdio{in: strings.NewReader(""), out: &out, err: &errb, tty: tty, errTTY: errTTY}, func(string) string { return "" })
	return result{code, out.String(), errb.String()}
}

func TestWaitText(t *testing.T) {
	at := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		w     client.Waiting
		after time.Duration
		want  string
	}{
		{client.Waiting{Stage: "budget", Bucket: "ineo.spotify", Used: 3, Limit: 6, Next: 4200 * time.Millisecond}, 0,
			"waiting for ineo.spotify: 3 of 6 used, next slot in 4.2 s"},
		// The countdown runs on between interim answers, and stops at 0.
		{client.Waiting{Stage: "budget", Bucket: "ineo.spotify", Used: 6, Limit: 6, Next: 4200 * time.Millisecond}, time.Second,
			"waiting for ineo.spotify: 6 of 6 used, next slot in 3.2 s"},
		{client.Waiting{Stage: "budget", Bucket: "ineo.spotify", Used: 6, Limit: 6, Next: time.Second}, 3 * time.Second,
			"waiting for ineo.spotify: 6 of 6 used, next slot in 0.0 s"},
		{client.Waiting{Stage: "budget", Bucket: "spotify.api", Ahead: 2, Used: 6, Limit: 6, Next: 9 * time.Second}, 0,
			"waiting for spotify.api: 6 of 6 used, 2 ahead of you, your slot in 9.0 s"},
		{client.Waiting{Stage: "budget", Bucket: "ineo.spotify", Next: -1}, 0, "waiting for ineo.spotify"},
		{client.Waiting{Stage: "turn", Bucket: "hellorf.api", Next: -1}, 0, "waiting for its turn at hellorf.api (one request at a time)"},
		{client.Waiting{Stage: "paused", Bucket: "spotify.api", Next: 30 * time.Second}, 0, "spotify.api is paused by the upstream: resumes in 30.0 s"},
		{client.Waiting{Stage: "new", Next: time.Second}, 0, "waiting (new): expected in 1.0 s"},
	} {
		w := tc.w
		w.At = at
		if got := waitText(&w, at.Add(tc.after)); got != tc.want {
			t.Errorf("waitText(%+v, +%v) = %q, want %q", tc.w, tc.after, got, tc.want)
		}
	}
}

func TestWalkStatus(t *testing.T) {
	first := spPage{Limit: 10, Total: 95}
	if got := walkStatus("albums", 3, walkPages(first, false), 20, walkTotal(first, false)); got != "albums: page 3 of 10 (20 of 95 so far)" {
		t.Errorf("albums walk: %q", got)
	}
	// Search stops at offset 1000.
	first = spPage{Limit: 10, Total: 5000}
	if got := walkStatus("tracks", 2, walkPages(first, true), 10, walkTotal(first, true)); got != "tracks: page 2 of 101 (10 of 1010 so far)" {
		t.Errorf("search walk: %q", got)
	}
	if got := walkStatus("tracks", 2, walkPages(spPage{}, false), 10, 0); got != "tracks: page 2 (10 so far)" {
		t.Errorf("unknown size: %q", got)
	}
}

// TestLiveLine: one line redrawn in place: a walk's page, with a waiting
// call's state after it; taken away when the wait ends and at the end,
// and cut to the terminal's width.
func TestLiveLine(t *testing.T) {
	var b bytes.Buffer
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	l := newLiveLine(&b, func() int { return 200 })
	l.now = func() time.Time { return now }

	l.status("albums: page 2 of 10 (10 of 95 so far)")
	l.waiting(&client.Waiting{Stage: "budget", Bucket: "spotify.api", Used: 6, Limit: 6, Next: 2 * time.Second, At: now})
	l.waiting(nil)
	l.clear()
	l.clear() // nothing shown: nothing written
	want := "\ralbums: page 2 of 10 (10 of 95 so far)\x1b[K" +
		"\ralbums: page 2 of 10 (10 of 95 so far) · waiting for spotify.api: 6 of 6 used, next slot in 2.0 s\x1b[K" +
		"\ralbums: page 2 of 10 (10 of 95 so far)\x1b[K" +
		"\r\x1b[K"
	if got := b.String(); got != want {
		t.Fatalf("live line:\n got %q\nwant %q", got, want)
	}

	b.Reset()
	l = newLiveLine(&b, func() int { return 20 })
	l.waiting(&client.Waiting{Stage: "budget", Bucket: "ineo.spotify", Used: 6, Limit: 6, Next: -1, At: now})
	l.waiting(nil)
	if got := b.String(); got != "\rwaiting for ineo.s…\x1b[K\r\x1b[K" {
		t.Fatalf("narrow terminal: %q", got)
	}
	if got := truncateWidth("页面页面页面", 7); got != "页面页…" {
		t.Fatalf("wide characters cut by columns: %q", got)
	}
}

// TestWaitShowsOnTerminalOnly: a call that waits for rate budget shows
// the daemon's 102 interim answers as a live line on a terminal's stderr,
// and the line is gone before the answer is printed. Piped, or with
// --json, nothing is drawn and no interim answers are asked for.
func TestWaitShowsOnTerminalOnly(t *testing.T) {
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Sluice-Progress") == "102" {
			for _, next := range []string{"4.2", "3.2"} {
				w.Header().Set("Sluice-Progress", `stage=budget; bucket="ineo.spotify"; used=6; limit=6; next=`+next)
				w.WriteHeader(http.StatusProcessing)
			}
			w.Header().Del("Sluice-Progress")
		}
		writeJSON(w, 200, envelopeBody(200, "successfully", map[string]any{"title": "Dynamite", "link": "http://x/dl/a.mp3"}))
	})
	r := runCtlTerm(t, d.socket, true, true, "ineo", "track", "6fx5VOjqYNBHcDf5GIF5g5")
	if r.code != 0 || !strings.Contains(r.stdout, "Dynamite") {
		t.Fatalf("on a terminal: %+v", r)
	}
	if !strings.Contains(r.stderr, "\rwaiting for ineo.spotify: 6 of 6 used, next slot in 4.2 s\x1b[K") ||
		!strings.Contains(r.stderr, "next slot in 3.2 s") || !strings.HasSuffix(r.stderr, "\r\x1b[K") {
		t.Fatalf("stderr on a terminal: %q", r.stderr)
	}
	if h := d.requests()[0].Header.Get("Sluice-Progress"); h != "102" {
		t.Fatalf("Sluice-Progress sent: %q", h)
	}

	for _, tc := range []struct {
		name   string
		errTTY bool
		args   []string
	}{
		{"piped", false, nil},
		{"json", true, []string{"--json"}},
	} {
		n := len(d.requests())
		r := runCtlTerm(t, d.socket, true, tc.errTTY, append(tc.args, "ineo", "track", "6fx5VOjqYNBHcDf5GIF5g5")...)
		if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "Dynamite") {
			t.Fatalf("%s: %+v", tc.name, r)
		}
		if h := d.requests()[n].Header.Get("Sluice-Progress"); h != "" {
			t.Fatalf("%s: asked for interim answers: %q", tc.name, h)
		}
	}
}

// TestTransferShowsRateAndETA: a download on a terminal draws a bar with
// its rate and time left, and the time taken at the end; piped or with
// --json, nothing.
func TestTransferShowsRateAndETA(t *testing.T) {
	var b bytes.Buffer
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	p := newProgress(&b, 0, 4000)
	p.now = func() time.Time { return now }
	p.start = now
	now = now.Add(time.Second)
	p.Write(make([]byte, 1000))
	if s := b.String(); !strings.Contains(s, " 25% 1000 B / 3.9 KiB  1000 B/s  ETA 0:03") {
		t.Fatalf("bar after 1 s: %q", s)
	}
	now = now.Add(3 * time.Second)
	p.Write(make([]byte, 3000))
	p.done()
	if s := b.String(); !strings.Contains(s, "100% 3.9 KiB / 3.9 KiB  1000 B/s  in 0:04") || !strings.HasSuffix(s, "\n") {
		t.Fatalf("bar at the end: %q", s)
	}

	data := make([]byte, 200_000)
	rand.Read(data)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "a.mp3", time.Unix(1600000000, 0), bytes.NewReader(data))
	}))
	t.Cleanup(srv.Close)
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		hellorfOK(w, map[string]any{"url": srv.URL + "/oss/audios/442/505947.mp3?Expires=1"})
	})
	t.Chdir(t.TempDir())
	r := runCtlTerm(t, d.socket, true, true, "hellorf", "download", "442")
	if r.code != 0 || !strings.Contains(r.stderr, "100% 195.3 KiB / 195.3 KiB") || !strings.Contains(r.stderr, "/s  in 0:0") {
		t.Fatalf("download on a terminal: %+v", r)
	}
	// To stdout, with stderr on the terminal: the bar is on stderr.
	r = runCtlTerm(t, d.socket, false, true, "hellorf", "download", "442", "-o", "-")
	if r.code != 0 || len(r.stdout) != len(data) || !strings.Contains(r.stderr, "100%") {
		t.Fatalf("download -o - on a terminal's stderr: exit %d, %d bytes, %q", r.code, len(r.stdout), r.stderr)
	}
	for _, tc := range []struct {
		name   string
		errTTY bool
		args   []string
	}{{"piped", false, nil}, {"json", true, []string{"--json"}}} {
		r := runCtlTerm(t, d.socket, true, tc.errTTY, append(tc.args, "hellorf", "download", "442", "-o", tc.name+".mp3")...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("%s: %+v", tc.name, r)
		}
	}
}
