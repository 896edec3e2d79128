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
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// ClusterAddrs select a Redis Cluster (its seed nodes) instead of URL.
	ClusterAddrs []string
	// Username, Password and TLS log in to the Sentinels' master or the
	// Cluster's nodes (a URL carries its own); SentinelUsername and
	// SentinelPassword to the Sentinels themselves.
	Username, Password                 string
	TLS                                bool
	SentinelUsername, SentinelPassword string
	// Name prefixes every key, so two fleets can share one Redis.
	Name string
	// Timeout bounds one round trip (default 1 s): a fleet that does not
	// answer must fail the caller promptly, not after its max wait.
	Timeout time.Duration
	// Version is the daemon's build version, published in its heartbeat;
	// Host its host name (default os.Hostname).
	Version string
	Host    string
	// Log receives what the fleet does on its own (default: nowhere).
	Log *slog.Logger
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

	// grantRuns counts grant scripts sent (tests measure round trips);
	// trips every exchange with Redis (RoundTrips).
	grantRuns atomic.Int64
	trips     atomic.Int64
	// timeout bounds one round trip; rides are the writes waiting to go
	// with the next one (rides.go).
	timeout time.Duration
	rides   rides
	// pairWait is pairWait, but for tests.
	pairWait time.Duration
	// memos are the purchase guard records this member knows of, to
	// write back into a store that lost them (guard.go).
	memos guardMemos
	log   *slog.Logger
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
		restartHold: restartHold, timeout: timeout, pairWait: pairWait, log: opts.Log}
	if q.log == nil {
		q.log = slog.New(slog.DiscardHandler)
	}
	var tlsConf *tls.Config
	if opts.TLS {
		// go-redis dials with tls.DialWithDialer, which checks each
		// node's certificate against the host it dials.
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	switch {
	case len(opts.SentinelAddrs) > 0:
		q.rdb = redis.NewFailoverClient(&redis.FailoverOptions{SentinelAddrs: opts.SentinelAddrs, MasterName: opts.MasterName,
			Username: opts.Username, Password: opts.Password, TLSConfig: tlsConf,
			SentinelUsername: opts.SentinelUsername, SentinelPassword: opts.SentinelPassword,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, MaxRetries: -1})
	case len(opts.ClusterAddrs) > 0:
		// Every script names keys of one hash slot (a {…} tag), so each
		// runs on the node that owns it; MaxRedirects follows a slot
		// that moved (a resharding or a failover) within one call.
		q.rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: opts.ClusterAddrs,
			Username: opts.Username, Password: opts.Password, TLSConfig: tlsConf,
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
		return nil, errors.New("fleet: redis_url, sentinel_addrs or cluster_addrs is required")
	}
	q.rdb.AddHook(roundTrips{q})
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
// member id → heartbeat expiry; held: member id → its limit), and its
// queue (waiters: ticket → first ask; due: ticket → expiry; told: ticket →
// the first slot it was told; delay: the answers' expected delay and the
// waiters' lateness; see queueLua).
func (q *Client) keys(bucket string) []string {
	tag := "{" + q.prefix + ":" + bucket + "}"
	return []string{tag + ":log", tag + ":pause", tag + ":seq", tag + ":epoch", tag + ":limit", tag + ":holders", tag + ":held",
		tag + ":waiters", tag + ":due", tag + ":delay", tag + ":told"}
}

// queueLua is shared by the grant and budget scripts: the fleet-wide FIFO
// queue of a bucket's waiters, and the slot each place in it will get.
//
// A waiter that is refused holds a ticket: a member of the bucket's waiters
// ZSET (KEYS[8], scored by its first ask) and of its due ZSET (KEYS[9],
// scored by when the ticket expires: the slot it was told + grace). Only
// the first free-slots places of the queue may be granted, so a waiter
// told its slot sleeps once and asks once, instead of every waiter polling
// the same next slot and all but one asking in vain; and waits are FIFO
// across the fleet's members. A ticket its waiter does not renew by its
// due time (a daemon killed, a caller gone) is trimmed here, so no key
// needs a TTL (a volatile-lru policy never evicts the scheduler's keys).
//
// slots(K, …) is when places 0..K may be granted (n grants in the window,
// the log's first off entries past it): place k needs its
// (k+1)-th oldest grant in the window, counting the grants the places
// ahead of it will make, to have left the span, and no pause or hold. A
// grant whose answer has not come yet will be restamped later, to its
// answer (see restampScript): its slot counts the fleet's expected
// answer delay ex (KEYS[10]: an average and deviation of the restamps
// seen, as TCP estimates its round trip), so its waiter does not wake
// before the slot has moved and ask in vain; a place behind a grant not
// made yet counts too how late a waiter is granted after the first slot
// it was told, per grant not made yet that slot counted on (its timer,
// its round trip, the errors of the places ahead), learnt the same way.
var queueLua = `
local function estimate(a, d)
  a, d = tonumber(a), tonumber(d)
  if not a then return 0 end
  return a + 2 * d
end
-- expected returns how much later than its score a pending grant's slot
-- comes (its answer's delay), and how much later than its told slot a
-- waiter is granted (its wake-up and round trip) plus that.
local function expected(span)
  local est = redis.call('HMGET', KEYS[10], 'avg', 'dev', 'wavg', 'wdev')
  local ans = math.min(math.floor(estimate(est[1], est[2])), math.floor(span / 2))
  local wake = math.min(math.floor(estimate(est[3], est[4])), math.floor(span / 2))
  return ans, ans + wake
end
-- learn feeds sample x into the estimate (average a, deviation d) in
-- fields fa, fd of KEYS[10].
local function learn(fa, fd, x)
  local est = redis.call('HMGET', KEYS[10], fa, fd)
  local a, d = tonumber(est[1]), tonumber(est[2])
  if not a then
    a, d = x, x / 2
  else
    d = d * 0.75 + math.abs(x - a) * 0.25
    a = a * 0.875 + x * 0.125
  end
  redis.call('HSET', KEYS[10], fa, math.floor(a), fd, math.floor(d))
end
local function slots(K, n, limit, span, notBefore, off, ex, exf)
  local s, lv = {}, {}
  local lo, hi = math.max(0, n - limit), math.min(n - 1, n + K - limit)
  local e = {}
  if hi >= lo then e = redis.call('ZRANGE', KEYS[1], lo + off, hi + off, 'WITHSCORES') end
  for j = 0, K do
    local idx = n + j - limit
    local at = notBefore
    lv[j] = 1
    if idx >= n then
      at = s[idx - n] + exf + span
      lv[j] = lv[idx - n] + 1
    elseif idx >= 0 then
      local name, score = e[2 * (idx - lo) + 1], tonumber(e[2 * (idx - lo) + 2])
      at = score + span
      if tonumber(string.match(name, '^(%d+)%-')) == score then at = at + ex end
    end
    s[j] = math.max(at, notBefore)
  end
  return s, lv
end
`

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
// volatile-lru (or noeviction) never evicts them; the log and the queue
// are trimmed at every grant instead.
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
// One queue: see queueLua. A refused asker with a ticket keeps (or takes)
// its place unless the slot it would get is further than it will wait
// (within ≥ 0), and is told that slot.
//
//	ARGV[1] limit, ARGV[2] span µs, ARGV[3] hold µs, ARGV[4] limit as
//	"requests/window µs", ARGV[5] member id, ARGV[6] ticket ("" none),
//	ARGV[7] within µs (-1 unbounded), ARGV[8] grace µs, ARGV[9] spare
//	(slots that must stay free after a speculative grant; 0 for others)
//	returns {1, t_us, member, ...}, {0, wait_us, reason, ...} or
//	{-1, 0, fleet limit, ...}, each followed by the budget a newcomer
//	would see (remaining, reset µs), whether the asker holds a ticket
//	(1/0) and how long the bucket is paused (µs, 0 when not)
var grantScript = redis.NewScript(queueLua + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local hold = tonumber(ARGV[3])
local mine, me = ARGV[4], ARGV[5]
local ticket, within, grace = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
-- spare: a speculative grant (one that may be given back at once) is made
-- only if this many slots stay free after it.
local spare = tonumber(ARGV[9] or '0')
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
local function dequeue()
  if ticket ~= '' then
    redis.call('ZREM', KEYS[8], ticket)
    redis.call('ZREM', KEYS[9], ticket)
    redis.call('HDEL', KEYS[11], ticket)
  end
end
-- Tickets not renewed in time: their waiters are gone.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[9], '-inf', '(' .. now)) do
  redis.call('ZREM', KEYS[8], id)
  redis.call('ZREM', KEYS[9], id)
  redis.call('HDEL', KEYS[11], id)
