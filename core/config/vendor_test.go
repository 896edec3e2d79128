package config

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMaxInWindow(t *testing.T) {
	const s = time.Second
	tests := []struct {
		requests      int
		window        time.Duration
		margin        time.Duration
		vendorWindow  time.Duration
		want          int
		overSpotify   bool // more than 6 in 7 s
		overTmanageOK bool // ignored unless vendorWindow is 11 s
	}{
		// iNeo spotify.php: beyond 6 in 7 s.
		{6, 7 * s, 250 * time.Millisecond, 7 * s, 6, false, false},            // the default
		{10, 7 * s, 250 * time.Millisecond, 7 * s, 10, true, false},           // plainly more
		{3, 3 * s, 250 * time.Millisecond, 7 * s, 9, true, false},             // 3 at 0, 3, 6
		{1, 2 * s, 250 * time.Millisecond, 7 * s, 4, false, false},            // at 0, 2, 4, 6
		{5, 7 * s, 250 * time.Millisecond, 7 * s, 5, false, false},            // stricter
		{2, 3500 * time.Millisecond, time.Nanosecond, 7 * s, 4, false, false}, // exact multiple: 0 and 3.5+ only
		{6, 7 * s, time.Hour, 7 * s, 6, false, false},                         // a long margin is not credited...
		{6, 3 * s, time.Hour, 7 * s, 18, true, false},                         // ...so it cannot excuse a short window
		// Without a margin, sends exactly one window apart both count.
		{6, 7 * s, 0, 7 * s, 12, true, false},
		{1, 2 * s, 0, 7 * s, 4, false, false},
		{2, 3500 * time.Millisecond, 0, 7 * s, 6, false, false},
		{3, 3500 * time.Millisecond, 0, 7 * s, 9, true, false},
		// iNeo tmanage: beyond 10 in 11 s.
		{10, 11 * s, 250 * time.Millisecond, 11 * s, 10, false, false},
		{5, 5500 * time.Millisecond, 250 * time.Millisecond, 11 * s, 10, false, false},
		{5, 5 * s, 250 * time.Millisecond, 11 * s, 15, false, true},
		{11, time.Minute, 250 * time.Millisecond, 11 * s, 11, false, true},
		// Nonsense the other checks refuse; no overflow, no division by zero.
		{0, 7 * s, 0, 7 * s, 0, false, false},
		{1, 0, 0, 7 * s, 0, false, false},
		{1 << 40, time.Nanosecond, 0, 7 * s, 1 << 62, true, false},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%d per %s margin %s in %s", tt.requests, tt.window, tt.margin, tt.vendorWindow)
		t.Run(name, func(t *testing.T) {
			got := maxInWindow(tt.requests, tt.window, tt.margin, tt.vendorWindow)
			if got != tt.want {
				t.Fatalf("maxInWindow = %d, want %d", got, tt.want)
			}
			if tt.vendorWindow == 7*time.Second && (got > 6) != tt.overSpotify {
				t.Fatalf("over spotify.php's 6 in 7 s: %v, want %v", got > 6, tt.overSpotify)
			}
			if tt.vendorWindow == 11*time.Second && (got > 10) != tt.overTmanageOK {
				t.Fatalf("over tmanage's 10 in 11 s: %v, want %v", got > 10, tt.overTmanageOK)
			}
		})
	}
}

// TestMaxInWindowIsReached checks the bound against a brute-force schedule:
// greedy grants as the scheduler makes them (at most R in any half-open
// (t-(W+m), t]), counted in every closed vendor window.
func TestMaxInWindowIsReached(t *testing.T) {
	const ms = time.Millisecond
	for _, c := range []struct {
		r    int
		w, m time.Duration
	}{{6, 7000 * ms, 0}, {3, 3000 * ms, 1 * ms}, {1, 2000 * ms, 1 * ms}, {2, 3500 * ms, 0}, {2, 3500 * ms, 1 * ms}, {4, 1000 * ms, 1 * ms}, {5, 7000 * ms, 1 * ms}} {
		// Greedy: every grant as early as the rule allows, on a 1 ms grid.
		var grants []time.Duration
		for t0 := time.Duration(0); t0 < 30*time.Second; t0 += ms {
			for {
				n := 0
				for _, g := range grants {
					if g > t0-(c.w+c.m) && g <= t0 {
						n++
					}
				}
				if n >= c.r {
					break
				}
				grants = append(grants, t0)
			}
		}
		most := 0
		for _, start := range grants {
			n := 0
			for _, g := range grants {
				if g >= start && g <= start+7*time.Second {
					n++
				}
			}
			most = max(most, n)
		}
		// The greedy schedule reaches the exact bound R*(floor(V/(W+m))+1);
		// the check's bound, which ignores the margin's size, is never
		// below it.
		exact := c.r * int(7*time.Second/(c.w+c.m)+1)
		if most != exact {
			t.Errorf("%d per %s +%s: greedy schedule puts %d in 7 s, exact bound %d", c.r, c.w, c.m, most, exact)
		}
		if got := maxInWindow(c.r, c.w, c.m, 7*time.Second); got < most {
			t.Errorf("%d per %s +%s: maxInWindow %d below the %d a schedule reaches", c.r, c.w, c.m, got, most)
		}
	}
}

