package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/core/scheduler"
)

// Heartbeats. Every member writes its record every BeatEvery; a record
// not renewed within memberTTL is dead. A member notices a Redis restarted
// empty at its next beat, so the fleet holds a forgotten bucket for at
// least restartHold (a beat, plus a round trip's timeout and some slack)
// before granting from it: by then every live member has written its
// pauses again.
const (
	BeatEvery   = time.Second
	memberTTL   = 10 * BeatEvery
	restartHold = 3 * BeatEvery
)

// Member is one daemon of the fleet as its heartbeat publishes it.
type Member struct {
	ID      string    `json:"id"`
	Host    string    `json:"host"`
	Version string    `json:"version"`
	Schema  string    `json:"schema"`
	Started time.Time `json:"started"`
	// Limits are the member's configured limits, bucket → "requests/window
	// µs" (see encodeLimit).
	Limits map[string]string `json:"limits"`
}

// encodeLimit is a limit as the fleet's keys hold it: "6/7000000".
func encodeLimit(l scheduler.Limit) string {
	return strconv.Itoa(l.Requests) + "/" + strconv.FormatInt(l.Window.Microseconds(), 10)
}

func decodeLimit(s string) (scheduler.Limit, error) {
	r, w, ok := strings.Cut(s, "/")
	n, err1 := strconv.Atoi(r)
	us, err2 := strconv.ParseInt(w, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return scheduler.Limit{}, fmt.Errorf("the fleet's stored limit %q is not requests/window", s)
	}
	return scheduler.Limit{Requests: n, Window: time.Duration(us) * time.Microsecond}, nil
}

// limitText is "6 per 7s".
func limitText(l scheduler.Limit) string { return fmt.Sprintf("%d per %s", l.Requests, l.Window) }

// LimitText renders a stored limit for people ("6 per 7s"); what it cannot
// read, as it is.
func LimitText(s string) string {
	if l, err := decodeLimit(s); err == nil {
		return limitText(l)
	}
	return s
}

// fleetKeys are the fleet-wide keys, in one hash slot: the members (id →
// heartbeat expiry), their records (id → JSON) and the store's epoch.
func (q *Client) fleetKeys() []string {
	tag := "{" + q.prefix + "}"
	return []string{tag + ":members", tag + ":info", tag + ":epoch"}
}

// beatScript renews one member's record, drops the dead ones and returns
// the store's epoch, created when missing (a first start, or a Redis
// restarted empty).
//
//	ARGV[1] id, ARGV[2] record, ARGV[3] ttl µs, ARGV[4] a new epoch
//	returns epoch
var beatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
local e = redis.call('GET', KEYS[3])
if not e then
  redis.call('SET', KEYS[3], ARGV[4])
  e = ARGV[4]
end
return e
`)

// holdScript renews which limit one member holds for one bucket (the grant
// script's "live holder"), dropping the dead.
//
//	KEYS holders, held; ARGV[1] id, ARGV[2] limit, ARGV[3] ttl µs
var holdScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return 1
`)

// liveScript lists the live members' records.
var liveScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  local r = redis.call('HGET', KEYS[2], id)
  if r then out[#out + 1] = r end
end
return out
`)

// Beat implements scheduler.Shared: it publishes this member's record and
// the limits it holds, and says whether the store has forgotten this
// member's pauses: at its first beat (the store never had them), and when
// the store's epoch is gone or Redis's run id changed (a restart, maybe
// empty).
func (q *Client) Beat(ctx context.Context, limits map[string]scheduler.Limit) (scheduler.BeatResult, error) {
	me := q.me
	me.Limits = make(map[string]string, len(limits))
	for b, l := range limits {
		me.Limits[b] = encodeLimit(l)
	}
	rec, err := json.Marshal(me)
	if err != nil {
		return scheduler.BeatResult{}, fmt.Errorf("fleet: heartbeat: %w", err)
	}
	ttl := memberTTL.Microseconds()
	// The limits first: a member must never be live (in the member list)
	// with limits the grant script does not know yet.
	buckets := make([]string, 0, len(me.Limits))
	for b, l := range me.Limits {
		k := q.keys(b)
		if err := q.run(ctx, holdScript, k[5:7], me.ID, l, ttl).Err(); err != nil {
			return scheduler.BeatResult{}, fmt.Errorf("fleet: heartbeat: %w", err)
		}
		buckets = append(buckets, b)
	}
	epoch, err := q.run(ctx, beatScript, q.fleetKeys(), me.ID, string(rec), ttl, newID()+newID()).Text()
	if err != nil {
		return scheduler.BeatResult{}, fmt.Errorf("fleet: heartbeat: %w", err)
	}
	runID := q.serverRunID(ctx)
	q.mu.Lock()
	res := scheduler.BeatResult{Next: BeatEvery}
	switch {
	case q.epoch == "":
		res.Republish = true
	case epoch != q.epoch:
		// The epoch key is gone: the store forgot everything.
		res.Republish, res.Forgot = true, true
	case runID != "" && q.runID != "" && runID != q.runID:
		// Another server answers (a restart that kept its data, a
		// failover): what it may have lost is written again.
		res.Republish = true
	}
	q.epoch, q.buckets = epoch, buckets
	if runID != "" {
		q.runID = runID
	}
	q.mu.Unlock()
	// The purchase guard's records live in their own hash slot (another
	// node, in a Cluster), so whether the store lost them is asked
	// there. A failure is retried at the next beat; it must not hide
	// what the beat found.
	if err := q.restoreGuards(ctx, res.Republish); err != nil {
		q.log.Warn("the fleet's purchase guard records this daemon knows of could not be written back; retried at the next heartbeat", "err", err)
	}
	return res, nil
}

// serverRunID is Redis's run id, "" where it means nothing (a Cluster's
// nodes each have their own) or cannot be read.
func (q *Client) serverRunID(ctx context.Context) string {
	if _, ok := q.rdb.(*redis.ClusterClient); ok {
		return ""
	}
	info, err := q.rdb.Info(ctx, "server").Result()
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v
		}
	}
	return ""
}

// leave removes this member's records (a clean stop).
func (q *Client) leave(ctx context.Context) {
	q.mu.Lock()
	buckets := q.buckets
	q.mu.Unlock()
	fk := q.fleetKeys()
	q.rdb.ZRem(ctx, fk[0], q.me.ID)
	q.rdb.HDel(ctx, fk[1], q.me.ID)
	for _, b := range buckets {
		k := q.keys(b)
		q.rdb.ZRem(ctx, k[5], q.me.ID)
		q.rdb.HDel(ctx, k[6], q.me.ID)
	}
}

// seedScript adds grants made before this member joined to a bucket's log,
// each at the fleet's now − its age. The ages were measured before the
// script was sent and TIME is read after, so each lands at or after its
// true time on the fleet's clock: counted later, never earlier, whatever
// the hosts' clocks say. Names make a second seed of the same grants (a
// restart within the window) a no-op.
//
//	ARGV[1] span µs, then pairs of age µs, name
var seedScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local span = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV - 1, 2 do
  local at = now - tonumber(ARGV[i])
  if at > now - span then
    n = n + redis.call('ZADD', KEYS[1], 'NX', at, ARGV[i + 1])
  end
end
return n
`)