end
-- refuse tells the asker to wait w µs, holding its place in the queue
-- unless it will not wait that long.
local function refuse(w, reason, rem, reset, paused, levels)
  if ticket == '' then return {0, w, reason, rem, reset, 0, paused} end
  if within >= 0 and w > within then
    dequeue()
    return {0, w, reason, rem, reset, 0, paused}
  end
  if redis.call('ZADD', KEYS[8], 'NX', now, ticket) == 1 and levels > 0 then
    -- The first slot told, and how many grants not made yet it counts
    -- on: how late the waiter is granted after it is learnt at its grant.
    redis.call('HSET', KEYS[11], ticket, string.format('%.0f', now + w) .. ':' .. levels)
  end
  redis.call('ZADD', KEYS[9], now + w + grace, ticket)
  return {0, w, reason, rem, reset, 1, paused}
end
local ep = redis.call('GET', KEYS[4])
if not ep then
  redis.call('SET', KEYS[4], now)
  ep = now
end
ep = tonumber(ep)
if now < ep + hold then return refuse(ep + hold - now, 'fleet store (re)started empty: holding one window', 0, ep + hold - now, 0, 0) end
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
  if stored and storedHeld then
    dequeue()
    return {-1, 0, stored, 0, 0, 0, 0}
  end
  if not stored then
    stored = mine
    for _, l in ipairs(order) do
      if count[l] > count[stored] or (count[l] == count[stored] and stricter(l, stored)) then stored = l end
    end
  else
    stored = mine
  end
  redis.call('SET', KEYS[5], stored)
  if stored ~= mine then
    dequeue()
    return {-1, 0, stored, 0, 0, 0, 0}
  end
