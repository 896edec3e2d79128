// Package gateway turns one caller's HTTP request for /v1/{provider}/... into
// a plugin call: it finds the operation the provider declared, rejects what it
// can locally (so that costs no upstream request), strips credentials, serves
// from the cache or coalesces identical requests, and streams the plugin's
// answer back verbatim with Cache-Status and Age.
package gateway

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/core/access"
	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/core/cache"
	"github.com/sluice-dev/sluice/core/pluginhost"
	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/progress"
	"github.com/sluice-dev/sluice/core/proto"
)

// Settings are the live-reloadable knobs of the gateway.
type Settings struct {
	// DefaultMaxWait applies when a caller sends no Sluice-Max-Wait.
	DefaultMaxWait time.Duration
	DefaultTTL     time.Duration
	ExpiryMargin   time.Duration
	// ProviderTimeout bounds one upstream exchange per provider; used to
	// bound coalesced fetches, which outlive any single caller.
	ProviderTimeout map[string]time.Duration
	// StaleIfExhausted keeps a provider's cached answers this long past
	// their freshness (never past a link inside them), to be served when a
	// fresh one cannot be had within the caller's max wait: a paused or
	// exhausted bucket, a scheduler held by the fail-closed rules.
	StaleIfExhausted map[string]time.Duration
	// Disabled lists the providers sluice has but the config switches off,
	// so a call to one says how to switch it on rather than "unknown".
	Disabled map[string]bool
}

// MaxBody bounds a caller's request body: provider APIs take parameters, not
// uploads.
const MaxBody = 1 << 20

// maxCached bounds an answer the gateway buffers for the cache and for
// coalesced callers; a cacheable operation answering more is refused with
// 502 (cacheable operations are lookups with small JSON answers).
const maxCached = 8 << 20

// readyWait is how long a call waits for a restarting plugin.
const readyWait = 10 * time.Second

// Gateway serves provider calls.
type Gateway struct {
	patterns patternCache
	hits     *hitMemo
	host     *pluginhost.Host
	cache    *cache.Cache
	log      *slog.Logger
	settings atomic.Pointer[Settings]
	budgets  atomic.Pointer[BudgetFunc]
	rates    rateLines
	progress *progress.Tracker
}

// New creates a Gateway.
func New(host *pluginhost.Host, c *cache.Cache, s Settings, log *slog.Logger) *Gateway {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{host: host, cache: c, log: log}
	g.hits = newHitMemo()
	g.SetSettings(s)
	return g
}

// SetSettings swaps the settings atomically (on reload).
func (g *Gateway) SetSettings(s Settings) { g.settings.Store(&s) }

// ServeProvider handles {METHOD} /v1/{provider}/{rest}.
func (g *Gateway) ServeProvider(w http.ResponseWriter, r *http.Request, provider, rest string) {
	if err := g.serve(w, r, provider, rest); err != nil {
		problem.Write(w, withErrorMember(problem.From(err), provider))
	}
}

// withErrorMember returns a copy of p (coalesced callers share one) for a
// provider route, with the provider filled in and Spotify's error object
// {"error": {"status", "message"}} added: Spotify client libraries pointed
// at the socket (zmb3/spotify, spotipy) read only that, and would otherwise
// report sluice's refusals as an empty error.
func withErrorMember(p *problem.Problem, provider string) *problem.Problem {
	q := *p
	if q.Provider == "" {
		q.Provider = provider
	}
	q.Extra = maps.Clone(p.Extra)
	if q.Extra == nil {
		q.Extra = map[string]any{}
	}
	q.Extra["error"] = map[string]any{"status": q.Status, "message": cmp.Or(q.Detail, q.Title)}
	return &q
}

