package fleet

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// A bucket with max_in_flight = n (Spotify's: one request on its way at
// a time, so a 429 is always read before the next request leaves) has n
// turns fleet-wide: n lease keys, each taken by one member for one request
// (as SET NX PX would) and renewed while the request runs. A member that
// dies holding one loses it when the lease expires; a release deletes it
// only if it is still the holder's (compare-and-delete), so a lease that
// expired and was taken by another member is never freed by mistake.
//
// No lease key has a Redis TTL: a lease is "token|expires_us", on Redis's
// clock, and one past its expiry is free to take. A key with a TTL is one
// maxmemory-policy volatile-lru (what docs/fleet.md recommends, so that
// Redis under memory pressure drops the shared cache's copies) may evict,
// and an evicted lease would put two requests in flight. The keys do not
// pile up: a bucket has its n, reused.

// leaseKeys are a bucket's turn keys, in the bucket's hash slot.
func (q *Client) leaseKeys(bucket string, slots int) []string {
	tag := "{" + q.prefix + ":" + bucket + "}"
	keys := make([]string, max(slots, 1))
	for i := range keys {
		keys[i] = tag + ":turn:" + strconv.Itoa(i)
	}
	return keys
}

// takeLeaseScript takes the first free turn: one never taken, given back
// or past its expiry.
//
//	ARGV[1] token, ARGV[2] ttl µs
//	returns {slot} (0-based) or {-1, µs until the first lease expires}
var takeLeaseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local least = -1
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  local exp = v and tonumber(string.match(v, '|(%d+)$'))
  if not exp or exp <= now then
    redis.call('SET', k, ARGV[1] .. '|' .. string.format('%.0f', now + tonumber(ARGV[2])))
    return {i - 1}
  end
  if least < 0 or exp - now < least then least = exp - now end
end
return {-1, least}
`)

// renewLeaseScript extends a lease to ttl from now, if it is still the
// holder's and has not expired (one that has may be another's by now).
//
//	ARGV[1] token, ARGV[2] ttl µs
var renewLeaseScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local tok, exp = string.match(v, '^([^|]*)|(%d+)$')
if tok ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if tonumber(exp) <= now then return 0 end
redis.call('SET', KEYS[1], tok .. '|' .. string.format('%.0f', now + tonumber(ARGV[2])))
return 1
`)

// releaseLeaseScript deletes a lease, if it is still the holder's (a
// lease past its expiry that nobody has taken since still is).
var releaseLeaseScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^([^|]*)|') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Lease is one turn held in a bucket.
type Lease struct {
	Slot  int
	Token string
}

// TakeLease takes one of bucket's slots turns for ttl, in one round trip.
// ok is false when all are held; wait is then how long until the first
// lease expires by itself (an upper bound on when to ask again; a
// holder's release frees it sooner).
func (q *Client) TakeLease(ctx context.Context, bucket string, slots int, ttl time.Duration) (l Lease, ok bool, wait time.Duration, err error) {
	token := newToken()
	res, err := q.run(ctx, takeLeaseScript, q.leaseKeys(bucket, slots), token, leaseTTL(ttl)).Int64Slice()
	if err != nil || len(res) == 0 {
		return Lease{}, false, 0, fmt.Errorf("fleet: in-flight lease: %v", errOr(err, res))
	}
	if res[0] >= 0 {
		return Lease{Slot: int(res[0]), Token: token}, true, 0, nil
	}
	if len(res) > 1 && res[1] > 0 {
		wait = time.Duration(res[1]) * time.Microsecond
	}
	return Lease{}, false, wait, nil
}

// RenewLease extends a held lease to ttl from now; false if it is no
// longer the holder's (it expired, and may be another member's now).
func (q *Client) RenewLease(ctx context.Context, bucket string, l Lease, ttl time.Duration) (bool, error) {
	n, err := q.run(ctx, renewLeaseScript, []string{q.leaseKeys(bucket, l.Slot+1)[l.Slot]}, l.Token, leaseTTL(ttl)).Int64()
	if err != nil {
		return false, fmt.Errorf("fleet: in-flight lease: %w", err)
	}
	return n == 1, nil
}

// ReleaseLease gives a lease back, if it is still the holder's.
func (q *Client) ReleaseLease(ctx context.Context, bucket string, l Lease) error {
	if err := q.run(ctx, releaseLeaseScript, []string{q.leaseKeys(bucket, l.Slot+1)[l.Slot]}, l.Token).Err(); err != nil {
		return fmt.Errorf("fleet: in-flight lease: %w", err)
	}
	return nil
}

// leaseTTL is a lease's ttl as the scripts take it: µs, at least 1 ms.
func leaseTTL(ttl time.Duration) int64 { return max(ttl, time.Millisecond).Microseconds() }

func errOr(err error, res []int64) any {
	if err != nil {
		return err
	}
	return fmt.Sprintf("script answered %v", res)
}
