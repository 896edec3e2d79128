package fleet

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
)

func newTestClient(t *testing.T, name string) (*Client, *testenv.Redis) {
	t.Helper()
	rd := testenv.StartRedis(t)
	q, err := New(Options{URL: rd.URL, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q, rd
}

// TestGuardClaim: a guard record is claimed once (SET NX) among racing
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
	// The window expires by itself (PX), also for an unknown outcome.
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
	if ok, _, _, err := q2.ClaimGuard(ctx, "hellorf:a", time.Minute, 0, false); !ok || err != nil {
		t.Fatalf("another fleet's claim: %v %v", ok, err)
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