// call is one matched, validated request.
type call struct {
	provider string
	op       *proto.Operation
	req      *proto.CallRequest
	params   url.Values
	// bodyInParams: the body was parsed into params, so the cache key needs
	// only the params (spotify.php answers GET and POST alike).
	bodyInParams bool
}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request, provider, rest string) error {
	h, ok := g.host.Get(provider)
	if !ok {
		if g.settings.Load().Disabled[provider] {
			p := problem.New(http.StatusNotFound, fmt.Sprintf("provider %q is disabled: set enabled = true (and its credentials) in [providers.%s] of the config, then reload (sluicectl reload)", provider, provider))
			p.Title, p.Reason = "Provider disabled", "provider_disabled"
			p.Extra = map[string]any{"known_providers": g.host.Names()}
			return p
		}
		p := problem.New(http.StatusNotFound, fmt.Sprintf("unknown provider %q", provider))
		p.Extra = map[string]any{"known_providers": g.host.Names()}
		return p
	}
	info := api.InfoFrom(r.Context())
	info.Provider = provider
	desc := h.Description(r.Context(), readyWait)
	if desc == nil {
		return problem.New(http.StatusServiceUnavailable, "provider plugin has not started")
	}
	c, err := g.match(r, desc, provider, rest)
	if err != nil {
		// A refusal that names its operation (a missing or bad
		// parameter, a wrong method) still tells the budget it would
		// have spent, as every provider answer does.
		var p *problem.Problem
		if errors.As(err, &p) && p.Operation != "" {
			if op := desc.Operation(p.Operation); op != nil {
				g.setRateLimit(w.Header(), op.GetBucket(), false)
			}
		}
		return err
	}
	// Every answer from here on, problems included, tells the caller the
	// budget of the bucket its operation spends.
	g.setRateLimit(w.Header(), c.op.GetBucket(), false)
	// Destructive or paying operations need the admin tier, whatever the
	// provider's own policy says.
	if grant := access.FromContext(r.Context()); grant.TCP && !grant.Token && !c.op.ReadOnly() {
		// On the TCP listener a web page can make a browser send a plain
		// GET (an <img>) that older browsers mark with neither Origin nor
		// Sec-Fetch-Site: an operation with side effects (a Telegram code
		// sent, money spent, an account deleted) there takes the admin
		// token, which no page can make a browser send.
		p := problem.Forbidden(fmt.Sprintf("%s is not a cached lookup (it may have side effects, and every call reaches the upstream): on the TCP listener it needs the admin token (Authorization: Bearer <http_admin_token>); or use the Unix socket", c.op.GetName()))
		p.Title = "Permission denied"
		return withOp(p, provider, c.op.GetName())
	}
	if c.op.GetDestructive() {
		grant := access.FromContext(r.Context())
		if grant.Level < access.Admin {
			p := problem.Forbidden(fmt.Sprintf("%s is destructive or spends money and needs the admin permission; uid %d has %s (see [access] in the config)",
				c.op.GetName(), grant.Peer.UID, grant.Level))
			p.Title = "Permission denied"
			return withOp(p, provider, c.op.GetName())
		}
	}
	s := g.settings.Load()
	maxWait, err := parseMaxWait(r.Header.Get("Sluice-Max-Wait"), s.DefaultMaxWait)
	if err != nil {
		return err
	}
	// Rounded up: a wait under 1 ms sent as 0 would mean no bound.
	c.req.MaxWaitMs = (maxWait + time.Millisecond - 1).Milliseconds()
	c.req.RequestId = requestID(r, api.NewRequestID)
	w.Header().Set("Sluice-Request-Id", c.req.RequestId)
	defer g.progress.Start(c.req.RequestId, provider, c.op.GetName())()
	base, bp := publicBase(r, provider)
	if bp != nil {
		return withOp(bp, provider, c.op.GetName())
	}
	c.req.PublicBase = base

	cc := parseCacheControl(r.Header.Values("Cache-Control"))
	if !c.op.ReadOnly() {
		if cc.onlyIfCached {
			return notCached(info, c)
		}
		info.Outcome = "bypass"
		stop := g.interim(w, r, c.req.RequestId)
		return g.stream(w, r.Context(), h, c, stop)
	}
	// A read-only answer may be stored and shared by every caller,
	// whatever it calls the host: its links to sluice are written under
	// a marker and get each caller's base when served (cache.Entry.BodyFor).
	c.req.PublicBase = linkMarker(provider)
	key := cacheKey(c, rest)
	g.rememberRoute(r, desc, c, rest, key)
	if !cc.noCache {
		if e, ok := g.cache.Get(key); ok && cc.accepts(e, time.Now()) {
			info.Outcome, info.Cache = "hit", fmt.Sprintf("sluice; hit; ttl=%d", max(0, int(time.Until(e.ExpiresAt).Seconds())))
			if etag := entryETag(e, base); notModified(r, etag) {
				info.Outcome = "not-modified"
				writeNotModified(w, e, info.Cache, etag, true)
				return nil
			}
			writeEntry(w, e, info.Cache, true, base)
			return nil
		}
	}
	if cc.onlyIfCached {
		if e, ok := g.stale(key, provider, cc); ok && cc.maxStale >= 0 {
			writeStale(w, r, info, e, base)
			return nil
		}
		return notCached(info, c)
	}
	var head *proto.ResponseHead
	stopInterim := g.interim(w, r, c.req.RequestId)
	dctx := r.Context()
	if cc.noCache || cc.maxAge >= 0 || cc.minFresh >= 0 {
		// A fresh answer asked for: not another fleet member's copy.
		dctx = cache.NoRemote(dctx)
	}
	// In fleet mode the miss's grant is asked for beside its fleet cache
	// lookup, in the same round trip to Redis (see speculation).
	spec := speculate(h, c)
	flight := key
	if cc.noStore {
		// Its own flight: a no-store request neither leads callers who
		// would have its answer stored nor joins theirs.
		flight = key + "\x00no-store"
	}
	e, shared, err := g.cache.DoAhead(dctx, flight, spec.aheadFunc(), func(ctx context.Context) (*cache.Entry, bool, error) {
		ctx, cancel := context.WithTimeout(ctx, maxWait+g.timeout(provider)+readyWait)
		defer cancel()
		var entry *cache.Entry
		var store bool
		var err error
		entry, head, store, err = g.fetch(ctx, h, c, spec)
		if store && err == nil && entry != nil {
			// The fast lane's header block, rendered now rather than by
			// the entry's first hit: a miss is already paying for a round
			// trip upstream.
			entry.Wire(renderHead)
		}
		return entry, store && !cc.noStore, err
	})
	spec.drop()
	stopInterim()
	info.Outcome = "miss"
	if shared {
		info.Outcome = "coalesced"
	} else {
		noteHead(info, head)
	}
	// Read again now: the reading above is from before the flight's
	// grant and any wait in the queue (a coalesced caller's too).
	g.setRateLimit(w.Header(), c.op.GetBucket(), true)
	if errors.Is(err, cache.ErrFetchPanicked) {
		// The stack belongs in the log, not in an answer.
		g.log.Error("fetch panicked", "provider", provider, "operation", c.op.GetName(), "request_id", c.req.RequestId, "err", err)
		return problem.New(http.StatusInternalServerError, "internal error in sluiced while fetching; see the daemon log for request "+c.req.RequestId)
	}
	if err != nil {
		if exhausted(err) {
			// No fresh answer within the caller's max wait: a stale one
			// beats a refusal (stale_if_exhausted, max-stale).
			if e, ok := g.stale(key, provider, cc); ok {
				writeStale(w, r, info, e, base)
				return nil
			}
		}
		if p := (*problem.Problem)(nil); !shared && errors.As(err, &p) && p.Local() {
			// Refused for want of budget with nothing sent (a 429 past
			// the max wait, a hold): not a miss; the access log classes
			// it by its status (rejected, failed). A plugin's error after
			// an exchange upstream (Spotify's own 429) stays a miss.
			info.Outcome = ""
		}
		return err
	}
	status := "sluice; fwd=miss"
	if cc.noCache {
		status = "sluice; fwd=request"
	}
	if shared {
		status += "; collapsed"
	} else if e.FromFleet() {
		// Another fleet member's answer, from the fleet's cache.
		status = fmt.Sprintf("sluice; hit; ttl=%d; detail=fleet", max(0, int(time.Until(e.ExpiresAt).Seconds())))
		info.Outcome = "hit"
	} else if e.ExpiresAt.After(e.StoredAt) && !cc.noStore {
		// Stored only if fresh when it arrived (fetch's store): an
		// answer whose link is already past its life is relayed, not
		// stored.
		status += "; stored"
	}
	info.Cache = status
	hit := !shared && e.FromFleet()
	// A fresh answer whose validator the caller holds is a 304 too
	// (RFC 9110 13.2.1): the usual revalidation, no-cache with
	// If-None-Match, gets no body when nothing changed.
	if etag := entryETag(e, base); notModified(r, etag) {
		writeNotModified(w, e, status, etag, hit)
		return nil
	}
	writeEntry(w, e, status, hit, base)
	return nil
}

