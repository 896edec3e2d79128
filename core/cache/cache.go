// Package cache is sluice's response cache: a size-bounded in-memory store of
// successful upstream answers, keyed by a canonical request key, plus request
// coalescing so that identical concurrent requests cost one upstream call.
//
// Storage is a ristretto cache whose cost unit is bytes. Two properties are
// layered on top of ristretto because it does not provide them:
//
//   - Exact expiry. Every Entry carries ExpiresAt (bounded by the expiry of
//     the download links inside it, see LinkExpiry) and Get checks it on every
//     call, so an entry is never served at or after that instant, whatever
//     ristretto's coarse TTL sweeper is doing.
//   - Enumeration. ristretto cannot list its keys, so the Cache keeps a side
//     index (key → stored value) that Purge walks and Stats sums. Get only
//     returns a value that is both in ristretto and the current index row for
//     its key, which is what makes Purge take effect at once even though
//     ristretto applies deletions asynchronously. The index is kept honest by
//     ristretto's OnExit callback (called for every value that leaves the
//     store or is rejected by its admission policy) and by Set noticing
//     dropped writes, and it is pruned of expired rows by Get and Stats, so it
//     cannot accumulate ghosts.
package cache

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"golang.org/x/sync/singleflight"

	"github.com/sluice-dev/sluice/internal/stripe"
)

// Entry is one stored upstream answer. It is immutable once handed to Set or
// returned from a fetch given to Do: the same *Entry is shared by every
// caller that reads it, so nobody may modify it (including Header and Body).
type Entry struct {
	Provider  string
	Status    int
	Header    http.Header
	Body      []byte
	StoredAt  time.Time
	ExpiresAt time.Time
	// KeepUntil, when after ExpiresAt, keeps the entry past its freshness
	// as a stale answer (GetStale) for callers the upstream cannot serve
	// now (a paused or exhausted bucket). Whoever sets it bounds it by
	// every link inside the body: a stale answer is never served after a
	// link in it has expired. Zero: dropped at ExpiresAt.
	KeepUntil time.Time

	// wire memoises the header lines the socket API's fast lane writes for
	// this entry (see Wire); safe because entries never change once stored.
	wire atomic.Pointer[[]byte]
	// Links to sluice inside Body, stored with a marker base and given
	// each caller's own base when served (see splice.go).
	marker string
	baseAt []int
	based  atomic.Pointer[basedBody]
	// fromFleet: read from the remote tier (FromFleet).
	fromFleet bool
}

// keep is when the entry leaves the cache: its KeepUntil, or ExpiresAt.
func (e *Entry) keep() time.Time {
	if e.KeepUntil.After(e.ExpiresAt) {
		return e.KeepUntil
	}
	return e.ExpiresAt
}

// Wire returns render(e), computed once per entry however many hits read it.
func (e *Entry) Wire(render func(*Entry) []byte) []byte {
	if w := e.wire.Load(); w != nil {
		return *w
	}
	w := render(e)
	e.wire.Store(&w)
	return w
}

// Stats is a point-in-time snapshot of the cache.
type Stats struct {
	// Entries and Bytes describe live (unexpired, unpurged) entries,
	// including Sets that ristretto has buffered but not yet applied. Bytes
	// is in the cost unit used for MaxBytes (body + headers + overhead).
	Entries int
	Bytes   int64
	// MaxBytes is the current capacity.
	MaxBytes int64
	// Hits and Misses count Get calls.
	Hits   uint64
	Misses uint64
	// Coalesced counts Do callers that were answered by another caller's
	// fetch instead of their own.
	Coalesced uint64
	// Evictions counts unexpired entries removed to make room (by
	// ristretto's policy or by SetMaxBytes shrinking the cache); expiries and
	// purges are not evictions.
	Evictions uint64
	// RemoteHits counts misses answered by the remote tier (another
	// member's answer, fleet mode), RemoteErrors the remote tier's
	// failures (each one treated as a miss there).
	RemoteHits, RemoteErrors uint64
}

