package gateway

import (
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/core/progress"
)

// A long wait must show itself. Every call is tracked by its request id
// (the caller's own Sluice-Request-Id, or one sluice makes), readable at
// GET /v1/requests/{id} while it is in flight; a caller that sends
// "Sluice-Progress: 102" also gets 102 (Processing) interim responses
// carrying a Sluice-Progress header while it waits. 1xx is opt-in because
// some clients (Python's http.client) take any 1xx but 100 for the answer.

// SetProgress gives the gateway the tracker the plugin host also reports
// to; without it nothing is tracked.
func (g *Gateway) SetProgress(t *progress.Tracker) { g.progress = t }

// Progress is the tracked state of call id, with its bucket's live budget.
func (g *Gateway) Progress(id string) (progress.State, bool) { return g.progress.Get(id) }

// requestID accepts a caller's request id when it is a plain token (it is
// echoed in headers and logs), else makes one.
var callerIDPattern = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,64}$`)

func requestID(r *http.Request, fresh func() string) string {
	if id := r.Header.Get("Sluice-Request-Id"); callerIDPattern.MatchString(id) {
		return id
	}
	return fresh()
}

// interimEvery is how often a waiting caller that asked for them gets a
// 102; the first comes as soon as the call is seen waiting.
const interimEvery = time.Second

// interim starts sending 102 responses to w while call id waits, if the
// caller asked for them; the returned function stops it and must be called
// before the final answer is written (it waits for the sender to finish).
func (g *Gateway) interim(w http.ResponseWriter, r *http.Request, id string) (stop func()) {
	if g.progress == nil || !r.ProtoAtLeast(1, 1) || !wantsInterim(r) {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interimEvery / 4)
		defer t.Stop()
		var last time.Time
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			st, ok := g.progress.Get(id)
			if !ok || !waiting(st.Stage) || time.Since(last) < interimEvery {
				continue
			}
			last = time.Now()
			w.Header().Set("Sluice-Progress", g.describe(st))
			w.WriteHeader(http.StatusProcessing)
			w.Header().Del("Sluice-Progress")
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

func wantsInterim(r *http.Request) bool {
	for _, v := range r.Header.Values("Sluice-Progress") {
		for _, tok := range strings.Split(v, ",") {
			if strings.TrimSpace(tok) == "102" {
				return true
			}
		}
	}
	return false
}

func waiting(stage string) bool {
	return stage == progress.StageBudget || stage == progress.StageTurn || stage == progress.StagePaused
}

// describe renders a waiting call for the Sluice-Progress header, with its
// bucket's live figures: stage=budget; bucket="ineo.spotify"; ahead=2;
// used=6; limit=6; next=4.2.
func (g *Gateway) describe(st progress.State) string {
	var b strings.Builder
	fmt.Fprintf(&b, "stage=%s", st.Stage)
	if st.Bucket != "" {
		fmt.Fprintf(&b, "; bucket=%q", st.Bucket)
	}
	if st.Ahead > 0 {
		fmt.Fprintf(&b, "; ahead=%d", st.Ahead)
	}
	if fp := g.budgets.Load(); fp != nil && st.Bucket != "" {
		if bud, ok := (*fp)(st.Bucket); ok {
			fmt.Fprintf(&b, "; used=%d; limit=%d", bud.Limit.Requests-bud.Remaining, bud.Limit.Requests)
		}
	}
	if !st.Expected.IsZero() {
		fmt.Fprintf(&b, "; next=%.1f", math.Max(0, time.Until(st.Expected).Seconds()))
	}
	return b.String()
}
