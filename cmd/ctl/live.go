package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/core/api/client"
)

// A long wait must show itself. On a terminal nothing moved for a minute
// while `spotify search --all` walked its pages under the rate budget, and
// `ineo track` sat silent while its call waited for a slot. liveLine is
// one line on stderr, redrawn in place, that says what is going on: the
// page a walk is on, and while a call waits, what for and until when.
//
// It is only made when stderr is a terminal and --json is off: a pipe, a
// log file or a script gets no carriage returns and escapes.
//
// The wait comes from the daemon's 102 (Processing) interim answers
// (client.OnWaiting), not from polling GET /v1/requests/{id}: the daemon
// pushes them on the call's own connection only while the call waits, so
// a call that does not wait costs nothing, there is no second connection
// or poll loop, and no race between a poll and the call being registered
// (a 404 before the call is known looks the same as one after it ended).
// Between two interim answers the countdown runs on locally.
type liveLine struct {
	w     io.Writer
	width func() int       // terminal columns, asked at each draw
	now   func() time.Time // injected by tests

	mu     sync.Mutex
	base   string          // what the command is doing, e.g. a walk's page
	wait   *client.Waiting // the call's latest interim answer, if it waits
	shown  bool            // something is on the line
	ticker chan struct{}   // closed to stop the countdown
	wg     sync.WaitGroup
}

// tickEvery is how often the countdown is redrawn between interim answers.
const tickEvery = 200 * time.Millisecond

func newLiveLine(w io.Writer, width func() int) *liveLine {
	return &liveLine{w: w, width: width, now: time.Now}
}

// status sets what the command is doing ("" for nothing) and redraws.
func (l *liveLine) status(s string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.base = s
	l.drawLocked()
}

// waiting is client.OnWaiting's callback: w is the latest interim answer,
// nil once the call's answer is in.
func (l *liveLine) waiting(w *client.Waiting) {
	l.mu.Lock()
	l.wait = w
	l.drawLocked()
	switch {
	case w != nil && l.ticker == nil:
		l.ticker = make(chan struct{})
		l.wg.Add(1)
		go l.tick(l.ticker)
		l.mu.Unlock()
	case w == nil && l.ticker != nil:
		close(l.ticker)
		l.ticker = nil
		l.mu.Unlock()
		// Nothing may be drawn after the call returns: its answer is
		// printed next.
		l.wg.Wait()
	default:
		l.mu.Unlock()
	}
}

func (l *liveLine) tick(stop chan struct{}) {
	defer l.wg.Done()
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		select {
		case <-stop:
		default:
			l.drawLocked()
		}
		l.mu.Unlock()
	}
}

// clear takes the line away, so that what is printed next starts on a
// clean line.
func (l *liveLine) clear() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.base = ""
	l.wait = nil
	l.drawLocked()
}

const ansiEraseToEnd = "\x1b[K"

func (l *liveLine) drawLocked() {
	text := l.base
	if l.wait != nil {
		if text != "" {
			text += " · "
		}
		text += waitText(l.wait, l.now())
	}
	if text == "" {
		if l.shown {
			io.WriteString(l.w, "\r"+ansiEraseToEnd)
			l.shown = false
		}
		return
	}
	// One column is kept free: writing the last one makes some terminals
	// wrap, and \r then returns to the wrong line.
	if n := l.width(); n > 1 {
		text = truncateWidth(text, n-1)
	}
	io.WriteString(l.w, "\r"+text+ansiEraseToEnd)
	l.shown = true
}

// waitText says what a waiting call waits for: "waiting for ineo.spotify:
// 3 of 6 used, next slot in 4.2 s".
func waitText(w *client.Waiting, now time.Time) string {
	left := ""
	if w.Next >= 0 {
		d := max(w.Next-now.Sub(w.At), 0)
		left = fmt.Sprintf("%.1f s", d.Seconds())
	}
	bucket := w.Bucket
	if bucket == "" {
		bucket = "rate budget"
	}
	var parts []string
	switch w.Stage {
	case "budget":
		if w.Limit > 0 {
			parts = append(parts, fmt.Sprintf("%d of %d used", w.Used, w.Limit))
		}
		slot := "next slot"
		if w.Ahead > 0 {
			parts = append(parts, fmt.Sprintf("%d ahead of you", w.Ahead))
			slot = "your slot"
		}
		if left != "" {
			parts = append(parts, slot+" in "+left)
		}
		return joinWait("waiting for "+bucket, parts)
	case "turn":
		if left != "" {
			parts = append(parts, "expected in "+left)
		}
		return joinWait("waiting for its turn at "+bucket+" (one request at a time)", parts)
	case "paused":
		if left != "" {
			parts = append(parts, "resumes in "+left)
		}
		return joinWait(bucket+" is paused by the upstream", parts)
	}
	if left != "" {
		parts = append(parts, "expected in "+left)
	}
	return joinWait("waiting ("+w.Stage+")", parts)
}

func joinWait(head string, parts []string) string {
	if len(parts) == 0 {
		return head
	}
	return head + ": " + strings.Join(parts, ", ")
}

// truncateWidth cuts s to at most n terminal columns, ending in "…" when
// cut.
func truncateWidth(s string, n int) string {
	if displayWidth(s) <= n {
		return s
	}
	var b strings.Builder
	w := 0
	for _, r := range s {
		rw := runeWidth(r)
		if w+rw > n-1 {
			break
		}
		b.WriteRune(r)
		w += rw
	}
	return b.String() + "…"
}

// walkStatus is a page walk's line: "albums: page 3 of 10 (20 of 95 so
// far)". total is 0 when unknown.
func walkStatus(kind string, page, pages, got, total int) string {
	s := fmt.Sprintf("%s: page %d", kind, page)
	if pages > 0 {
		s += fmt.Sprintf(" of %d", pages)
	}
	if total > 0 {
		return s + fmt.Sprintf(" (%d of %d so far)", got, total)
	}
	return s + fmt.Sprintf(" (%d so far)", got)
}