// ErrClosed is returned by Do after Close.
var ErrClosed = errors.New("cache: closed")

const (
	// entryOverhead is what an entry costs in the heap beyond its key,
	// body and header bytes, measured (TestEntryCostCoversHeap: heap
	// growth over 20,000 stored entries, after collection): the Entry
	// and stored structs, the header map's table, the index row, and
	// ristretto's store, policy and expiry-bucket rows. It keeps a flood
	// of tiny entries from escaping the byte budget.
	entryOverhead = 736
	// headerValueOverhead is the bookkeeping per header value on top of
	// its name and value bytes: its []string, its slot in the map, and
	// its line in the fast lane's memoised head (Entry.Wire).
	headerValueOverhead = 64
	// RouteCharge is each entry's share of the socket API's fast-lane
	// route memo (core/gateway hitMemo), which keeps about as many routes
	// as the cache holds entries: a row holds the request target as a
	// key, the route, its own cache key (an evicted entry's key lives on
	// in its route) and its slot in a map. Measured (core/gateway
	// TestRouteChargeCoversMemoRow) at 236 bytes for a 43-byte target;
	// charging it here is what makes max_size bound the memo too.
	RouteCharge = 256
	// baseSlack bounds how much longer each link gets when the caller's
	// base replaces the marker in the memoised copy (basedBody): bases
	// are a scheme, a host and a path of a few dozen bytes.
	baseSlack = 64

	// avgEntryBytes is the typical entry size assumed when sizing ristretto's
	// admission counters from the byte budget.
	avgEntryBytes = 1 << 10
	// minCounters and maxCounters bound NumCounters: below the minimum the
	// frequency sketch is uselessly noisy, above the maximum its memory (~3
	// bytes per counter) stops being worth it for a local daemon.
	minCounters = 1 << 12
	maxCounters = 1 << 24
)

// stored is the value ristretto holds. It wraps the Entry with its string key
// and cost because ristretto's callbacks only see hashed keys, and the side
// index needs the string key to find its row. Pointer identity of a *stored
// is what ties an index row to exactly one ristretto write.
type stored struct {
	key   string
	entry *Entry
	cost  int64
	// live mirrors "the index row for key is this one"; it changes only
	// with c.mu held. A hit reads it instead of locking c.mu and looking
	// the key up in the index again: with 16 clients that global lock, and
	// with 100,000 entries the third random map access per hit, were a
	// measurable part of the hit's cost.
	live atomic.Bool
}

// Cache is a byte-bounded response cache with request coalescing. It is safe
// for concurrent use. The zero value is not usable; call New.
type Cache struct {
	rc    *ristretto.Cache[string, *stored]
	group singleflight.Group

	// life makes Close exclusive with every other operation, because
	// ristretto panics when used concurrently with its own Close. Operations
	// hold it shared; closed is guarded by it. Striped: every hit takes it,
	// and a sync.RWMutex's reader count is one word all cores write.
	life   *stripe.RWMutex
	closed bool
	// closing is readable from ristretto callbacks, which run while Close
	// holds life exclusively and so cannot take it.
	closing atomic.Bool
	// closeCtx ends when Close starts, cancelling in-flight fetches so that
	// shutdown does not wait on (or leak) upstream calls.
	closeCtx    context.Context
	cancelClose context.CancelFunc

	// mu guards everything below. Never call into ristretto while holding
	// it: ristretto invokes our callbacks synchronously from Set and Del and
	// from its own goroutine, and they take mu.
	mu       sync.Mutex
	index    map[string]*stored
	bytes    int64
	maxBytes int64
	// epoch increases on every purge; purgedAt records, per provider, the
	// epoch of its latest purge and allPurgedAt that of the latest PurgeAll.
	// Do compares them with the epoch seen before its fetch started, so an
	// answer fetched before a purge is not stored after it.
	epoch       uint64
	purgedAt    map[string]uint64
	allPurgedAt uint64

	// entries mirrors len(index) (written with mu held), for Len.
	entries atomic.Int64

	hits      *stripe.Counter // every hit adds to it: striped, as life
	misses    atomic.Uint64
	coalesced atomic.Uint64
	evictions atomic.Uint64

	// remote is the fleet's shared tier (SetRemote); nil on a single host.
	remote       Remote
	remoteHits   atomic.Uint64
	remoteErrors atomic.Uint64

	// testHookJoined, if set, is called by Do once the caller has joined the
	// singleflight call for its key. Tests use it to know when concurrent
	// callers are really coalesced rather than guessing with sleeps.
	testHookJoined func()
}

