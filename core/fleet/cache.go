package fleet

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/core/cache"
)

// Cache is the fleet's shared cache tier (cache.Remote): the answers one
// member fetched, for the others to serve without another upstream
// request, and the fill locks that make identical misses on several
// members cost one upstream request.
//
// Every key has a TTL (an entry's ends no later than its keep time, a
// lock's after its lease), so a maxmemory-policy of volatile-lru evicts
// cache keys and never the scheduler's, which have none. An entry is
// stored as the fleet clock's fresh-until instant, a newline and the
// host-free entry (cache.EncodeEntry); lookups answer with times
// remaining by that clock, so hosts' clocks never stretch an entry's life.
type Cache struct {
	q       *Client
	id      string // this member's, to skip its own purge notices
	channel string
	trips   atomic.Int64

	stop context.CancelFunc
	done sync.WaitGroup
}

// lockTTL is a fill lock's lease: three renewals, so a member that dies
// mid-fetch holds its waiters for at most this long.
const lockTTL = 3 * cache.RemoteRenew

// handOver is how long an unlocked key tells the members that waited for
// it to fetch on their own rather than queue for the lock one by one.
const handOver = time.Second

// Cache returns the fleet's cache tier. onPurge (if set) is called with a
// provider ("" for all) when another member purges the fleet's cache, to
// purge this member's local copies; Close stops listening.
func (q *Client) Cache(onPurge func(provider string)) *Cache {
	c := &Cache{q: q, id: randomToken(), channel: q.prefix + ":cache:purge", stop: func() {}}
	if onPurge != nil {
		ctx, cancel := context.WithCancel(context.Background())
		c.stop = cancel
		sub := q.rdb.Subscribe(ctx, c.channel)
		c.done.Add(1)
		go func() {
			defer c.done.Done()
			defer sub.Close()
			ch := sub.Channel()
			for {
				select {
				case <-ctx.Done():
					return
				case m, ok := <-ch:
					if !ok {
						return
					}
					if from, provider, ok := strings.Cut(m.Payload, "|"); ok && from != c.id {
						onPurge(provider)
					}
				}
			}
		}()
	}
	return c
}

// Close stops listening for other members' purges.
func (c *Cache) Close() {
	c.stop()
	c.done.Wait()
}

// Trips counts the round trips to Redis made so far (a script's first
// run after Redis restarts costs one more, to load it).
func (c *Cache) Trips() int64 { return c.trips.Load() }

// keys of one cache key: the entry and its fill lock, in one hash slot.
// The cache key is hashed again to bound the Redis key's length; the
// provider stays readable so a purge can find a provider's keys.
func (c *Cache) keys(key string) []string {
	provider, _, ok := strings.Cut(key, ":")
	if !ok {
		provider = "_"
	}
	sum := sha256.Sum256([]byte(key))
	k := c.q.prefix + ":cache:" + provider + ":{" + hex.EncodeToString(sum[:16]) + "}"
	return []string{k, k + ":lock"}
}

// lookupScript reads an entry, and when it is not fresh takes the fill
// lock unless another member holds it: one round trip per miss.
//
//	ARGV[1] lock lease ms, ARGV[2] token, ARGV[3] '1' for a stale value
//	returns {state, value, fresh ms, keep ms}; state 1 fresh, 0 locked
//	for the caller, 2 another member fetches, 3 fetch on your own
var lookupScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('GET', KEYS[1])
local fresh, keep = 0, 0
if v then
  local nl = string.find(v, '\n', 1, true)
  if nl then
    fresh = tonumber(string.sub(v, 1, nl - 1)) - now
    keep = redis.call('PTTL', KEYS[1])
    v = string.sub(v, nl + 1)
    if fresh > 0 and keep > 0 then return {1, v, fresh, keep} end
    if ARGV[3] ~= '1' then v = '' end
  else
    v = ''
  end
else
  v = ''
end
local l = redis.call('GET', KEYS[2])
if l == '-' then return {3, v, fresh, keep} end
if l then return {2, v, fresh, keep} end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
return {0, v, fresh, keep}
`)

// storeScript stores an entry until its keep time (PX), fresh until the
// fleet clock's now + fresh, and releases the caller's fill lock.
//
//	ARGV[1] entry, ARGV[2] fresh ms, ARGV[3] keep ms, ARGV[4] token or ''
var storeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])) .. '\n' .. ARGV[1], 'PX', ARGV[3])
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
return 1
`)

