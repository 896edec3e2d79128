// Package fleet shares sluice's rate budgets among several daemons through
// Redis (or Valkey), for users whose hosts share one IP or one token: each
// daemon keeping iNeo's 6 per 7 s on its own would send 12 or 18 together,
// and iNeo bans. Redis is the authority for every bucket in fleet mode:
// one Lua script per bucket trims its sliding-window log, checks its pause,
// counts and adds the grant in one round trip, with Redis's TIME as the
// only clock (hosts' clocks disagree; the window must not). Nothing here
// falls back to local limits: a fleet that cannot be reached grants
// nothing (fail closed), since local-only limits are exactly the ban.
//
// Keys of one bucket share a hash slot ({prefix:bucket}), so the scripts
// work on Redis Cluster too; they carry a schema version, so a rolling
// upgrade never mixes incompatible layouts.
package fleet

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/core/scheduler"
)

// schema versions the key layout and the scripts' contract.
const schema = "v1"

// Options configure New.
type Options struct {
	// URL is a redis://, rediss:// or unix:// URL (a secret: it may hold
	// a password).
	URL string
	// SentinelAddrs and MasterName select a Sentinel-managed master
	// instead of URL.
	SentinelAddrs []string
	MasterName    string
	// Name prefixes every key, so two fleets can share one Redis.
	Name string
	// Timeout bounds one round trip (default 1 s): a fleet that does not
	// answer must fail the caller promptly, not after its max wait.
	Timeout time.Duration
	// Version is the daemon's build version, published in its heartbeat;
	// Host its host name (default os.Hostname).
	Version string
	Host    string
}

// Client is one daemon's connection to its fleet's Redis: the shared rate
// budget (it implements scheduler.Shared) and, beside it, the other shared
// records.
type Client struct {
	rdb    redis.UniversalClient
	prefix string
	name   string
	// me is this member as its heartbeat publishes it (Limits excepted).
	me Member
	// restartHold is the least hold of a bucket the store forgot
	// (restartHold; tests shorten it).
	restartHold time.Duration

	// mu guards what the heartbeat last saw of the store (see Beat).
	mu      sync.Mutex
	epoch   string
	runID   string
	buckets []string // the buckets of the last beat, for Leave
}