// noteHead copies the plugin's measurements into the request's info.
func noteHead(info *api.Info, head *proto.ResponseHead) {
	if head == nil {
		return
	}
	info.Upstream = head.GetOutcome()
	info.Wait = time.Duration(head.GetWaitUs()) * time.Microsecond
	info.Upstreamed = time.Duration(head.GetUpstreamUs()) * time.Microsecond
	info.Attempts = int(head.GetAttempts())
}

func (g *Gateway) timeout(provider string) time.Duration {
	if d := g.settings.Load().ProviderTimeout[provider]; d > 0 {
		return d
	}
	return 30 * time.Second
}

// notCached is only-if-cached's 504: nothing failed and nothing went
// upstream, so the request counts as rejected, not failed.
func notCached(info *api.Info, c *call) error {
	info.Outcome = "rejected"
	p := problem.New(http.StatusGatewayTimeout, "no cached answer and Cache-Control: only-if-cached")
	p.Type, p.Title, p.Operation = problem.TypeNotCached, "Not cached", c.op.GetName()
	return p
}

// fetch runs one plugin call to completion and buffers the answer for the
// cache. Only answers the plugin calls cacheable are stored, with a TTL bound
// by every link expiry inside them.
func (g *Gateway) fetch(ctx context.Context, h *pluginhost.Handle, c *call, spec *speculation) (*cache.Entry, *proto.ResponseHead, bool, error) {
	stream, done, pg, err := g.open(ctx, h, c, spec)
	if err != nil {
		return nil, nil, false, err
	}
	defer done()
	head, err := readHead(stream, c)
	if err != nil {
		drain(h, pg, stream)
		return nil, nil, false, err
	}
	pg.noteWait(head)
	var body bytes.Buffer
	body.Write(head.GetBody())
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			settle(h, pg, stream)
			break
		}
		if err != nil {
			return nil, head, false, unavailable(c, err)
		}
		body.Write(chunk.GetData())
		if body.Len() > maxCached {
			return nil, head, false, problem.New(http.StatusBadGateway, "answer of a cacheable operation too large to buffer")
		}
	}
	now := time.Now()
	e := &cache.Entry{Provider: c.provider, Status: int(head.GetStatus()), Header: headerOf(head), Body: body.Bytes(), StoredAt: now}
	e.MarkBase(c.req.GetPublicBase())
	if e.Status/100 == 2 && !e.HasBase() {
		// A strong validator of the bytes every caller gets; an entry
		// with links gets one per base when served (entryETag).
		e.Header.Set("ETag", etagOf(e.Body))
	}
	if !head.GetCacheable() || e.Status < 200 || e.Status > 299 {
		return e, head, false, nil
	}
	e.ExpiresAt, e.KeepUntil = g.expiry(c, head, e.Body, now)
	return e, head, e.ExpiresAt.After(now), nil
}

