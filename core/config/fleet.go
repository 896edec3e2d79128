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

// checkFleet checks [fleet]: one way to reach Redis (a URL, Sentinels or a
// Cluster's nodes), logins where they apply, and a name that keeps
// the key layout intact. The URL itself is checked when the daemon
// connects (it may be an env: or file: reference until then).
func (c *Config) checkFleet() []fieldErr {
	f := &c.Fleet
	var errs []fieldErr
	if f.Name != "" && !fleetName.MatchString(f.Name) {
		errs = append(errs, fieldErr{"fleet.name", "must be 1 to 64 letters, digits, '.', '_' or '-' (it prefixes every Redis key)"})
	}
	ways := 0
	for _, set := range []bool{f.RedisURL.kind != secretUnset, len(f.SentinelAddrs) > 0, len(f.ClusterAddrs) > 0} {
		if set {
			ways++
		}
	}
	switch {
	case ways > 1:
		key := "fleet.cluster_addrs"
		if len(f.ClusterAddrs) == 0 {
			key = "fleet.sentinel_addrs"
		}
		errs = append(errs, fieldErr{key, "set one of redis_url, sentinel_addrs (with master_name) or cluster_addrs, not both"})
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
	if slices.Contains(f.ClusterAddrs, "") {
		errs = append(errs, fieldErr{"fleet.cluster_addrs", "must not hold an empty address"})
	}
	// A redis_url carries its own login and scheme (rediss://): a second
	// place for them would leave the reader guessing which one applies.
	if f.RedisURL.kind != secretUnset {
		for _, k := range []struct {
			key string
			set bool
		}{{"fleet.username", f.Username != ""}, {"fleet.password", f.Password.kind != secretUnset}, {"fleet.tls", f.TLS}} {
			if k.set {
				errs = append(errs, fieldErr{k.key, "not with redis_url: put the login in the URL (redis://user:password@host:6379/0) and use rediss:// for TLS"})
			}
		}
	}
	if len(f.SentinelAddrs) == 0 {
		if f.SentinelUsername != "" {
			errs = append(errs, fieldErr{"fleet.sentinel_username", "only with sentinel_addrs"})
		}
		if f.SentinelPassword.kind != secretUnset {
			errs = append(errs, fieldErr{"fleet.sentinel_password", "only with sentinel_addrs"})
		}
	}
	return errs
}

// SameFleet reports whether two configs reach the same fleet the same way:
// fleet settings apply at start only, so a reload that changes them must
// say so rather than appear to have switched fleet mode on or off.
func (f Fleet) SameFleet(g Fleet) bool {
	return f.RedisURL.Value() == g.RedisURL.Value() && slices.Equal(f.SentinelAddrs, g.SentinelAddrs) &&
		f.MasterName == g.MasterName && f.Name == g.Name && slices.Equal(f.ClusterAddrs, g.ClusterAddrs) &&
		f.Username == g.Username && f.Password.Value() == g.Password.Value() && f.TLS == g.TLS &&
		f.SentinelUsername == g.SentinelUsername && f.SentinelPassword.Value() == g.SentinelPassword.Value()
}
