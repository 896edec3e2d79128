package config

import (
	"fmt"
	"time"
)

// vendorLimit is a rate rule an upstream documents and enforces with a ban:
// more than requests arrivals within any window gets the caller banned for
// good. Only these are checked; hellorf and Spotify publish no threshold
// (Spotify answers 429 with Retry-After, which the plugin honours).
type vendorLimit struct {
	key      string // the limit table's config key
	what     string // the vendor's name for the service, for messages
	requests int
	window   time.Duration
	// limit returns the table, nil when the built-in limit applies.
	limit func(*Config) *Limit
	// enabled tells whether the built-in limit is in use at all.
	enabled func(*Config) bool
}

// vendorLimits are iNeo's spam-control rules: beyond 6 requests in 7 s
// (spotify.php) or 10 in 11 s (tmanage) the IP is banned, then the token.
// The plugin's built-in limits are exactly these.
var vendorLimits = []vendorLimit{
	{"providers.ineo.limits.spotify", "iNeo spotify.php", 6, 7 * time.Second,
		func(c *Config) *Limit { return c.Providers.Ineo.Limits.Spotify },
		func(c *Config) bool { return c.Providers.Ineo.Enabled }},
	{"providers.ineo.limits.tmanage", "iNeo tmanage", 10, 11 * time.Second,
		func(c *Config) *Limit { return c.Providers.Ineo.Limits.Tmanage },
		func(c *Config) bool { return c.Providers.Ineo.Enabled }},
}

// maxInWindow returns the most requests a bucket limited to requests per
// window can get to the upstream within one vendor window of length v, the
// vendor counting a closed interval [s, s+v] (an arrival exactly v ago
// still counts: the strict reading, and the simulator's).
//
// The scheduler grants at t only while fewer than R grants lie in the
// half-open (t-(W+m), t], m being scheduler.margin; so any R+1 consecutive
// grants span at least W+m: g[i+R]-g[i] >= W+m. (A grant counts from its
// answer's arrival, which is no earlier than the upstream counted it, so
// arrivals keep that spacing.) Starting a closed window at the first grant
// s, grant kR+r (0 <= r < R) comes no earlier than s+k(W+m) and is inside
// only if k(W+m) <= v. R grants at each of s, s+(W+m), s+2(W+m), ... reach
// the bound, so the exact maximum is R * (floor(v/(W+m)) + 1).
//
// The margin's size is not credited: it is there for transit and clock
// skew, not as budget, and the check must not invite a short window because
// the margin happens to be long. Only its sign counts. With m > 0 grants
// kR apart are more than kW apart, so k(W+m) <= v implies kW < v, that is
// k <= ceil(v/W)-1, and the bound is R * ceil(v/W). With m = 0, sends
// exactly W apart both count: R * (floor(v/W) + 1), twice the vendor's
// figure for iNeo's own 6 per 7 s.
func maxInWindow(requests int, window, margin, v time.Duration) int {
	if requests < 1 || window <= 0 {
		return 0
	}
	k := v / window // floor
	if margin > 0 {
		if v%window != 0 {
			k++ // ceil
		}
	} else {
		k++
	}
	// requests can be anything the file says; cap before multiplying.
	if int64(k) > 1<<31 || requests > 1<<31 {
		return 1 << 62
	}
	return requests * int(k)
}

// vendorFinding is a limit that can exceed a vendor's documented rule.
type vendorFinding struct {
	key     string
	msg     string
	allowed bool // allow_over_vendor_limit = true in the table
}

// vendorFindings checks every bucket with a documented vendor threshold:
// a configured table, or the built-in limit when scheduler.margin is zero
// (which lets even the vendor's own figures through twice in one window).
// Tables that fail their own checks (requests < 1, window <= 0) are left
// to those.
func (c *Config) vendorFindings() []vendorFinding {
	margin := c.Scheduler.Margin.Duration
	var out []vendorFinding
	for _, v := range vendorLimits {
		l := v.limit(c)
		if l == nil {
			if !v.enabled(c) {
				continue
			}
			if n := maxInWindow(v.requests, v.window, margin, v.window); n > v.requests {
				out = append(out, vendorFinding{key: "scheduler.margin", msg: fmt.Sprintf(
					"%s with the built-in limit of %s lets %d requests reach %s within %s (two sends exactly one window apart both count), "+
						"and the vendor bans the IP, then the token, for good beyond %d in %s; set a margin above zero",
					margin, fmtRate(v.requests, v.window), n, v.what, v.window, v.requests, v.window)})
			}
			continue
		}
		if l.Requests < 1 || l.Window.Duration <= 0 {
			continue
		}
		n := maxInWindow(l.Requests, l.Window.Duration, margin, v.window)
		if n <= v.requests {
			continue
		}
		msg := fmt.Sprintf("%s lets up to %d requests reach %s within %s, and the vendor bans the IP, then the token, for good beyond %d in %s",
			fmtRate(l.Requests, l.Window.Duration), n, v.what, v.window, v.requests, v.window)
		if margin == 0 {
			msg += " (with scheduler.margin = 0s, sends exactly one window apart both count)"
		}
		out = append(out, vendorFinding{key: v.key, msg: msg, allowed: l.AllowOverVendorLimit})
	}
	return out
}

func fmtRate(requests int, window time.Duration) string {
	return fmt.Sprintf("%d per %s", requests, window)
}

// checkVendorLimits refuses limits that can exceed a vendor's documented
// rule, unless their table allows it, and allow_over_vendor_limit where no
// vendor rule exists.
func (c *Config) checkVendorLimits() []fieldErr {
	var errs []fieldErr
	for _, f := range c.vendorFindings() {
		if !f.allowed {
			hint := "; set a stricter limit, or allow_over_vendor_limit = true in the table if your account has a higher limit"
			if f.key == "scheduler.margin" {
				hint = ""
			}
			errs = append(errs, fieldErr{f.key, f.msg + hint})
		}
	}
	p := &c.Providers
	for _, l := range []struct {
		key string
		l   *Limit
	}{
		{"providers.hellorf.limits.api", p.Hellorf.Limits.API},
		{"providers.spotify.limits.api", p.Spotify.Limits.API},
		{"providers.spotify.limits.accounts", p.Spotify.Limits.Accounts},
	} {
		if l.l != nil && l.l.AllowOverVendorLimit {
			errs = append(errs, fieldErr{l.key + ".allow_over_vendor_limit",
				"this upstream documents no rate threshold, so there is nothing to allow; only iNeo's limits take this key"})
		}
	}
	return errs
}

// Warnings lists what the config allows against a vendor's documented rule
// (allow_over_vendor_limit), one line each naming the key. The daemon logs
// them at every load and shows them in status; --check-config prints them.
func (c *Config) Warnings() []string {
	var out []string
	for _, f := range c.vendorFindings() {
		if f.allowed {
			out = append(out, f.key+": "+f.msg+"; allowed by allow_over_vendor_limit = true")
		}
	}
	return out
}