// expiry is when the answer stops being fresh: the smallest of the
// operation's TTL, the config's TTL (the provider's own setting for this
// answer, else default_ttl) and the earliest link expiry (from the plugin
// and from Expires= in the body) less the margin. keep is how long it may
// still be served stale: the provider's stale_if_exhausted past the TTL,
// never past that link bound (invariant 5); zero when it keeps none.
func (g *Gateway) expiry(c *call, head *proto.ResponseHead, body []byte, now time.Time) (fresh, keep time.Time) {
	s := g.settings.Load()
	ttl := s.DefaultTTL
	if d := time.Duration(head.GetTtlMs()) * time.Millisecond; d > 0 {
		ttl = d
	}
	if d := time.Duration(c.op.GetTtlMs()) * time.Millisecond; d > 0 && d < ttl {
		ttl = d
	}
	var links time.Time // the earliest link bound; zero: none
	if ms := head.GetExpiresAtUnixMs(); ms > 0 {
		links = time.UnixMilli(ms).Add(-s.ExpiryMargin)
	}
	if t, ok := cache.LinkExpiry(body); ok {
		if t = t.Add(-s.ExpiryMargin); links.IsZero() || t.Before(links) {
			links = t
		}
	}
	fresh = now.Add(ttl)
	if !links.IsZero() && links.Before(fresh) {
		fresh = links
	}
	if d := s.StaleIfExhausted[c.provider]; d > 0 {
		keep = now.Add(ttl + d)
		if !links.IsZero() && links.Before(keep) {
			keep = links
		}
		if !keep.After(fresh) {
			keep = time.Time{}
		}
	}
	return fresh, keep
}

// open starts the plugin call, carrying a pre-grant when the operation's
// bucket can grant at once. The caller settles the pre-grant: settle after
// a clean end of the stream, drain after a failed head; on every other
// ending it keeps counting.
func (g *Gateway) open(ctx context.Context, h *pluginhost.Handle, c *call, spec *speculation) (proto.Provider_CallClient, func(), *pregrant, error) {
	pg := preGrant(ctx, h, c, spec)
	stream, done, err := h.Call(ctx, c.req, readyWait)
	if err != nil {
		// The request may have reached the plugin: a pre-grant is not
		// released.
		if ctx.Err() != nil {
			return nil, nil, nil, ctx.Err()
		}
		return nil, nil, nil, unavailable(c, err)
	}
	return stream, done, pg, nil
}

func readHead(stream proto.Provider_CallClient, c *call) (*proto.ResponseHead, error) {
	first, err := stream.Recv()
	if err != nil {
		return nil, unavailable(c, err)
	}
	if p := first.GetProblem(); p != nil {
		pr := problem.FromProto(p)
		pr.Provider, pr.Operation = c.provider, c.op.GetName()
		return nil, pr
	}
	head := first.GetHead()
	if head == nil {
		return nil, problem.New(http.StatusBadGateway, "plugin answered without a head")
	}
	return head, nil
}

func unavailable(c *call, err error) *problem.Problem {
	detail := err.Error()
	if !errors.Is(err, pluginhost.ErrUnavailable) {
		detail = "provider plugin unavailable: " + detail
	}
	p := problem.New(http.StatusServiceUnavailable, detail)
	p.Provider, p.Operation = c.provider, c.op.GetName()
	return p
}

// stream relays a non-cacheable answer chunk by chunk, so large files pass
// with flat memory.
// stopInterim ends the interim responses before anything final is written.
func (g *Gateway) stream(w http.ResponseWriter, ctx context.Context, h *pluginhost.Handle, c *call, stopInterim func()) error {
	stream, done, pg, err := g.open(ctx, h, c, nil)
	if err != nil {
		stopInterim()
		return err
	}
	defer done()
	head, err := readHead(stream, c)
	stopInterim()
	if err != nil {
		drain(h, pg, stream)
		return err
	}
	pg.noteWait(head)
	info := api.InfoFrom(ctx)
	noteHead(info, head)
	info.Cache = "sluice; fwd=bypass"
	hdr := headerOf(head)
	copyHeader(w.Header(), hdr)
	// A streamed file keeps its length: the caller can show progress, and a
	// stream that breaks off is visibly short rather than silently complete.
	if cl := hdr.Get("Content-Length"); cl != "" {
		w.Header().Set("Content-Length", cl)
	}
	w.Header().Set("Cache-Status", info.Cache)
	g.setRateLimit(w.Header(), c.op.GetBucket(), true) // after this call's grant
	w.WriteHeader(int(head.GetStatus()))
	fl, _ := w.(http.Flusher)
	if b := head.GetBody(); len(b) > 0 {
		if _, err := w.Write(b); err != nil {
			return nil
		}
	}
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			settle(h, pg, stream)
			return nil
		}
		if err != nil {
			// The status is out already: abort the connection so the
			// caller sees a truncated answer, not a short success.
			g.log.Warn("answer broke off mid-body", "provider", c.provider, "operation", c.op.GetName(), "err", err)
			panic(http.ErrAbortHandler)
		}
		if _, err := w.Write(chunk.GetData()); err != nil {
			return nil
		}
		if fl != nil {
			fl.Flush()
		}
	}
}

// writeEntry writes a buffered answer with its links on base.
func writeEntry(w http.ResponseWriter, e *cache.Entry, cacheStatus string, hit bool, base string) {
	body := e.BodyFor(base)
	copyHeader(w.Header(), e.Header)
	if e.HasBase() && e.Status/100 == 2 {
		w.Header().Set("ETag", e.ETagFor(base, etagOf))
	}
	w.Header().Set("Cache-Status", cacheStatus)
	if hit {
		w.Header().Set("Age", strconv.Itoa(int(time.Since(e.StoredAt).Seconds())))
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.Status)
	w.Write(body)
}

