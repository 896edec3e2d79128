package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/core/api/client"
)

// This file holds `sluicectl watch`, a live view of GET /v1/status. The
// rendering is pure (status, time, width and terminal-ness in, text out) so
// every layout decision is tested without a daemon or a terminal; only
// watchLoop does I/O.

// ANSI control sequences. Only a terminal ever gets them: a pipe or a file
// gets plain lines.
const (
	ansiHome       = "\x1b[H"    // cursor to the top left corner
	ansiEraseLine  = "\x1b[K"    // erase from the cursor to the end of the line
	ansiEraseBelow = "\x1b[J"    // erase from the cursor to the end of the screen
	ansiHideCursor = "\x1b[?25l" // a blinking cursor jumping around a redraw is noise
	ansiShowCursor = "\x1b[?25h"
	ansiBold       = "\x1b[1m"
	ansiRed        = "\x1b[31m"
	ansiReset      = "\x1b[0m"
)

const (
	// defaultWidth is used when the terminal will not say how wide it is.
	defaultWidth = 80
	// minBar and maxBar bound the inner width of a bucket's bar: narrower
	// than minBar a bar says nothing, wider than maxBar it only wastes the
	// space the other columns could use.
	minBar = 5
	maxBar = 30
	// minWatchTimeout is the least each refresh waits for the daemon when
	// --timeout is not given; see newWatchCmd.
	minWatchTimeout = 5 * time.Second
)

const watchLong = `Show a live view of sluiced, refreshed every --interval until Ctrl-C:
each rate bucket as a bar of its window's use (in_window/requests) with
its queue depth and, when paused, the time left and the reason; the
cache's hit ratio, entries, size and coalesced calls; and each provider
plugin's state, pid, restarts and last error.

On a terminal the view is redrawn in place. Anywhere else (a pipe, a file)
each refresh is one plain line without escape sequences, e.g.

  2026-11-27T22:00:00Z ineo.spotify 3/6 q=0 | ineo.tmanage 0/10 q=0 paused 59s (iNeo status_code 10) | cache 80% 12 entries 1.5 KiB 3 coalesced | ineo ready

With --json each refresh prints the status document as one line of JSON.

While sluiced is unreachable, watch says so and keeps retrying; only with
--once does it give up, with exit status 4. Unless --timeout is given,
each refresh waits at most the larger of --interval and 5s, so a hung
daemon shows up as an error rather than a frozen view.`

func newWatchCmd(o *options) *cobra.Command {
	var interval time.Duration
	var once bool
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Live view of rate buckets, cache and plugins, refreshed until Ctrl-C",
		Long:  watchLong,
		Args:  cobra.NoArgs,
	}
	cmd.RunE = o.action(func(ctx context.Context, _ []string) error {
		if interval <= 0 {
			return usageErrorf("--interval must be positive")
		}
		// The global default of 60s suits one-off commands; a view that
		// refreshes every second and then freezes for a minute on a hung
		// daemon would be misleading. An explicit --timeout still wins.
		if !cmd.Flags().Changed("timeout") {
			o.timeout = max(interval, minWatchTimeout)
		}
		return o.watchLoop(ctx, interval, once)
	})
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "time between refreshes")
	cmd.Flags().BoolVar(&once, "once", false, "print one frame and exit (exit status 4 if sluiced is unreachable)")
	return cmd
}