end
local notBefore, why = now, nil
local p = redis.call('GET', KEYS[2])
if p then
  local sep = string.find(p, '|', 1, true)
  local pu = tonumber(string.sub(p, 1, sep - 1))
  if pu > now then notBefore, why = pu, 'paused: ' .. string.sub(p, sep + 1) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)
local n = redis.call('ZCARD', KEYS[1])
local q = redis.call('ZCARD', KEYS[8])
local k = nil
if ticket ~= '' then k = redis.call('ZRANK', KEYS[8], ticket) end
if not k then k = q end
if notBefore == now and k + spare < limit - n then
  if ticket ~= '' then
    -- How late after the first slot it was told this waiter is
    -- granted, per grant that slot counted on.
    local told = redis.call('HGET', KEYS[11], ticket)
    if told then
      local sep = string.find(told, ':', 1, true)
      local at, levels = tonumber(string.sub(told, 1, sep - 1)), tonumber(string.sub(told, sep + 1))
      learn('wavg', 'wdev', math.max(0, now - at) / levels)
    end
  end
  dequeue()
  local member = string.format('%.0f', now) .. '-' .. redis.call('INCR', KEYS[3])
  redis.call('ZADD', KEYS[1], now, member)
  n = n + 1
  q = redis.call('ZCARD', KEYS[8])
  local rem = math.max(0, limit - n - q)
  local reset = 0
  if rem == 0 then local ex, exf = expected(span)
    reset = slots(q, n, limit, span, now, 0, ex, exf)[q] - now end
  return {1, now, member, rem, reset, 0, 0}
end
-- Refused: the asker is (or would be) at place k, a newcomer behind all.
local behind = q
if k == q and ticket ~= '' then behind = q + 1 end
local ex, exf = expected(span)
local s, lv = slots(math.max(k, behind), n, limit, span, notBefore, 0, ex, exf)
local levels = lv[k]
if why then levels = 0 end
return refuse(s[k] - now, why or 'full', 0, s[behind] - now, notBefore - now, levels)
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

