package main

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api"
)

// TestFormatStatusFleet: status prints the fleet: its members, which of
// them disagree (limits, version) and the buckets this member holds
// because its limit differs; without Redis, that nothing is sent.
func TestFormatStatusFleet(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.Local)
	st := &api.Status{Version: "1.2.3", Fleet: &api.FleetStatus{Name: "prod", Member: "aa11", RedisReachable: true,
		Members: []api.FleetMember{
			{ID: "aa11", Host: "vps1", Version: "1.2.3", Schema: "v1", Started: now.Add(-time.Hour), Self: true},
			{ID: "bb22", Host: "vps2", Version: "1.2.2", Schema: "v1", Started: now.Add(-2 * time.Hour), VersionDisagrees: true,
				LimitsDisagree: []string{"ineo.spotify"}},
		},
		Mismatches: []api.FleetMismatch{{Bucket: "ineo.tmanage", Limit: "9 per 11s", FleetLimit: "10 per 11s"}},
	}}
	got := formatStatus(st, now)
	for _, want := range []string{
		"FLEET prod: 2 live members, this one aa11, redis reachable\n",
		"MEMBER       HOST  VERSION  STARTED              DISAGREES\n",
		"aa11 (this)  vps1  1.2.3    2026-03-01 11:00:00  -\n",
		"bb22         vps2  1.2.2    2026-03-01 10:00:00  limits of ineo.spotify; version 1.2.2 schema v1\n",
		"HELD ineo.tmanage: this member's limit 9 per 11s differs from the fleet's 10 per 11s;",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status output lacks %q; got:\n%s", want, got)
		}
	}
	st.Fleet = &api.FleetStatus{Name: "prod", Member: "aa11", Error: "dial unix /x: connect: no such file"}
	if got := formatStatus(st, now); !strings.Contains(got, "FLEET prod: this member aa11; REDIS UNREACHABLE, no upstream request is sent for a fleet bucket: dial unix") {
		t.Errorf("unreachable fleet:\n%s", got)
	}
	st.Fleet = nil
	if got := formatStatus(st, now); strings.Contains(got, "FLEET") {
		t.Errorf("a single host shows a fleet:\n%s", got)
	}
}

// TestWatchFleet: the watch view shows the fleet in one line, red with
// what disagrees, and the buckets this member holds.
func TestWatchFleet(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.Local)
	st := &api.Status{Version: "1.2.3", Fleet: &api.FleetStatus{Name: "prod", Member: "aa11", RedisReachable: true,
		Members:    []api.FleetMember{{ID: "aa11", Self: true}, {ID: "bb22", VersionDisagrees: true}, {ID: "cc33"}},
		Mismatches: []api.FleetMismatch{{Bucket: "ineo.tmanage", Limit: "9 per 11s", FleetLimit: "10 per 11s"}}}}
	got := renderWatch(st, now, 0, true)
	for _, want := range []string{
		ansiRed + "fleet prod: 3 live members, 1 disagree (see sluicectl status)",
		ansiRed + "HELD ineo.tmanage: limit 9 per 11s here, 10 per 11s in the fleet: nothing sent until the configs agree",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("watch frame lacks %q; got:\n%q", want, got)
		}
	}
	st.Fleet = &api.FleetStatus{Name: "prod", Error: "connection refused"}
	if got := renderWatch(st, now, 0, true); !strings.Contains(got, "fleet prod: REDIS UNREACHABLE") {
		t.Errorf("unreachable fleet:\n%q", got)
	}
}
