package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/core/api"
)

// This file turns the daemon's documents into human-readable text. Every
// function here is pure (the time is passed in), so the formats are tested
// without a daemon.

const timeLayout = "2006-01-02 15:04:05"

// table collects rows and aligns their columns by display width (see
// displayWidth): text/tabwriter counts runes, which misaligns every column
// after a Chinese or Japanese cell. Columns are two spaces apart; the last
// cell of a row is not padded.
type table struct {
	rows [][]string
}

func newTable() *table { return &table{} }

func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = cell(c)
	}
	t.rows = append(t.rows, cells)
}

func (t *table) String() string {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r[:max(len(r)-1, 0)] {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], displayWidth(c))
		}
	}
	var b strings.Builder
	for _, r := range t.rows {
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-displayWidth(c)+2))
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// cell makes a value safe for one table cell: daemon-provided text (error
// messages, reasons) may hold tabs or newlines, which would break the
// alignment.
func cell(s string) string {
	s = strings.Join(strings.Fields(localTimes(s)), " ")
	if s == "" {
		return "-"
	}
	return s
}

// rfc3339 finds the machine timestamps the daemon writes into messages
// (pause reasons, problem details), which are UTC.
var rfc3339 = regexp.MustCompile(`\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})`)

// localTimes rewrites those timestamps in the local zone and the layout
// sluicectl uses for its own times, so one output never mixes UTC from a
// daemon message with local times of its own.
func localTimes(s string) string {
	return rfc3339.ReplaceAllStringFunc(s, func(m string) string {
		t, err := time.Parse(time.RFC3339Nano, m)
		if err != nil {
			return m
		}
		return t.Local().Format(timeLayout)
	})
}

// formatStatus renders GET /v1/status for a terminal.
func formatStatus(st *api.Status, now time.Time) string {
	var out strings.Builder

	head := newTable()
	head.row("version", st.Version)
	up := uptime(st)
	if !st.StartedAt.IsZero() {
		up += " (since " + st.StartedAt.Local().Format(timeLayout) + ")"
	}
	head.row("uptime", up)
	if st.Sandbox {
		head.row("sandbox", "yes")
	}
	if st.Socket != "" {
		head.row("socket", st.Socket)
	}
	cfg := cell(st.Config.Path)
	if !st.Config.LoadedAt.IsZero() {
		cfg += " (loaded " + st.Config.LoadedAt.Local().Format(timeLayout) + ")"
	}
	head.row("config", cfg)
	if st.Config.LastReloadOK {
		head.row("last reload", "ok")
	} else {
		failed := "FAILED"
		if !st.Config.LastErrorAt.IsZero() {
			failed += " at " + st.Config.LastErrorAt.Local().Format(timeLayout)
		}
		head.row("last reload", failed+": "+cell(st.Config.LastError)+" (the previous config keeps serving)")
	}
	for _, w := range st.Config.Warnings {
		head.row("warning", cell(w))
	}
	if st.StateError != "" {
		head.row("state", st.StateError)
	}
	if h := heldReason(st); h != "" {
		head.row("HELD", "no upstream request is sent until rate-limit state can be written: "+h)
	}
	out.WriteString(head.String())

	out.WriteString("\n")
	if len(st.Providers) == 0 {
		out.WriteString("no providers\n")
	} else {
		t := newTable()
		t.row("PROVIDER", "STATE", "PID", "RESTARTS", "LAST ERROR")
		for _, p := range st.Providers {
			pid := "-"
			if p.PID > 0 {
				pid = strconv.Itoa(p.PID)
			}
			t.row(p.Name, p.State, pid, strconv.Itoa(p.Restarts), p.LastError)
		}
		out.WriteString(t.String())
		out.WriteString("\n")
		out.WriteString(savedTable(st.Providers))
	}

	out.WriteString("\n")
	if len(st.Buckets) == 0 {
		out.WriteString("no rate buckets\n")
	} else {
		t := newTable()
		t.row("BUCKET", "IN WINDOW", "QUEUED", "GRANTED", "PAUSED")
		for _, b := range st.Buckets {
			t.row(b.Name, bucketUse(&b), strconv.Itoa(b.Queued), strconv.FormatUint(b.Granted, 10), paused(&b, now))
		}
		out.WriteString(t.String())
	}

	if st.Fleet != nil {
		out.WriteString("\n")
		out.WriteString(fleetSection(st.Fleet))
	}

	out.WriteString("\n")
	out.WriteString("cache: " + cacheLine(&st.Cache) + "\n")
	return out.String()
}