// writeNotModified answers a conditional GET whose ETag matches the cached
// answer: 304, no body, the validator and the caching headers (RFC 9110
// 15.4.5).
func writeNotModified(w http.ResponseWriter, e *cache.Entry, cacheStatus, etag string, hit bool) {
	h := w.Header()
	for _, name := range []string{"Cache-Control", "Content-Location", "Date", "Expires", "Vary"} {
		if v, ok := e.Header[name]; ok {
			h[name] = v
		}
	}
	h.Set("ETag", etag)
	h.Set("Cache-Status", cacheStatus)
	if hit {
		h.Set("Age", strconv.Itoa(int(time.Since(e.StoredAt).Seconds())))
	}
	w.WriteHeader(http.StatusNotModified)
}

// hop-by-hop and framing headers the daemon sets itself.
var skipHeaders = map[string]bool{"Connection": true, "Transfer-Encoding": true, "Keep-Alive": true,
	"Content-Length": true, "Age": true, "Cache-Status": true, "Set-Cookie": true}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		if skipHeaders[http.CanonicalHeaderKey(k)] {
			continue
		}
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

func headerOf(head *proto.ResponseHead) http.Header {
	h := http.Header{}
	for _, kv := range head.GetHeaders() {
		h.Add(kv.GetName(), kv.GetValue())
	}
	return h
}

func bodyForKey(c *call) []byte {
	if c.bodyInParams {
		return nil
	}
	return c.req.GetBody()
}

func baseURL(scheme, host, provider string) string {
	if host == "" {
		host = "sluice"
	}
	return scheme + "://" + host + "/v1/" + provider
}

// linkMarker is the base a plugin writes links under in answers that may
// be cached (RFC 2606 reserves .invalid: no upstream writes it); the
// gateway replaces it with each caller's base when serving.
func linkMarker(provider string) string {
	return "http://sluice-link-base.invalid/v1/" + provider
}

// cacheControl is what sluice honours of a caller's Cache-Control (RFC 9111
// 5.2.1). maxStale is the staleness the caller accepts (max-stale=N; -1
// when absent, a very long time for a bare max-stale).
type cacheControl struct {
	noCache, onlyIfCached bool
	// noStore: nothing of this request's answer may be stored (RFC 9111
	// 5.2.1.5); it skips the lookup as no-cache does.
	noStore bool
	// maxAge and minFresh (RFC 9111 5.2.1.1, 5.2.1.3; -1 when absent):
	// the oldest answer the caller takes, and how long it must stay
	// fresh. A cached answer outside them is not served: the request
	// goes upstream as with no-cache.
	maxAge, minFresh time.Duration
	maxStale         time.Duration
}

func parseCacheControl(values []string) cacheControl {
	cc := cacheControl{maxStale: -1, maxAge: -1, minFresh: -1}
	for _, v := range values {
		for _, d := range strings.Split(v, ",") {
			name, arg, _ := strings.Cut(strings.ToLower(strings.TrimSpace(d)), "=")
			arg = strings.Trim(arg, `"`)
			switch {
			case name == "no-store":
				cc.noCache, cc.noStore = true, true
			case name == "no-cache", name == "max-age" && arg == "0":
				cc.noCache = true
			case name == "max-age", name == "min-fresh":
				n, err := strconv.ParseInt(arg, 10, 64)
				if err != nil || n < 0 {
					break // an invalid directive is ignored (RFC 9111 5.2)
				}
				d := time.Duration(min(n, 1<<32)) * time.Second
				if name == "max-age" {
					cc.maxAge = d
				} else {
					cc.minFresh = d
				}
			case name == "only-if-cached":
				cc.onlyIfCached = true
			case name == "max-stale" && arg == "":
				cc.maxStale = 1 << 62
			case name == "max-stale":
				if n, err := strconv.ParseInt(arg, 10, 64); err == nil && n >= 0 {
					cc.maxStale = time.Duration(min(n, 1<<32)) * time.Second
				}
			}
		}
	}
	return cc
}

// accepts reports whether a fresh cached answer is within the caller's
// max-age and min-fresh.
func (cc cacheControl) accepts(e *cache.Entry, now time.Time) bool {
	if cc.maxAge >= 0 && now.Sub(e.StoredAt) > cc.maxAge {
		return false
	}
	return cc.minFresh < 0 || e.ExpiresAt.Sub(now) >= cc.minFresh
}

// stale returns the kept, no longer fresh answer under key if this caller
// may be given it: the provider keeps stale answers or the caller accepts
// them with max-stale (and then only as stale as it said), and never with
// no-cache.
func (g *Gateway) stale(key, provider string, cc cacheControl) (*cache.Entry, bool) {
	if cc.noCache || (cc.maxStale < 0 && (cc.minFresh >= 0 || cc.maxAge >= 0)) {
		// Asked for a fresh or a young enough answer, without saying a
		// stale one will do.
		return nil, false
	}
	e, ok := g.cache.GetStale(key)
	if !ok {
		return nil, false
	}
	past := time.Since(e.ExpiresAt)
	if past < 0 {
		return e, true // fresh after all (it was stored meanwhile)
	}
	if cc.maxStale >= 0 {
		return e, past <= cc.maxStale
	}
	return e, g.settings.Load().StaleIfExhausted[provider] > 0
}