// watchLoop polls the daemon and prints a frame per refresh until ctx ends
// (Ctrl-C), which is the normal way out and so not an error.
func (o *options) watchLoop(ctx context.Context, interval time.Duration, once bool) error {
	// Redrawing in place only makes sense for a stream of frames on a
	// terminal; --once and --json print what a script would want.
	redrawing := o.tty && !once && !o.json
	if redrawing {
		if err := o.print(ansiHideCursor); err != nil {
			return err
		}
		// The cursor must come back whatever ends the loop; the error is
		// moot, as the terminal has gone away if this write fails.
		defer fmt.Fprint(o.stdout, ansiShowCursor)
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		var st api.Status
		// A refreshing watch reports failures in its frame; only --once
		// ends with one, and then --json prints its problem document.
		raw, err := o.fetchDoc(ctx, o.json && once, http.MethodGet, "/v1/status", &st)
		if err != nil {
			if once {
				return err
			}
			if ctx.Err() != nil {
				return nil // Ctrl-C during a refresh
			}
		}
		if err := o.showFrame(&st, raw, err, redrawing); err != nil {
			return err
		}
		if once {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// showFrame prints one refresh: the status, or what went wrong fetching it.
func (o *options) showFrame(st *api.Status, raw []byte, fetchErr error, redrawing bool) error {
	now := time.Now()
	if o.json {
		if fetchErr != nil {
			// stdout stays a clean stream of JSON documents.
			_, err := fmt.Fprintln(o.stderr, "sluicectl: "+render(fetchErr))
			if err != nil {
				return fmt.Errorf("writing output: %w", err)
			}
			return nil
		}
		var line bytes.Buffer
		if err := json.Compact(&line, raw); err != nil {
			return fmt.Errorf("compacting the status document: %w", err)
		}
		line.WriteByte('\n')
		return o.writeBody(line.Bytes())
	}
	width := 0
	if o.tty {
		width = termWidth(o.stdout)
	}
	var frame string
	if fetchErr != nil {
		frame = renderWatchError(fetchErr, o.cl.Socket(), now, width, o.tty)
	} else {
		frame = renderWatch(st, now, width, o.tty)
	}
	if redrawing {
		frame = redraw(frame)
	}
	return o.print(frame)
}

// termWidth asks the terminal behind w for its width. It is asked on every
// refresh, so resizing the window takes effect at the next frame.
func termWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return defaultWidth
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 {
		return defaultWidth
	}
	return int(ws.Col)
}

// redraw turns a frame into the bytes that paint it over the previous one:
// from the top left corner, each line erased to its end, and whatever an
// earlier, longer frame left below erased. Overwriting rather than clearing
// the screen first keeps the view from flickering.
func redraw(frame string) string {
	var b strings.Builder
	b.WriteString(ansiHome)
	for line := range strings.Lines(frame) {
		b.WriteString(strings.TrimSuffix(line, "\n"))
		b.WriteString(ansiEraseLine + "\n")
	}
	b.WriteString(ansiEraseBelow)
	return b.String()
}

// styledLine is one line of a terminal frame; style is an SGR sequence
// applied to the whole line, after the layout is decided, so escape
// sequences never count towards a line's width.
type styledLine struct {
	text  string
	style string
}

// renderWatch renders one frame of the view: on a terminal (tty) a
// multi-line dashboard fitted to width columns (0: unlimited); otherwise one
// plain line stamped with now in UTC, with no escape sequences.
func renderWatch(st *api.Status, now time.Time, width int, tty bool) string {
	if !tty {
		return plainWatchLine(st, now)
	}
	var lines []styledLine
	add := func(style string, text string, indent int) {
		for _, l := range wrap(text, width, indent) {
			lines = append(lines, styledLine{l, style})
		}
	}

	head := "sluiced"
	if st.Version != "" {
		head += " " + st.Version
	}
	head += "  up " + uptime(st) + "  " + now.Format("15:04:05")
	add(ansiBold, head, 2)
	if !st.Config.LastReloadOK && st.Config.LastError != "" {
		add(ansiRed, "config reload FAILED (the previous config keeps serving): "+oneLine(st.Config.LastError), 2)
	}
	if st.StateError != "" {
		add(ansiRed, "state: "+oneLine(st.StateError), 2)
	}
	if h := heldReason(st); h != "" {
		add(ansiRed, "HELD: no upstream request until rate-limit state can be written: "+oneLine(h), 2)
	}
	if f := st.Fleet; f != nil {
		for _, l := range fleetWatchLines(f) {
			add(l.style, l.text, 2)
		}
	}

	add("", "", 0)
	add(ansiBold, "BUCKETS", 0)
	if len(st.Buckets) == 0 {
		add("", "no rate buckets", 2)
	}
	for _, l := range bucketLines(st.Buckets, now, width) {
		add(l.style, l.text, 4)
	}

	add("", "", 0)
	add(ansiBold, "CACHE", 0)
	c := &st.Cache
	add("", strings.Join([]string{
		hitRatio(c) + " hits",
		plural(c.Entries, "entry", "entries"),
		humanBytes(c.Bytes),
		strconv.FormatUint(c.Coalesced, 10) + " coalesced",
	}, "  "), 4)

	add("", "", 0)
	add(ansiBold, "PLUGINS", 0)
	if len(st.Providers) == 0 {
		add("", "no providers", 2)
	}
	for _, l := range pluginLines(st.Providers) {
		add(l.style, l.text, 4)
	}
	if len(st.Providers) > 0 {
		add("", "", 0)
		add(ansiBold, "SHARING", 0)
		for line := range strings.Lines(savedTable(st.Providers)) {
			add("", strings.TrimRight(line, " \n"), 4)
		}
	}

	var b strings.Builder
	for _, l := range lines {
		if l.style != "" && l.text != "" {
			b.WriteString(l.style + l.text + ansiReset + "\n")
		} else {
			b.WriteString(l.text + "\n")
		}
	}
	return b.String()
}

// bucketLines lays out the buckets as aligned columns: name, bar, use, queue
// and, for a paused bucket, the countdown and reason. The bar is what gives
// way on a narrow terminal: it shrinks to leave room for every other column
// of the widest line, and goes away when it would be narrower than minBar.
// Only then do long lines wrap (in renderWatch); nothing is cut.
func bucketLines(buckets []api.BucketStatus, now time.Time, width int) []styledLine {
	type row struct{ name, use, queue, pause string }
	rows := make([]row, len(buckets))
	var nameW, useW, queueW, pauseW int
	for i := range buckets {
		b := &buckets[i]
		r := row{name: b.Name, use: bucketUse(b), queue: "q=" + strconv.Itoa(b.Queued)}
		if p := pauseText(b, now); p != "" {
			r.pause = "  " + p
		}
		rows[i] = r
		nameW = max(nameW, displayWidth(r.name))
		useW = max(useW, displayWidth(r.use))
		queueW = max(queueW, displayWidth(r.queue))
		pauseW = max(pauseW, displayWidth(r.pause))
	}
	// Two spaces between columns; the bar adds its brackets.
	bar := maxBar
	if width > 0 {
		bar = min(maxBar, width-(nameW+2+2+2+useW+2+queueW+pauseW))
	}
	out := make([]styledLine, len(rows))
	for i, r := range rows {
		var b strings.Builder
		b.WriteString(pad(r.name, nameW) + "  ")
		if bar >= minBar {
			b.WriteString(useBar(buckets[i].InWindow, buckets[i].Requests, bar) + "  ")
		}
		b.WriteString(pad(r.use, useW) + "  " + pad(r.queue, queueW) + r.pause)
		out[i].text = strings.TrimRight(b.String(), " ")
		if r.pause != "" {
			out[i].style = ansiRed
		}
	}
	return out
}

// useBar draws used/limit as a bar of n cells between brackets. Any use
// shows at least one filled cell and a window not yet full never shows a
// full bar, so "idle", "in use" and "at the limit" are told apart at a
// glance whatever the rounding.
func useBar(used, limit, n int) string {
	filled := 0
	if limit > 0 && used > 0 {
		filled = int(math.Round(float64(used) / float64(limit) * float64(n)))
		filled = max(filled, 1)
		if used < limit {
			filled = min(filled, n-1)
		}
		filled = min(filled, n)
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat("-", n-filled) + "]"
}

// pauseText is "paused 59s (reason)" for a bucket paused at now, else "". A
// pause whose end has passed is over, even if the daemon's snapshot
// predates its end.
func pauseText(b *api.BucketStatus, now time.Time) string {
	if b.PausedUntil == nil || !b.PausedUntil.After(now) {
		return ""
	}
	s := "paused " + countdown(b.PausedUntil.Sub(now))
	if r := oneLine(b.PauseReason); r != "" {
		s += " (" + strings.Join(strings.Fields(r), " ") + ")"
	}
	return s
}

// countdown renders a positive time left compactly: 59s, 4m05s, 2h03m. It
// rounds up, so a pause still in force never reads "0s".
func countdown(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	}
	m := (s + 59) / 60 // still rounding up
	return fmt.Sprintf("%dh%02dm", m/60, m%60)
}

// hitRatio is hits/(hits+misses) as a whole percentage, or "-" before any
// lookup. It rounds down so that 100% means no miss at all.
func hitRatio(c *api.CacheStats) string {
	total := c.Hits + c.Misses
	if total == 0 {
		return "-"
	}
	return strconv.FormatUint(c.Hits*100/total, 10) + "%"
}

// pluginLines lays out the providers as aligned columns. A plugin that is not
// ready is the thing to notice, hence red.
func pluginLines(ps []api.ProviderStatus) []styledLine {
	t := newTable()
	for _, p := range ps {
		pid := "-"
		if p.PID > 0 {
			pid = strconv.Itoa(p.PID)
		}
		cells := []string{p.Name, p.State, "pid " + pid, "restarts " + strconv.Itoa(p.Restarts)}
		if p.LastError != "" {
			cells = append(cells, "last error: "+p.LastError)
		}
		t.row(cells...)
	}
	var out []styledLine
	i := 0
	for line := range strings.Lines(t.String()) {
		l := styledLine{text: strings.TrimRight(line, " \n")}
		if ps[i].State != "ready" {
			l.style = ansiRed
		}
		out = append(out, l)
		i++
	}
	return out
}

// plainWatchLine is the whole view on one line, for logs and pipes.
func plainWatchLine(st *api.Status, now time.Time) string {
	var parts []string
	if len(st.Buckets) == 0 {
		parts = append(parts, "no rate buckets")
	}
	for i := range st.Buckets {
		b := &st.Buckets[i]
		s := fmt.Sprintf("%s %d/%d q=%d", b.Name, b.InWindow, b.Requests, b.Queued)
		if p := pauseText(b, now); p != "" {
			s += " " + p
		}
		parts = append(parts, s)
	}
	c := &st.Cache
	parts = append(parts, fmt.Sprintf("cache %s %s %s %d coalesced",
		hitRatio(c), plural(c.Entries, "entry", "entries"), humanBytes(c.Bytes), c.Coalesced))
	var ps []string
	for _, p := range st.Providers {
		s := p.Name + " " + p.State
		if p.Restarts > 0 {
			s += " restarts=" + strconv.Itoa(p.Restarts)
		}
		if p.Calls > 0 {
			s += fmt.Sprintf(" saved=%d/%d", p.Saved, p.Calls)
		}
		if p.State != "ready" && p.LastError != "" {
			s += " (" + strings.Join(strings.Fields(p.LastError), " ") + ")"
		}
		ps = append(ps, s)
	}
	if len(ps) == 0 {
		ps = append(ps, "no providers")
	}
	parts = append(parts, strings.Join(ps, ", "))
	return now.UTC().Format(time.RFC3339) + " " + strings.Join(parts, " | ") + "\n"
}

// renderWatchError renders a refresh that got no status: the daemon is
// unreachable (the usual case: not started yet, or restarting), or it failed
// to answer. Like renderWatch, plain mode is one line without escapes.
func renderWatchError(err error, socket string, now time.Time, width int, tty bool) string {
	msg := "error: " + render(err)
	var ue *client.UnreachableError
	if errors.As(err, &ue) {
		msg = "daemon unreachable (is sluiced running? socket " + socket + ")"
	}
	if !tty {
		return now.UTC().Format(time.RFC3339) + " " + msg + "\n"
	}
	var b strings.Builder
	b.WriteString(ansiBold + "sluiced  " + now.Format("15:04:05") + ansiReset + "\n\n")
	for _, l := range wrap(msg+"; retrying", width, 2) {
		b.WriteString(ansiRed + l + ansiReset + "\n")
	}
	return b.String()
}

// wrap breaks s into lines of at most width columns at spaces, continuation
// lines indented by indent. The first line keeps its spacing, so columns
// stay aligned up to the break. A word longer than the line stays whole (the
// terminal wraps it): on a narrow terminal showing everything matters more
// than a tidy edge. width <= 0 means unlimited.
func wrap(s string, width, indent int) []string {
	if width <= 0 {
		return []string{s}
	}
	// A continuation indent of half the line or more would leave no room.
	prefix := strings.Repeat(" ", min(indent, width/2))
	var out []string
	for displayWidth(s) > width {
		cut := breakAt(s, width)
		if cut < 0 {
			break
		}
		out = append(out, strings.TrimRight(s[:cut], " "))
		s = prefix + strings.TrimLeft(s[cut:], " ")
	}
	return append(out, s)
}

// breakAt is the byte offset of the space where s should break to fit width
// columns: the last one that fits, else the first one after (a long word),
// or -1 if s has no space to break at past its indentation.
func breakAt(s string, width int) int {
	start := len(s) - len(strings.TrimLeft(s, " "))
	last, col := -1, 0
	for i, r := range s {
		if r == ' ' && i > start {
			if col > width {
				if last >= 0 {
					return last
				}
				return i
			}
			last = i // s[:i] is col columns wide, which fits
		}
		col += runeWidth(r)
	}
	return last
}

// pad right-pads s with spaces to n columns.
func pad(s string, n int) string {
	return s + strings.Repeat(" ", max(n-displayWidth(s), 0))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