// New returns a cache holding at most maxBytes bytes of entries.
func New(maxBytes int64) (*Cache, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("cache: max size must be positive, got %d", maxBytes)
	}
	closeCtx, cancel := context.WithCancel(context.Background())
	c := &Cache{
		life:        stripe.NewRWMutex(),
		hits:        stripe.NewCounter(),
		closeCtx:    closeCtx,
		cancelClose: cancel,
		index:       make(map[string]*stored),
		maxBytes:    maxBytes,
		purgedAt:    make(map[string]uint64),
	}
	rc, err := ristretto.NewCache(&ristretto.Config[string, *stored]{
		NumCounters: numCounters(maxBytes),
		MaxCost:     maxBytes,
		BufferItems: 64,
		// Costs are computed by costOf in bytes; ristretto's internal
		// per-item cost would be a second, inconsistent unit.
		IgnoreInternalCost: true,
		OnEvict:            c.onEvict,
		OnExit:             c.onExit,
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("cache: create ristretto cache: %w", err)
	}
	c.rc = rc
	return c, nil
}

// numCounters sizes ristretto's admission sketch at ~10 counters per expected
// entry, as ristretto recommends, assuming avgEntryBytes per entry.
func numCounters(maxBytes int64) int64 {
	return min(max(maxBytes/avgEntryBytes*10, minCounters), maxCounters)
}

// chargeOf is what storing e under key counts against max_size: what the
// entry holds in the heap (costOf), plus two fifths for what it costs in
// resident memory beyond that. Entries evicted at random leave spans of
// the heap partly used (fragmentation no collection returns), and the
// collector needs room to collect in. max_size is a user's memory budget
// for the cache ("a VPS with 512 MB"): charged by heap bytes alone, a
// full 32 MiB cache held sluiced at idle + 1.96 × max_size resident
// (bench row 5, 17,421 iNeo answers). Charged two fifths more, with the
// soft memory limit at 16 MiB + max_size (core/daemon), the collector has
// room and RSS stays at idle + 1.27-1.32 × max_size full (12,446 answers).
// A third more was not enough room: idle + 1.49 × max_size.
func chargeOf(key string, e *Entry) int64 {
	return costOf(key, e) * 7 / 5
}

// costOf is what storing e under key holds in the heap, not just its
// payload. The body counts by capacity (a body
// read chunk by chunk into a growing buffer holds up to twice its
// length), rounded up as the allocator does; the header bytes count twice
// (the map, and the fast lane's memoised head); an entry with links to
// sluice counts its body a second time, for the copy with the caller's
// base spliced in that BodyFor memoises.
func costOf(key string, e *Entry) int64 {
	n := int64(entryOverhead+RouteCharge) + allocSize(len(key)) + allocSize(len(e.Provider)) + allocSize(cap(e.Body))
	for name, values := range e.Header {
		for _, v := range values {
			n += int64(2*(len(name)+len(v)) + headerValueOverhead)
		}
	}
	if len(e.baseAt) > 0 {
		n += allocSize(len(e.Body)+len(e.baseAt)*baseSlack) + int64(len(e.baseAt))*8 + entryOverhead/4
	}
	return n
}

