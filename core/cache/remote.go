package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// Remote is a second cache tier shared by several daemons (fleet mode):
// local first, remote second. The cache consults it only on a miss, from
// the leader of Do's per-process coalescing, so a hit never waits on it.
// Its errors are never safety failures: the cache treats them as a miss
// and goes on (what guards the upstream, the shared quota, fails closed
// by itself).
//
// Values are opaque (EncodeEntry's form, host-free); times cross the
// interface as durations, so that the remote store can translate them to
// one clock of its own: hosts' clocks disagree, and an entry must not live
// longer on a host whose clock is behind.
type Remote interface {
	// Lookup returns key's value when it is fresh, or when stale is set
	// and it is kept. When it is not fresh (or absent), it also tries to
	// take key's fill lock, held for about 3 × RemoteRenew unless renewed,
	// and returns its token; or says that another member holds it (Wait:
	// that member is fetching, look again soon).
	Lookup(ctx context.Context, key string, stale bool) (RemoteFound, error)
	// Store keeps value under key for keep (and no longer), fresh for
	// fresh, and then releases the fill lock if lock still holds it.
	Store(ctx context.Context, key string, value []byte, fresh, keep time.Duration, lock string) error
	// Renew extends a fill lock this member holds.
	Renew(ctx context.Context, key, lock string) error
	// Unlock releases a fill lock this member holds after a fetch that
	// stored nothing (an error, an answer not to be cached): the members
	// waiting for it then fetch on their own at once, rather than one
	// after another under the lock.
	Unlock(ctx context.Context, key, lock string) error
	// Purge removes provider's values ("" for all) and tells the other
	// members to purge their local copies.
	Purge(ctx context.Context, provider string) error
}

// RemoteFound is a Remote's answer to Lookup.
type RemoteFound struct {
	// Value is the stored value, nil when there is none.
	Value []byte
	// Fresh is how much longer Value is fresh (≤ 0: stale), and Keep how
	// much longer it is kept, measured by the remote store's clock.
	Fresh, Keep time.Duration
	// Lock is the fill lock's token when this lookup took it.
	Lock string
	// Wait: another member holds the lock and is fetching. With neither
	// Lock nor Wait, the caller fetches on its own.
	Wait bool
}

// RemoteRenew is how often a fetch holding a remote fill lock renews it.
const RemoteRenew = time.Second

// remotePoll bounds the backoff of a member waiting for another member's
// fetch: first look after remotePollMin, then twice as long each time up
// to remotePollMax, with jitter so the waiters of three hosts do not
// move in step.
const (
	remotePollMin = 10 * time.Millisecond
	remotePollMax = 250 * time.Millisecond
)

// remoteTimeout bounds a purge's round trips to the remote tier.
const remoteTimeout = 2 * time.Second

// remoteLookupTimeout bounds one lookup: a fleet cache that does not
// answer is a miss soon, not a wait added to every miss.
const remoteLookupTimeout = 500 * time.Millisecond

// FromFleet reports whether the entry came from the remote tier: another
// fleet member's answer.
func (e *Entry) FromFleet() bool { return e.fromFleet }

// SetRemote adds a shared second tier (nil: none). Call it before the
// cache serves.
func (c *Cache) SetRemote(r Remote) {
	c.remote = r
}

type noRemote struct{}

// NoRemote marks a Do whose caller asked for a fresh answer
// (Cache-Control: no-cache): it neither reads another member's copy nor
// waits for another member's fetch, and still shares its own answer.
func NoRemote(ctx context.Context) context.Context {
	return context.WithValue(ctx, noRemote{}, true)
}

