package problem

import (
	"testing"
	"time"
)

// TestLocal: only refusals sluice decided itself, with nothing sent, are
// local; an upstream's own 429 relayed (RateLimited without a reason) is
// not, so it is still counted as the miss it was.
func TestLocal(t *testing.T) {
	for _, tc := range []struct {
		p    *Problem
		want bool
	}{
		{NoBudget(time.Second, "full"), true},
		{StateUnwritable(time.Second, "ENOSPC"), true},
		{FleetUnreachable(time.Second, "redis"), true},
		{FleetLimitMismatch(time.Second, "limits"), true},
		{RateLimited(time.Second, "Spotify answered 429"), false},
		{New(502, "bad gateway"), false},
	} {
		if got := tc.p.Local(); got != tc.want {
			t.Errorf("%v (reason %q): Local %v, want %v", tc.p, tc.p.Reason, got, tc.want)
		}
	}
}