// fleetSection is the FLEET line, its members and what disagrees.
func fleetSection(f *api.FleetStatus) string {
	var out strings.Builder
	if !f.RedisReachable {
		out.WriteString(fmt.Sprintf("FLEET %s: this member %s; REDIS UNREACHABLE, no upstream request is sent for a fleet bucket: %s\n",
			cell(f.Name), cell(f.Member), cell(f.Error)))
		return out.String()
	}
	noun := "members"
	if len(f.Members) == 1 {
		noun = "member"
	}
	out.WriteString(fmt.Sprintf("FLEET %s: %d live %s, this one %s, redis reachable\n", cell(f.Name), len(f.Members), noun, cell(f.Member)))
	t := newTable()
	t.row("MEMBER", "HOST", "VERSION", "STARTED", "DISAGREES")
	for _, m := range f.Members {
		id := m.ID
		if m.Self {
			id += " (this)"
		}
		var dis []string
		if len(m.LimitsDisagree) > 0 {
			dis = append(dis, "limits of "+strings.Join(m.LimitsDisagree, ", "))
		}
		if m.VersionDisagrees {
			dis = append(dis, "version "+m.Version+" schema "+m.Schema)
		}
		started := "-"
		if !m.Started.IsZero() {
			started = m.Started.Local().Format(timeLayout)
		}
		t.row(cell(id), cell(m.Host), cell(m.Version), started, cell(strings.Join(dis, "; ")))
	}
	out.WriteString(t.String())
	for _, mm := range f.Mismatches {
		out.WriteString(fmt.Sprintf("HELD %s: this member's limit %s differs from the fleet's %s; it sends nothing for this bucket until the configs agree (same limit on every member, then reload)\n",
			cell(mm.Bucket), cell(mm.Limit), cell(mm.FleetLimit)))
	}
	return out.String()
}

// savedTable is a line per provider saying what sharing (cache, 304,
// coalescing, stale answers) saved it upstream since the daemon started.
func savedTable(ps []api.ProviderStatus) string {
	t := newTable()
	for _, p := range ps {
		t.row(p.Name, savedText(p))
	}
	return t.String()
}

// savedText is "saved 1,234 upstream requests (92 % of calls) since start".
// The share rounds down, so 100 % means every call was answered without an
// upstream request of its own.
func savedText(p api.ProviderStatus) string {
	if p.Calls == 0 {
		return "no calls since start"
	}
	saved := min(p.Saved, p.Calls)
	noun := "requests"
	if saved == 1 {
		noun = "request"
	}
	return fmt.Sprintf("saved %s upstream %s (%d %% of calls) since start", thousands(saved), noun, saved*100/p.Calls)
}

