package cache

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"
)

// waitFor polls cond until it holds or the deadline passes. Tests use it
// instead of sleeping, because ristretto applies writes asynchronously.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}

func newCache(t *testing.T, maxBytes int64) *Cache {
	t.Helper()
	c, err := New(maxBytes)
	if err != nil {
		t.Fatalf("New(%d): %v", maxBytes, err)
	}
	t.Cleanup(c.Close)
	return c
}

func entry(provider string, bodyLen int, ttl time.Duration) *Entry {
	now := time.Now()
	return &Entry{
		Provider:  provider,
		Status:    http.StatusOK,
		Header:    http.Header{"Content-Type": {"application/json"}},
		Body:      bytes.Repeat([]byte("x"), bodyLen),
		StoredAt:  now,
		ExpiresAt: now.Add(ttl),
	}
}

// mustStore sets e and waits until ristretto has admitted it, failing the
// test if it was dropped or rejected.
func mustStore(t *testing.T, c *Cache, key string, e *Entry) {
	t.Helper()
	if !c.Set(key, e) {
		t.Fatalf("Set(%q) dropped", key)
	}
	c.Wait()
	if got, ok := c.Get(key); !ok || got != e {
		t.Fatalf("Get(%q) after Set+Wait = %v, %v; want the stored entry", key, got, ok)
	}
}

// checkIndex asserts the side index's invariants once ristretto is idle:
// every row is the value ristretto holds for its key (no ghosts), and Bytes
// is the sum of the rows' costs.
func checkIndex(t *testing.T, c *Cache) {
	t.Helper()
	c.Wait()
	c.mu.Lock()
	rows := make(map[string]*stored, len(c.index))
	var sum int64
	for k, s := range c.index {
		rows[k] = s
		sum += s.cost
	}
	bytesTotal := c.bytes
	c.mu.Unlock()
	if sum != bytesTotal {
		t.Errorf("index bytes = %d, sum of row costs = %d", bytesTotal, sum)
	}
	for k, s := range rows {
		if got, ok := c.rc.Get(k); !ok || got != s {
			t.Errorf("ghost index row %q: ristretto has %p, %v; index has %p", k, got, ok, s)
		}
		if !s.live.Load() {
			t.Errorf("index row %q is not marked live", k)
		}
	}
}

func TestNewRejectsNonPositiveSize(t *testing.T) {
	for _, n := range []int64{0, -1} {
		if c, err := New(n); err == nil {
			c.Close()
			t.Errorf("New(%d) succeeded, want error", n)
		}
	}
}

func TestNumCountersBounds(t *testing.T) {
	tests := []struct {
		maxBytes int64
		want     int64
	}{
		{1, minCounters},
		{1 << 20, 10 * (1 << 10)},
		{1 << 30, 10 * (1 << 20)},
		{1 << 40, maxCounters},
	}
	for _, tt := range tests {
		if got := numCounters(tt.maxBytes); got != tt.want {
			t.Errorf("numCounters(%d) = %d, want %d", tt.maxBytes, got, tt.want)
		}
	}
}

func TestSetGetHitsMisses(t *testing.T) {
	c := newCache(t, 1<<20)
	e := entry("p", 100, time.Hour)
	if _, ok := c.Get("k"); ok {
		t.Fatal("Get on empty cache hit")
	}
	mustStore(t, c, "k", e) // one hit inside
	if _, ok := c.Get("other"); ok {
		t.Fatal("Get of unknown key hit")
	}
	st := c.Stats()
	if st.Hits != 1 || st.Misses != 2 {
		t.Errorf("Hits, Misses = %d, %d; want 1, 2", st.Hits, st.Misses)
	}
	if st.Entries != 1 {
		t.Errorf("Entries = %d, want 1", st.Entries)
	}
}

