package ineosim

import (
	"net/url"
	"strings"
	"time"
)

// arriveLocked records one arrival for svc and applies spam control. It
// reports whether the request must be answered ip_blocked: the IP or the
// presented token is banned, including by a violation this very arrival
// caused.
func (s *Sim) arriveLocked(svc *service, ip, token string, now time.Time, method string, params url.Values) bool {
	svc.requests++
	svc.log = append(svc.log, Arrival{At: now, Query: redact(params), Method: method})

	// Keep only arrivals inside the closed interval [now-Window, now]: an
	// arrival exactly Window ago still counts, which is the strict reading
	// of "more than N requests within W seconds".
	cutoff := now.Add(-svc.limit.Window)
	times := svc.arrivals[ip]
	i := 0
	for i < len(times) && times[i].Before(cutoff) {
		i++
	}
	times = append(times[i:], now)
	svc.arrivals[ip] = times

	if len(times) > svc.limit.Requests {
		svc.violations++
		until := now.Add(s.opts.BanDuration)
		svc.ipBans[ip] = until
		// The vendor blocks the token after an IP ban. Whatever token the
		// offending request carried is blocked, valid or not: blocking a
		// wrong token harms nobody, and guessing which one "counts" would
		// be a leniency the real service does not promise.
		if token != "" {
			svc.tokenBans[token] = until
		}
		s.log.Warn("ineosim: spam-control violation; IP banned and token blocked",
			"service", svc.name, "ip", ip, "in_window", len(times),
			"limit", svc.limit.Requests, "window", svc.limit.Window, "until", until)
	}

	return now.Before(svc.ipBans[ip]) || (token != "" && now.Before(svc.tokenBans[token]))
}

// redact copies params without the secrets, so a test's request log can be
// printed or compared without leaking tokens or login codes.
func redact(params url.Values) url.Values {
	out := make(url.Values, len(params))
	for k, v := range params {
		if strings.EqualFold(k, "accessKey") || strings.EqualFold(k, "auth") || strings.EqualFold(k, "password") {
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}

// bannedLocked reports whether any IP or token is banned for svc now.
func bannedLocked(svc *service, now time.Time) bool {
	for _, until := range svc.ipBans {
		if now.Before(until) {
			return true
		}
	}
	for _, until := range svc.tokenBans {
		if now.Before(until) {
			return true
		}
	}
	return false
}