// Seed implements scheduler.Shared.
func (q *Client) Seed(ctx context.Context, bucket string, span time.Duration, grants []scheduler.SeedGrant) error {
	if len(grants) == 0 {
		return nil
	}
	args := []any{span.Microseconds()}
	for _, g := range grants {
		args = append(args, max(g.Age, 0).Microseconds(), "seed-"+q.me.Host+"-"+strconv.FormatInt(g.Local.UnixNano(), 10))
	}
	if err := q.run(ctx, seedScript, q.keys(bucket)[:1], args...).Err(); err != nil {
		return fmt.Errorf("fleet: seed %s: %w", bucket, err)
	}
	return nil
}

// Status is the fleet as one member sees it.
type Status struct {
	Name string
	// ID is this member's.
	ID string
	// Reachable says whether Redis answered; Err why not.
	Reachable bool
	Err       string
	Members   []MemberStatus
	// Mismatches are the buckets this member holds because its limit is
	// not the fleet's.
	Mismatches []Mismatch
}

// MemberStatus is one live member, with what disagrees.
type MemberStatus struct {
	Member
	Self bool
	// LimitsDisagree names the buckets whose limit differs from the
	// fleet's; VersionDisagrees says its version or schema differs from
	// this member's.
	LimitsDisagree   []string
	VersionDisagrees bool
}

// Mismatch is a bucket whose limit here differs from the fleet's.
type Mismatch struct {
	Bucket string
	Mine   scheduler.Limit
	// Fleet is the fleet's stored limit (see LimitText).
	Fleet string
}

// Status reads the fleet's live members and stored limits; mine are this
// member's limits.
func (q *Client) Status(ctx context.Context, mine map[string]scheduler.Limit) Status {
	st := Status{Name: q.name, ID: q.me.ID}
	fk := q.fleetKeys()
	recs, err := q.run(ctx, liveScript, fk[:2]).StringSlice()
	if err != nil {
		st.Err = err.Error()
		return st
	}
	st.Reachable = true
	var members []MemberStatus
	buckets := map[string]bool{}
	for b := range mine {
		buckets[b] = true
	}
	for _, r := range recs {
		var m Member
		if json.Unmarshal([]byte(r), &m) != nil {
			continue
		}
		for b := range m.Limits {
			buckets[b] = true
		}
		members = append(members, MemberStatus{Member: m, Self: m.ID == q.me.ID,
			VersionDisagrees: m.Version != q.me.Version || m.Schema != q.me.Schema})
	}
	stored := map[string]string{}
	for b := range buckets {
		v, err := q.rdb.Get(ctx, q.keys(b)[4]).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			st.Reachable, st.Err = false, err.Error()
			return st
		}
		stored[b] = v
	}
	for i := range members {
		m := &members[i]
		for b, l := range m.Limits {
			if s := stored[b]; s != "" && s != l {
				m.LimitsDisagree = append(m.LimitsDisagree, b)
			}
		}
		slices.Sort(m.LimitsDisagree)
	}
	slices.SortFunc(members, func(a, b MemberStatus) int {
		return strings.Compare(a.Host+"\x00"+a.ID, b.Host+"\x00"+b.ID)
	})
	st.Members = members
	for b, l := range mine {
		if s := stored[b]; s != "" && s != encodeLimit(l) {
			st.Mismatches = append(st.Mismatches, Mismatch{Bucket: b, Mine: l, Fleet: s})
		}
	}
	slices.SortFunc(st.Mismatches, func(a, b Mismatch) int { return strings.Compare(a.Bucket, b.Bucket) })
	return st
}
