package gateway

import (
	"fmt"
	"net/url"
	"runtime"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/cache"
)

// TestHitMemoBounded: however many targets pass through, the memo holds at
// most about the limit it is given, and a route just stored is found.
func TestHitMemoBounded(t *testing.T) {
	const limit = 4096
	m := newHitMemo()
	for i := range 3 * limit {
		mk := routeKey("ineo", "spotify.php", fmt.Sprint("trackId=", i), "sluice")
		r := &hitRoute{op: "spotify.track"}
		m.store(mk, r, limit)
		if got, ok := m.load(mk); !ok || got != r {
			t.Fatalf("route %d not found right after store", i)
		}
	}
	if n := m.len(); n > limit || n == 0 {
		t.Fatalf("memo holds %d routes, want 1..%d", n, limit)
	}
}

func (m *hitMemo) len() int {
	n := 0
	for i := range m.shards {
		t := m.shards[i].mu.RLock()
		n += len(m.shards[i].m)
		m.shards[i].mu.RUnlock(t)
	}
	return n
}

// TestHitMemoBoundedByCache: the memo keeps about as many routes as the
// cache holds entries, not one per target ever seen. A daemon whose
// 32 MiB cache held 20,000 answers kept the routes of all 50,000 targets
// it had been asked for (the bound was a fixed 131,072), 14 MB that
// max_size did not count. Once the cache empties, the memo shrinks back
// as targets come.
func TestHitMemoBoundedByCache(t *testing.T) {
	c, err := cache.New(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	g := &Gateway{cache: c}
	g.hits = newHitMemo()
	now := time.Now()
	const held = 2000
	for i := range held {
		for !c.Set(fmt.Sprint("ineo:", i), &cache.Entry{Provider: "ineo", Status: 200, Body: []byte("{}"), StoredAt: now, ExpiresAt: now.Add(time.Hour)}) {
		}
	}
	if c.Len() != held {
		t.Fatalf("cache holds %d entries, want %d", c.Len(), held)
	}
	for i := range 50_000 {
		mk := routeKey("ineo", "spotify.php", fmt.Sprint("trackId=", i), "sluice")
		r := &hitRoute{op: "spotify.track", key: fmt.Sprint("ineo:", i)}
		g.storeRoute(mk, r)
		if got, ok := g.hits.load(mk); !ok || got != r {
			t.Fatalf("route %d not found right after store", i)
		}
	}
	// All the cache's entries, a quarter more; and enough to be useful.
	if n, most := g.hits.len(), held+held/4; n > most || n < most/4 {
		t.Errorf("cache holds %d entries, memo %d routes after 50,000 targets; want %d..%d", held, n, most/4, most)
	}

	c.PurgeAll()
	for i := range 10_000 {
		g.storeRoute(routeKey("ineo", "spotify.php", fmt.Sprint("trackId=x", i), "sluice"), &hitRoute{op: "spotify.track"})
	}
	if n, most := g.hits.len(), minHitRoutes; n > most {
		t.Errorf("empty cache, memo %d routes; want at most %d", n, most)
	}
}

// TestRouteChargeCoversMemoRow: what the cache charges each entry for its
// route (cache.RouteCharge) covers what a memo row holds in the heap: the
// target's key, the route and its own cache key (an evicted entry's key
// lives on in its route), and the row in the shard's map.
func TestRouteChargeCoversMemoRow(t *testing.T) {
	const n = 20_000
	m := newHitMemo()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for i := range n {
		q := fmt.Sprint("trackId=B", 1_000_000_000+i)
		key := cache.Key("ineo", "spotify.track\x00spotify.php", "", url.Values{"trackId": {q[8:]}}, nil)
		m.store(routeKey("ineo", "spotify.php", q, "sluice"), &hitRoute{op: "spotify.track", bucket: "ineo", key: key}, 2*n)
	}
	per := float64(heap()-before) / n
	t.Logf("memo row: %.0f B in the heap, charged %d", per, cache.RouteCharge)
	if per > float64(cache.RouteCharge) || per < 0.6*float64(cache.RouteCharge) {
		t.Errorf("a memo row holds %.0f B, charged %d: want between 0.6 and 1 times the charge", per, cache.RouteCharge)
	}
	if got := m.len(); got != n {
		t.Fatalf("memo holds %d routes, want %d", got, n)
	}
	runtime.KeepAlive(m)
}