func TestSetRefuses(t *testing.T) {
	c := newCache(t, 4096)
	tests := []struct {
		name string
		e    *Entry
	}{
		{"nil entry", nil},
		{"already expired", entry("p", 10, -time.Second)},
		{"expires now", &Entry{Provider: "p", ExpiresAt: time.Now()}},
		{"no expiry", &Entry{Provider: "p"}},
		{"larger than the cache", entry("p", 8192, time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c.Set("k", tt.e) {
				t.Error("Set accepted")
			}
			c.Wait()
			if _, ok := c.Get("k"); ok {
				t.Error("Get hit")
			}
			if st := c.Stats(); st.Entries != 0 || st.Bytes != 0 {
				t.Errorf("Entries, Bytes = %d, %d; want 0, 0", st.Entries, st.Bytes)
			}
		})
	}
}

func TestGetNeverReturnsExpired(t *testing.T) {
	c := newCache(t, 1<<20)
	e := entry("p", 10, 20*time.Millisecond)
	if !c.Set("k", e) {
		t.Fatal("Set dropped")
	}
	c.Wait()
	hits := 0
	waitFor(t, "entry to expire", func() bool {
		before := time.Now()
		got, ok := c.Get("k")
		if ok {
			hits++
			if !before.Before(e.ExpiresAt) {
				t.Fatalf("Get at %v returned entry expiring at %v", before, e.ExpiresAt)
			}
			if got != e {
				t.Fatalf("Get returned %p, want %p", got, e)
			}
		}
		return !time.Now().Before(e.ExpiresAt)
	})
	if hits == 0 {
		t.Error("entry was never served before it expired")
	}
	for range 10 {
		if _, ok := c.Get("k"); ok {
			t.Fatal("Get returned an expired entry")
		}
	}
	if st := c.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("after expiry Entries, Bytes = %d, %d; want 0, 0", st.Entries, st.Bytes)
	}
}

func TestStatsDropExpiredWithoutGets(t *testing.T) {
	c := newCache(t, 1<<20)
	for i := range 20 {
		c.Set(fmt.Sprint("k", i), entry("p", 100, 10*time.Millisecond))
	}
	c.Set("long", entry("p", 100, time.Hour))
	waitFor(t, "short entries to leave Stats", func() bool {
		return c.Stats().Entries <= 1
	})
	checkIndex(t, c)
}

func TestPurge(t *testing.T) {
	c := newCache(t, 1<<20)
	keys := map[string][]string{
		"a": {"a1", "a2", "a3"},
		"b": {"b1", "b2"},
	}
	for p, ks := range keys {
		for _, k := range ks {
			mustStore(t, c, k, entry(p, 50, time.Hour))
		}
	}

	if n := c.Purge("a"); n != 3 {
		t.Errorf("Purge(a) = %d, want 3", n)
	}
	// No Wait: the purge must be visible at once.
	for _, k := range keys["a"] {
		if _, ok := c.Get(k); ok {
			t.Errorf("Get(%q) hit right after Purge", k)
		}
	}
	for _, k := range keys["b"] {
		if _, ok := c.Get(k); !ok {
			t.Errorf("Get(%q) of other provider missed after Purge(a)", k)
		}
	}
	if st := c.Stats(); st.Entries != 2 {
		t.Errorf("Entries after Purge(a) = %d, want 2", st.Entries)
	}
	if n := c.Purge("a"); n != 0 {
		t.Errorf("second Purge(a) = %d, want 0", n)
	}
	checkIndex(t, c)
	for _, k := range keys["a"] {
		if _, ok := c.rc.Get(k); ok {
			t.Errorf("ristretto still holds %q after Purge+Wait", k)
		}
	}

	if n := c.PurgeAll(); n != 2 {
		t.Errorf("PurgeAll = %d, want 2", n)
	}
	for _, k := range keys["b"] {
		if _, ok := c.Get(k); ok {
			t.Errorf("Get(%q) hit right after PurgeAll", k)
		}
	}
	if st := c.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("after PurgeAll Entries, Bytes = %d, %d; want 0, 0", st.Entries, st.Bytes)
	}
	// The cache still works after purging.
	mustStore(t, c, "a1", entry("a", 50, time.Hour))
}

