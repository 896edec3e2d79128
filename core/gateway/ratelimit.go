package gateway

import (
	"crypto/sha256"
	"encoding/base64"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/core/cache"
	"github.com/sluice-dev/sluice/core/scheduler"
)

// Apps that share sluice should be able to see and use what is shared:
// every provider answer carries the IETF RateLimit-Policy and RateLimit
// headers (draft-ietf-httpapi-ratelimit-headers) of the bucket its
// operation spends, and a strong ETag, so an app's own HTTP cache can ask
// with If-None-Match and get 304 from sluice's cache.

// BudgetFunc reads a bucket's budget (Scheduler.Budget).
type BudgetFunc func(bucket string) (scheduler.Budget, bool)

// SetBudgets gives the gateway the scheduler's budgets for the RateLimit
// headers; without it answers carry none.
func (g *Gateway) SetBudgets(f BudgetFunc) { g.budgets.Store(&f) }

// rateLimitTTL is how long one reading of a bucket serves the headers of
// the answers after it: a cache hit must not take the bucket's lock, and
// the figures are advice to pace by, not a grant.
const rateLimitTTL = 50 * time.Millisecond

// rateLines memoises each bucket's rendered header lines.
type rateLines struct {
	m sync.Map // bucket → *rateMemo
}

// rateMemo is one bucket's reading. mu makes its refresh single-flight:
// concurrent hits past the reading's TTL refresh it once, the others
// serve the reading they have (before: every one of them read the
// budget, in fleet mode a Redis round trip each).
type rateMemo struct {
	p  atomic.Pointer[rateReading]
	mu sync.Mutex
}

type rateReading struct {
	at    time.Time
	lines []byte // "RateLimit-Policy: ...\r\nRateLimit: ...\r\n"
}

// rateLimitLines returns bucket's header lines, as written by the fast lane
// and (split) by the full path; nil when there is nothing to say.
func (g *Gateway) rateLimitLines(bucket string, now time.Time) []byte {
	return g.readRateLimit(bucket, now, false)
}

// readRateLimit is rateLimitLines; fresh skips the memo, for an answer
// whose own request was just granted (a miss): a reading from before
// its grant, or from before it waited in the queue, would tell the caller
// of budget that is gone.
func (g *Gateway) readRateLimit(bucket string, now time.Time, fresh bool) []byte {
	fp := g.budgets.Load()
	if fp == nil || bucket == "" {
		return nil
	}
	v, ok := g.rates.m.Load(bucket)
	if !ok {
		v, _ = g.rates.m.LoadOrStore(bucket, new(rateMemo))
	}
	m := v.(*rateMemo)
	old := m.p.Load()
	if fresh {
		m.mu.Lock()
		old = nil
	} else if old != nil && now.Sub(old.at) < rateLimitTTL {
		return old.lines
	} else if !m.mu.TryLock() {
		if old != nil {
			// Another caller is refreshing it: this one serves the
			// last reading rather than wait or read again.
			return old.lines
		}
		// The first reading: wait for it (cheap: Budget never waits
		// on Redis).
		m.mu.Lock()
		if r := m.p.Load(); r != nil {
			m.mu.Unlock()
			return r.lines
		}
	}
	defer m.mu.Unlock()
	if r := m.p.Load(); !fresh && r != old && r != nil {
		return r.lines // refreshed meanwhile
	}
	b, ok := (*fp)(bucket)
	if !ok {
		return nil
	}
	r := &rateReading{at: now, lines: renderRateLimit(bucket, b)}
	m.p.Store(r)
	return r.lines
}

func renderRateLimit(bucket string, b scheduler.Budget) []byte {
	name := strconv.Quote(bucket) // a structured-field string
	w := int64(math.Ceil(b.Limit.Window.Seconds()))
	t := int64(math.Ceil(b.Reset.Seconds()))
	var sb strings.Builder
	sb.WriteString("RateLimit-Policy: " + name + ";q=" + strconv.Itoa(b.Limit.Requests) + ";w=" + strconv.FormatInt(w, 10) + "\r\n")
	sb.WriteString("RateLimit: " + name + ";r=" + strconv.Itoa(b.Remaining) + ";t=" + strconv.FormatInt(t, 10) + "\r\n")
	return []byte(sb.String())
}

// setRateLimit adds bucket's RateLimit headers to h; fresh as in
// readRateLimit.
func (g *Gateway) setRateLimit(h http.Header, bucket string, fresh bool) {
	lines := g.readRateLimit(bucket, time.Now(), fresh)
	for len(lines) > 0 {
		line, rest, _ := strings.Cut(string(lines), "\r\n")
		lines = []byte(rest)
		if name, value, ok := strings.Cut(line, ": "); ok {
			h.Set(name, value)
		}
	}
}

// etagOf is a strong validator of the exact bytes served.
func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
}

// entryETag is the ETag of e as served under base.
func entryETag(e *cache.Entry, base string) string {
	if e.Status/100 != 2 {
		// Preconditions are evaluated only where the answer would be
		// a 2xx (RFC 9110 13.2.1).
		return ""
	}
	if !e.HasBase() {
		return e.Header.Get("ETag")
	}
	return e.ETagFor(base, etagOf)
}

// notModified reports whether If-None-Match names etag (RFC 9110 13.1.2:
// weak comparison, any of a list, or *).
func notModified(r *http.Request, etag string) bool {
	if etag == "" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	for _, v := range r.Header.Values("If-None-Match") {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimSpace(tag)
			if tag == "*" || strings.TrimPrefix(tag, "W/") == strings.TrimPrefix(etag, "W/") {
				return true
			}
		}
	}
	return false
}