// fetchShared is Do's fetch in fleet mode: the remote copy, else another
// member's fetch under way, else this one under the fill lock, shared
// when done.
func (c *Cache) fetchShared(ctx context.Context, key string, since uint64, ahead AheadFunc, fetch FetchFunc, read bool) (any, error) {
	lock := ""
	if read {
		lctx, drop := ctx, func() {}
		if ahead != nil {
			lctx = WithTogether(ctx)
			// Not ended with the fetch: a grant taken after a remote
			// hit must come back to be given back, not be abandoned.
			drop = ahead(context.WithoutCancel(lctx))
		}
		var e *Entry
		if lock, e = c.remoteFill(lctx, key, since, drop); e != nil {
			return fetchResult{entry: e}, nil
		}
	}
	if lock != "" {
		stop := c.renew(ctx, key, lock)
		defer func() {
			stop()
			// A failed, uncacheable or panicking fetch hands over at
			// once, not after the lock's lease.
			if lock != "" {
				c.remoteErr(c.remote.Unlock(ctx, key, lock))
			}
		}()
	}
	e, store, err := fetch(ctx)
	if err == nil && store && e != nil {
		c.set(key, e, since, true)
		if !c.purgedSince(e.Provider, since) {
			if v, ok := EncodeEntry(e); ok {
				now := time.Now()
				if keep := e.keep().Sub(now); keep > 0 {
					c.remoteErr(c.remote.Store(ctx, key, v, e.ExpiresAt.Sub(now), keep, lock))
					lock = "" // released by Store (or expiring by itself)
				}
			}
		}
	}
	return fetchResult{entry: e}, err
}

// remoteFill looks key up in the remote tier until it has a fresh entry
// (stored locally and returned) or the fill lock (its token), or the
// remote fails (""): then this member fetches on its own.
//
// drop undoes the work started beside the first lookup (AheadFunc) once
// the fetch will not follow at once.
func (c *Cache) remoteFill(ctx context.Context, key string, since uint64, drop func()) (string, *Entry) {
	wait := remotePollMin
	// A stale copy is read once, not again at every poll of a wait.
	stale := true
	for {
		sent := time.Now()
		lctx, cancel := context.WithTimeout(ctx, remoteLookupTimeout)
		f, err := c.remote.Lookup(lctx, key, stale)
		cancel()
		if err != nil {
			c.remoteErr(err)
			return "", nil
		}
		if f.Value != nil && f.Keep > 0 {
			e, err := DecodeEntry(f.Value)
			if p, _, ok := strings.Cut(key, ":"); err == nil && ok && p != e.Provider {
				err = errBadEntry
			}
			if err != nil {
				c.remoteErr(err)
				return f.Lock, nil
			}
			// The remote store's remaining times, counted from before
			// the lookup was sent, bound the writer's instants: a host
			// whose clock is behind the writer's must not keep the
			// entry longer (invariant 5).
			e.ExpiresAt = earliest(e.ExpiresAt, sent.Add(min(f.Fresh, f.Keep)))
			if !e.KeepUntil.IsZero() {
				e.KeepUntil = earliest(e.KeepUntil, sent.Add(f.Keep))
			}
			if time.Now().Before(e.ExpiresAt) {
				e.fromFleet = true
				drop()
				c.set(key, e, since, true)
				c.remoteHits.Add(1)
				return "", e
			}
			// Stale but kept: here for the stale fallback (stale_if_
			// exhausted) if this member's fetch cannot be had.
			c.set(key, e, since, true)
			stale = false
		}
		if f.Lock != "" || !f.Wait {
			return f.Lock, nil
		}
		// Another member is fetching: wait for its answer.
		drop()
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return "", nil
		case <-t.C:
		}
		wait = min(2*wait, remotePollMax)
	}
}

// renew keeps the fill lock while the fetch runs, until stop.
func (c *Cache) renew(ctx context.Context, key, lock string) (stop func()) {
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(RemoteRenew)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				c.remoteErr(c.remote.Renew(ctx, key, lock))
			}
		}
	}()
	return func() {
		close(done)
		<-ended
	}
}

func (c *Cache) remoteErr(err error) {
	if err != nil {
		c.remoteErrors.Add(1)
	}
}