func TestPurgeOfPendingSet(t *testing.T) {
	// A Set still in ristretto's buffer when Purge runs must not surface
	// once ristretto applies it.
	c := newCache(t, 1<<20)
	for i := range 200 {
		c.Set(fmt.Sprint("k", i), entry("p", 10, time.Hour))
		c.Purge("p")
		if _, ok := c.Get(fmt.Sprint("k", i)); ok {
			t.Fatalf("k%d visible after Purge", i)
		}
	}
	c.Wait()
	for i := range 200 {
		if _, ok := c.Get(fmt.Sprint("k", i)); ok {
			t.Fatalf("k%d visible after Purge+Wait", i)
		}
	}
	if st := c.Stats(); st.Entries != 0 {
		t.Errorf("Entries = %d, want 0", st.Entries)
	}
}

func TestCostAccounting(t *testing.T) {
	c := newCache(t, 1<<22)
	sizes := []int{0, 1, 100, 1000, 10_000, 100_000}
	var bodies int64
	for i, n := range sizes {
		mustStore(t, c, fmt.Sprint("k", i), entry("p", n, time.Hour))
		bodies += int64(n)
	}
	st := c.Stats()
	if st.Entries != len(sizes) {
		t.Fatalf("Entries = %d, want %d", st.Entries, len(sizes))
	}
	// Each entry also pays for its key, headers and bookkeeping, which is
	// about 1 KiB for these entries, and for the allocator's rounding of
	// its body (at most an eighth; TestEntryCostCoversHeap checks the
	// total against the heap), all of it two fifths more for what it
	// costs in resident memory (chargeOf).
	if low, high := bodies*7/5, (bodies+bodies/8+int64(len(sizes))*1200)*7/5; st.Bytes < low || st.Bytes > high {
		t.Errorf("Bytes = %d, want within [%d, %d]", st.Bytes, low, high)
	}
	if st.MaxBytes != 1<<22 {
		t.Errorf("MaxBytes = %d, want %d", st.MaxBytes, 1<<22)
	}

	// Replacing an entry replaces its cost rather than adding to it.
	before := c.Stats().Bytes
	mustStore(t, c, "k5", entry("p", 50_000, time.Hour))
	if got, want := c.Stats().Bytes, before-chargeOf("k5", entry("p", 100_000, time.Hour))+chargeOf("k5", entry("p", 50_000, time.Hour)); got != want {
		t.Errorf("Bytes after shrinking k5 = %d, want %d", got, want)
	}
	checkIndex(t, c)
}

func TestMaxSizeRespected(t *testing.T) {
	const maxBytes = 64 << 10
	c := newCache(t, maxBytes)
	for i := range 2000 {
		c.Set(fmt.Sprint("k", i), entry("p", 1000, time.Hour))
	}
	c.Wait()
	st := c.Stats()
	if st.Bytes > maxBytes {
		t.Errorf("Bytes = %d, exceeds max %d", st.Bytes, maxBytes)
	}
	if st.Entries == 0 {
		t.Error("nothing was kept")
	}
	if st.Evictions == 0 {
		t.Error("no evictions counted although 30x the capacity was inserted")
	}
	checkIndex(t, c)
}

