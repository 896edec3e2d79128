package daemon

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/core/access"
	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/core/fleet"
	"github.com/sluice-dev/sluice/core/metrics"
	"github.com/sluice-dev/sluice/core/problem"
)

// The Daemon is the socket API's backend.
var _ api.Backend = (*Daemon)(nil)

// Health is ok once every enabled provider's plugin is ready.
func (d *Daemon) Health() api.Health {
	var notReady []string
	for _, s := range d.host.Status() {
		if s.State != "ready" {
			notReady = append(notReady, s.Name+" "+s.State)
		}
	}
	if len(notReady) > 0 {
		return api.Health{Status: "unavailable", Detail: "not ready: " + strings.Join(notReady, ", ")}
	}
	return api.Health{Status: "ok"}
}

// Status assembles the status document.
func (d *Daemon) Status() api.Status {
	up := time.Since(d.started)
	st := api.Status{Version: d.opts.Version, StartedAt: d.started, UptimeSeconds: up.Seconds(),
		Uptime: up.Truncate(time.Second).String(), Sandbox: d.opts.Sandbox != nil, Socket: d.socket,
		Cache: d.CacheStats(), StateError: d.sched.StateError()}
	d.cfgMu.Lock()
	st.Config = d.cfgState
	d.cfgMu.Unlock()
	st.Providers = []api.ProviderStatus{}
	for _, p := range d.host.Status() {
		ps := api.ProviderStatus{Name: p.Name, State: p.State, PID: p.PID, Restarts: p.Restarts, LastError: p.LastError,
			Since: p.Since, Version: p.Version}
		if d.metrics != nil {
			ps.Calls, ps.Saved = d.metrics.Tally(p.Name)
		}
		st.Providers = append(st.Providers, ps)
	}
	st.Buckets = []api.BucketStatus{}
	for _, b := range d.sched.Status() {
		bs := api.BucketStatus{Name: b.Name, Requests: b.Requests, Window: b.Window.String(),
			WindowSeconds: b.Window.Seconds(), InWindow: b.InWindow, Queued: b.Queued,
			PauseReason: b.PauseReason, Granted: b.Granted, Late: b.Late, Released: b.Released, LastError: b.LastError,
			Held: b.Held, HeldErrno: b.HeldErrno}
		if !b.PausedUntil.IsZero() {
			bs.PausedUntil = &b.PausedUntil
		}
		st.Buckets = append(st.Buckets, bs)
	}
	if d.fleet != nil {
		st.Fleet = d.fleetStatus()
	}
	return st
}

// fleetStatus reads the fleet's members and stored limits from Redis,
// within a second: status must answer while Redis does not.
func (d *Daemon) fleetStatus() *api.FleetStatus {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	fs := d.fleet.Status(ctx, d.sched.Limits())
	out := &api.FleetStatus{Name: fs.Name, Member: fs.ID, RedisReachable: fs.Reachable, Error: fs.Err, Members: []api.FleetMember{}}
	for _, m := range fs.Members {
		am := api.FleetMember{ID: m.ID, Host: m.Host, Version: m.Version, Schema: m.Schema, Started: m.Started, Self: m.Self,
			Limits: map[string]string{}, LimitsDisagree: m.LimitsDisagree, VersionDisagrees: m.VersionDisagrees}
		for b, l := range m.Limits {
			am.Limits[b] = fleet.LimitText(l)
		}
		out.Members = append(out.Members, am)
	}
	for _, mm := range fs.Mismatches {
		out.Mismatches = append(out.Mismatches, api.FleetMismatch{Bucket: mm.Bucket,
			Limit: fmt.Sprintf("%d per %s", mm.Mine.Requests, mm.Mine.Window), FleetLimit: fleet.LimitText(mm.Fleet)})
	}
	return out
}

// Reload reloads the config now (POST /v1/reload).
func (d *Daemon) Reload(ctx context.Context) (api.ReloadResult, error) { return d.reload(ctx, true) }

