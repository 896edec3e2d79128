package gateway

import (
	"bytes"
	"context"
	"hash/maphash"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/core/cache"
	"github.com/sluice-dev/sluice/core/proto"
	"github.com/sluice-dev/sluice/internal/stripe"
)

// Hit serves the socket API's fast lane: the fresh cached answer for a
// plain GET (no body, no Cache-Control, no Sluice-Max-Wait), found exactly
// as serve finds it. Anything else, including every error, returns false
// and the request takes the full path, which renders the error.
func (g *Gateway) Hit(provider, rest, query, host string) (api.Hit, bool) {
	h, ok := g.host.Get(provider)
	if !ok {
		return api.Hit{}, false
	}
	desc := h.Description(context.Background(), 0)
	if desc == nil {
		return api.Hit{}, false
	}
	route := g.hitRoute(desc, provider, rest, query, host)
	if route == nil || route.key == "" {
		return api.Hit{}, false
	}
	e, ok := g.cache.Get(route.key)
	if !ok {
		return api.Hit{}, false
	}
	hit := api.Hit{Operation: route.op, Status: e.Status, Head: e.Wire(renderHead), HasDate: len(e.Header["Date"]) > 0,
		Body: e.Body, StoredAt: e.StoredAt, ExpiresAt: e.ExpiresAt, Extra: g.rateLimitLines(route.bucket, time.Now())}
	if e.HasBase() {
		// Only answers with links to sluice depend on the caller's base:
		// the others are served with no string built per hit.
		base := baseURL("http", host, provider)
		hit.Body = e.BodyFor(base)
		if e.Status/100 == 2 {
			hit.ETag = e.ETagFor(base, etagOf)
		}
	}
	return hit, true
}

// hitRoute is what matching a request target yields for the fast lane: the
// operation and the cache key. It depends only on the target, the Host
// (links are rewritten to it) and the plugin's description, so it is
// memoised per description: a restarted plugin with a new description
// invalidates it.
type hitRoute struct {
	desc   *proto.Description
	op     string
	bucket string
	// key is empty when the operation's answers are never plain hits
	// (not cacheable, or destructive).
	key string
}

// hitMemo maps request targets to routes. Bounded by the cache it serves
// (routeCap): about as many routes as the cache holds entries, and the
// cache charges each entry for one (cache.RouteCharge), so max_size
// bounds the memo too. When a shard is full it starts over: callers
// cycling through more targets than the cache holds cost a re-match, not
// memory. (A fixed bound of 131,072 routes let a 32 MiB cache holding
// 20,000 answers keep the routes of every one of 50,000 targets it had
// seen: 14 MB beyond max_size.) Plain maps in shards rather than a
// sync.Map: with 100,000 targets the sync.Map's trie costs a cache miss
// per level on every hit, a map about one. Each shard's lock is striped
// (internal/stripe): a hot target's shard is read by every hit, and a
// sync.RWMutex's reader count is one word all cores write.
type hitMemo struct {
	seed   maphash.Seed
	shards [memoShards]memoShard
}

const memoShards = 32

type memoShard struct {
	mu *stripe.RWMutex
	m  map[string]*hitRoute // provider \0 rest \0 query \0 host → route
}

func newHitMemo() *hitMemo {
	m := &hitMemo{seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].mu = stripe.NewRWMutex()
	}
	return m
}

func (m *hitMemo) shard(mk string) *memoShard {
	return &m.shards[maphash.String(m.seed, mk)%memoShards]
}

func (m *hitMemo) load(mk string) (*hitRoute, bool) {
	sh := m.shard(mk)
	t := sh.mu.RLock()
	r, ok := sh.m[mk]
	sh.mu.RUnlock(t)
	return r, ok
}

// minHitRoutes is the memo's bound however few entries the cache holds:
// a small or empty cache still remembers the targets in use (some 300 KiB).
const minHitRoutes = 1 << 10

// routeCap is how many routes the memo keeps for a cache holding entries:
// all of them, with room for a quarter more (a target seen before its
// answer is stored, an answer named through two Hosts) before shards start
// over. Read on a store only, never on a hit.
func routeCap(entries int) int {
	return max(minHitRoutes, entries+entries/4)
}

func (g *Gateway) hitRoute(desc *proto.Description, provider, rest, query, host string) *hitRoute {
	mk := routeKey(provider, rest, query, host)
	if r, ok := g.hits.load(mk); ok && r.desc == desc {
		return r
	}
	r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/v1/" + provider + "/" + rest, RawQuery: query},
		Host: host, Header: http.Header{}, Body: http.NoBody}
	c, err := g.match(r, desc, provider, rest)
	if err != nil {
		return nil
	}
	route := &hitRoute{desc: desc, op: c.op.GetName(), bucket: c.op.GetBucket()}
	if c.op.ReadOnly() {
		route.key = cacheKey(c, rest)
	}
	g.storeRoute(mk, route)
	return route
}

// rememberRoute records, from the full path, the route of a plain GET
// (no body) it has just matched, so the answer it stores is a lane hit
// from the first repeat on. Only such requests are recorded: for them the
// full path's match and the lane's are the same computation.
func (g *Gateway) rememberRoute(r *http.Request, desc *proto.Description, c *call, rest, key string) {
	if r.Method != http.MethodGet || len(c.req.GetBody()) > 0 {
		return
	}
	mk := routeKey(c.provider, rest, r.URL.RawQuery, r.Host)
	if r, ok := g.hits.load(mk); ok && r.desc == desc {
		return
	}
	g.storeRoute(mk, &hitRoute{desc: desc, op: c.op.GetName(), bucket: c.op.GetBucket(), key: key})
}

// storeRoute memoises route for the target mk, within what the cache's
// entries pay for.
func (g *Gateway) storeRoute(mk string, route *hitRoute) {
	g.hits.store(mk, route, routeCap(g.cache.Len()))
}

// routeKey is a target's key in the memo: everything its route depends on
// besides the description.
func routeKey(provider, rest, query, host string) string {
	return provider + "\x00" + rest + "\x00" + query + "\x00" + host
}

// store memoises route for mk, keeping at most about limit routes in all.
func (m *hitMemo) store(mk string, route *hitRoute, limit int) {
	perShard := (limit + memoShards - 1) / memoShards
	sh := m.shard(mk)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m == nil || len(sh.m) >= perShard {
		sh.m = make(map[string]*hitRoute)
	}
	sh.m[mk] = route
}

// renderHead writes an entry's own headers as net/http writes them on the
// full path (writeEntry copies them; the server writes them with
// WriteSubset), plus the Content-Type it would sniff: none set, no
// Content-Encoding, a body.
func renderHead(e *cache.Entry) []byte {
	var b bytes.Buffer
	e.Header.WriteSubset(&b, skipHeaders)
	_, haveType := e.Header["Content-Type"]
	if !haveType && e.Header.Get("Content-Encoding") == "" && len(e.Body) > 0 {
		b.WriteString("Content-Type: " + http.DetectContentType(e.Body) + "\r\n")
	}
	return b.Bytes()
}

// cacheKey is the upstream request alone: the provider, the operation, the
// upstream path (operations with {id} segments share a name), the
// canonical parameters and a body only where one is not in the
// parameters. How the caller named the host never enters it (invariant
// 7): links are given the caller's base when served.
func cacheKey(c *call, rest string) string {
	return cache.Key(c.provider, c.op.GetName()+"\x00"+strings.Trim(rest, "/"), "", c.params, bodyForKey(c))
}
