package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api"
)

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		64 << 20: "64.0 MiB", 3 << 30: "3.0 GiB", 1 << 62: "4.0 EiB",
	} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFormatStatus(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.Local)
	st := &api.Status{
		Version: "1.2.3", Uptime: "3h0m0s", StartedAt: now.Add(-3 * time.Hour), Socket: "/run/sluice/sluice.sock",
		Config: api.ConfigStatus{Path: "/etc/sluice/config.toml", LoadedAt: now.Add(-time.Hour), LastReloadOK: false,
			LastError: "config.toml:3: cache.max_size: bad\nsecond line"},
		Providers: []api.ProviderStatus{
			{Name: "ineo", State: "ready", PID: 4242, Restarts: 1, Calls: 1341, Saved: 1234},
			{Name: "hellorf", State: "backoff", Restarts: 3, LastError: "exit status 1"},
		},
		Buckets: []api.BucketStatus{
			{Name: "ineo.spotify", Requests: 6, Window: "7s", InWindow: 2, Queued: 1, Granted: 40},
			{Name: "ineo.tmanage", Requests: 10, WindowSeconds: 11, InWindow: 0, PausedUntil: ptr(now.Add(90 * time.Second)),
				PauseReason: "iNeo status_code 10 ip_blocked"},
			{Name: "old.pause", Requests: 1, Window: "1s", PausedUntil: ptr(now.Add(-time.Second)), PauseReason: "over"},
		},
		Cache: api.CacheStats{Entries: 12, Bytes: 1536, MaxBytes: 64 << 20, Hits: 30, Misses: 5, Coalesced: 2},
	}
	got := formatStatus(st, now)
	for _, want := range []string{
		"version      1.2.3\n",
		"uptime       3h0m0s (since 2026-03-01 09:00:00)\n",
		"config       /etc/sluice/config.toml (loaded 2026-03-01 11:00:00)\n",
		"last reload  FAILED: config.toml:3: cache.max_size: bad second line (the previous config keeps serving)\n",
		"PROVIDER  STATE    PID   RESTARTS  LAST ERROR\n",
		"ineo      ready    4242  1         -\n",
		"hellorf   backoff  -     3         exit status 1\n",
		"ineo     saved 1,234 upstream requests (92 % of calls) since start\n",
		"hellorf  no calls since start\n",
		"ineo.spotify  2/6 per 7s    1       40       -\n",
		"ineo.tmanage  0/10 per 11s  0       0        until 2026-03-01 12:01:30 (in 1m30s): iNeo status_code 10 ip_blocked\n",
		"old.pause     0/1 per 1s    0       0        -\n",
		"cache: 12 entries, 1.5 KiB of 64.0 MiB, 30 hits, 5 misses, 2 coalesced\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status output lacks %q; got:\n%s", want, got)
		}
	}

	st.Config.LastReloadOK = true
	if got := formatStatus(st, now); !strings.Contains(got, "last reload  ok\n") {
		t.Errorf("reload ok not shown:\n%s", got)
	}
	if got := formatStatus(&api.Status{Config: api.ConfigStatus{LastReloadOK: true}}, now); !strings.Contains(got, "no providers") ||
		!strings.Contains(got, "no rate buckets") || !strings.Contains(got, "uptime       0s") {
		t.Errorf("empty status:\n%s", got)
	}
}

// TestSavedBySharing: what sharing saved each provider, as a share of its
// calls rounded down (100 % only when nothing went upstream).
func TestSavedBySharing(t *testing.T) {
	for _, tc := range []struct {
		calls, saved uint64
		want         string
	}{
		{0, 0, "no calls since start"},
		{1341, 1234, "saved 1,234 upstream requests (92 % of calls) since start"},
		{3, 1, "saved 1 upstream request (33 % of calls) since start"},
		{1000, 999, "saved 999 upstream requests (99 % of calls) since start"},
		{1234567, 1234567, "saved 1,234,567 upstream requests (100 % of calls) since start"},
		{5, 0, "saved 0 upstream requests (0 % of calls) since start"},
	} {
		if got := savedText(api.ProviderStatus{Calls: tc.calls, Saved: tc.saved}); got != tc.want {
			t.Errorf("savedText(%d calls, %d saved) = %q, want %q", tc.calls, tc.saved, got, tc.want)
		}
	}
}

func TestFormatSmallDocuments(t *testing.T) {
	if got := formatHealth(&api.Health{Status: "ok"}); got != "ok\n" {
		t.Errorf("health ok = %q", got)
	}
	if got := formatHealth(&api.Health{Status: "unavailable", Detail: "ineo: plugin\ndown"}); got != "unavailable: ineo: plugin; down\n" {
		t.Errorf("health unavailable = %q", got)
	}
	if got := formatPurge(&api.PurgeResult{Purged: 1}, ""); got != "purged 1 cached answer\n" {
		t.Errorf("purge all = %q", got)
	}
	if got := formatPurge(&api.PurgeResult{Provider: "ineo", Purged: 3}, "ineo"); got != "purged 3 cached answers of ineo\n" {
		t.Errorf("purge ineo = %q", got)
	}
	got := formatCacheStats(&api.CacheStats{Entries: 2, Bytes: 2048, Hits: 1, Evictions: 4})
	for _, want := range []string{"entries    2\n", "size       2.0 KiB\n", "hits       1\n", "evictions  4\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("cache stats lacks %q:\n%s", want, got)
		}
	}
}