// purgedSince reports whether provider was purged after epoch since.
func (c *Cache) purgedSince(provider string, since uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.purgedAt[provider] > since || c.allPurgedAt > since
}

// purgeRemote purges the remote tier too, bounded: a purge is a
// caller's request, answered promptly.
func (c *Cache) purgeRemote(provider string) {
	if c.remote == nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.closeCtx, remoteTimeout)
	defer cancel()
	c.remoteErr(c.remote.Purge(ctx, provider))
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// entryMagic starts every encoded entry; a change of layout changes it.
const entryMagic = "SE1"

// maxRemoteEntry bounds an encoded entry: what the gateway buffers for
// the cache (8 MiB) plus headers.
const maxRemoteEntry = 9 << 20

// EncodeEntry returns e in the host-free form the remote tier stores:
// links to sluice stay under their marker, with its offsets, to get each
// reader's base when served. ok is false for an entry too large.
func EncodeEntry(e *Entry) (b []byte, ok bool) {
	b = append(make([]byte, 0, 256+len(e.Body)), entryMagic...)
	b = appendString(b, e.Provider)
	b = binary.AppendUvarint(b, uint64(max(e.Status, 0)))
	b = binary.AppendVarint(b, unixNano(e.StoredAt))
	b = binary.AppendVarint(b, unixNano(e.ExpiresAt))
	b = binary.AppendVarint(b, unixNano(e.KeepUntil))
	b = binary.AppendUvarint(b, uint64(len(e.Header)))
	for name, values := range e.Header {
		b = appendString(b, name)
		b = binary.AppendUvarint(b, uint64(len(values)))
		for _, v := range values {
			b = appendString(b, v)
		}
	}
	b = appendString(b, e.marker)
	b = binary.AppendUvarint(b, uint64(len(e.baseAt)))
	for _, at := range e.baseAt {
		b = binary.AppendUvarint(b, uint64(at))
	}
	b = append(b, e.Body...)
	return b, len(b) <= maxRemoteEntry
}

// DecodeEntry reverses EncodeEntry. It trusts nothing it reads: every
// length is bounded by what is left, and each link offset must point at
// the marker, so a damaged value can never splice a base into a body.
func DecodeEntry(b []byte) (*Entry, error) {
	d := decoder{b: b}
	if !strings.HasPrefix(string(b[:min(len(b), len(entryMagic))]), entryMagic) {
		return nil, errBadEntry
	}
	d.b = d.b[len(entryMagic):]
	e := &Entry{Provider: d.str(), Status: int(d.uint(999)), StoredAt: fromNano(d.int()), ExpiresAt: fromNano(d.int()), KeepUntil: fromNano(d.int())}
	if n := d.uint(uint64(len(d.b))); n > 0 {
		e.Header = make(http.Header, n)
		for range n {
			name := d.str()
			vals := make([]string, d.uint(uint64(len(d.b))))
			for i := range vals {
				vals[i] = d.str()
			}
			e.Header[name] = vals
		}
	} else {
		e.Header = http.Header{}
	}
	e.marker = d.str()
	if n := d.uint(uint64(len(d.b))); n > 0 {
		e.baseAt = make([]int, n)
		for i := range e.baseAt {
			e.baseAt[i] = int(d.uint(maxRemoteEntry))
		}
	}
	if d.bad {
		return nil, errBadEntry
	}
	e.Body = d.b
	prev := 0
	for _, at := range e.baseAt {
		if e.marker == "" || at < prev || at+len(e.marker) > len(e.Body) || string(e.Body[at:at+len(e.marker)]) != e.marker {
			return nil, errBadEntry
		}
		prev = at + len(e.marker)
	}
	if len(e.baseAt) == 0 {
		e.marker = ""
	}
	return e, nil
}

var errBadEntry = errors.New("cache: damaged remote entry")

type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) uint(limit uint64) uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > limit {
		d.bad, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.bad, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string {
	n := d.uint(uint64(len(d.b)))
	if d.bad || n > uint64(len(d.b)) {
		d.bad = true
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
