package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
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
	return []string{tag + ":records", tag + ":expiry", tag + ":born"}
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
// The born key says when the store's guard records began: set at the
// first claim of a fleet or the first after Redis lost them (a restart
// empty, FLUSHALL). For ARGV[7] from then every claim is held ({-1}): each
// live member notices at its next heartbeat that the records it knows of
// were lost and writes them back (restoreScript) before anyone may buy.
//
//	KEYS records, expiry, born
//	ARGV[1] window µs, ARGV[2] confirm "1"/"0", ARGV[3] token,
//	ARGV[4] in-flight bound µs, ARGV[5] name, ARGV[6] trim batch,
//	ARGV[7] hold µs
//	returns {1, born}, {0, state, age_ms, purchase_id, left_ms, born} or
//	{-1, wait_ms}
var claimScript = redis.NewScript(guardBornLua + `
if now < born_at + tonumber(ARGV[7]) then
  return {-1, math.ceil((born_at + tonumber(ARGV[7]) - now) / 1000)}
end
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
      return {0, s, math.floor((now - at) / 1000), id, math.ceil((exp - now) / 1000), born}
    end
  end
end
local exp = now + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], ARGV[5], 'in_flight|' .. string.format('%.0f', now) .. '|' .. string.format('%.0f', exp) .. '|' .. ARGV[3] .. '|')
redis.call('ZADD', KEYS[2], exp, ARGV[5])
return {1, born}
`)

// guardBornLua reads the store's born key (KEYS[3]), creating it when
// missing: born is its value ("µs-random"), born_at its instant, now
// Redis's.
const guardBornLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local born = redis.call('GET', KEYS[3])
if not born then
  born = string.format('%.0f', now) .. '-' .. ARGV[#ARGV]
  redis.call('SET', KEYS[3], born)
end
local born_at = tonumber(string.match(born, '^(%d+)'))
`

// restoreScript writes back guard records a member knows of into a store
// that lost them (born is not the one the member saw them under), each
// with its age and what is left of its window, on Redis's clock: a record
// the store holds already (claimed since) is left alone. It returns the
// born value the records now live under.
//
//	KEYS records, expiry, born
//	ARGV: groups of name, state, age µs, left µs, token, purchase id;
//	then a random suffix for a new born
var restoreScript = redis.NewScript(guardBornLua + `
for i = 1, #ARGV - 6, 6 do
  local name = ARGV[i]
  local v = redis.call('HGET', KEYS[1], name)
  local live = false
  if v then
    local exp = tonumber(string.match(v, '^[^|]*|[^|]*|([^|]*)|'))
    live = exp and exp > now
  end
  if not live then
    local at = now - tonumber(ARGV[i + 2])
    local exp = now + tonumber(ARGV[i + 3])
    redis.call('HSET', KEYS[1], name, ARGV[i + 1] .. '|' .. string.format('%.0f', at) .. '|' .. string.format('%.0f', exp) .. '|' .. ARGV[i + 4] .. '|' .. ARGV[i + 5])
    redis.call('ZADD', KEYS[2], exp, name)
  end
end
return born
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

// HeldError refuses a claim while the store's guard records are new (a
// fleet's first claim, or Redis lost them): the members are writing back
// the records they know of. Wait is when claims are taken again.
type HeldError struct{ Wait time.Duration }

func (e *HeldError) Error() string {
	return fmt.Sprintf("fleet: purchase guard: the store's guard records were lost or are new; claims are held for %s while every member writes back the purchases it knows of", e.Wait)
}

// ClaimGuard claims the fleet's guard record name for window, before the
// operation it guards is sent. claimed is false when an identical
// operation holds the record (prev says what the fleet knows of it); an
// error means nothing is known, and the operation must not be sent (a
// *HeldError says when to ask again). A confirmed repeat replaces a record
// that is done or unknown, never one in flight. A record in flight for
// longer than inFlight (0: the window) is a dead member's: unknown. token
// names the claim for SettleGuard.
//
// The member remembers what it claimed and what it was told of others'
// finished operations until their windows end, and writes them back into a
// store that lost them (see restoreGuards).
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
	res, err := q.run(ctx, claimScript, q.guardKeys(), window.Microseconds(), c, token, inFlight.Microseconds(), name, guardTrim,
		q.restartHold.Microseconds(), newToken()).Slice()
	answered := time.Now()
	if err != nil {
		return false, "", GuardRecord{}, fmt.Errorf("fleet: purchase guard: %w", err)
	}
	code := int64(-2)
	if len(res) > 0 {
		code, _ = res[0].(int64)
	}
	switch {
	case code == 1 && len(res) == 2:
		born, _ := res[1].(string)
		// The claim's instant is taken after the answer: a record written
		// back lives as long or longer than the store's, never shorter.
		q.memos.remember(name, guardMemo{state: GuardInFlight, token: token, at: answered, until: answered.Add(window), born: born})
		return true, token, GuardRecord{}, nil
	case code == -1 && len(res) == 2:
		ms, _ := res[1].(int64)
		return false, "", GuardRecord{}, &HeldError{Wait: time.Duration(ms) * time.Millisecond}
	case code == 0 && len(res) == 6:
		s, _ := res[1].(string)
		age, _ := res[2].(int64)
		id, _ := res[3].(string)
		left, _ := res[4].(int64)
		born, _ := res[5].(string)
		prev = GuardRecord{State: s, Age: time.Duration(age) * time.Millisecond, PurchaseID: id}
		if s == GuardDone || s == GuardUnknown {
			// Another member's finished operation: kept here too, so
			// the fleet still refuses a repeat if the store forgets it
			// while that member is down. (One in flight is its owner's
			// to settle.)
			q.memos.learn(name, guardMemo{state: s, purchaseID: id, at: answered.Add(-prev.Age),
				until: answered.Add(time.Duration(left) * time.Millisecond), born: born})
		}
		return false, "", prev, nil
	}
	return false, "", GuardRecord{}, fmt.Errorf("fleet: purchase guard script answered %v", res)
}