// renewScript extends the caller's fill lock; unlockScript turns it into
// the hand-over mark.
//
//	ARGV[1] token, ARGV[2] ms
var (
	renewScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 0
`)
	unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('SET', KEYS[2], '-', 'PX', ARGV[2]) return 1 end
return 0
`)
)

// Lookup implements cache.Remote.
func (c *Cache) Lookup(ctx context.Context, key string, stale bool) (cache.RemoteFound, error) {
	token := randomToken()
	c.trips.Add(1)
	want := ""
	if stale {
		want = "1"
	}
	res, err := c.q.runPaired(ctx, lookupScript, c.keys(key), lockTTL.Milliseconds(), token, want).Slice()
	if err != nil {
		return cache.RemoteFound{}, fmt.Errorf("fleet: cache lookup: %w", err)
	}
	if len(res) != 4 {
		return cache.RemoteFound{}, fmt.Errorf("fleet: cache lookup answered %d values", len(res))
	}
	state, _ := res[0].(int64)
	v, _ := res[1].(string)
	fresh, _ := res[2].(int64)
	keep, _ := res[3].(int64)
	f := cache.RemoteFound{Fresh: time.Duration(fresh) * time.Millisecond, Keep: time.Duration(keep) * time.Millisecond}
	if v != "" {
		f.Value = []byte(v)
	}
	switch state {
	case 0:
		f.Lock = token
	case 2:
		f.Wait = true
	}
	return f, nil
}

// Store implements cache.Remote.
func (c *Cache) Store(ctx context.Context, key string, value []byte, fresh, keep time.Duration, lock string) error {
	if keep.Milliseconds() <= 0 {
		// Rounded down, never up: a copy must not outlive the entry.
		return nil
	}
	c.trips.Add(1)
	if err := c.q.run(ctx, storeScript, c.keys(key), value, fresh.Milliseconds(), keep.Milliseconds(), lock).Err(); err != nil {
		return fmt.Errorf("fleet: cache store: %w", err)
	}
	return nil
}

// Renew implements cache.Remote.
func (c *Cache) Renew(ctx context.Context, key, lock string) error {
	c.trips.Add(1)
	// A renewal needs no answer before the fetch goes on, and the lease
	// outlasts the renewal period twice over: it rides with the member's
	// next round trip (rides.go), as a waiting miss renews every second.
	return c.q.laterWait(ctx, ride{what: "cache lock renew", script: renewScript, keys: c.keys(key),
		args: []any{lock, lockTTL.Milliseconds()}})
}

// Unlock implements cache.Remote.
func (c *Cache) Unlock(ctx context.Context, key, lock string) error {
	c.trips.Add(1)
	if err := c.q.run(ctx, unlockScript, c.keys(key), lock, handOver.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("fleet: cache unlock: %w", err)
	}
	return nil
}

// Purge implements cache.Remote: it deletes provider's entries ("" for
// all) from Redis, then tells the other members, which purge their local
// copies. A member that is cut off from Redis at that moment misses the
// notice and keeps its local copies until they expire.
func (c *Cache) Purge(ctx context.Context, provider string) error {
	pattern := c.q.prefix + ":cache:*"
	if provider != "" {
		pattern = c.q.prefix + ":cache:" + globEscape(provider) + ":*"
	}
	scan := func(ctx context.Context, rdb redis.UniversalClient) error {
		var cursor uint64
		for {
			c.trips.Add(1)
			keys, next, err := rdb.Scan(ctx, cursor, pattern, 1000).Result()
			if err != nil {
				return err
			}
			if len(keys) > 0 {
				// One UNLINK per key, pipelined: on Cluster a batch's
				// keys may lie in different slots.
				c.trips.Add(1)
				if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
					for _, k := range keys {
						p.Unlink(ctx, k)
					}
					return nil
				}); err != nil {
					return err
				}
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	var err error
	if cc, ok := c.q.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return scan(ctx, m) })
	} else {
		err = scan(ctx, c.q.rdb)
	}
	c.trips.Add(1)
	err = errors.Join(err, c.q.rdb.Publish(ctx, c.channel, c.id+"|"+provider).Err())
	if err != nil {
		return fmt.Errorf("fleet: cache purge: %w", err)
	}
	return nil
}

func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func randomToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
