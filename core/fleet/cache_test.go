package fleet

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/cache"
	"github.com/sluice-dev/sluice/internal/testenv"
)

// member is one daemon's two tiers: its own cache, with the fleet's
// behind it.
type member struct {
	c  *cache.Cache
	rc *Cache
}

// members starts n caches sharing one real Redis, as n hosts would.
func members(t *testing.T, rd *testenv.Redis, n int) []member {
	t.Helper()
	var ms []member
	for range n {
		q, err := New(Options{URL: rd.URL, Name: "cachetest"})
		if err != nil {
			t.Fatal(err)
		}
		c, err := cache.New(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		rc := q.Cache(func(p string) { c.PurgeLocal(p) })
		c.SetRemote(rc)
		t.Cleanup(func() {
			c.Close()
			rc.Close()
			q.Close()
		})
		ms = append(ms, member{c, rc})
	}
	return ms
}

const testKey = "ineo:0123abcd"

func answer(body string, fresh time.Duration) *cache.Entry {
	now := time.Now()
	return &cache.Entry{Provider: "ineo", Status: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: []byte(body), StoredAt: now, ExpiresAt: now.Add(fresh)}
}

// counted is a fetch that counts its upstream requests.
func counted(n *atomic.Int64, e func() *cache.Entry) cache.FetchFunc {
	return func(context.Context) (*cache.Entry, bool, error) {
		n.Add(1)
		return e(), true, nil
	}
}

// TestMissOnAHitOnB: an answer fetched by one member is served by another
// with no upstream request of its own, in the round trips counted, and
// then from its local cache without Redis.
func TestMissOnAHitOnB(t *testing.T) {
	rd := testenv.StartRedis(t)
	m := members(t, rd, 2)
	var upstream atomic.Int64
	fetch := counted(&upstream, func() *cache.Entry { return answer(`{"url":"x"}`, time.Hour) })
	ctx := context.Background()

	a, _, err := m[0].c.Do(ctx, testKey, fetch)
	if err != nil {
		t.Fatal(err)
	}
	if got := m[0].rc.Trips(); got != 2 {
		t.Errorf("a miss took %d round trips to the fleet's cache, want 2 (look up and lock, store and unlock)", got)
	}
	b, _, err := m[1].c.Do(ctx, testKey, fetch)
	if err != nil {
		t.Fatal(err)
	}
	if n := upstream.Load(); n != 1 {
		t.Fatalf("%d upstream requests for one answer on two members, want 1", n)
	}
	if string(b.Body) != string(a.Body) || b.Status != a.Status || b.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("B served %d %q %v, A stored %d %q", b.Status, b.Body, b.Header, a.Status, a.Body)
	}
	if got := m[1].rc.Trips(); got != 1 {
		t.Errorf("a remote hit took %d round trips, want 1", got)
	}
	if st := m[1].c.Stats(); st.RemoteHits != 1 {
		t.Errorf("RemoteHits %d, want 1", st.RemoteHits)
	}
	// Now local: a hit never touches Redis.
	if _, ok := m[1].c.Get(testKey); !ok {
		t.Fatal("the remote hit was not kept locally")
	}
	if got := m[1].rc.Trips(); got != 1 {
		t.Errorf("a local hit went to Redis (%d round trips)", got)
	}
}