// allocSize approximates the bytes the Go allocator hands out for n: its
// size classes are spaced an eighth of a power of two apart (at least 16
// bytes), large objects by whole pages, so it wastes at most an eighth.
func allocSize(n int) int64 {
	if n <= 0 {
		return 0
	}
	step := 16
	if p := 1 << (bits.Len(uint(n)) - 1); p/8 > step {
		step = p / 8
	}
	return int64((n + step - 1) / step * step)
}

// Get returns the entry stored under key. It never returns an entry at or
// after its ExpiresAt, nor one removed by Purge, even if ristretto has not
// yet applied the removal. An entry Set has accepted is found at once, even
// before ristretto has applied the write: a client repeating a request
// right after its miss must not miss again and spend another upstream
// request.
func (c *Cache) Get(key string) (*Entry, bool) {
	defer c.life.RUnlock(c.life.RLock())
	if !c.closed {
		now := time.Now()
		if s, ok := c.rc.Get(key); ok && s != nil && c.current(s, now) && now.Before(s.entry.ExpiresAt) {
			c.hits.Inc()
			return s.entry, true
		}
		if s := c.pending(key, now); s != nil && now.Before(s.entry.ExpiresAt) {
			c.hits.Inc()
			return s.entry, true
		}
	}
	c.misses.Add(1)
	return nil, false
}

// GetStale returns the entry stored under key even when it is no longer
// fresh, as long as it is kept (see Entry.KeepUntil). It counts nothing:
// the caller decides whether a stale answer may be served.
func (c *Cache) GetStale(key string) (*Entry, bool) {
	defer c.life.RUnlock(c.life.RLock())
	if c.closed {
		return nil, false
	}
	now := time.Now()
	if s, ok := c.rc.Get(key); ok && s != nil && c.current(s, now) {
		return s.entry, true
	}
	if s := c.pending(key, now); s != nil {
		return s.entry, true
	}
	return nil, false
}

// pending returns key's live index row when ristretto does not have it
// (yet): its writes are applied on a goroutine of its own. The index is
// authoritative for what is live: a write ristretto drops or rejects, an
// eviction and a purge all remove the row.
func (c *Cache) pending(key string, now time.Time) *stored {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.index[key]
	if s == nil {
		return nil
	}
	if !now.Before(s.entry.keep()) {
		c.removeLocked(s)
		return nil
	}
	return s
}

// current reports whether s is the live index row for its key. An expired row
// is dropped on the way: ristretto will sweep the value itself later, and
// its OnExit then finds no row to remove.
func (c *Cache) current(s *stored, now time.Time) bool {
	if !s.live.Load() {
		// Purged, superseded by a newer Set, or an older value that
		// ristretto kept while rejecting a newer one: not servable.
		return false
	}
	if now.Before(s.entry.keep()) {
		return true
	}
	c.forget(s)
	return false
}

// Set stores e under key until e.ExpiresAt. It returns whether ristretto
// accepted the write into its buffer; it returns false without storing when
// e is nil, already expired, larger than the whole cache, or the cache is
// closed. An accepted write is visible to Get at once, though ristretto
// applies it asynchronously and its admission policy may still refuse it
// (the entry is then gone).
func (c *Cache) Set(key string, e *Entry) bool {
	return c.set(key, e, 0, false)
}

