package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Guard states, as GuardRecord.State holds them.
const (
	GuardInFlight = "in_flight" // claimed, sent or about to be, no answer yet
	GuardDone     = "done"      // the upstream answered with a result
	GuardUnknown  = "unknown"   // no clear answer: it may have happened
)

// GuardRecord is what the fleet knows of an earlier paying operation.
type GuardRecord struct {
	State      string
	Age        time.Duration // since it was claimed, on the fleet's clock
	PurchaseID string
}

// guardKeys are the fleet's guard records, in one hash slot: a hash of
// records (operation name → record) and their expiry instants (a sorted
// set, operation name → µs), by which every claim trims the expired ones.
// The operation name is chosen by the caller (provider and a hash of the
// operation's parameters): it holds no secret.
//
// No guard key has a Redis TTL: the window is kept in the record, on
// Redis's clock, and a record past it counts as absent. A key with a TTL
// is one maxmemory-policy volatile-lru (what docs/fleet.md recommends, so
// that Redis under memory pressure drops the shared cache's copies) may
// evict, and an evicted record would let an identical purchase be charged
// again on another member within its window.
func (q *Client) guardKeys() []string {
	tag := "{" + q.prefix + ":guard}"
	return []string{tag + ":records", tag + ":expiry"}
}

// guardTrim bounds how many expired records one claim deletes, so a claim
// after a long quiet spell stays a short script; each claim adds at most
// one record, so the expired ones still go.
const guardTrim = 64

// claimScript claims a guard record, as SET NX would (with the guard
// window, kept in the record): but a confirmed repeat may replace a
// record that is not in flight, and a record past its window counts as
// absent. The record is "state|claimed_at_us|expires_us|token|purchase_id",
// its expiry also in the sorted set; the clock is Redis's.
//
// A record in flight for longer than ARGV[4] belongs to a member that
// died mid-operation: it is reported (and treated) as unknown.
//
//	KEYS records, expiry
//	ARGV[1] window µs, ARGV[2] confirm "1"/"0", ARGV[3] token,
//	ARGV[4] in-flight bound µs, ARGV[5] name, ARGV[6] trim batch
//	returns {1} or {0, state, age_ms, purchase_id}
var claimScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))) do
  redis.call('HDEL', KEYS[1], n)
  redis.call('ZREM', KEYS[2], n)
end
local v = redis.call('HGET', KEYS[1], ARGV[5])
if v then
  local s, at, exp, _, id = string.match(v, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  at, exp = tonumber(at), tonumber(exp)
  if at and exp and exp > now then
    if s == 'in_flight' and now - at > tonumber(ARGV[4]) then s = 'unknown' end
    if s == 'in_flight' or ARGV[2] ~= '1' then
      return {0, s, math.floor((now - at) / 1000), id}
    end
  end
end
local exp = now + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], ARGV[5], 'in_flight|' .. string.format('%.0f', now) .. '|' .. string.format('%.0f', exp) .. '|' .. ARGV[3] .. '|')
redis.call('ZADD', KEYS[2], exp, ARGV[5])
return {1}
`)

// settleScript records an outcome under a claim, if the claim is still
// the record's (a record that expired and was claimed again is another
// member's) and has not expired: the expiry is kept, so the window still
// runs from the claim. An expired record it meets is deleted.
//
//	KEYS records, expiry
//	ARGV[1] token, ARGV[2] state ("" = release), ARGV[3] purchase id, ARGV[4] name
var settleScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[4])
if not v then return 0 end
local _, at, exp, tok = string.match(v, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if not (tonumber(exp) and tonumber(exp) > now) then
  redis.call('HDEL', KEYS[1], ARGV[4])
  redis.call('ZREM', KEYS[2], ARGV[4])
  return 0
end
if tok ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[4])
  redis.call('ZREM', KEYS[2], ARGV[4])
else
  redis.call('HSET', KEYS[1], ARGV[4], ARGV[2] .. '|' .. at .. '|' .. exp .. '|' .. tok .. '|' .. ARGV[3])
end
return 1
`)

// ClaimGuard claims the fleet's guard record name for window, before the
// operation it guards is sent. claimed is false when an identical
// operation holds the record (prev says what the fleet knows of it); an
// error means nothing is known, and the operation must not be sent. A
// confirmed repeat replaces a record that is done or unknown, never one
// in flight. A record in flight for longer than inFlight (0: the window)
// is a dead member's: unknown. token names the claim for SettleGuard.
func (q *Client) ClaimGuard(ctx context.Context, name string, window, inFlight time.Duration, confirm bool) (claimed bool, token string, prev GuardRecord, err error) {
	if window < time.Millisecond {
		window = time.Millisecond
	}
	if inFlight <= 0 {
		inFlight = window
	}
	token = newToken()
	c := "0"
	if confirm {
		c = "1"
	}
	res, err := q.run(ctx, claimScript, q.guardKeys(), window.Microseconds(), c, token, inFlight.Microseconds(), name, guardTrim).Slice()
	if err != nil {
		return false, "", GuardRecord{}, fmt.Errorf("fleet: purchase guard: %w", err)
	}
	if len(res) > 0 {
		if ok, _ := res[0].(int64); ok == 1 {
			return true, token, GuardRecord{}, nil
		}
	}
	if len(res) != 4 {
		return false, "", GuardRecord{}, fmt.Errorf("fleet: purchase guard script answered %v", res)
	}
	s, _ := res[1].(string)
	age, _ := res[2].(int64)
	id, _ := res[3].(string)
	return false, "", GuardRecord{State: s, Age: time.Duration(age) * time.Millisecond, PurchaseID: id}, nil
}

// SettleGuard records how the operation claimed under token ended: state
// GuardDone (with its purchase id) or GuardUnknown; release frees the
// record (the operation certainly did not happen). A record no longer
// the claim's is left alone.
func (q *Client) SettleGuard(ctx context.Context, name, token, state, purchaseID string, release bool) error {
	if release {
		state = ""
	} else if state != GuardDone && state != GuardUnknown {
		return fmt.Errorf("fleet: purchase guard: unknown state %q", state)
	}
	if err := q.run(ctx, settleScript, q.guardKeys(), token, state, purchaseID, name).Err(); err != nil {
		return fmt.Errorf("fleet: purchase guard: %w", err)
	}
	return nil
}

// newToken names one claim or lease: random, so a member never mistakes
// another's record for its own.
func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
