package config

import (
	"regexp"
	"slices"
)

// fleetName is what a fleet's name may hold: it becomes part of every
// Redis key (sluice:v1:<name>:…), so no braces (they would move keys out of
// the hash slot each script relies on on Redis Cluster), no colons (key
// separators) and nothing a shell or a log would mangle.
var fleetName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// checkFleet checks [fleet]: one way to reach Redis, and a name that keeps
// the key layout intact. The URL itself is checked when the daemon
// connects (it may be an env: or file: reference until then).
func (c *Config) checkFleet() []fieldErr {
	f := &c.Fleet
	var errs []fieldErr
	if f.Name != "" && !fleetName.MatchString(f.Name) {
		errs = append(errs, fieldErr{"fleet.name", "must be 1 to 64 letters, digits, '.', '_' or '-' (it prefixes every Redis key)"})
	}
	switch {
	case f.RedisURL.kind != secretUnset && len(f.SentinelAddrs) > 0:
		errs = append(errs, fieldErr{"fleet.sentinel_addrs", "set redis_url or sentinel_addrs (with master_name), not both"})
	case len(f.SentinelAddrs) > 0 && f.MasterName == "":
		// Without a master name, the Redis client would take the
		// addresses for a Cluster's nodes: a Sentinel's port answers
		// nothing a Cluster client expects.
		errs = append(errs, fieldErr{"fleet.master_name", "required with sentinel_addrs: the name the Sentinels know the master by"})
	case f.MasterName != "" && len(f.SentinelAddrs) == 0:
		errs = append(errs, fieldErr{"fleet.sentinel_addrs", "required with master_name: the Sentinels' host:port addresses"})
	}
	if slices.Contains(f.SentinelAddrs, "") {
		errs = append(errs, fieldErr{"fleet.sentinel_addrs", "must not hold an empty address"})
	}
	return errs
}

// SameFleet reports whether two configs reach the same fleet the same way:
// fleet settings apply at start only, so a reload that changes them must
// say so rather than appear to have switched fleet mode on or off.
func (f Fleet) SameFleet(g Fleet) bool {
	return f.RedisURL.Value() == g.RedisURL.Value() && slices.Equal(f.SentinelAddrs, g.SentinelAddrs) &&
		f.MasterName == g.MasterName && f.Name == g.Name
}