// New connects to the fleet's Redis. It does not wait for Redis to answer:
// an unreachable fleet fails each grant (fail closed) until it is back.
func New(opts Options) (*Client, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	host := opts.Host
	if host == "" {
		host, _ = os.Hostname()
	}
	q := &Client{prefix: keyPrefix(opts.Name), name: cmp.Or(opts.Name, "default"),
		me:          Member{ID: newID(), Host: host, Version: opts.Version, Schema: schema, Started: time.Now().UTC().Truncate(time.Second)},
		restartHold: restartHold}
	switch {
	case len(opts.SentinelAddrs) > 0:
		q.rdb = redis.NewUniversalClient(&redis.UniversalOptions{Addrs: opts.SentinelAddrs, MasterName: opts.MasterName,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, MaxRetries: -1})
	case opts.URL != "":
		o, err := redis.ParseURL(opts.URL)
		if err != nil {
			// The URL may hold a password: say what is wrong, not what it says.
			return nil, errors.New("fleet: redis_url is not a redis://, rediss:// or unix:// URL")
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.MaxRetries = timeout, timeout, timeout, -1
		q.rdb = redis.NewClient(o)
	default:
		return nil, errors.New("fleet: redis_url or sentinel_addrs is required")
	}
	return q, nil
}

func keyPrefix(name string) string {
	if name == "" {
		name = "default"
	}
	return "sluice:" + schema + ":" + name
}

// newID names one daemon process in its fleet: random, so two hosts cloned
// from one image never share one, and new at every start, so a restarted
// member's old record simply expires.
func newID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Close leaves the fleet (best effort: a member that cannot say so expires
// with its heartbeat) and closes the connections.
func (q *Client) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	q.leave(ctx)
	cancel()
	return q.rdb.Close()
}

// keys of one bucket, in one hash slot: its log, pause, sequence, epoch,
// the limit the fleet keeps it to, and who holds which limit (holders:
// member id → heartbeat expiry; held: member id → its limit).
func (q *Client) keys(bucket string) []string {
	tag := "{" + q.prefix + ":" + bucket + "}"
	return []string{tag + ":log", tag + ":pause", tag + ":seq", tag + ":epoch", tag + ":limit", tag + ":holders", tag + ":held"}
}

// grantScript decides one grant. Window semantics are the scheduler's: a
// grant at t needs fewer than limit grants in (t − span, t], span being
// Window + margin. Times are Redis's TIME, in microseconds.
//
// A bucket whose epoch key is missing is one the store does not remember:
// a fleet's first start, or a Redis restarted empty, which forgot the
// grants of the last window and the pauses members had written. The bucket
// is held for hold = max(span, restartHold) from then: one window for the
// forgotten grants, and at least one heartbeat for every live member to
// notice the restart and write its pauses again (see Beat).
// No key of the scheduler's has a TTL, so a maxmemory-policy of
// volatile-lru (or noeviction) never evicts them; the log is trimmed at
// every grant instead.
//
// One limit: the bucket's limit key holds the limit the fleet keeps it to
// ("requests/window µs"). A member asking with another limit is refused
// (-1) while a live member (one whose heartbeat has not expired) other than
// itself still holds the stored one; once none does, the asker's replaces
// it. So a reload on every member moves the fleet to a new limit, a member
// with a typo holds only itself, and a fleet whose store forgot the limit
// takes the one most live members hold (on a tie the stricter: the lower
// rate, then the fewer requests).
//
//	ARGV[1] limit, ARGV[2] span µs, ARGV[3] hold µs, ARGV[4] limit as
//	"requests/window µs", ARGV[5] member id
//	returns {1, t_us, member}, {0, wait_us, reason} or {-1, 0, fleet limit}
var grantScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local hold = tonumber(ARGV[3])
local mine, me = ARGV[4], ARGV[5]
local function parse(l)
  local sep = string.find(l, '/', 1, true)
  return tonumber(string.sub(l, 1, sep - 1)), tonumber(string.sub(l, sep + 1))
end
local function stricter(a, b)
  local ra, wa = parse(a)
  local rb, wb = parse(b)
  if ra * wb ~= rb * wa then return ra * wb < rb * wa end
  return ra < rb
end
local ep = redis.call('GET', KEYS[4])
if not ep then
  redis.call('SET', KEYS[4], now)
  ep = now
end
ep = tonumber(ep)
if now < ep + hold then return {0, ep + hold - now, 'fleet store (re)started empty: holding one window'} end
local stored = redis.call('GET', KEYS[5])
if stored ~= mine then
  local live = redis.call('ZRANGEBYSCORE', KEYS[6], '(' .. now, '+inf')
  local count, order = {}, {}
  count[mine] = 1
  order[1] = mine
  local storedHeld = false
  for _, id in ipairs(live) do
    if id ~= me then
      local l = redis.call('HGET', KEYS[7], id)
      if l then
        if l == stored then storedHeld = true end
        if not count[l] then
          count[l] = 0
          order[#order + 1] = l
        end
        count[l] = count[l] + 1
      end
    end
  end
  if stored and storedHeld then return {-1, 0, stored} end
  if not stored then
    stored = mine
    for _, l in ipairs(order) do
      if count[l] > count[stored] or (count[l] == count[stored] and stricter(l, stored)) then stored = l end
    end
  else
    stored = mine
  end
  redis.call('SET', KEYS[5], stored)
  if stored ~= mine then return {-1, 0, stored} end
end
local p = redis.call('GET', KEYS[2])
if p then
  local sep = string.find(p, '|', 1, true)
  local pu = tonumber(string.sub(p, 1, sep - 1))
  if pu > now then return {0, pu - now, 'paused: ' .. string.sub(p, sep + 1)} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  local e = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
  return {0, tonumber(e[2]) + span - now, 'full'}
end
local member = now .. '-' .. redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[1], now, member)
return {1, now, member}
`)

// pauseScript extends a bucket's pause (never shortens it). The pause is
// sent as a duration and ends at the fleet's clock + it: a member whose
// clock is behind Redis's must not write a pause that is over already.
//
//	ARGV[1] duration µs, ARGV[2] reason
var pauseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local u = now + tonumber(ARGV[1])
if u <= now then return 0 end
local p = redis.call('GET', KEYS[2])
if p then
  local pu = tonumber(string.sub(p, 1, string.find(p, '|', 1, true) - 1))
  if pu >= u then return 0 end
end
redis.call('SET', KEYS[2], u .. '|' .. ARGV[2])
return 1
`)

