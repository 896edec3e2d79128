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

// guardKey is the record of one operation. name is chosen by the caller
// (provider and a hash of the operation's parameters): it holds no secret.
func (q *Client) guardKey(name string) string {
	return q.prefix + ":guard:" + name
}

// claimScript claims a guard record: SET NX PX with the guard window, but
// a confirmed repeat may replace a record that is not in flight. The value
// is "state|claimed_at_ms|token|purchase_id"; the clock is Redis's.
//
// A record in flight for longer than ARGV[4] belongs to a member that
// died mid-operation: it is reported (and treated) as unknown.
//
//	ARGV[1] window ms, ARGV[2] confirm "1"/"0", ARGV[3] token, ARGV[4] in-flight bound ms
//	returns {1} or {0, state, age_ms, purchase_id}
var claimScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('GET', KEYS[1])
if v then
  local s, at, _, id = string.match(v, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
  if s == 'in_flight' and now - tonumber(at) > tonumber(ARGV[4]) then s = 'unknown' end
  if s == 'in_flight' or ARGV[2] ~= '1' then
    return {0, s, now - tonumber(at), id}
  end
end
redis.call('SET', KEYS[1], 'in_flight|' .. now .. '|' .. ARGV[3] .. '|', 'PX', tonumber(ARGV[1]))
return {1}
`)

// settleScript records an outcome under a claim, if the claim is still
// the record's (a record that expired and was claimed again is another
// member's): KEEPTTL, so the window still runs from the claim.
//
//	ARGV[1] token, ARGV[2] state ("" = release), ARGV[3] purchase id
var settleScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local s, at, tok = string.match(v, '^([^|]*)|([^|]*)|([^|]*)|')
if tok ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2] .. '|' .. at .. '|' .. tok .. '|' .. ARGV[3], 'KEEPTTL')
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
	res, err := claimScript.Run(ctx, q.rdb, []string{q.guardKey(name)}, window.Milliseconds(), c, token, inFlight.Milliseconds()).Slice()
	if err != nil {
		return false, "", GuardRecord{}, fmt.Errorf("fleet: purchase guard: %w", err)
	}
	if ok, _ := res[0].(int64); ok == 1 {
		return true, token, GuardRecord{}, nil
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
	if err := settleScript.Run(ctx, q.rdb, []string{q.guardKey(name)}, token, state, purchaseID).Err(); err != nil {
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