// set implements Set. With checkPurge it refuses entries whose provider has
// been purged since epoch since, so a fetch that straddles a purge cannot
// reinstate pre-purge data.
func (c *Cache) set(key string, e *Entry, since uint64, checkPurge bool) bool {
	if e == nil {
		return false
	}
	defer c.life.RUnlock(c.life.RLock())
	if c.closed {
		return false
	}
	ttl := time.Until(e.keep())
	if ttl <= 0 {
		return false
	}
	s := &stored{key: key, entry: e, cost: chargeOf(key, e)}

	// The row goes into the index before ristretto sees the value, because
	// ristretto may reject it (and call onExit) before SetWithTTL returns
	// or very soon after; the row must already be there to be removed.
	c.mu.Lock()
	if s.cost > c.maxBytes {
		// ristretto would reject it anyway; don't let it inflate Bytes.
		c.mu.Unlock()
		return false
	}
	if checkPurge && (c.purgedAt[e.Provider] > since || c.allPurgedAt > since) {
		c.mu.Unlock()
		return false
	}
	if old := c.index[key]; old != nil {
		c.bytes -= old.cost
		old.live.Store(false)
	}
	c.index[key] = s
	c.entries.Store(int64(len(c.index)))
	s.live.Store(true)
	c.bytes += s.cost
	c.mu.Unlock()

	if !c.rc.SetWithTTL(key, s, s.cost, ttl) {
		// Dropped under contention: ristretto will never mention s again,
		// so the row would be a ghost.
		c.forget(s)
		return false
	}
	return true
}

// onExit is ristretto's OnExit callback, called whenever a value leaves the
// store (eviction, TTL sweep, deletion, replacement) or is rejected by the
// admission policy. It may be called with nil (ristretto reports deletions of
// absent keys that way).
func (c *Cache) onExit(s *stored) {
	if s != nil {
		c.forget(s)
	}
}

// onEvict is ristretto's OnEvict callback, used only for counting: ristretto
// calls OnExit right after it, which maintains the index. Its TTL sweeper
// also reports through OnEvict, so expired values are not counted as
// evictions.
func (c *Cache) onEvict(item *ristretto.Item[*stored]) {
	s := item.Value
	if s == nil || c.closing.Load() || !time.Now().Before(s.entry.keep()) {
		return
	}
	if s.live.Load() {
		c.evictions.Add(1)
	}
}

// forget removes s's index row if it is still the current one for its key; a
// newer Set for the same key must not be forgotten because an older value
// left.
func (c *Cache) forget(s *stored) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.index[s.key] == s {
		c.removeLocked(s)
	}
}

// removeLocked deletes s's row, which must be current. c.mu must be held.
func (c *Cache) removeLocked(s *stored) {
	delete(c.index, s.key)
	c.entries.Store(int64(len(c.index)))
	s.live.Store(false)
	c.bytes -= s.cost
}

// SetMaxBytes changes the capacity at run time (configuration reload).
// Non-positive values are ignored; validate configuration before calling.
// When shrinking, entries closest to expiry are removed at once until the
// cache fits, rather than waiting for ristretto, which only evicts when
// admitting new entries. ristretto's admission sketch keeps the size it was
// created with.
func (c *Cache) SetMaxBytes(n int64) {
	if n <= 0 {
		return
	}
	defer c.life.RUnlock(c.life.RLock())
	if c.closed {
		return
	}

	c.mu.Lock()
	c.maxBytes = n
	var victims []*stored
	if c.bytes > n {
		all := make([]*stored, 0, len(c.index))
		for _, s := range c.index {
			all = append(all, s)
		}
		slices.SortFunc(all, func(a, b *stored) int {
			return a.entry.ExpiresAt.Compare(b.entry.ExpiresAt)
		})
		for _, s := range all {
			if c.bytes <= n {
				break
			}
			c.removeLocked(s)
			victims = append(victims, s)
		}
	}
	c.mu.Unlock()

	c.rc.UpdateMaxCost(n)
	c.evictions.Add(uint64(len(victims)))
	for _, s := range victims {
		c.rc.Del(s.key)
	}
}

// Purge removes every entry of provider and returns how many live entries it
// removed. Gets miss them from the moment Purge returns, and an in-flight Do
// for that provider that started before the purge will not store its answer.
// With a remote tier, the fleet's copies go too (and the other members are
// told to purge theirs).
func (c *Cache) Purge(provider string) int {
	n := c.PurgeLocal(provider)
	c.purgeRemote(provider)
	return n
}

