package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/core/scheduler"
	"github.com/sluice-dev/sluice/internal/testenv"
)

// TestCluster: a fleet given cluster_addrs keeps every record on a real
// three-master Redis Cluster: each Redis operation of the package (grants
// and the queue, pauses, restamps, releases, budgets, heartbeats, seeds,
// status, leaving, the purchase guard, the in-flight lease and the shared
// cache with its fill lock and fleet-wide purge) runs through the
// ClusterClient without CROSSSLOT (a script or transaction naming keys of
// two slots) or a MOVED the client fails to follow, with one bucket on
// each master so that no node's happening to own every key hides either.
// The purge must empty every master (a SCAN on one node sees that node's
// keys only) and reach another member's subscription, whichever node it
// listens on.
func TestCluster(t *testing.T) {
	t.Parallel()
	c := testenv.StartCluster(t)
	ctx := testenv.Ctx(t, 3*time.Minute)
	closers := map[*Client]func() error{}
	connect := func(host string) *Client {
		q, err := New(Options{ClusterAddrs: c.Addrs, Name: "cluster", Timeout: 5 * time.Second, Host: host, Version: "1"})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := q.rdb.(*redis.ClusterClient); !ok {
			t.Fatalf("cluster_addrs made a %T, want a *redis.ClusterClient", q.rdb)
		}
		// The fresh store's hold is one span here (the rule is the same).
		q.restartHold = 0
		closers[q] = sync.OnceValue(q.Close)
		t.Cleanup(func() { closers[q]() })
		return q
	}
	a, b := connect("h-a"), connect("h-b")

	// One bucket on each master.
	buckets := make([]string, len(c.Addrs))
	for i, found := 0, 0; found < len(buckets); i++ {
		if i == 1000 {
			t.Fatalf("no bucket name on every master in 1000 tries: %q", buckets)
		}
		name := fmt.Sprintf("p.b%d", i)
		if n := c.Node(a.keys(name)[0]); buckets[n] == "" {
			buckets[n] = name
			found++
		}
	}
	t.Logf("buckets by master: %q; fleet keys on master %d, guard keys on master %d",
		buckets, c.Node(a.fleetKeys()[0]), c.Node(a.guardKeys()[0]))

	// Windows long enough that a loaded machine's round trips never empty
	// one between the grants that fill it and the asks that find it full.
	l := scheduler.Limit{Requests: 2, Window: time.Second}
	span := 1500 * time.Millisecond
	limits := map[string]scheduler.Limit{}
	for _, bk := range buckets {
		limits[bk] = l
	}

	t.Run("heartbeat", func(t *testing.T) {
		for _, q := range []*Client{a, b} {
			if r, err := q.Beat(ctx, limits); err != nil || !r.Republish {
				t.Fatalf("first beat: %+v, %v; want a republish", r, err)
			}
		}
		if r, err := a.Beat(ctx, limits); err != nil || r.Republish || r.Forgot {
			t.Fatalf("second beat, nothing happened: %+v, %v", r, err)
		}
		for _, bk := range buckets {
			for _, q := range []*Client{a, b} {
				if held, err := a.rdb.HGet(ctx, q.keys(bk)[6], q.me.ID).Result(); err != nil || held != encodeLimit(l) {
					t.Errorf("bucket %s: %s holds %q, %v; want %s", bk, q.me.Host, held, err, encodeLimit(l))
				}
			}
		}
	})

	t.Run("status", func(t *testing.T) {
		st := a.Status(ctx, limits)
		if !st.Reachable || len(st.Members) != 2 || len(st.Mismatches) != 0 {
			t.Fatalf("status: %+v", st)
		}
		for _, m := range st.Members {
			if (m.ID != a.me.ID && m.ID != b.me.ID) || m.Self != (m.ID == a.me.ID) || len(m.Limits) != len(buckets) {
				t.Errorf("member %+v", m)
			}
		}
	})

	for node, bk := range buckets {
		t.Run(fmt.Sprintf("bucket %s on master %d", bk, node), func(t *testing.T) {
			k := a.keys(bk)
			score := func(key, member string) (float64, bool) {
				t.Helper()
				s, err := a.rdb.ZScore(ctx, key, member).Result()
				if errors.Is(err, redis.Nil) {
					return 0, false
				}
				if err != nil {
					t.Fatal(err)
				}
				return s, true
			}

			// Seed: a grant made before joining lands in the log.
			if err := a.Seed(ctx, bk, span, []scheduler.SeedGrant{{Local: time.Now(), Age: time.Millisecond}}); err != nil {
				t.Fatal(err)
			}
			if got, err := a.rdb.ZRange(ctx, k[0], 0, -1).Result(); err != nil || len(got) != 1 || !strings.HasPrefix(got[0], "seed-h-a-") {
				t.Fatalf("log after a seed: %q, %v", got, err)
			}

			// Grant (past the fresh store's hold and the seed) until
			// the window is full.
			g1 := clusterGrant(t, a, bk, l, span, "")
			g2 := clusterGrant(t, a, bk, l, span, "")

			// Restamp moves a grant later, Release drops one.
			to := g2.At.Add(100 * time.Millisecond)
			if err := a.Restamp(ctx, bk, g2.Member, to); err != nil {
				t.Fatal(err)
			}
			if s, ok := score(k[0], g2.Member); !ok || int64(s) != to.UnixMicro() {
				t.Fatalf("restamped grant's score %.0f (present %v), want %d", s, ok, to.UnixMicro())
			}
			if err := a.Release(ctx, bk, g1.Member); err != nil {
				t.Fatal(err)
			}
			if _, ok := score(k[0], g1.Member); ok {
				t.Fatal("a released grant is still in the log")
			}
			clusterGrant(t, b, bk, l, span, "") // the freed slot, on another member

			// Full: the budget is spent, and a queued ask takes a
			// place in the fleet's queue.
			if rem, reset, err := a.Budget(ctx, bk, l, span); err != nil || rem != 0 || reset <= 0 || reset > 2*span {
				t.Fatalf("budget of a full bucket: %d, reset %s, %v", rem, reset, err)
			}
			for _, w := range []struct {
				q      *Client
				ticket string
			}{{a, "t1"}, {b, "t2"}} {
				g, err := w.q.GrantQueued(ctx, bk, l, span, w.ticket, -1, 0)
				if err != nil || g.Granted || !g.Queued || g.Wait <= 0 {
					t.Fatalf("queued ask %s on a full bucket: %+v, %v; want a place in the queue", w.ticket, g, err)
				}
			}
			if n, err := a.rdb.ZCard(ctx, k[7]).Result(); err != nil || n != 2 {
				t.Fatalf("%d waiters (%v), want 2", n, err)
			}
			// Dequeue (a MULTI/EXEC on the bucket's node) leaves it.
			if err := a.Dequeue(ctx, bk, "t1"); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{k[7], k[8]} {
				if _, ok := score(key, a.me.ID+":t1"); ok {
					t.Fatalf("a dequeued ticket is still in %s", key)
				}
			}
			// The remaining waiter is granted at its slot, and leaves
			// the queue.
			clusterGrant(t, b, bk, l, span, "t2")
			if n, err := a.rdb.ZCard(ctx, k[7]).Result(); err != nil || n != 0 {
				t.Fatalf("%d waiters (%v) after the last was granted", n, err)
			}

			// Pause holds every member.
			if err := a.Pause(ctx, bk, time.Now().Add(time.Hour), "429 | test"); err != nil {
				t.Fatal(err)
			}
			if g, err := b.Grant(ctx, bk, l, span); err != nil || g.Granted || g.PausedFor < 59*time.Minute || g.Reason != "paused: 429 / test" {
				t.Fatalf("grant during a pause: %+v, %v", g, err)
			}
			if _, reset, err := b.Budget(ctx, bk, l, span); err != nil || reset < 59*time.Minute {
				t.Fatalf("budget during a pause: reset %s, %v", reset, err)
			}

			// The in-flight lease is one member's at a time.
			lease, ok, _, err := a.TakeLease(ctx, bk, 1, time.Minute)
			if err != nil || !ok {
				t.Fatalf("first lease: %v, %v", ok, err)
			}
			if _, ok, wait, err := b.TakeLease(ctx, bk, 1, time.Minute); err != nil || ok || wait <= 0 {
				t.Fatalf("another member's lease while held: %v, wait %s, %v", ok, wait, err)
			}
			if ok, err := a.RenewLease(ctx, bk, lease, time.Minute); err != nil || !ok {
				t.Fatalf("renewal: %v, %v", ok, err)
			}
			if err := a.ReleaseLease(ctx, bk, lease); err != nil {
				t.Fatal(err)
			}
			lb, ok, _, err := b.TakeLease(ctx, bk, 1, time.Minute)
			if err != nil || !ok {
				t.Fatalf("lease after release: %v, %v", ok, err)
			}
			if err := b.ReleaseLease(ctx, bk, lb); err != nil {
				t.Fatal(err)
			}

			// Every key of the bucket is on the master its tag names,
			// and on no other.
			pattern := "{" + a.prefix + ":" + bk + "}:*"
			for i := range c.Addrs {
				got := nodeKeys(t, c, i, pattern)
				if (i == node) != (len(got) > 0) {
					t.Errorf("master %d holds %q of bucket %s (on master %d)", i, got, bk, node)
				}
			}
		})
	}

	t.Run("status reads every bucket's limit", func(t *testing.T) {
		// A member configured otherwise sees each bucket's stored limit,
		// read from its own master.
		other := map[string]scheduler.Limit{}
		for _, bk := range buckets {
			other[bk] = scheduler.Limit{Requests: 5, Window: time.Second}
		}
		st := b.Status(ctx, other)
		if !st.Reachable || len(st.Mismatches) != len(buckets) {
			t.Fatalf("status with other limits: %+v; want a mismatch per bucket", st)
		}
		for _, m := range st.Mismatches {
			if m.Fleet != encodeLimit(l) {
				t.Errorf("bucket %s: fleet limit %q, want %q", m.Bucket, m.Fleet, encodeLimit(l))
			}
		}
	})

	t.Run("purchase guard", func(t *testing.T) {
		const op = "hellorf:licence-1"
		ok, tok, _, err := a.ClaimGuard(ctx, op, time.Minute, 0, false)
		if err != nil || !ok {
			t.Fatalf("first claim: %v, %v", ok, err)
		}
		if ok, _, prev, err := b.ClaimGuard(ctx, op, time.Minute, 0, false); err != nil || ok || prev.State != GuardInFlight {
			t.Fatalf("another member's duplicate claim: %v, %+v, %v; want refused, in flight", ok, prev, err)
		}
		if err := a.SettleGuard(ctx, op, tok, GuardDone, "p-42", false); err != nil {
			t.Fatal(err)
		}
		if ok, _, prev, err := b.ClaimGuard(ctx, op, time.Minute, 0, false); err != nil || ok || prev.State != GuardDone || prev.PurchaseID != "p-42" {
			t.Fatalf("duplicate of a settled purchase: %v, %+v, %v; want refused, done, p-42", ok, prev, err)
		}
		ok, tok2, _, err := b.ClaimGuard(ctx, op, time.Minute, 0, true)
		if err != nil || !ok {
			t.Fatalf("confirmed repeat: %v, %v", ok, err)
		}
		if err := b.SettleGuard(ctx, op, tok2, "", "", true); err != nil {
			t.Fatal(err)
		}
		if ok, _, _, err := a.ClaimGuard(ctx, op, time.Minute, 0, false); err != nil || !ok {
			t.Fatalf("claim after a release: %v, %v", ok, err)
		}
	})

	t.Run("cache", func(t *testing.T) {
		ra := a.Cache(nil)
		defer ra.Close()
		purged := make(chan string, 8)
		rb := b.Cache(func(p string) { purged <- p })
		defer rb.Close()

		// A miss takes the fill lock; another member's lookup waits.
		const key = "ineo:c0"
		fa, err := ra.Lookup(ctx, key, false)
		if err != nil || fa.Lock == "" || fa.Value != nil {
			t.Fatalf("lookup on an empty store: %+v, %v; want the lock", fa, err)
		}
		if fb, err := rb.Lookup(ctx, key, false); err != nil || !fb.Wait || fb.Lock != "" {
			t.Fatalf("another member's lookup under the lock: %+v, %v; want to wait", fb, err)
		}
		// Renew sets the lock's lease (lengthened here first, so that
		// only a renewal brings it back to lockTTL).
		lock := ra.keys(key)[1]
		if err := a.rdb.PExpire(ctx, lock, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if err := ra.Renew(ctx, key, fa.Lock); err != nil {
			t.Fatal(err)
		}
		if d, err := a.rdb.PTTL(ctx, lock).Result(); err != nil || d <= 0 || d > lockTTL {
			t.Fatalf("lock lease after a renewal: %s, %v; want at most %s", d, err, lockTTL)
		}
		// Store releases the lock; the other member gets the answer.
		if err := ra.Store(ctx, key, []byte("v0"), time.Hour, time.Hour, fa.Lock); err != nil {
			t.Fatal(err)
		}
		if n, err := a.rdb.Exists(ctx, lock).Result(); err != nil || n != 0 {
			t.Fatalf("the lock outlived the store (%d, %v)", n, err)
		}
		if fb, err := rb.Lookup(ctx, key, false); err != nil || string(fb.Value) != "v0" || fb.Fresh <= 0 || fb.Lock != "" || fb.Wait {
			t.Fatalf("another member's lookup after the store: %+v, %v", fb, err)
		}
		// Unlock hands over: the waiters fetch on their own.
		const key2 = "ineo:c1"
		fa2, err := ra.Lookup(ctx, key2, false)
		if err != nil || fa2.Lock == "" {
			t.Fatalf("lookup: %+v, %v; want the lock", fa2, err)
		}
		if err := ra.Unlock(ctx, key2, fa2.Lock); err != nil {
			t.Fatal(err)
		}
		if fb, err := rb.Lookup(ctx, key2, false); err != nil || fb.Wait || fb.Lock != "" {
			t.Fatalf("lookup after an unlock: %+v, %v; want: fetch on your own", fb, err)
		}

		// Purge: entries of two providers on every master.
		count := func(provider string) []int {
			n := make([]int, len(c.Addrs))
			for i := range c.Addrs {
				n[i] = len(nodeKeys(t, c, i, a.prefix+":cache:"+provider+"*"))
			}
			return n
		}
		for _, p := range []string{"ineo", "spotify"} {
			for i := range 30 {
				if err := ra.Store(ctx, fmt.Sprintf("%s:p%d", p, i), []byte("x"), time.Hour, time.Hour, ""); err != nil {
					t.Fatal(err)
				}
			}
			for i, n := range count(p + ":") {
				if n == 0 {
					t.Fatalf("no %s entry on master %d of %d: the purge would not be tested there", p, i, len(c.Addrs))
				}
			}
		}
		// The other member's subscription is in place (on the node its
		// channel's slot names) before anything is published. The
		// client sends each PUBLISH to the next master in turn, so of
		// the two purges below at least one reaches the subscriber
		// through the cluster bus.
		sub := -1
		testenv.Eventually(t, 30*time.Second, "the other member to subscribe to purges", func() bool {
			for i, addr := range c.Addrs {
				nc := redis.NewClient(&redis.Options{Addr: addr})
				got, err := nc.PubSubNumSub(ctx, rb.channel).Result()
				nc.Close()
				if err == nil && got[rb.channel] > 0 {
					sub = i
					return true
				}
			}
			return false
		})
		t.Logf("the other member listens for purges on master %d", sub)
		want := func(provider string) {
			t.Helper()
			select {
			case p := <-purged:
				if p != provider {
					t.Fatalf("the other member was told to purge %q, want %q", p, provider)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("the other member did not hear of the purge of %q within 30 s", provider)
			}
		}
		if err := ra.Purge(ctx, "ineo"); err != nil {
			t.Fatal(err)
		}
		if n := count("ineo:"); n[0]+n[1]+n[2] != 0 {
			t.Fatalf("ineo entries left per master after its purge: %v", n)
		}
		for i, n := range count("spotify:") {
			if n == 0 {
				t.Fatalf("purging ineo purged spotify's entries on master %d", i)
			}
		}
		want("ineo")
		if err := ra.Purge(ctx, ""); err != nil {
			t.Fatal(err)
		}
		if n := count(""); n[0]+n[1]+n[2] != 0 {
			t.Fatalf("cache keys left per master after a purge of all: %v", n)
		}
		want("")
	})

	t.Run("leave", func(t *testing.T) {
		// Both beat first: the test has run for about memberTTL by now,
		// and a record that merely expired must not pass for one that
		// left.
		for _, q := range []*Client{a, b} {
			if _, err := q.Beat(ctx, limits); err != nil {
				t.Fatal(err)
			}
		}
		if err := closers[b](); err != nil {
			t.Fatal(err)
		}
		st := a.Status(ctx, limits)
		if !st.Reachable || len(st.Members) != 1 || st.Members[0].ID != a.me.ID {
			t.Fatalf("status after b left: %+v", st)
		}
		for _, bk := range buckets {
			if _, err := a.rdb.ZScore(ctx, a.keys(bk)[5], b.me.ID).Result(); !errors.Is(err, redis.Nil) {
				t.Errorf("bucket %s: the member that left still holds its limit (%v)", bk, err)
			}
		}
	})
}

// clusterGrant asks (with ticket, "" for none) until granted, sleeping the
// wait the store names, as the scheduler does.
func clusterGrant(t *testing.T, q *Client, bucket string, l scheduler.Limit, span time.Duration, ticket string) scheduler.SharedGrant {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		g, err := q.GrantQueued(context.Background(), bucket, l, span, ticket, -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		if g.Granted {
			return g
		}
		if g.Mismatch || time.Now().After(deadline) {
			t.Fatalf("no grant on %s within 30 s: %+v", bucket, g)
		}
		time.Sleep(g.Wait) // the store's own answer, not a guess
	}
}

// nodeKeys are the keys matching pattern on master i alone: SCAN on one
// node lists its own keys, never another's.
func nodeKeys(t *testing.T, c *testenv.Cluster, i int, pattern string) []string {
	t.Helper()
	nc := redis.NewClient(&redis.Options{Addr: c.Addrs[i]})
	defer nc.Close()
	var keys []string
	iter := nc.Scan(context.Background(), 0, pattern, 1000).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}