// exhausted reports whether err means no fresh answer can be had within
// the caller's max wait for budget reasons: a bucket paused or full past
// the wait (429), or held because grants cannot be recorded (a state that
// cannot be written, a fleet store that does not answer) or because this
// member's limit differs from its fleet's. Each is a hold that sends
// nothing; a stale answer the caller or config accepts beats a refusal.
func exhausted(err error) bool {
	var p *problem.Problem
	if !errors.As(err, &p) {
		return false
	}
	switch p.Reason {
	case problem.ReasonStateUnwritable, problem.ReasonFleetUnreachable, problem.ReasonFleetLimitMismatch:
		return true
	}
	return p.Status == http.StatusTooManyRequests
}

// writeStale serves a stale answer with RFC 9211's negative ttl.
func writeStale(w http.ResponseWriter, r *http.Request, info *api.Info, e *cache.Entry, base string) {
	info.Outcome = "stale"
	// Rounded down: an answer stale by a fraction of a second is ttl=-1,
	// never a fresh-looking 0.
	info.Cache = fmt.Sprintf("sluice; hit; ttl=%d", min(-1, int(math.Floor(time.Until(e.ExpiresAt).Seconds()))))
	if etag := entryETag(e, base); notModified(r, etag) {
		writeNotModified(w, e, info.Cache, etag, true)
		return
	}
	writeEntry(w, e, info.Cache, true, base)
}

// parseMaxWait reads Sluice-Max-Wait: a Go duration ("20s") or whole
// seconds, bounded by the configured max_wait.
func parseMaxWait(v string, def time.Duration) (time.Duration, error) {
	if def <= 0 {
		// max_wait = 0 means no request waits, as Sluice-Max-Wait: 0 does;
		// passed on as 0 it would mean no bound at all.
		def = time.Millisecond
	}
	if v == "" {
		return def, nil
	}
	var d time.Duration
	var err error
	if n, aerr := strconv.Atoi(v); aerr == nil && n >= 0 {
		d = time.Duration(n) * time.Second
	} else {
		d, err = time.ParseDuration(v)
	}
	if err != nil || d < 0 {
		p := problem.New(http.StatusBadRequest, "Sluice-Max-Wait must be a duration like 20s or whole seconds")
		p.Title, p.Param = "Invalid header", "Sluice-Max-Wait"
		return 0, p
	}
	if d == 0 {
		// 0 would mean "no bound"; a caller asking for no wait wants the
		// quickest answer, which a tiny bound gives.
		d = time.Millisecond
	}
	// Callers may shorten the configured wait, never lengthen it: the
	// queue is shared, and one caller must not hold a slot for hours.
	if d > def {
		d = def
	}
	return d, nil
}

// readParams merges the query and a form or JSON-object body, in that order.
func readParams(r *http.Request) (params url.Values, body []byte, ct string, bodyInParams bool, err error) {
	params = r.URL.Query()
	ct = r.Header.Get("Content-Type")
	if r.Body == nil || r.Body == http.NoBody || r.Method == http.MethodGet || r.Method == http.MethodHead {
		// A GET's body has no meaning in HTTP (RFC 9110, 9.3.1): it is
		// ignored, so it can neither change the cache key nor spend
		// budget on a second upstream request for the same lookup.
		return params, nil, ct, true, nil
	}
	body, err = io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, nil, "", false, problem.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", MaxBody))
		}
		return nil, nil, "", false, problem.New(http.StatusBadRequest, "reading body: "+err.Error())
	}
	if len(body) == 0 {
		return params, body, ct, true, nil
	}
	mt, _, _ := mime.ParseMediaType(ct)
	switch mt {
	case "application/x-www-form-urlencoded":
		form, perr := url.ParseQuery(string(body))
		if perr != nil {
			return nil, nil, "", false, problem.New(http.StatusBadRequest, "malformed form body")
		}
		for k, vs := range form {
			params[k] = append(params[k], vs...)
		}
		return params, body, ct, true, nil
	case "application/json":
		if jsonParams(body, params) != nil {
			return nil, nil, "", false, problem.New(http.StatusBadRequest, "body is not a JSON object")
		}
		return params, body, ct, true, nil
	}
	return params, body, ct, false, nil
}

// jsonParams adds the members of the JSON object in body to params, a
// member given twice twice: like a parameter repeated in a query, it is
// then refused rather than left to whichever copy a decoder keeps.
// Members that are not strings, numbers or booleans are skipped.
func jsonParams(body []byte, params url.Values) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	switch t, err := dec.Token(); {
	case err == nil && t == nil:
		// A bare null holds no parameters (accepted, as before).
		_, err = dec.Token()
		if err != io.EOF {
			return errors.New("data after null")
		}
		return nil
	case err != nil || t != json.Delim('{'):
		return errors.New("not an object")
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		k, _ := t.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return err
		}
		switch v := v.(type) {
		case string:
			params.Add(k, v)
		case json.Number:
			if digits := strings.TrimPrefix(v.String(), "-"); strings.Trim(digits, "0123456789") == "" {
				// An integer as written: ids past 2^53 keep every digit.
				params.Add(k, v.String())
				continue
			}
			f, err := strconv.ParseFloat(v.String(), 64)
			if err != nil {
				return err
			}
			params.Add(k, strconv.FormatFloat(f, 'f', -1, 64))
		case bool:
			params.Add(k, strconv.FormatBool(v))
		}
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the object")
	}
	return nil
}

