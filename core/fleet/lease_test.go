package fleet

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// TestLease: a bucket's turns are exclusive across members; a holder that
// dies (stops renewing) loses its lease when it expires; renewal keeps a
// lease past its first expiry; a release frees it at once; and a stale
// holder's release never deletes another member's lease.
func TestLease(t *testing.T) {
	q, _ := newTestClient(t, "unit")
	ctx := context.Background()
	const ttl = 300 * time.Millisecond

	a, ok, _, err := q.TakeLease(ctx, "spotify.api", 1, ttl)
	if err != nil || !ok {
		t.Fatalf("first lease: %v %v", ok, err)
	}
	_, ok, wait, err := q.TakeLease(ctx, "spotify.api", 1, ttl)
	if err != nil || ok {
		t.Fatalf("second lease while the first is held: %v %v", ok, err)
	}
	if wait <= 0 || wait > ttl {
		t.Fatalf("wait %s, want the holder's remaining ttl (0, %s]", wait, ttl)
	}
	// Another bucket's turns are its own.
	if _, ok, _, err := q.TakeLease(ctx, "spotify.other", 1, ttl); err != nil || !ok {
		t.Fatalf("another bucket: %v %v", ok, err)
	}

	// Renewal keeps it over several ttls.
	end := time.Now().Add(3 * ttl)
	for time.Now().Before(end) {
		if ok, err := q.RenewLease(ctx, "spotify.api", a, ttl); err != nil || !ok {
			t.Fatalf("renewal: %v %v", ok, err)
		}
		if _, ok, _, err := q.TakeLease(ctx, "spotify.api", 1, ttl); err != nil || ok {
			t.Fatalf("a lease taken while the holder renews: %v %v", ok, err)
		}
		time.Sleep(ttl / 4)
	}

	// The holder dies: its lease expires and another member gets it.
	var b Lease
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ok bool
		var wait time.Duration
		if b, ok, wait, err = q.TakeLease(ctx, "spotify.api", 1, 10*time.Second); err != nil {
			t.Fatal(err)
		} else if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dead holder's lease never expired")
		}
		time.Sleep(wait)
	}
	// The dead holder's renewal and release come too late: they must not
	// touch b's lease.
	if ok, err := q.RenewLease(ctx, "spotify.api", a, ttl); err != nil || ok {
		t.Fatalf("a stale holder renewed another's lease: %v %v", ok, err)
	}
	if err := q.ReleaseLease(ctx, "spotify.api", a); err != nil {
		t.Fatal(err)
	}
	if _, ok, _, _ := q.TakeLease(ctx, "spotify.api", 1, ttl); ok {
		t.Fatal("a stale holder's release deleted another member's lease")
	}
	// b's release frees it at once.
	if err := q.ReleaseLease(ctx, "spotify.api", b); err != nil {
		t.Fatal(err)
	}
	if _, ok, _, err := q.TakeLease(ctx, "spotify.api", 1, ttl); err != nil || !ok {
		t.Fatalf("after release: %v %v", ok, err)
	}

	// A lease past its expiry is not renewed, even when nobody has
	// taken it since: its holder may not count on it any more.
	for i := 0; ; i++ {
		bucket := "p.late" + strconv.Itoa(i)
		c, ok, _, err := q.TakeLease(ctx, bucket, 1, 50*time.Millisecond)
		if err != nil || !ok {
			t.Fatalf("lease: %v %v", ok, err)
		}
		_, ok, wait, err := q.TakeLease(ctx, bucket, 1, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			// This machine took over 50 ms between two round trips:
			// try again rather than test another case.
			if i == 10 {
				t.Fatal("no two round trips within 50 ms in 10 tries")
			}
			continue
		}
		time.Sleep(wait) // the store's own answer: the lease is over then
		if ok, err := q.RenewLease(ctx, bucket, c, time.Minute); err != nil || ok {
			t.Fatalf("an expired lease renewed: %v %v", ok, err)
		}
		// Its holder's release still frees it (it is nobody else's).
		if err := q.ReleaseLease(ctx, bucket, c); err != nil {
			t.Fatal(err)
		}
		if n, err := q.rdb.Exists(ctx, q.leaseKeys(bucket, 1)...).Result(); err != nil || n != 0 {
			t.Fatalf("the expired lease's release left %d keys (%v)", n, err)
		}
		break
	}

	// max_in_flight = 2: two turns, not three.
	n := 0
	for range 3 {
		if _, ok, _, err := q.TakeLease(ctx, "p.two", 2, time.Minute); err != nil {
			t.Fatal(err)
		} else if ok {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d turns of a max_in_flight = 2 bucket", n)
	}
}
