package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
)

// TestExhausted: every refusal that is a hold sending nothing (budget
// spent or paused, state unwritable, the fleet unreachable, this member's
// limit differing from its fleet's) lets a stale answer be served where
// the caller or config accepts one; other errors do not. (Before: a
// fleet_limit_mismatch refused even a caller that accepted stale.)
func TestExhausted(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"rate limited", problem.RateLimited(time.Second, "full"), true},
		{"state unwritable", problem.StateUnwritable(time.Second, "disk full"), true},
		{"fleet unreachable", problem.FleetUnreachable(time.Second, "redis"), true},
		{"fleet limit mismatch", problem.FleetLimitMismatch(time.Second, "6 vs 10"), true},
		{"wrapped", fmt.Errorf("fetch: %w", problem.FleetLimitMismatch(time.Second, "x")), true},
		{"upstream 502", problem.New(http.StatusBadGateway, "upstream failed"), false},
		{"other 503", problem.New(http.StatusServiceUnavailable, "scheduler unavailable"), false},
		{"plain error", errors.New("boom"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exhausted(tc.err); got != tc.want {
				t.Errorf("exhausted(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