// TestConcurrentMissesOneFetch: the same miss on three members at once
// costs one upstream request; the others wait for its answer.
func TestConcurrentMissesOneFetch(t *testing.T) {
	rd := testenv.StartRedis(t)
	m := members(t, rd, 3)
	var upstream atomic.Int64
	release := make(chan struct{})
	fetch := func(context.Context) (*cache.Entry, bool, error) {
		upstream.Add(1)
		<-release
		return answer(`{"one":1}`, time.Hour), true, nil
	}
	var wg sync.WaitGroup
	bodies := make([]string, len(m))
	errs := make([]error, len(m))
	for i := range m {
		wg.Go(func() {
			e, _, err := m[i].c.Do(context.Background(), testKey, fetch)
			errs[i] = err
			if e != nil {
				bodies[i] = string(e.Body)
			}
		})
	}
	// Hold the one fetch until both other members have looked and found
	// it under way (each has polled at least twice), so the test cannot
	// pass by the members merely running one after another.
	deadline := time.Now().Add(20 * time.Second)
	for {
		waiting := 0
		for i := range m {
			if m[i].rc.Trips() >= 2 {
				waiting++
			}
		}
		if upstream.Load() == 1 && waiting >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members never waited for the fetch under way (%d fetches)", upstream.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	wg.Wait()
	for i := range m {
		if errs[i] != nil || bodies[i] != `{"one":1}` {
			t.Errorf("member %d: %q, %v", i, bodies[i], errs[i])
		}
	}
	if n := upstream.Load(); n != 1 {
		t.Fatalf("%d upstream requests for one miss on three members, want 1", n)
	}
}

// TestLockHolderDies: a member that took the fill lock and died (never
// stored, never unlocked) holds the others for its lease only; one of them
// then fetches.
func TestLockHolderDies(t *testing.T) {
	rd := testenv.StartRedis(t)
	m := members(t, rd, 2)
	f, err := m[0].rc.Lookup(context.Background(), testKey, true)
	if err != nil || f.Lock == "" {
		t.Fatalf("lookup on an empty store: %+v, %v; want the lock", f, err)
	}
	// m[0] "dies" here: its lock is never renewed.
	var upstream atomic.Int64
	e, _, err := m[1].c.Do(context.Background(), testKey, counted(&upstream, func() *cache.Entry { return answer(`{}`, time.Hour) }))
	if err != nil || e == nil || upstream.Load() != 1 {
		t.Fatalf("after the holder died: %v, %d fetches; want B to take over once", err, upstream.Load())
	}
	if m[1].rc.Trips() < 3 {
		t.Errorf("B fetched after %d round trips: it did not wait for the live lock", m[1].rc.Trips())
	}
}

// TestFailedFetchHandsOver: when the member under the lock stores nothing
// (an error upstream), the waiters fetch at once on their own, not one
// after another under the lock.
func TestFailedFetchHandsOver(t *testing.T) {
	rd := testenv.StartRedis(t)
	m := members(t, rd, 2)
	ctx := context.Background()
	boom := errors.New("upstream 500")
	if _, _, err := m[0].c.Do(ctx, testKey, func(context.Context) (*cache.Entry, bool, error) { return nil, false, boom }); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	f, err := m[1].rc.Lookup(ctx, testKey, true)
	if err != nil || f.Wait || f.Lock != "" {
		t.Fatalf("lookup after a failed fetch: %+v, %v; want: fetch on your own", f, err)
	}
}

// TestLinksFollowEachMembersBase: an answer with links to sluice is
// stored once, host-free, and each member's caller gets links on its own
// base.
func TestLinksFollowEachMembersBase(t *testing.T) {
	rd := testenv.StartRedis(t)
	m := members(t, rd, 2)
	const marker = "http://sluice-link-base.invalid/v1/spotify"
	var upstream atomic.Int64
	fetch := counted(&upstream, func() *cache.Entry {
		e := answer(`{"href":"`+marker+`/v1/albums/x/tracks?offset=0","next":"`+marker+`/v1/albums/x/tracks?offset=20"}`, time.Hour)
		e.Provider = "spotify"
		e.MarkBase(marker)
		return e
	})
	key := "spotify:feedbeef"
	a, _, err := m[0].c.Do(context.Background(), key, fetch)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := m[1].c.Do(context.Background(), key, fetch)
	if err != nil {
		t.Fatal(err)
	}
	if upstream.Load() != 1 {
		t.Fatalf("%d upstream requests, want 1", upstream.Load())
	}
	for _, c := range []struct {
		e    *cache.Entry
		base string
	}{{a, "http://sluice/v1/spotify"}, {b, "http://127.0.0.1:8750/v1/spotify"}, {b, "http://localhost/v1/spotify"}} {
		got := string(c.e.BodyFor(c.base))
		if strings.Contains(got, "invalid") || strings.Count(got, c.base+"/v1/albums/x/tracks?offset=") != 2 {
			t.Errorf("links for base %s: %s", c.base, got)
		}
	}
}

// TestExpiredLinkNeverServedFromRedis: a copy whose link has expired is
// never served by another member, whatever Redis still holds: Redis's TTL
// ends at the entry's keep time, and a reader checks the entry's own
// expiry too (invariant 5).
func TestExpiredLinkNeverServedFromRedis(t *testing.T) {
	rd := testenv.StartRedis(t)
	m := members(t, rd, 2)
	ctx := context.Background()
	var upstream atomic.Int64
	// A hellorf-like answer whose link dies in 300 ms.
	short := counted(&upstream, func() *cache.Entry { return answer(`{"url":"https://cdn/x?Expires=1"}`, 300*time.Millisecond) })
	if _, _, err := m[0].c.Do(ctx, testKey, short); err != nil {
		t.Fatal(err)
	}
	pttl, err := m[0].q().rdb.PTTL(ctx, m[0].rc.keys(testKey)[0]).Result()
	if err != nil || pttl <= 0 || pttl > 300*time.Millisecond {
		t.Fatalf("Redis keeps the copy for %s (%v), past the entry's 300 ms", pttl, err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, ok := m[0].c.Get(testKey); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the entry never expired")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e, _, err := m[1].c.Do(ctx, testKey, counted(&upstream, func() *cache.Entry { return answer(`{"url":"new"}`, time.Hour) }))
	if err != nil || string(e.Body) != `{"url":"new"}` || upstream.Load() != 2 {
		t.Fatalf("after the link expired B served %q (%v, %d fetches), want a new fetch", e.Body, err, upstream.Load())
	}

	// A copy Redis still calls fresh, but whose entry says its link has
	// expired (a writer's clock, a damaged TTL): the reader's check wins.
	dead := answer(`{"url":"dead"}`, -time.Second)
	v, _ := cache.EncodeEntry(dead)
	if err := m[0].rc.Store(ctx, "ineo:dead", v, time.Hour, time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	e, _, err = m[1].c.Do(ctx, "ineo:dead", counted(&upstream, func() *cache.Entry { return answer(`{"url":"alive"}`, time.Hour) }))
	if err != nil || string(e.Body) != `{"url":"alive"}` {
		t.Fatalf("a copy past its link expiry was served: %q, %v", e.Body, err)
	}
}

func (m member) q() *Client { return m.rc.q }

// TestStaleCopyKeptForFallback: a copy past its freshness but within its
// stale keep is not served as fresh, yet reaches the other member's local
// cache for the stale fallback.
func TestStaleCopyKeptForFallback(t *testing.T) {
	rd := testenv.StartRedis(t)
	m := members(t, rd, 2)
	ctx := context.Background()
	e := answer(`{"stale":1}`, 100*time.Millisecond)
	e.KeepUntil = time.Now().Add(time.Hour)
	if _, _, err := m[0].c.Do(ctx, testKey, func(context.Context) (*cache.Entry, bool, error) { return e, true, nil }); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(e.ExpiresAt); {
		if time.Now().After(deadline) {
			t.Fatal("clock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	boom := errors.New("exhausted")
	if _, _, err := m[1].c.Do(ctx, testKey, func(context.Context) (*cache.Entry, bool, error) { return nil, false, boom }); !errors.Is(err, boom) {
		t.Fatalf("a stale copy was served as fresh: %v", err)
	}
	if s, ok := m[1].c.GetStale(testKey); !ok || string(s.Body) != `{"stale":1}` {
		t.Fatal("the stale copy did not reach B for the stale fallback")
	}
}

// TestRedisDownIsAMiss: a fleet cache that cannot be reached is a miss,
// not a failure: the fetch goes on (the quota decides whether it may).
func TestRedisDownIsAMiss(t *testing.T) {
	rd := testenv.StartRedis(t)
	m := members(t, rd, 1)
	rd.Kill()
	var upstream atomic.Int64
	e, _, err := m[0].c.Do(context.Background(), testKey, counted(&upstream, func() *cache.Entry { return answer(`{}`, time.Hour) }))
	if err != nil || e == nil || upstream.Load() != 1 {
		t.Fatalf("with Redis gone: %v, %d fetches", err, upstream.Load())
	}
	if st := m[0].c.Stats(); st.RemoteErrors == 0 {
		t.Error("Redis errors were not counted")
	}
}

// TestPurgePurgesTheFleet: a purge on one member removes the fleet's copy
// and the other members' local copies.
func TestPurgePurgesTheFleet(t *testing.T) {
	rd := testenv.StartRedis(t)
	m := members(t, rd, 2)
	ctx := context.Background()
	var upstream atomic.Int64
	fetch := counted(&upstream, func() *cache.Entry { return answer(`{}`, time.Hour) })
	for i := range m {
		if _, _, err := m[i].c.Do(ctx, testKey, fetch); err != nil {
			t.Fatal(err)
		}
	}
	other := "spotify:00ff"
	if _, _, err := m[0].c.Do(ctx, other, func(context.Context) (*cache.Entry, bool, error) {
		e := answer(`{}`, time.Hour)
		e.Provider = "spotify"
		return e, true, nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := m[0].c.Purge("ineo"); n != 1 {
		t.Fatalf("purged %d local answers, want 1", n)
	}
	if n, _ := m[0].q().rdb.Exists(ctx, m[0].rc.keys(testKey)[0]).Result(); n != 0 {
		t.Error("the fleet's copy survived the purge")
	}
	if n, _ := m[0].q().rdb.Exists(ctx, m[0].rc.keys(other)[0]).Result(); n != 1 {
		t.Error("another provider's copy was purged")
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, ok := m[1].c.Get(testKey); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other member kept its local copy after the fleet's purge")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNoCacheSkipsTheFleetCopy: a caller asking for a fresh answer
// (Cache-Control: no-cache, cache.NoRemote) is not given another member's
// copy; its fresh answer replaces the fleet's.
func TestNoCacheSkipsTheFleetCopy(t *testing.T) {
	rd := testenv.StartRedis(t)
	m := members(t, rd, 2)
	ctx := context.Background()
	var upstream atomic.Int64
	if _, _, err := m[0].c.Do(ctx, testKey, counted(&upstream, func() *cache.Entry { return answer(`{"v":1}`, time.Hour) })); err != nil {
		t.Fatal(err)
	}
	e, _, err := m[1].c.Do(cache.NoRemote(ctx), testKey, counted(&upstream, func() *cache.Entry { return answer(`{"v":2}`, time.Hour) }))
	if err != nil || string(e.Body) != `{"v":2}` || upstream.Load() != 2 {
		t.Fatalf("no-cache on B: %q, %v, %d fetches; want a fetch of its own", e.Body, err, upstream.Load())
	}
	f, err := m[0].rc.Lookup(ctx, testKey, true)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := cache.DecodeEntry(f.Value); err != nil || string(d.Body) != `{"v":2}` {
		t.Fatalf("the fleet's copy after a no-cache fetch: %v", err)
	}
}
