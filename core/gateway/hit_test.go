package gateway

import (
	"fmt"
	"hash/maphash"
	"testing"
)

// TestHitMemoBounded: however many targets pass through, the memo holds at
// most maxHitRoutes routes, and a route just stored is found.
func TestHitMemoBounded(t *testing.T) {
	m := &hitMemo{seed: maphash.MakeSeed()}
	for i := range 3 * maxHitRoutes {
		mk := routeKey("ineo", "spotify.php", fmt.Sprint("trackId=", i), "sluice")
		r := &hitRoute{op: "spotify.track"}
		m.store(mk, r)
		if got, ok := m.load(mk); !ok || got != r {
			t.Fatalf("route %d not found right after store", i)
		}
	}
	n := 0
	for i := range m.shards {
		n += len(m.shards[i].m)
	}
	if n > maxHitRoutes || n == 0 {
		t.Fatalf("memo holds %d routes, want 1..%d", n, maxHitRoutes)
	}
}