func (g *Gateway) match(r *http.Request, desc *proto.Description, provider, rest string) (*call, error) {
	params, body, ct, inParams, err := readParams(r)
	if err != nil {
		return nil, err
	}
	// Plugin RPC strings must be UTF-8, and no upstream API here takes
	// anything else: refuse early with a clear 400.
	for k, vs := range params {
		if !utf8.ValidString(k) {
			return nil, withOp(problem.BadParam("", "parameter names must be valid UTF-8"), provider, "")
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return nil, withOp(problem.BadParam(k, fmt.Sprintf("parameter %q is not valid UTF-8", k)), provider, "")
			}
		}
	}
	if !utf8.ValidString(rest) {
		return nil, unknownOperation(desc, provider, "path is not valid UTF-8")
	}
	// Credentials come from config only: what a caller sends is dropped.
	for _, cred := range desc.GetCredentialParams() {
		for k := range params {
			if strings.EqualFold(k, cred) {
				delete(params, k)
			}
		}
	}
	var onPath []*proto.Operation
	for _, op := range desc.GetOperations() {
		if pathMatches(op.GetPath(), rest) {
			onPath = append(onPath, op)
		}
	}
	if len(onPath) == 0 {
		return nil, unknownOperation(desc, provider, fmt.Sprintf("no operation at path %q", rest))
	}
	var op *proto.Operation
	for _, cand := range onPath {
		if selects(cand, params) {
			op = cand
			break
		}
	}
	if op == nil {
		// The path is known but the selector (e.g. action) is missing or
		// unknown.
		for name := range onPath[0].GetMatch() {
			if params.Get(name) == "" {
				return nil, withOp(problem.BadParam(name, fmt.Sprintf("missing required parameter %q", name)), provider, "")
			}
			return nil, unknownOperation(desc, provider, fmt.Sprintf("unknown %s %q at %q", name, params.Get(name), rest))
		}
		return nil, unknownOperation(desc, provider, "no operation matches")
	}
	api.InfoFrom(r.Context()).Operation = op.GetName()
	if !methodAllowed(op, r.Method) {
		detail := fmt.Sprintf("%s is not accepted by %s; use %s", r.Method, op.GetName(), strings.Join(op.GetMethods(), ", "))
		if r.Method == http.MethodHead && slices.Contains(op.GetMethods(), http.MethodGet) {
			detail += " (HEAD only reads answers that can be cached; this operation is never cached or has side effects)"
		}
		p := problem.New(http.StatusMethodNotAllowed, detail)
		p.Extra = map[string]any{"allow": op.GetMethods()}
		p.Allow = slices.Clone(op.GetMethods())
		if methodAllowed(op, http.MethodHead) {
			p.Allow = append(p.Allow, http.MethodHead)
		}
		return nil, withOp(p, provider, op.GetName())
	}
	method := r.Method
	if method == http.MethodHead {
		// The plugin fetches the whole GET answer, which is what gets
		// cached (the key has no method); net/http drops the body.
		method = http.MethodGet
	}
	if err := normalise(op, params); err != nil {
		return nil, withOp(err, provider, op.GetName())
	}
	for _, ps := range op.GetParams() {
		if ps.GetRequired() && strings.TrimSpace(params.Get(ps.GetName())) == "" {
			return nil, withOp(problem.BadParam(ps.GetName(), fmt.Sprintf("missing required parameter %q", ps.GetName())), provider, op.GetName())
		}
		if err := canonicalise(&g.patterns, ps, params); err != nil {
			return nil, withOp(err, provider, op.GetName())
		}
	}
	req := &proto.CallRequest{Operation: op.GetName(), Method: method, Path: rest, Body: body, ContentType: ct}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range params[k] {
			req.Params = append(req.Params, &proto.KV{Name: k, Value: v})
		}
	}
	for _, name := range forwardHeaders {
		for _, v := range r.Header.Values(name) {
			if utf8.ValidString(v) {
				req.Headers = append(req.Headers, &proto.KV{Name: name, Value: v})
			}
		}
	}
	return &call{provider: provider, op: op, req: req, params: params, bodyInParams: inParams}, nil
}

// forwardHeaders are the caller headers a plugin may act on. Authorization is
// not among them: callers never supply credentials.
var forwardHeaders = []string{"Accept", "Accept-Language", "Sluice-Confirm", "If-None-Match"}

// normalise rewrites params as the plugin will send them upstream, as far
// as the operation describes it (aliases, unknown parameters dropped,
// upper-cased values, defaults), so spellings of one upstream request share
// one cache key and one upstream request. A declared parameter given twice
// is refused: which value the upstream would take is anyone's guess, and
// the refusal costs nothing upstream.
func normalise(op *proto.Operation, params url.Values) *problem.Problem {
	for _, ps := range op.GetParams() {
		name := ps.GetName()
		for _, alias := range ps.GetAliases() {
			if vs, ok := params[alias]; ok {
				if _, have := params[name]; !have {
					params[name] = vs
				}
				delete(params, alias)
			}
		}
	}
	for k := range op.GetMatch() {
		if vs := params[k]; len(vs) > 1 {
			return problem.BadParam(k, fmt.Sprintf("%s given %d times; give it once", k, len(vs)))
		}
	}
	if op.GetDropUnknownParams() {
		for k := range params {
			if _, selector := op.GetMatch()[k]; !selector && op.Param(k) == nil {
				delete(params, k)
			}
		}
	}
	for _, ps := range op.GetParams() {
		name := ps.GetName()
		vs, given := params[name]
		if len(vs) > 1 {
			return problem.BadParam(name, fmt.Sprintf("%s given %d times; give it once", name, len(vs)))
		}
		if given && len(vs) == 1 {
			if ps.GetTrimSpace() {
				vs[0] = strings.TrimSpace(vs[0])
			}
			if ps.GetUpper() {
				vs[0] = strings.ToUpper(vs[0])
			}
			if vs[0] == "" && ps.GetEmptyIsAbsent() {
				delete(params, name)
				given = false
			}
		}
		if !given && ps.GetDefaultValue() != "" {
			params.Set(name, ps.GetDefaultValue())
		}
	}
	return nil
}