// restampScript moves a grant later (only later) to when its answer came,
// or to a moment its exchange was still out. The first restamp of a grant
// (its score still the time in its name) to its answer feeds the fleet's
// estimate of the answers' delay (see queueLua); a report of an exchange
// still out is no answer and teaches nothing.
//
//	ARGV[1] member, ARGV[2] new score µs, ARGV[3] "1" for an answer
var restampScript = redis.NewScript(queueLua + `
local to = tonumber(ARGV[2])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
local r = redis.call('ZADD', KEYS[1], 'XX', 'GT', to, ARGV[1])
if ARGV[3] == '1' and old and tonumber(string.match(ARGV[1], '^(%d+)%-')) == tonumber(old) and to > tonumber(old) then
  learn('avg', 'dev', to - tonumber(old))
end
return r
`)

// ticketGrace is how long past the slot it was told a waiter's ticket
// lives without being renewed: long enough for a starved process's late
// timer, short enough that a waiter that died holds the queue only
// briefly (its place, not the bucket: grants are never lost, only slowed).
const ticketGrace = 2 * time.Second

// Grant asks for one grant without a place in the fleet's queue (a
// newcomer behind every waiter); see GrantQueued.
func (q *Client) Grant(ctx context.Context, bucket string, l scheduler.Limit, span time.Duration) (scheduler.SharedGrant, error) {
	return q.GrantQueued(ctx, bucket, l, span, "", -1, 0)
}

// GrantQueued implements scheduler.Shared.
func (q *Client) GrantQueued(ctx context.Context, bucket string, l scheduler.Limit, span time.Duration, ticket string, within time.Duration, spare int) (scheduler.SharedGrant, error) {
	sent := time.Now()
	hold := max(span, q.restartHold)
	if spare > 0 {
		// A speculative asker never takes a place in the queue: refused
		// while a slot is free now, it would be told a wait of 0 and
		// queued ahead of real waiters until it gave the place up.
		ticket = ""
	}
	if ticket != "" {
		ticket = q.me.ID + ":" + ticket // unique in the fleet
	}
	w := int64(-1)
	if within >= 0 {
		w = within.Microseconds()
	}
	q.grantRuns.Add(1)
	res, err := q.runPaired(ctx, grantScript, q.keys(bucket), l.Requests, span.Microseconds(), hold.Microseconds(),
		encodeLimit(l), q.me.ID, ticket, w, ticketGrace.Microseconds(), spare).Slice()
	if err != nil {
		return scheduler.SharedGrant{}, fmt.Errorf("fleet: %w", err)
	}
	back := time.Now()
	if len(res) != 7 {
		return scheduler.SharedGrant{}, fmt.Errorf("fleet: grant script answered %v", res)
	}
	ok, _ := res[0].(int64)
	v, _ := res[1].(int64)
	s, _ := res[2].(string)
	rem, _ := res[3].(int64)
	reset, _ := res[4].(int64)
	queued, _ := res[5].(int64)
	paused, _ := res[6].(int64)
	if ok == -1 {
		fl, err := decodeLimit(s)
		if err != nil {
			return scheduler.SharedGrant{}, fmt.Errorf("fleet: bucket %s: %w", bucket, err)
		}
		return scheduler.SharedGrant{Mismatch: true, FleetLimit: fl, Wait: BeatEvery,
			Reason:  fmt.Sprintf("this member's limit %s differs from the fleet's %s", limitText(l), limitText(fl)),
			Budget:  true,
			ResetIn: BeatEvery}, nil
	}
	g := scheduler.SharedGrant{Budget: true, Remaining: int(rem), ResetIn: time.Duration(reset) * time.Microsecond}
	if ok != 1 {
		g.Wait, g.Reason, g.Queued = time.Duration(v)*time.Microsecond, s, queued == 1
		g.PausedFor = time.Duration(paused) * time.Microsecond
		return g, nil
	}
	// The grant's time on the fleet's clock, and the offset that maps
	// this host's clock onto it (taken at the middle of the round trip).
	at := time.UnixMicro(v)
	local := sent.Add(back.Sub(sent) / 2)
	g.Granted, g.At, g.Offset, g.Member = true, at, at.Sub(local), s
	return g, nil
}

