package client

import (
	"testing"
	"time"
)

func TestParseProgress(t *testing.T) {
	at := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want Waiting
		ok   bool
	}{
		{`stage=budget; bucket="ineo.spotify"; ahead=2; used=6; limit=6; next=4.2`,
			Waiting{Stage: "budget", Bucket: "ineo.spotify", Ahead: 2, Used: 6, Limit: 6, Next: 4200 * time.Millisecond, At: at}, true},
		{`stage=budget; bucket="ineo.spotify"; used=3; limit=6; next=0.0`,
			Waiting{Stage: "budget", Bucket: "ineo.spotify", Used: 3, Limit: 6, Next: 0, At: at}, true},
		{`stage=turn; bucket="hellorf.api"`, Waiting{Stage: "turn", Bucket: "hellorf.api", Next: -1, At: at}, true},
		{`stage=paused;bucket=spotify.api;next=30;future=x`, Waiting{Stage: "paused", Bucket: "spotify.api", Next: 30 * time.Second, At: at}, true},
		{`next=-3; stage=budget`, Waiting{Stage: "budget", Next: -1, At: at}, true},
		{``, Waiting{Next: -1, At: at}, false},
		{`bucket="x"`, Waiting{Bucket: "x", Next: -1, At: at}, false},
	} {
		got, ok := ParseProgress(tc.in, at)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseProgress(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