// SettleGuard records how the operation claimed under token ended: state
// GuardDone (with its purchase id) or GuardUnknown; release frees the
// record (the operation certainly did not happen). A record no longer
// the claim's is left alone. The member's own memory of the claim is
// settled first, so a record the store lost is written back settled.
func (q *Client) SettleGuard(ctx context.Context, name, token, state, purchaseID string, release bool) error {
	if release {
		state = ""
	} else if state != GuardDone && state != GuardUnknown {
		return fmt.Errorf("fleet: purchase guard: unknown state %q", state)
	}
	q.memos.settle(name, token, state, purchaseID)
	if err := q.run(ctx, settleScript, q.guardKeys(), token, state, purchaseID, name).Err(); err != nil {
		return fmt.Errorf("fleet: purchase guard: %w", err)
	}
	return nil
}

// guardMemo is a guard record as a member remembers it, on its own clock.
type guardMemo struct {
	state, token, purchaseID string
	at, until                time.Time
	// born is the store's born value the record was last seen under: a
	// store whose born differs has lost it.
	born string
}

// guardMemos are the guard records a member knows of: its own claims, and
// others' finished operations it was told of. A store restarted empty
// forgets the fleet's records; the members write back what they remember
// while the store holds every claim (claimScript), so a purchase made on
// one host is still refused as a repeat on another.
type guardMemos struct {
	mu sync.Mutex
	m  map[string]guardMemo
}

func (g *guardMemos) remember(name string, m guardMemo) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]guardMemo{}
	}
	g.m[name] = m
}

// learn keeps another member's record unless this member knows one of its
// own that ends later.
func (g *guardMemos) learn(name string, m guardMemo) {
	g.mu.Lock()
	old, ok := g.m[name]
	g.mu.Unlock()
	if ok && old.until.After(m.until) {
		return
	}
	g.remember(name, m)
}

// settle updates this member's claim; "" state forgets it.
func (g *guardMemos) settle(name, token, state, purchaseID string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.m[name]
	if !ok || m.token != token {
		return
	}
	if state == "" {
		delete(g.m, name)
		return
	}
	m.state, m.purchaseID = state, purchaseID
	g.m[name] = m
}

// stale drops the records whose windows have ended and returns those not
// seen under born, the store's current one ("" unknown: all).
func (g *guardMemos) stale(now time.Time, born string) map[string]guardMemo {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]guardMemo{}
	for n, m := range g.m {
		if !m.until.After(now) {
			delete(g.m, n)
			continue
		}
		if born == "" || m.born != born {
			out[n] = m
		}
	}
	return out
}

// seen marks records as living under born, unless they changed meanwhile.
func (g *guardMemos) seen(done map[string]guardMemo, born string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for n, was := range done {
		if m, ok := g.m[n]; ok && m == was {
			m.born = born
			g.m[n] = m
		}
	}
}

// restoreGuards writes back, into a store that lost them, the guard records
// this member remembers: called at every heartbeat, it costs a round trip
// only while the member remembers a record. all writes back every one (a
// failover to a replica may have lost the last writes, not the born key).
// A record the store holds already is left alone.
func (q *Client) restoreGuards(ctx context.Context, all bool) error {
	now := time.Now()
	if len(q.memos.stale(now, "")) == 0 {
		return nil
	}
	born := ""
	if !all {
		var err error
		born, err = q.rdb.Get(ctx, q.guardKeys()[2]).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("fleet: purchase guard: %w", err)
		}
	}
	lost := q.memos.stale(now, born)
	if len(lost) == 0 {
		return nil
	}
	args := make([]any, 0, 6*len(lost)+1)
	for n, m := range lost {
		args = append(args, n, m.state, max(now.Sub(m.at), 0).Microseconds(), m.until.Sub(now).Microseconds(), m.token, m.purchaseID)
	}
	args = append(args, newToken())
	nb, err := q.run(ctx, restoreScript, q.guardKeys(), args...).Text()
	if err != nil {
		return fmt.Errorf("fleet: purchase guard: writing back %d records: %w", len(lost), err)
	}
	q.memos.seen(lost, nb)
	return nil
}

// newToken names one claim or lease: random, so a member never mistakes
// another's record for its own.
func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