// Dequeue implements scheduler.Shared: a waiter that gave up leaves the
// fleet's queue (else its ticket would hold the place until it expired).
func (q *Client) Dequeue(ctx context.Context, bucket, ticket string) error {
	k := q.keys(bucket)
	ticket = q.me.ID + ":" + ticket
	pipe := q.rdb.TxPipeline()
	pipe.ZRem(ctx, k[7], ticket)
	pipe.ZRem(ctx, k[8], ticket)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("fleet: dequeue: %w", err)
	}
	return nil
}

// Pause implements scheduler.Shared.
func (q *Client) Pause(ctx context.Context, bucket string, until time.Time, reason string) error {
	reason = strings.ReplaceAll(reason, "|", "/")
	d := time.Until(until)
	if d <= 0 {
		return nil
	}
	if err := q.run(ctx, pauseScript, q.keys(bucket), d.Microseconds(), reason).Err(); err != nil {
		return fmt.Errorf("fleet: pause: %w", err)
	}
	return nil
}

// RestampLater implements scheduler.Shared: the restamp goes with this
// member's next round trip (rides.go).
func (q *Client) RestampLater(bucket, member string, to time.Time, answer bool, done func(error)) {
	r := q.restampRide(bucket, member, to, answer)
	r.done = done
	q.later(r)
}

// Restamp is RestampLater for a caller that waits for the outcome.
func (q *Client) Restamp(ctx context.Context, bucket, member string, to time.Time) error {
	return q.laterWait(ctx, q.restampRide(bucket, member, to, true))
}

func (q *Client) restampRide(bucket, member string, to time.Time, answer bool) ride {
	learn := "0"
	if answer {
		learn = "1"
	}
	return ride{what: "restamp", script: restampScript, keys: q.keys(bucket), args: []any{member, strconv.FormatInt(to.UnixMicro(), 10), learn}, keep: true}
}

// budgetScript reads a bucket's budget without granting: what a newcomer
// would see (behind every live ticket of the queue).
//
//	ARGV[1] limit, ARGV[2] span µs; returns {remaining, reset µs}
var budgetScript = redis.NewScript(queueLua + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local notBefore = now
local p = redis.call('GET', KEYS[2])
if p then
  local pu = tonumber(string.sub(p, 1, string.find(p, '|', 1, true) - 1))
  if pu > now then notBefore = pu end
end
local n = redis.call('ZCOUNT', KEYS[1], '(' .. (now - span), '+inf')
local q = redis.call('ZCOUNT', KEYS[9], now, '+inf')
if notBefore == now and n + q < limit then return {limit - n - q, 0} end
-- Entries past the span are still in the log (this script writes
-- nothing): slots skips them.
local ex, exf = expected(span)
local s = slots(q, n, limit, span, notBefore, redis.call('ZCARD', KEYS[1]) - n, ex, exf)
return {0, s[q] - now}
`)

// Budget implements scheduler.Shared: the fleet's remaining budget, as a
// newcomer would see it.
func (q *Client) Budget(ctx context.Context, bucket string, l scheduler.Limit, span time.Duration) (remaining int, reset time.Duration, err error) {
	res, err := q.run(ctx, budgetScript, q.keys(bucket), l.Requests, span.Microseconds()).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("fleet: budget: %w", err)
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("fleet: budget script answered %v", res)
	}
	return int(res[0]), time.Duration(res[1]) * time.Microsecond, nil
}

// releaseScript takes a grant that was never sent out of the log.
var releaseScript = redis.NewScript(`return redis.call('ZREM', KEYS[1], ARGV[1])`)

// ReleaseLater implements scheduler.Shared: a grant that was never sent
// leaves the fleet's log, with this member's next round trip (rides.go).
func (q *Client) ReleaseLater(bucket, member string, done func(error)) {
	r := q.releaseRide(bucket, member)
	r.done = done
	q.later(r)
}

// Release is ReleaseLater for a caller that waits for the outcome.
func (q *Client) Release(ctx context.Context, bucket, member string) error {
	return q.laterWait(ctx, q.releaseRide(bucket, member))
}

func (q *Client) releaseRide(bucket, member string) ride {
	return ride{what: "release", script: releaseScript, keys: q.keys(bucket)[:1], args: []any{member}}
}