func TestParseTrack(t *testing.T) {
	tests := []struct {
		name, result string
		want         track
	}{
		{"simulator shape",
			`{"track_id":"x","title":"Song","artists":["A","B"],"album":"Al","duration_ms":185000,"download_link":"http://d/x.mp3"}`,
			track{Title: "Song", Artists: []string{"A", "B"}, Album: "Al", Duration: 185 * time.Second, Link: "http://d/x.mp3"}},
		{"spotify-style objects, seconds",
			`{"name":"Song","artists":[{"name":"A"}],"album":{"name":"Al"},"duration":"200","link":"http://l"}`,
			track{Title: "Song", Artists: []string{"A"}, Album: "Al", Duration: 200 * time.Second, Link: "http://l"}},
		{"single artist string", `{"artist":"Solo","url":"http://u"}`, track{Artists: []string{"Solo"}, Link: "http://u"}},
		{"bare link", `"http://only"`, track{Link: "http://only"}},
		{"nonsense", `[1,2]`, track{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseTrack(json.RawMessage(tt.result))
			if got.Title != tt.want.Title || got.Album != tt.want.Album || got.Link != tt.want.Link ||
				got.Duration != tt.want.Duration || strings.Join(got.Artists, "|") != strings.Join(tt.want.Artists, "|") {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestFormatTrack(t *testing.T) {
	got := formatTrack(track{Title: "Song", Artists: []string{"A", "B"}, Album: "Al", Duration: 185 * time.Second, Link: "http://d"},
		"sluice; fwd=miss; stored")
	want := "title     Song\nartists   A, B\nalbum     Al\nduration  3:05\ndownload  http://d\ncache     miss (sluice; fwd=miss; stored)\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestCacheSummary(t *testing.T) {
	for in, want := range map[string]string{
		"":                            "-",
		"sluice; hit":                 "hit (sluice; hit)",
		"sluice; fwd=miss; collapsed": "miss, shared with a concurrent call (sluice; fwd=miss; collapsed)",
		"sluice; fwd=request; stored": "refreshed (sluice; fwd=request; stored)",
		"sluice; fwd=bypass":          "bypass (sluice; fwd=bypass)",
		"something else":              "something else",
	} {
		if got := cacheSummary(in); got != want {
			t.Errorf("cacheSummary(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClockDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0:00", 59 * time.Second: "0:59", 185 * time.Second: "3:05", 3725 * time.Second: "1:02:05", 1499 * time.Millisecond: "0:01",
	} {
		if got := clockDuration(d); got != want {
			t.Errorf("clockDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestFormatInfo(t *testing.T) {
	got, err := formatInfo(json.RawMessage(`{"app_configuration":{"api_id":12345678,"api_hash":"0123abcd","app_title":"My App","app_shortname":"myapp"},
		"available_mtproto_servers":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := "api_id     12345678\napi_hash   0123abcd\ntitle      My App\nshortname  myapp\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if _, err := formatInfo(json.RawMessage(`{"app_configuration":{}}`)); exitCode(err) != exitUpstream {
		t.Errorf("missing api_id: %v", err)
	}
	if _, err := formatInfo(json.RawMessage(`"x"`)); exitCode(err) != exitUpstream {
		t.Errorf("not an object: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestTableAlignsWideText: a column after Chinese text starts at the same
// terminal column on every row (two columns per Han character).
func TestTableAlignsWideText(t *testing.T) {
	tb := newTable()
	tb.row("ID", "NAME", "COUNT")
	tb.row("12", "古典音乐", "3")
	tb.row("7", "Piano", "10")
	tb.row("9", "ｆｕｌｌ", "1") // fullwidth Latin
	lines := strings.Split(strings.TrimSuffix(tb.String(), "\n"), "\n")
	col := -1
	for _, l := range lines {
		i := strings.LastIndex(l, "  ")
		if i < 0 {
			t.Fatalf("no column gap in %q", l)
		}
		c := displayWidth(l[:i+2])
		if col >= 0 && c != col {
			t.Fatalf("misaligned: last column at %d, want %d:\n%s", c, col, strings.Join(lines, "\n"))
		}
		col = c
	}
	// "ID" padded to 2+2 columns, the widest name (8 columns) to 8+2.
	if col != 14 {
		t.Fatalf("last column at %d, want 14", col)
	}
	for _, tc := range []struct {
		s string
		w int
	}{{"abc", 3}, {"购买记录不存在", 14}, {"e\u0301", 1}, {"a\u200bb", 2}, {"ｆｕｌｌ", 8}} {
		if got := displayWidth(tc.s); got != tc.w {
			t.Errorf("displayWidth(%q) = %d, want %d", tc.s, got, tc.w)
		}
	}
}