// restampScript moves a grant later (only later) to when its answer came.
//
//	ARGV[1] member, ARGV[2] new score µs
var restampScript = redis.NewScript(`
return redis.call('ZADD', KEYS[1], 'XX', 'GT', tonumber(ARGV[2]), ARGV[1])
`)

// Grant implements scheduler.Shared.
func (q *Client) Grant(ctx context.Context, bucket string, l scheduler.Limit, span time.Duration) (scheduler.SharedGrant, error) {
	sent := time.Now()
	hold := max(span, q.restartHold)
	res, err := grantScript.Run(ctx, q.rdb, q.keys(bucket), l.Requests, span.Microseconds(), hold.Microseconds(),
		encodeLimit(l), q.me.ID).Slice()
	if err != nil {
		return scheduler.SharedGrant{}, fmt.Errorf("fleet: %w", err)
	}
	back := time.Now()
	if len(res) != 3 {
		return scheduler.SharedGrant{}, fmt.Errorf("fleet: grant script answered %v", res)
	}
	ok, _ := res[0].(int64)
	v, _ := res[1].(int64)
	s, _ := res[2].(string)
	if ok == -1 {
		fl, err := decodeLimit(s)
		if err != nil {
			return scheduler.SharedGrant{}, fmt.Errorf("fleet: bucket %s: %w", bucket, err)
		}
		return scheduler.SharedGrant{Mismatch: true, FleetLimit: fl, Wait: BeatEvery,
			Reason: fmt.Sprintf("this member's limit %s differs from the fleet's %s", limitText(l), limitText(fl))}, nil
	}
	if ok != 1 {
		return scheduler.SharedGrant{Wait: time.Duration(v) * time.Microsecond, Reason: s}, nil
	}
	// The grant's time on the fleet's clock, and the offset that maps
	// this host's clock onto it (taken at the middle of the round trip).
	at := time.UnixMicro(v)
	local := sent.Add(back.Sub(sent) / 2)
	return scheduler.SharedGrant{Granted: true, At: at, Offset: at.Sub(local), Member: s}, nil
}

// Pause implements scheduler.Shared.
func (q *Client) Pause(ctx context.Context, bucket string, until time.Time, reason string) error {
	reason = strings.ReplaceAll(reason, "|", "/")
	d := time.Until(until)
	if d <= 0 {
		return nil
	}
	if err := pauseScript.Run(ctx, q.rdb, q.keys(bucket), d.Microseconds(), reason).Err(); err != nil {
		return fmt.Errorf("fleet: pause: %w", err)
	}
	return nil
}

// Restamp implements scheduler.Shared.
func (q *Client) Restamp(ctx context.Context, bucket, member string, to time.Time) error {
	if err := restampScript.Run(ctx, q.rdb, q.keys(bucket), member, strconv.FormatInt(to.UnixMicro(), 10)).Err(); err != nil {
		return fmt.Errorf("fleet: restamp: %w", err)
	}
	return nil
}

// budgetScript reads a bucket's budget without granting.
//
//	ARGV[1] limit, ARGV[2] span µs; returns {remaining, reset µs}
var budgetScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local p = redis.call('GET', KEYS[2])
if p then
  local pu = tonumber(string.sub(p, 1, string.find(p, '|', 1, true) - 1))
  if pu > now then return {0, pu - now} end
end
local n = redis.call('ZCOUNT', KEYS[1], '(' .. (now - span), '+inf')
if n < limit then return {limit - n, 0} end
local e = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - span), '+inf', 'WITHSCORES', 'LIMIT', n - limit, 1)
return {0, tonumber(e[2]) + span - now}
`)

// Budget implements scheduler.Shared: the fleet's remaining budget.
func (q *Client) Budget(ctx context.Context, bucket string, l scheduler.Limit, span time.Duration) (remaining int, reset time.Duration, err error) {
	res, err := budgetScript.Run(ctx, q.rdb, q.keys(bucket), l.Requests, span.Microseconds()).Int64Slice()
	if err != nil || len(res) != 2 {
		return 0, 0, fmt.Errorf("fleet: budget: %v", err)
	}
	return int(res[0]), time.Duration(res[1]) * time.Microsecond, nil
}

// Release implements scheduler.Shared: a grant that was never sent leaves
// the fleet's log.
func (q *Client) Release(ctx context.Context, bucket, member string) error {
	if err := q.rdb.ZRem(ctx, q.keys(bucket)[0], member).Err(); err != nil {
		return fmt.Errorf("fleet: release: %w", err)
	}
	return nil
}