func TestSetMaxBytes(t *testing.T) {
	c := newCache(t, 64<<10)
	for i := range 40 {
		mustStore(t, c, fmt.Sprint("k", i), entry("p", 1000, time.Duration(i+1)*time.Minute))
	}
	before := c.Stats()

	const smaller = 16 << 10
	c.SetMaxBytes(smaller)
	st := c.Stats()
	if st.MaxBytes != smaller {
		t.Errorf("MaxBytes = %d, want %d", st.MaxBytes, smaller)
	}
	if st.Bytes > smaller {
		t.Errorf("Bytes = %d right after shrinking to %d", st.Bytes, smaller)
	}
	if st.Evictions <= before.Evictions {
		t.Error("shrinking evicted nothing")
	}
	// Entries closest to expiry go first.
	if _, ok := c.Get("k0"); ok {
		t.Error("soonest-expiring entry survived the shrink")
	}
	if _, ok := c.Get("k39"); !ok {
		t.Error("latest-expiring entry was evicted by the shrink")
	}

	for i := 40; i < 200; i++ {
		c.Set(fmt.Sprint("k", i), entry("p", 1000, time.Hour))
	}
	c.Wait()
	if st := c.Stats(); st.Bytes > smaller {
		t.Errorf("Bytes = %d after more Sets, exceeds %d", st.Bytes, smaller)
	}
	checkIndex(t, c)

	c.SetMaxBytes(0) // ignored
	if st := c.Stats(); st.MaxBytes != smaller {
		t.Errorf("SetMaxBytes(0) changed MaxBytes to %d", st.MaxBytes)
	}
}

// TestIndexConsistencyUnderChurn hammers a small cache with concurrent Sets
// of overlapping keys (so ristretto drops, rejects and evicts), Gets and
// Purges, then checks that the side index has no ghosts and can be emptied.
func TestIndexConsistencyUnderChurn(t *testing.T) {
	c := newCache(t, 32<<10)
	providers := []string{"a", "b", "c"}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range 2000 {
				p := providers[r.IntN(len(providers))]
				key := fmt.Sprintf("%s:%d", p, r.IntN(64))
				switch n := r.IntN(100); {
				case n < 60:
					c.Set(key, entry(p, r.IntN(2000), time.Hour))
				case n < 98:
					if e, ok := c.Get(key); ok && e.Provider != p {
						t.Errorf("Get(%q) returned provider %q", key, e.Provider)
					}
				default:
					c.Purge(p)
				}
			}
		})
	}
	wg.Wait()
	checkIndex(t, c)
	if st := c.Stats(); st.Bytes > 32<<10 {
		t.Errorf("Bytes = %d, exceeds max", st.Bytes)
	}
	c.PurgeAll()
	if st := c.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("after PurgeAll Entries, Bytes = %d, %d; want 0, 0", st.Entries, st.Bytes)
	}
	checkIndex(t, c)
}

func TestClose(t *testing.T) {
	c, err := New(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	mustStore(t, c, "k", entry("p", 10, time.Hour))
	c.Close()
	c.Close() // idempotent
	if _, ok := c.Get("k"); ok {
		t.Error("Get hit after Close")
	}
	if c.Set("k", entry("p", 10, time.Hour)) {
		t.Error("Set accepted after Close")
	}
	if n := c.PurgeAll(); n != 0 {
		t.Errorf("PurgeAll after Close = %d", n)
	}
	c.SetMaxBytes(1 << 10)
	c.Wait()
	if st := c.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("after Close Entries, Bytes = %d, %d; want 0, 0", st.Entries, st.Bytes)
	}
}

// TestGetNeverServesAReplacedRow: right after a newer Set, Get serves the
// newer entry, and right after a Purge, nothing, without waiting for
// ristretto to apply either.
func TestGetNeverServesAReplacedRow(t *testing.T) {
	c := newCache(t, 64<<20)
	for i := range 200 {
		key := fmt.Sprint("k", i)
		old, fresh := entry("p", 10, time.Hour), entry("p", 20, time.Hour)
		mustStore(t, c, key, old)
		c.Set(key, fresh)
		if got, ok := c.Get(key); !ok || got != fresh {
			t.Fatalf("Get right after a newer Set = %p, %v; want the newer entry %p (old %p)", got, ok, fresh, old)
		}
		c.Wait()
		c.Purge("p")
		if got, ok := c.Get(key); ok {
			t.Fatalf("Get right after Purge = %p; want a miss", got)
		}
	}
}
