package fleet

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/testenv"
)

// TestSentinel: a fleet given sentinel_addrs and master_name (no
// redis_url) finds the master through the Sentinel and keeps its records
// there: a guard claimed through one member's client is seen by another's.
// Without the Sentinel path the client would take the addresses for a
// Cluster's nodes, and a Sentinel's port answers no Cluster command.
func TestSentinel(t *testing.T) {
	t.Parallel()
	s := testenv.StartSentinel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func() *Client {
		q, err := New(Options{SentinelAddrs: []string{s.Addr}, MasterName: s.MasterName, Name: "sentinel", Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		return q
	}
	a, b := connect(), connect()
	claimed, _, _, err := a.ClaimGuard(ctx, "licence-1", time.Minute, time.Minute, false)
	if err != nil || !claimed {
		t.Fatalf("first claim through the Sentinel's master: claimed %v, %v", claimed, err)
	}
	claimed, _, _, err = b.ClaimGuard(ctx, "licence-1", time.Minute, time.Minute, false)
	if err != nil || claimed {
		t.Fatalf("second member's claim of the same purchase: claimed %v, %v; want refused", claimed, err)
	}
	if st := b.Status(ctx, nil); !st.Reachable {
		t.Fatalf("status through the Sentinel: %+v", st)
	}
}
