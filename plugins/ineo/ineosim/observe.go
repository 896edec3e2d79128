package ineosim

import (
	"fmt"
	"maps"
	"time"
)

// serviceLocked looks a service up by name. An unknown name panics: it is a
// bug in the calling test, and answering 0 would let an assertion such as
// "no violations" pass vacuously.
func (s *Sim) serviceLocked(name string) *service {
	svc, ok := s.services[name]
	if !ok {
		panic(fmt.Sprintf("ineosim: unknown service %q (want %q or %q)", name, ServiceSpotify, ServiceTmanage))
	}
	return svc
}

// Violations returns the number of spam-control violations on both services.
func (s *Sim) Violations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, svc := range s.services {
		n += svc.violations
	}
	return n
}

// ViolationsFor returns the number of spam-control violations on one service.
func (s *Sim) ViolationsFor(service string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serviceLocked(service).violations
}

// Requests returns how many requests arrived at a service, whatever they
// were answered.
func (s *Sim) Requests(service string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serviceLocked(service).requests
}

// RequestLog returns a copy of the arrivals at a service, oldest first.
func (s *Sim) RequestLog(service string) []Arrival {
	s.mu.Lock()
	defer s.mu.Unlock()
	src := s.serviceLocked(service).log
	out := make([]Arrival, len(src))
	for i, a := range src {
		out[i] = Arrival{At: a.At, Query: maps.Clone(a.Query), Method: a.Method}
	}
	return out
}

// Banned reports whether any IP or token is currently banned on a service.
func (s *Sim) Banned(service string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bannedLocked(s.serviceLocked(service), s.now())
}

// Deletions returns the phones whose Telegram account was deleted through
// deleteaccount, in order.
func (s *Sim) Deletions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.deletions...)
}

// Reset returns the Sim to its state just after New: counts, logs, bans,
// tmanage accounts, deletions, issued download links and every fault hook
// (delay, FailNext, SetNotFound) are cleared. Options are kept.
func (s *Sim) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
}

func (s *Sim) resetLocked() {
	newService := func(name, tokenParam string, l Limit) *service {
		return &service{
			name:       name,
			tokenParam: tokenParam,
			limit:      l,
			arrivals:   map[string][]time.Time{},
			ipBans:     map[string]time.Time{},
			tokenBans:  map[string]time.Time{},
		}
	}
	s.services = map[string]*service{
		ServiceSpotify: newService(ServiceSpotify, "accessKey", s.opts.SpotifyLimit),
		ServiceTmanage: newService(ServiceTmanage, "auth", s.opts.TmanageLimit),
	}
	s.accounts = map[string]*account{}
	s.deletions = nil
	s.notFound = map[string]bool{}
	s.dlTokens = map[string]string{}
	s.delay = 0
	for _, svc := range s.services {
		svc.faults = nil
	}
}

// SetDelay delays every answer by d (0 turns it off). Arrivals are still
// counted when they arrive, not when answered.
func (s *Sim) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// FailNext makes the next request to service that passes the ban, method,
// parameter and token checks answer statusCode (e.g. 429, 66, 2001) instead
// of its normal answer. Calls queue: two calls fail the next two requests.
func (s *Sim) FailNext(service string, statusCode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.serviceLocked(service)
	svc.failNext = append(svc.failNext, statusCode)
}

// SetNotFound makes spotify.php answer 404 not_found for these track ids.
func (s *Sim) SetNotFound(trackIDs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range trackIDs {
		s.notFound[id] = true
	}
}