func TestVendorLimitChecks(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		errKey  string // "" means the config loads
		errLine int
		errMsg  string
		warn    string // substring of the only warning, "" for none
	}{
		{"default", "log_level = \"info\"\n", "", 0, "", ""},
		{"spotify 6 per 7s", "[providers.ineo.limits.spotify]\nrequests = 6\nwindow = \"7s\"\n", "", 0, "", ""},
		{"spotify 5 per 7s", "[providers.ineo.limits.spotify]\nrequests = 5\nwindow = \"7s\"\n", "", 0, "", ""},
		{"spotify 1 per 2s", "[providers.ineo.limits.spotify]\nrequests = 1\nwindow = \"2s\"\n", "", 0, "", ""},
		{"spotify 10 per 7s", "\n[providers.ineo.limits.spotify]\nrequests = 10\nwindow = \"7s\"\n",
			"providers.ineo.limits.spotify", 2, "10 per 7s lets up to 10 requests reach iNeo spotify.php within 7s, and the vendor bans the IP, then the token, for good beyond 6 in 7s", ""},
		{"spotify 3 per 3s", "[providers.ineo.limits.spotify]\nrequests = 3\nwindow = \"3s\"\n",
			"providers.ineo.limits.spotify", 1, "lets up to 9 requests", ""},
		{"tmanage 5 per 5s", "[providers.ineo.limits.tmanage]\nrequests = 5\nwindow = \"5s\"\n",
			"providers.ineo.limits.tmanage", 1, "lets up to 15 requests reach iNeo tmanage within 11s", ""},
		{"tmanage 10 per 11s", "[providers.ineo.limits.tmanage]\nrequests = 10\nwindow = \"11s\"\n", "", 0, "", ""},
		{"inline table", "[providers.ineo]\nlimits.spotify = { requests = 7, window = \"7s\" }\n",
			"providers.ineo.limits.spotify", 2, "beyond 6 in 7s", ""},
		{"checked while disabled too", "[providers.ineo]\nenabled = false\n[providers.ineo.limits.spotify]\nrequests = 7\nwindow = \"7s\"\n",
			"providers.ineo.limits.spotify", 3, "beyond 6 in 7s", ""},
		{"allowed", "[providers.ineo.limits.spotify]\nrequests = 10\nwindow = \"7s\"\nallow_over_vendor_limit = true\n",
			"", 0, "", "providers.ineo.limits.spotify: 10 per 7s lets up to 10 requests"},
		{"allowed but within", "[providers.ineo.limits.spotify]\nrequests = 6\nwindow = \"7s\"\nallow_over_vendor_limit = true\n", "", 0, "", ""},
		{"margin zero", "[scheduler]\nmargin = \"0s\"\n", "scheduler.margin", 2, "built-in limit of 6 per 7s lets 12 requests", ""},
		{"margin zero, iNeo off", "[scheduler]\nmargin = \"0s\"\n[providers.ineo]\nenabled = false\n", "", 0, "", ""},
		{"margin zero, stricter tables", "[scheduler]\nmargin = \"0s\"\n[providers.ineo.limits.spotify]\nrequests = 3\nwindow = \"7s\"\n[providers.ineo.limits.tmanage]\nrequests = 5\nwindow = \"11s\"\n", "", 0, "", ""},
		{"margin zero, table at the vendor's figure", "[scheduler]\nmargin = \"0s\"\n[providers.ineo.limits.spotify]\nrequests = 6\nwindow = \"7s\"\n[providers.ineo.limits.tmanage]\nrequests = 5\nwindow = \"11s\"\n",
			"providers.ineo.limits.spotify", 3, "sends exactly one window apart both count", ""},
		{"hellorf has no threshold", "[providers.hellorf.limits.api]\nrequests = 1000\nwindow = \"1s\"\n", "", 0, "", ""},
		{"spotify has no threshold", "[providers.spotify.limits.api]\nrequests = 1000\nwindow = \"1s\"\n", "", 0, "", ""},
		{"allow where nothing is documented", "[providers.hellorf.limits.api]\nrequests = 10\nwindow = \"1s\"\nallow_over_vendor_limit = true\n",
			"providers.hellorf.limits.api.allow_over_vendor_limit", 4, "documents no rate threshold", ""},
		{"allow not a boolean", "[providers.ineo.limits.spotify]\nrequests = 6\nwindow = \"7s\"\nallow_over_vendor_limit = \"yes\"\n",
			"providers.ineo.limits.spotify.allow_over_vendor_limit", 4, "must be a boolean", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.src), "/etc/sluice/config.toml")
			if tt.errKey == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				w := cfg.Warnings()
				switch {
				case tt.warn == "" && len(w) != 0:
					t.Fatalf("warnings %q, want none", w)
				case tt.warn != "" && (len(w) != 1 || !strings.Contains(w[0], tt.warn) || !strings.Contains(w[0], "allow_over_vendor_limit")):
					t.Fatalf("warnings %q, want one containing %q", w, tt.warn)
				}
				return
			}
			if err == nil {
				t.Fatalf("loaded; want an error on %s", tt.errKey)
			}
			errs := allErrors(err)
			if !slices.ContainsFunc(errs, func(e *Error) bool {
				return e.Key == tt.errKey && e.Line == tt.errLine && strings.Contains(e.Msg, tt.errMsg)
			}) {
				t.Fatalf("no error at line %d on %s containing %q:\n%v", tt.errLine, tt.errKey, tt.errMsg, err)
			}
		})
	}
}