// canonicalise checks a parameter against its declared pattern and replaces
// each value by the pattern's first non-empty capture group.
func canonicalise(pc *patternCache, ps *proto.Param, params url.Values) *problem.Problem {
	vals, ok := params[ps.GetName()]
	if !ok || ps.GetPattern() == "" {
		return nil
	}
	re, err := pc.get(ps.GetPattern())
	if err != nil {
		return problem.New(http.StatusInternalServerError, fmt.Sprintf("provider declares a bad pattern for %q", ps.GetName()))
	}
	for i, v := range vals {
		if c, ok := pc.known(ps.GetPattern(), v); ok {
			vals[i] = c
			continue
		}
		m := re.FindStringSubmatch(strings.TrimSpace(v))
		if m == nil {
			detail := fmt.Sprintf("invalid value for %q", ps.GetName())
			if ps.GetSummary() != "" {
				detail += ": expected " + ps.GetSummary()
			}
			return problem.BadParam(ps.GetName(), detail)
		}
		c := strings.TrimSpace(v)
		for _, g := range m[1:] {
			if g != "" {
				c = g
				break
			}
		}
		if c == "" {
			// White space only: left as it is for the plugin to judge.
			// Made empty, it would read as absent (hellorf drops empty
			// filters), and a search would silently widen.
			c = v
		}
		pc.remember(ps.GetPattern(), v, c)
		vals[i] = c
	}
	return nil
}

func withOp(p *problem.Problem, provider, op string) *problem.Problem {
	p.Provider, p.Operation = provider, op
	return p
}

func unknownOperation(desc *proto.Description, provider, detail string) *problem.Problem {
	p := problem.New(http.StatusNotFound, detail)
	p.Title, p.Provider = "Unknown operation", provider
	var known []string
	for _, op := range desc.GetOperations() {
		k := strings.Join(op.GetMethods(), "|") + " /v1/" + provider + "/" + op.GetPath()
		for name, v := range op.GetMatch() {
			k += "?" + name + "=" + v
		}
		known = append(known, k)
	}
	p.Extra = map[string]any{"known_operations": known}
	return p
}

func selects(op *proto.Operation, params url.Values) bool {
	for k, v := range op.GetMatch() {
		if params.Get(k) != v {
			return false
		}
	}
	return true
}

// methodAllowed reports whether op accepts method m. HEAD stands for GET
// only on cacheable operations without side effects: a HEAD is safe by
// definition (RFC 9110), and link checkers and `curl -I` send it freely, so
// it must never send an SMS code, delete an account or spend budget on an
// answer nobody reads.
func methodAllowed(op *proto.Operation, m string) bool {
	if m == http.MethodHead {
		return op.ReadOnly() && slices.Contains(op.GetMethods(), http.MethodGet)
	}
	return slices.Contains(op.GetMethods(), m)
}

// pathMatches matches "v1/artists/{id}/albums" against a request path; a
// {name} segment matches one non-empty segment.
func pathMatches(pattern, path string) bool {
	if !strings.Contains(pattern, "{") {
		return strings.Trim(pattern, "/") == strings.Trim(path, "/")
	}
	ps, xs := strings.Split(strings.Trim(pattern, "/"), "/"), strings.Split(strings.Trim(path, "/"), "/")
	if len(ps) != len(xs) {
		return false
	}
	for i := range ps {
		if strings.HasPrefix(ps[i], "{") && strings.HasSuffix(ps[i], "}") {
			if xs[i] == "" {
				return false
			}
			continue
		}
		if ps[i] != xs[i] {
			return false
		}
	}
	return true
}

// patternCache compiles each declared parameter pattern once, and remembers
// the canonical form of values it accepted (bounded: caller input must not
// grow it without limit), so repeated cache hits skip the regexp.
type patternCache struct {
	m     sync.Map
	memo  sync.Map // pattern + "\x00" + value → canonical value
	count atomic.Int64
}

const maxRemembered = 8192

func (c *patternCache) known(pattern, v string) (string, bool) {
	got, ok := c.memo.Load(pattern + "\x00" + v)
	if !ok {
		return "", false
	}
	return got.(string), true
}

func (c *patternCache) remember(pattern, v, canonical string) {
	if c.count.Add(1) <= maxRemembered {
		c.memo.Store(pattern+"\x00"+v, canonical)
	}
}

func (c *patternCache) get(expr string) (*regexp.Regexp, error) {
	if re, ok := c.m.Load(expr); ok {
		return re.(*regexp.Regexp), nil
	}
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		return nil, err
	}
	c.m.Store(expr, re)
	return re, nil
}
