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
// Cluster's nodes, and a Sentinel's port answers no Cluster command. With
// passwords on the master and on the Sentinel ([fleet] password and
// sentinel_password), the fleet logs in to each with its own; a member
// without them reaches nothing (and so grants nothing).
func TestSentinel(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		o    testenv.SentinelOptions
	}{
		{"open", testenv.SentinelOptions{}},
		{"passwords", testenv.SentinelOptions{Password: "master-pw", SentinelPassword: "sentinel-pw"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := testenv.StartSentinelWith(t, tt.o)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			connect := func(pw, spw string) *Client {
				q, err := New(Options{SentinelAddrs: []string{s.Addr}, MasterName: s.MasterName, Name: "sentinel",
					Password: pw, SentinelPassword: spw, Timeout: 5 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				q.restartHold = 0 // a new store holds claims (TestGuardSurvivesEmptyRestart)
				t.Cleanup(func() { q.Close() })
				return q
			}
			a, b := connect(s.Password, s.SentinelPassword), connect(s.Password, s.SentinelPassword)
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
			if tt.o.Password == "" {
				return
			}
			// The master's password alone: the Sentinel refuses to name
			// the master. The Sentinel's alone: the master refuses.
			for _, c := range []struct{ pw, spw string }{{s.Password, ""}, {"", s.SentinelPassword}} {
				q := connect(c.pw, c.spw)
				if _, _, _, err := q.ClaimGuard(ctx, "licence-2", time.Minute, time.Minute, false); err == nil {
					t.Fatalf("claim with password %q, sentinel_password %q succeeded; want refused", c.pw, c.spw)
				}
			}
		})
	}
}