// PurgeLocal is Purge of this cache alone ("" for every provider): what a
// member does when another member purged the fleet.
func (c *Cache) PurgeLocal(provider string) int {
	if provider == "" {
		return c.purgeAll()
	}
	return c.purge(func(s *stored) bool { return s.entry.Provider == provider }, func() {
		c.purgedAt[provider] = c.epoch
	})
}

// PurgeAll removes every entry and returns how many live entries it removed,
// from the remote tier too.
func (c *Cache) PurgeAll() int {
	n := c.purgeAll()
	c.purgeRemote("")
	return n
}

func (c *Cache) purgeAll() int {
	return c.purge(func(*stored) bool { return true }, func() {
		c.allPurgedAt = c.epoch
		// Per-provider marks are subsumed by allPurgedAt; dropping them
		// keeps the map from growing across reloads.
		clear(c.purgedAt)
	})
}

// purge removes the index rows matching match, then deletes them from
// ristretto. Removing the rows first is what makes Gets miss immediately;
// ristretto's Del is applied asynchronously. mark records the purge epoch and
// runs with c.mu held.
func (c *Cache) purge(match func(*stored) bool, mark func()) int {
	defer c.life.RUnlock(c.life.RLock())
	if c.closed {
		return 0
	}

	now := time.Now()
	var keys []string
	live := 0
	c.mu.Lock()
	c.epoch++
	mark()
	for key, s := range c.index {
		if !match(s) {
			continue
		}
		c.removeLocked(s)
		keys = append(keys, key)
		if now.Before(s.entry.keep()) {
			live++
		}
	}
	c.mu.Unlock()

	for _, key := range keys {
		c.rc.Del(key)
	}
	return live
}

// Stats returns a snapshot of the cache's counters. It prunes expired index
// rows first, so Entries and Bytes count only servable entries and fall to
// zero once everything has expired, even before ristretto's sweeper runs.
func (c *Cache) Stats() Stats {
	now := time.Now()
	c.mu.Lock()
	for _, s := range c.index {
		if !now.Before(s.entry.keep()) {
			c.removeLocked(s)
		}
	}
	st := Stats{
		Entries:  len(c.index),
		Bytes:    c.bytes,
		MaxBytes: c.maxBytes,
	}
	c.mu.Unlock()
	st.Hits = c.hits.Load()
	st.Misses = c.misses.Load()
	st.Coalesced = c.coalesced.Load()
	st.Evictions = c.evictions.Load()
	st.RemoteHits = c.remoteHits.Load()
	st.RemoteErrors = c.remoteErrors.Load()
	return st
}

// Len is how many entries the cache holds now (live index rows, some of
// them perhaps expired and not yet pruned). It takes no lock: what sizes
// itself by the cache (the fast lane's route memo) reads it often.
func (c *Cache) Len() int { return int(c.entries.Load()) }

// Wait blocks until every Set accepted so far has been applied (admitted or
// rejected) by ristretto. Get sees an accepted Set without it; it exists
// for tests that need ristretto's own state (its admission, its cost
// accounting) settled.
func (c *Cache) Wait() {
	defer c.life.RUnlock(c.life.RLock())
	if !c.closed {
		c.rc.Wait()
	}
}

// Close cancels in-flight fetches started by Do, releases ristretto's
// goroutines and empties the cache. Afterwards Get misses, Set returns
// false, Purge returns 0 and Do returns ErrClosed. Close waits for running
// operations to finish and is idempotent.
func (c *Cache) Close() {
	c.cancelClose()
	c.life.Lock()
	defer c.life.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.closing.Store(true)
	c.rc.Close()

	c.mu.Lock()
	for _, s := range c.index {
		s.live.Store(false)
	}
	clear(c.index)
	c.entries.Store(0)
	c.bytes = 0
	c.mu.Unlock()
}
