package fleet

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/internal/testenv"
)

func newTestClient(t *testing.T, name string) (*Client, *testenv.Redis) {
	t.Helper()
	rd := testenv.StartRedis(t)
	q, err := New(Options{URL: rd.URL, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	q.restartHold = 0 // TestGuardSurvivesEmptyRestart tests the hold
	t.Cleanup(func() { q.Close() })
	return q, rd
}

// TestGuardClaim: a guard record is claimed once among racing
// members, blocks an identical purchase with what the fleet knows of it,
// expires with its window, lets a confirmed repeat replace a finished
// record but never one in flight, frees at once on release, and a settle
// under a stale claim leaves the new claim alone.
func TestGuardClaim(t *testing.T) {
	q, rd := newTestClient(t, "unit")
	ctx := context.Background()

	// Racing members: exactly one claim.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var tokens []string
	for range 8 {
		wg.Go(func() {
			ok, tok, _, err := q.ClaimGuard(ctx, "hellorf:a", time.Minute, 0, false)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				tokens = append(tokens, tok)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(tokens) != 1 {
		t.Fatalf("%d of 8 racing claims succeeded, want 1", len(tokens))
	}
	tok := tokens[0]

	for _, tc := range []struct {
		name      string
		confirm   bool
		settle    string // before the claim: state to settle ("" none)
		wantOK    bool
		wantState string
	}{
		{"in flight blocks", false, "", false, GuardInFlight},
		{"in flight blocks even confirmed", true, "", false, GuardInFlight},
		{"done blocks", false, GuardDone, false, GuardDone},
		{"confirmed repeat replaces done", true, "", true, ""},
	} {
		if tc.settle != "" {
			if err := q.SettleGuard(ctx, "hellorf:a", tok, tc.settle, "442", false); err != nil {
				t.Fatal(err)
			}
		}
		ok, newTok, prev, err := q.ClaimGuard(ctx, "hellorf:a", time.Minute, 0, tc.confirm)
		if err != nil {
			t.Fatal(err)
		}
		if ok != tc.wantOK || (!ok && prev.State != tc.wantState) {
			t.Fatalf("%s: claimed %v, prev %+v; want claimed %v, state %q", tc.name, ok, prev, tc.wantOK, tc.wantState)
		}
		if !ok && tc.wantState == GuardDone && prev.PurchaseID != "442" {
			t.Fatalf("%s: purchase id %q, want 442", tc.name, prev.PurchaseID)
		}
		if !ok && (prev.Age < 0 || prev.Age > time.Minute) {
			t.Fatalf("%s: age %s", tc.name, prev.Age)
		}
		if ok {
			// The first claim is stale now: its settle must not touch
			// the new one.
			if err := q.SettleGuard(ctx, "hellorf:a", tok, "", "", true); err != nil {
				t.Fatal(err)
			}
			if ok, _, prev, _ := q.ClaimGuard(ctx, "hellorf:a", time.Minute, 0, false); ok || prev.State != GuardInFlight {
				t.Fatalf("a stale claim's release freed the new claim: claimed %v, %+v", ok, prev)
			}
			tok = newTok
		}
	}

	// Release frees at once.
	if err := q.SettleGuard(ctx, "hellorf:a", tok, "", "", true); err != nil {
		t.Fatal(err)
	}
	if ok, _, prev, err := q.ClaimGuard(ctx, "hellorf:a", 200*time.Millisecond, 0, false); !ok || err != nil {
		t.Fatalf("after release: claimed %v, %+v, %v", ok, prev, err)
	}
	// The window expires by itself (kept in the record, on Redis's clock: no TTL).
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, _, _, err := q.ClaimGuard(ctx, "hellorf:a", time.Minute, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the guard record outlived its window by 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A member that died mid-purchase: its record, in flight for longer
	// than a purchase can be, reads unknown, and a confirmed repeat may
	// replace it.
	if ok, _, _, err := q.ClaimGuard(ctx, "hellorf:dead", time.Minute, 0, false); !ok || err != nil {
		t.Fatalf("claim: %v %v", ok, err)
	}
	time.Sleep(20 * time.Millisecond) // the record's age, on Redis's clock
	if ok, _, prev, err := q.ClaimGuard(ctx, "hellorf:dead", time.Minute, 10*time.Millisecond, false); ok || err != nil || prev.State != GuardUnknown {
		t.Fatalf("a dead member's record: claimed %v, %+v, %v; want blocked as unknown", ok, prev, err)
	}
	if ok, _, _, err := q.ClaimGuard(ctx, "hellorf:dead", time.Minute, 10*time.Millisecond, true); !ok || err != nil {
		t.Fatalf("confirmed repeat over a dead member's record: %v %v", ok, err)
	}
	// Another fleet name is another guard.
	q2, err := New(Options{URL: rd.URL, Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	q2.restartHold = 0
	if ok, _, _, err := q2.ClaimGuard(ctx, "hellorf:a", time.Minute, 0, false); !ok || err != nil {
		t.Fatalf("another fleet's claim: %v %v", ok, err)
	}
}

// TestGuardRecordsTrimmed: guard records have no TTL (see
// TestGuardLeaseKeysHaveNoTTL), so the claims delete the expired ones:
// they must not pile up for as long as the fleet buys.
func TestGuardRecordsTrimmed(t *testing.T) {
	q, _ := newTestClient(t, "unit")
	ctx := context.Background()
	const n = 2*guardTrim + 10
	const window = 200 * time.Millisecond
	start := time.Now()
	for i := range n {
		if ok, _, _, err := q.ClaimGuard(ctx, "hellorf:old"+strconv.Itoa(i), window, 0, false); err != nil || !ok {
			t.Fatalf("claim %d: %v %v", i, ok, err)
		}
	}
	claimed := time.Since(start)
	k := q.guardKeys()
	count := func() (int64, int64) {
		h, err1 := q.rdb.HLen(ctx, k[0]).Result()
		z, err2 := q.rdb.ZCard(ctx, k[1]).Result()
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		return h, z
	}
	// All n are there while none has expired (on a machine too slow to
	// make n claims in half a window, the first may be trimmed already).
	if h, z := count(); claimed < window/2 && (h != n || z != n) {
		t.Fatalf("%d records, %d expiries after %d claims", h, z, n)
	} else if h != z {
		t.Fatalf("%d records but %d expiries", h, z)
	}
	// Later claims (here repeats of one purchase, refused while it is in
	// flight) delete the expired records, a bounded batch each.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, _, err := q.ClaimGuard(ctx, "hellorf:new", time.Hour, 0, false); err != nil {
			t.Fatal(err)
		}
		h, z := count()
		if h == 1 && z == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records, %d expiries left 10 s after %d expired; want only the live one", h, z, n)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	if ok, _, prev, err := q.ClaimGuard(ctx, "hellorf:new", time.Hour, 0, false); ok || err != nil || prev.State != GuardInFlight {
		t.Fatalf("the live record was trimmed: claimed %v, %+v, %v", ok, prev, err)
	}
}

// TestGuardSurvivesEmptyRestart: Redis restarted empty forgets the fleet's
// guard records. A member that made a purchase, and one that was refused
// one as another's repeat, write them back at their next heartbeat, and
// every claim is held until they could: a third member is still refused
// the repeat, with the purchase id, though the first member is gone.
// (Before: the restarted store let the third member buy it again.)
func TestGuardSurvivesEmptyRestart(t *testing.T) {
	rd := testenv.StartRedis(t)
	mk := func() *Client {
		q, err := New(Options{URL: rd.URL, Name: "gr"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		return q
	}
	a, b, c := mk(), mk(), mk()
	ctx := context.Background()
	claim := func(q *Client, name string) (bool, string, GuardRecord) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			ok, tok, prev, err := q.ClaimGuard(ctx, name, time.Hour, 0, false)
			var held *HeldError
			if err == nil {
				return ok, tok, prev
			}
			if !errors.As(err, &held) && time.Now().After(deadline) {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("held for 20 s: %v", err)
			}
			time.Sleep(20 * time.Millisecond) // the hold, or the client reconnecting
		}
	}
	beat := func(q *Client) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			if _, err := q.Beat(ctx, nil); err == nil {
				return
			} else if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // the client reconnecting
		}
	}
	// The fleet's first claim waits out the hold (the records are new).
	ok, tok, _ := claim(a, "hellorf:x")
	if !ok {
		t.Fatal("first claim refused")
	}
	if err := a.SettleGuard(ctx, "hellorf:x", tok, GuardDone, "442", false); err != nil {
		t.Fatal(err)
	}
	if ok, _, prev := claim(b, "hellorf:x"); ok || prev.State != GuardDone {
		t.Fatalf("repeat on b: claimed %v, %+v", ok, prev)
	}
	if ok, tok, _ := claim(a, "hellorf:y"); !ok {
		t.Fatal("claim y refused")
	} else if err := a.SettleGuard(ctx, "hellorf:y", tok, GuardUnknown, "", false); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		writers []*Client // the members whose heartbeats write back
	}{
		{"the buyer writes back", []*Client{a}},
		{"the buyer is down, the refused member writes back", []*Client{b}},
	} {
		rd.Kill()
		rd.Start()
		// Someone touches the guard first: a claim, which is held.
		if _, _, _, err := c.ClaimGuard(ctx, "hellorf:z", time.Hour, 0, false); err != nil {
			var held *HeldError
			if !errors.As(err, &held) {
				// The client may still be reconnecting: the hold then
				// starts at a write-back, which is just as good.
				t.Logf("%s: claim after the restart: %v", tc.name, err)
			}
		} else {
			t.Fatalf("%s: a claim right after the store lost its records was not held", tc.name)
		}
		for _, q := range tc.writers {
			beat(q)
		}
		if ok, _, prev := claim(c, "hellorf:x"); ok || prev.State != GuardDone || prev.PurchaseID != "442" {
			t.Fatalf("%s: repeat on c after an empty restart: claimed %v, %+v; want refused as done 442", tc.name, ok, prev)
		}
		if tc.writers[0] == a {
			if ok, _, prev := claim(c, "hellorf:y"); ok || prev.State != GuardUnknown {
				t.Fatalf("%s: y on c: claimed %v, %+v; want refused as unknown", tc.name, ok, prev)
			}
		}
	}
}

// TestGuardUnreachable: with Redis gone a claim is an error, never a
// claim (the caller refuses the purchase).
func TestGuardUnreachable(t *testing.T) {
	q, rd := newTestClient(t, "unit")
	rd.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ok, _, _, err := q.ClaimGuard(ctx, "hellorf:b", time.Minute, 0, false); ok || err == nil {
		t.Fatalf("claim with Redis gone: %v, %v; want an error", ok, err)
	}
	if _, ok, _, err := q.TakeLease(ctx, "spotify.api", 1, time.Second); ok || err == nil {
		t.Fatalf("lease with Redis gone: %v, %v; want an error", ok, err)
	}
}

// guardAndLeaseKeys does what a fleet does with guard records and turns:
// claims (one settled done, one unknown, one released, one in flight),
// leases (one renewed, one released, one held).
func guardAndLeaseKeys(t *testing.T, q *Client) {
	t.Helper()
	ctx := context.Background()
	for _, st := range []string{GuardDone, GuardUnknown, "release", ""} {
		ok, tok, _, err := q.ClaimGuard(ctx, "hellorf:"+st, time.Hour, 0, false)
		if err != nil || !ok {
			t.Fatalf("claim %q: %v %v", st, ok, err)
		}
		if st != "" {
			if err := q.SettleGuard(ctx, "hellorf:"+st, tok, st, "7", st == "release"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, b := range []string{"spotify.api", "p.two"} {
		l, ok, _, err := q.TakeLease(ctx, b, 2, time.Hour)
		if err != nil || !ok {
			t.Fatalf("lease %s: %v %v", b, ok, err)
		}
		if ok, err := q.RenewLease(ctx, b, l, time.Hour); err != nil || !ok {
			t.Fatalf("renew %s: %v %v", b, ok, err)
		}
	}
	l, _, _, err := q.TakeLease(ctx, "p.two", 2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.ReleaseLease(ctx, "p.two", l); err != nil {
		t.Fatal(err)
	}
}

// TestGuardLeaseKeysHaveNoTTL: no guard record or turn lease carries a
// Redis TTL. docs/fleet.md recommends maxmemory-policy volatile-lru so
// that Redis under memory pressure evicts the shared cache's copies (which
// all have TTLs) and nothing else: volatile-* policies never evict a key
// without one. A guard record with a TTL could be evicted within its
// window, and an identical purchase would be charged again on another
// member; a lease with one, and two Spotify requests would be in flight.
// Their expiry is kept in their values instead, on Redis's clock.
func TestGuardLeaseKeysHaveNoTTL(t *testing.T) {
	q, _ := newTestClient(t, "unit")
	ctx := context.Background()
	guardAndLeaseKeys(t, q)
	keys, err := q.rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("no keys written")
	}
	for _, k := range keys {
		if ttl, err := q.rdb.PTTL(ctx, k).Result(); err != nil || ttl != -1 {
			t.Errorf("key %s: PTTL %v (%v), want -1 (no TTL: volatile-lru could evict it)", k, ttl, err)
		}
	}
}

// TestGuardLeaseSurviveEviction: with the settings docs/fleet.md
// recommends (maxmemory-policy volatile-lru) and Redis full of the shared
// cache's TTL'd copies, guard records and turns are never evicted: the
// same purchase is still refused and the turn is still held.
func TestGuardLeaseSurviveEviction(t *testing.T) {
	q, _ := newTestClient(t, "unit")
	ctx := context.Background()
	guardAndLeaseKeys(t, q)
	used := func() int64 {
		info, err := q.rdb.Info(ctx, "memory").Result()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		t.Fatal("no used_memory in INFO")
		return 0
	}
	limit := used() + 1<<20
	for _, kv := range [][2]string{{"maxmemory-policy", "volatile-lru"}, {"maxmemory-samples", "10"}, {"maxmemory", strconv.FormatInt(limit, 10)}} {
		if err := q.rdb.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Cache copies, as the shared cache writes them (every one with a
	// TTL), until Redis has evicted four times what fits.
	value := strings.Repeat("x", 1024)
	for i := 0; ; i++ {
		if _, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j := range 500 {
				p.Set(ctx, q.prefix+":cache:filler:"+strconv.Itoa(i*500+j), value, time.Hour)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		info, err := q.rdb.Info(ctx, "stats").Result()
		if err != nil {
			t.Fatal(err)
		}
		var evicted int64
		for line := range strings.SplitSeq(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "evicted_keys:"); ok {
				evicted, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		if evicted > 4*(1<<20)/1024 {
			break
		}
		if i > 200 {
			t.Fatalf("only %d keys evicted after %d written", evicted, (i+1)*500)
		}
	}
	for _, st := range []string{GuardDone, GuardUnknown, ""} {
		if ok, _, prev, err := q.ClaimGuard(ctx, "hellorf:"+st, time.Hour, 0, false); err != nil || ok {
			t.Errorf("guard record %q after eviction: claimed %v (%+v, %v); want refused as a duplicate", st, ok, prev, err)
		}
	}
	if _, ok, _, err := q.TakeLease(ctx, "spotify.api", 1, time.Hour); err != nil || ok {
		t.Errorf("turn after eviction: taken %v (%v); want still held", ok, err)
	}
	if _, ok, _, err := q.TakeLease(ctx, "p.two", 2, time.Hour); err != nil || !ok {
		t.Errorf("released turn after eviction: taken %v (%v); want free", ok, err)
	} else if _, ok, _, err := q.TakeLease(ctx, "p.two", 2, time.Hour); err != nil || ok {
		t.Errorf("a third turn of two after eviction: %v (%v)", ok, err)
	}
}