// thousands writes n with a comma every three digits: 1,234,567.
func thousands(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// heldReason is why the scheduler holds its buckets (the same for all), or "".
func heldReason(st *api.Status) string {
	for _, b := range st.Buckets {
		if b.Held != "" {
			return b.Held
		}
	}
	return ""
}

// uptime prefers the daemon's own rendering.
func uptime(st *api.Status) string {
	if st.Uptime != "" {
		return st.Uptime
	}
	return (time.Duration(st.UptimeSeconds * float64(time.Second))).Round(time.Second).String()
}

// bucketUse is "in_window/requests per window", e.g. "2/6 per 7s".
func bucketUse(b *api.BucketStatus) string {
	window := b.Window
	if window == "" {
		window = (time.Duration(b.WindowSeconds * float64(time.Second))).String()
	}
	return fmt.Sprintf("%d/%d per %s", b.InWindow, b.Requests, window)
}

// paused says until when and why a bucket is held, or "-"; a pause that has
// already ended is not shown.
func paused(b *api.BucketStatus, now time.Time) string {
	if b.PausedUntil == nil || !b.PausedUntil.After(now) {
		return "-"
	}
	until := *b.PausedUntil
	s := fmt.Sprintf("until %s (in %s)", until.Local().Format(timeLayout), until.Sub(now).Round(time.Second))
	if b.PauseReason != "" {
		s += ": " + b.PauseReason
	}
	return s
}

// cacheLine summarises cache statistics on one line.
func cacheLine(c *api.CacheStats) string {
	size := humanBytes(c.Bytes)
	if c.MaxBytes > 0 {
		size += " of " + humanBytes(c.MaxBytes)
	}
	return fmt.Sprintf("%d entries, %s, %d hits, %d misses, %d coalesced", c.Entries, size, c.Hits, c.Misses, c.Coalesced)
}

func formatCacheStats(c *api.CacheStats) string {
	size := humanBytes(c.Bytes)
	if c.MaxBytes > 0 {
		size += " of " + humanBytes(c.MaxBytes)
	}
	t := newTable()
	t.row("entries", strconv.Itoa(c.Entries))
	t.row("size", size)
	t.row("hits", strconv.FormatUint(c.Hits, 10))
	t.row("misses", strconv.FormatUint(c.Misses, 10))
	t.row("coalesced", strconv.FormatUint(c.Coalesced, 10))
	t.row("evictions", strconv.FormatUint(c.Evictions, 10))
	return t.String()
}

func formatPurge(r *api.PurgeResult, provider string) string {
	if r.Provider != "" {
		provider = r.Provider
	}
	noun := "answers"
	if r.Purged == 1 {
		noun = "answer"
	}
	if provider == "" {
		return fmt.Sprintf("purged %d cached %s\n", r.Purged, noun)
	}
	return fmt.Sprintf("purged %d cached %s of %s\n", r.Purged, noun, provider)
}

func formatHealth(h *api.Health) string {
	if h.Status == "ok" {
		return "ok\n"
	}
	s := h.Status
	if s == "" {
		s = "unavailable"
	}
	if h.Detail != "" {
		s += ": " + oneLine(h.Detail)
	}
	return s + "\n"
}

func formatVersion(v *versionInfo, socket string) string {
	t := newTable()
	t.row("sluicectl", v.Sluicectl+" ("+v.Go+")")
	if v.sluicedErr != nil {
		t.row("sluiced", "not reachable at "+socket)
	} else {
		t.row("sluiced", v.Sluiced)
	}
	return t.String()
}

// humanBytes renders a size in binary units: 1536 → "1.5 KiB".
func humanBytes(n int64) string {
	if n < 1024 && n > -1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	const units = "KMGTPE"
	v := float64(n)
	i := -1
	for (v >= 1024 || v <= -1024) && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}

// track is what the human output shows of a spotify.php result. iNeo
// documents only that the result carries a download link, so the fields are
// looked up under the names its answers have been seen to use, and missing
// ones are left out.
type track struct {
	Title, Album, Link string
	Artists            []string
	Duration           time.Duration
}

func parseTrack(result json.RawMessage) track {
	var t track
	var link string
	if json.Unmarshal(result, &link) == nil {
		// A bare string result is the link itself.
		t.Link = link
		return t
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(result, &m) != nil {
		return t
	}
	t.Title = firstString(m, "title", "name", "track_name")
	t.Album = nameOf(m["album"])
	t.Link = firstString(m, "download_link", "download_url", "link", "download", "url")
	t.Artists = names(m["artists"])
	if len(t.Artists) == 0 {
		t.Artists = names(m["artist"])
	}
	if ms, ok := number(m["duration_ms"]); ok {
		t.Duration = time.Duration(ms) * time.Millisecond
	} else if s, ok := number(m["duration"]); ok {
		t.Duration = time.Duration(s * float64(time.Second))
	}
	return t
}

func firstString(m map[string]json.RawMessage, keys ...string) string {
	for _, k := range keys {
		var s string
		if json.Unmarshal(m[k], &s) == nil && s != "" {
			return s
		}
	}
	return ""
}

// nameOf reads a string, or an object's "name" (Spotify-style album and
// artist objects).
func nameOf(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(raw, &o) == nil {
		return o.Name
	}
	return ""
}

// names reads a list of strings or of named objects, or a single one.
func names(raw json.RawMessage) []string {
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		if n := nameOf(raw); n != "" {
			return []string{n}
		}
		return nil
	}
	var out []string
	for _, item := range list {
		if n := nameOf(item); n != "" {
			out = append(out, n)
		}
	}
	return out
}

func number(raw json.RawMessage) (float64, bool) {
	var f float64
	if json.Unmarshal(raw, &f) == nil && f > 0 {
		return f, true
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 {
			return f, true
		}
	}
	return 0, false
}

// formatTrack renders a track with the cache outcome.
func formatTrack(t track, cacheStatus string) string {
	tb := newTable()
	if t.Title != "" {
		tb.row("title", t.Title)
	}
	if len(t.Artists) > 0 {
		tb.row("artists", strings.Join(t.Artists, ", "))
	}
	if t.Album != "" {
		tb.row("album", t.Album)
	}
	if t.Duration > 0 {
		tb.row("duration", clockDuration(t.Duration))
	}
	tb.row("download", t.Link)
	tb.row("cache", cacheSummary(cacheStatus))
	return tb.String()
}

// clockDuration is m:ss, or h:mm:ss for long pieces.
func clockDuration(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// cacheSummary reads the daemon's RFC 9211 Cache-Status header
// ("sluice; hit", "sluice; fwd=miss; stored", "sluice; fwd=miss; collapsed")
// into a word or two, keeping the raw header for the curious.
func cacheSummary(h string) string {
	if h == "" {
		return "-"
	}
	_, params, _ := strings.Cut(h, ";")
	var outcome string
	var extra []string
	for _, p := range strings.Split(params, ";") {
		p = strings.TrimSpace(p)
		switch {
		case p == "hit":
			outcome = "hit"
		case strings.HasPrefix(p, "fwd="):
			outcome = strings.TrimPrefix(p, "fwd=")
			if outcome == "request" {
				outcome = "refreshed"
			}
		case p == "collapsed":
			extra = append(extra, "shared with a concurrent call")
		}
	}
	if outcome == "" {
		return h
	}
	if len(extra) > 0 {
		outcome += ", " + strings.Join(extra, ", ")
	}
	return outcome + " (" + h + ")"
}

// scalar renders a JSON scalar for people: strings unquoted, numbers as
// written (api_id must not turn into 1.2345e+06).
func scalar(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	return string(raw)
}

// fleetWatchLines is the fleet in the watch view: one line, red when Redis
// is unreachable or a member disagrees, and a red line per bucket this
// member holds for a limit mismatch.
func fleetWatchLines(f *api.FleetStatus) []styledLine {
	if !f.RedisReachable {
		return []styledLine{{"fleet " + cell(f.Name) + ": REDIS UNREACHABLE, no upstream request for a fleet bucket: " + oneLine(f.Error), ansiRed}}
	}
	line := styledLine{text: fmt.Sprintf("fleet %s: %s", cell(f.Name), plural(len(f.Members), "live member", "live members"))}
	disagree := 0
	for _, m := range f.Members {
		if len(m.LimitsDisagree) > 0 || m.VersionDisagrees {
			disagree++
		}
	}
	if disagree > 0 {
		line.text += fmt.Sprintf(", %d disagree (see sluicectl status)", disagree)
		line.style = ansiRed
	}
	out := []styledLine{line}
	for _, mm := range f.Mismatches {
		out = append(out, styledLine{fmt.Sprintf("HELD %s: limit %s here, %s in the fleet: nothing sent until the configs agree", mm.Bucket, mm.Limit, mm.FleetLimit), ansiRed})
	}
	return out
}