// CacheStats reports the cache.
func (d *Daemon) CacheStats() api.CacheStats {
	s := d.cache.Stats()
	return api.CacheStats{Entries: s.Entries, Bytes: s.Bytes, MaxBytes: s.MaxBytes, Hits: s.Hits, Misses: s.Misses,
		Coalesced: s.Coalesced, Evictions: s.Evictions}
}

// PurgeCache purges one provider's answers, or all.
func (d *Daemon) PurgeCache(provider string) (api.PurgeResult, error) {
	if provider == "" {
		return api.PurgeResult{Purged: d.cache.PurgeAll()}, nil
	}
	if _, ok := d.host.Get(provider); !ok {
		p := problem.New(http.StatusNotFound, "unknown provider "+provider)
		p.Extra = map[string]any{"known_providers": d.host.Names()}
		return api.PurgeResult{}, p
	}
	return api.PurgeResult{Provider: provider, Purged: d.cache.Purge(provider)}, nil
}

// Metrics serves the Prometheus registry.
func (d *Daemon) Metrics() http.Handler { return d.metrics.Handler() }

// Level maps a socket peer to its permission tier under the current config.
func (d *Daemon) Level(p access.Peer) access.Level { return d.policy.Load().Level(p) }

func (d *Daemon) metricSources() metrics.Sources {
	var trips func() int64
	if d.fleet != nil {
		trips = d.fleet.RoundTrips
	}
	return metrics.Sources{
		FleetRoundTrips: trips,
		Cache: func() metrics.CacheStats {
			s := d.cache.Stats()
			return metrics.CacheStats{Entries: s.Entries, Bytes: s.Bytes, MaxBytes: s.MaxBytes, Hits: s.Hits,
				Misses: s.Misses, Coalesced: s.Coalesced, Evictions: s.Evictions, RemoteHits: s.RemoteHits, RemoteErrors: s.RemoteErrors}
		},
		Buckets: func() []metrics.BucketStats {
			var out []metrics.BucketStats
			for _, b := range d.sched.Status() {
				out = append(out, metrics.BucketStats{Name: b.Name, Requests: b.Requests, Window: b.Window,
					InWindow: b.InWindow, Queued: b.Queued, Granted: b.Granted, PausedUntil: b.PausedUntil, PauseReason: b.PauseReason,
					Held: b.Held != "", HeldErrno: b.HeldErrno})
				if bud, ok := d.sched.Budget(b.Name); ok {
					out[len(out)-1].Remaining = bud.Remaining
				}
			}
			return out
		},
		Providers: func() []metrics.ProviderStats {
			var out []metrics.ProviderStats
			for _, p := range d.host.Status() {
				out = append(out, metrics.ProviderStats{Name: p.Name, Ready: p.State == "ready", Restarts: p.Restarts})
			}
			return out
		},
	}
}

// ServeProvider hands provider calls to the gateway.
func (d *Daemon) Hit(provider, rest, query, host string) (api.Hit, bool) {
	return d.gw.Hit(provider, rest, query, host)
}

func (d *Daemon) ServeProvider(w http.ResponseWriter, r *http.Request, provider, rest string) {
	d.gw.ServeProvider(w, r, provider, rest)
}

// Request reports where the call with request id id stands.
func (d *Daemon) Request(id string) (api.RequestStatus, bool) {
	st, ok := d.gw.Progress(id)
	if !ok {
		return api.RequestStatus{}, false
	}
	out := api.RequestStatus{ID: st.ID, Provider: st.Provider, Operation: st.Operation, Stage: st.Stage,
		Bucket: st.Bucket, Ahead: st.Ahead, Since: st.Since, Started: st.Started}
	if !st.Expected.IsZero() {
		out.Expected = &st.Expected
	}
	if st.Bucket != "" {
		if b, ok := d.sched.Budget(st.Bucket); ok {
			out.Budget = &api.RequestBudget{Used: b.Limit.Requests - b.Remaining, Limit: b.Limit.Requests,
				WindowSeconds: b.Limit.Window.Seconds(), NextSlotSeconds: b.Reset.Seconds()}
		}
	}
	return out, true
}
