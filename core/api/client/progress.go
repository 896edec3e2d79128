package client

import (
	"context"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/core/api"
)

// A call that waits (for rate budget, for its turn, for an upstream's
// pause to end) can show itself two ways: GET /v1/requests/{id} by its
// Sluice-Request-Id, or 102 (Processing) interim answers that the daemon
// pushes every second to a caller that sends "Sluice-Progress: 102". The
// client offers both: Request for the first, OnWaiting for the second.

// Waiting is what one 102 interim answer says about a call still waiting.
type Waiting struct {
	// Stage is "budget", "turn" or "paused" (see api.RequestStatus).
	Stage  string
	Bucket string
	// Ahead counts the callers queued before this one.
	Ahead int
	// Used and Limit are the bucket's budget now; Limit is 0 when the
	// daemon did not say.
	Used, Limit int
	// Next is how long until the wait is expected to end, as of At; -1
	// when unknown.
	Next time.Duration
	// At is when the interim answer arrived.
	At time.Time
}

// ParseProgress reads a Sluice-Progress header of a 102 answer:
// stage=budget; bucket="ineo.spotify"; ahead=2; used=6; limit=6; next=4.2.
// Unknown parameters are skipped, so the daemon may add some.
func ParseProgress(v string, at time.Time) (Waiting, bool) {
	w := Waiting{Next: -1, At: at}
	for _, part := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		if uq, err := strconv.Unquote(val); err == nil {
			val = uq
		}
		switch k {
		case "stage":
			w.Stage = val
		case "bucket":
			w.Bucket = val
		case "ahead":
			w.Ahead, _ = strconv.Atoi(val)
		case "used":
			w.Used, _ = strconv.Atoi(val)
		case "limit":
			w.Limit, _ = strconv.Atoi(val)
		case "next":
			if s, err := strconv.ParseFloat(val, 64); err == nil && s >= 0 {
				w.Next = time.Duration(s * float64(time.Second))
			}
		}
	}
	return w, w.Stage != ""
}

// OnWaiting makes every request of this client ask for 102 interim answers
// and hands each one to fn as it arrives, then fn(nil) once the request's
// answer (or its failure) is in, so a caller can show a live line while a
// call waits and take it away after. Set it before the client is used.
// fn is called from the request's own goroutine, one call at a time per
// request.
func (c *Client) OnWaiting(fn func(*Waiting)) { c.onWaiting = fn }

// withWaiting prepares req for OnWaiting and returns the function to call
// when the request is over.
func (c *Client) withWaiting(req *http.Request) (*http.Request, func()) {
	fn := c.onWaiting
	if fn == nil {
		return req, func() {}
	}
	if req.Header.Get("Sluice-Progress") == "" {
		// Set, not Add: the header map may share slices with the caller's.
		req.Header.Set("Sluice-Progress", "102")
	}
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			if code != http.StatusProcessing {
				return nil
			}
			if w, ok := ParseProgress(h.Get("Sluice-Progress"), time.Now()); ok {
				fn(&w)
			}
			return nil
		},
	}
	return req.WithContext(httptrace.WithClientTrace(req.Context(), trace)), func() { fn(nil) }
}

// Request returns where call id (its Sluice-Request-Id) stands while it is
// in flight; after its answer the daemon has forgotten it: a 404
// *problem.Problem.
func (c *Client) Request(ctx context.Context, id string) (*api.RequestStatus, error) {
	var r api.RequestStatus
	return &r, c.getJSON(ctx, http.MethodGet, "/v1/requests/"+url.PathEscape(id), &r)
}
