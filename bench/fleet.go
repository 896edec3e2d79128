package main

import (
	"bufio"
	"context"
	"crypto/sha1"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/bench/loadgen"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// Row 7: fleet mode. Three daemons, each with its own socket and state dir,
// share one real redis-server (on a Unix socket in the temp dir) and one
// strict iNeo simulator. The row reports what the fleet gets out of the
// allowed rate with 0 violations, how fair it is to identical callers on
// the three hosts, how many Redis round trips a miss costs, what Redis
// adds to a miss's latency, and that hits (which never touch Redis) are as
// fast as on a single daemon.

// sluiceMiss accepts a miss that went upstream, whatever else its
// Cache-Status says (fleet features may add to it).
func sluiceMiss(resp *http.Response, _ []byte) error {
	if err := upstreamOK(resp); err != nil {
		return err
	}
	if cs := resp.Header.Get("Cache-Status"); !strings.HasPrefix(cs, "sluice; fwd=miss") {
		return fmt.Errorf("Cache-Status %q, want a miss", cs)
	}
	return nil
}

// fleetBench holds what row 7 starts: the redis-server and, while a
// phase's commands are counted, the MONITOR that counts them.
type fleetBench struct {
	b      *bench
	sock   string
	url    string
	rdb    *redis.Client
	mon    *redisMonitor
	server *proc
}

// fleetRow is row 7, with bin the redis-server to run (without one, the
// row is skipped with the reason printed: see runAll).
func (b *bench) fleetRow(ctx context.Context, bin string) error {
	f, err := b.startRedis(ctx, bin)
	if err != nil {
		return err
	}
	defer f.close()
	if err := f.missesAndHits(ctx); err != nil {
		return err
	}
	return f.burst(ctx)
}

// startRedis starts redis-server as the fleet tests do: no TCP port, a Unix
// socket in the temp dir, no persistence.
func (b *bench) startRedis(ctx context.Context, bin string) (*fleetBench, error) {
	dir := filepath.Join(b.env.tmp, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "r.sock")
	p, err := b.env.startProc("redis-server", syscall.SIGTERM, filepath.Join(dir, "log"), bin,
		"--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir)
	if err != nil {
		return nil, err
	}
	f := &fleetBench{b: b, sock: sock, url: "unix://" + sock, server: p,
		rdb: redis.NewClient(&redis.Options{Network: "unix", Addr: sock, MaxRetries: -1})}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := f.rdb.Ping(ctx).Err(); err == nil {
			break
		} else if time.Now().After(deadline) {
			f.close()
			return nil, fmt.Errorf("redis-server did not answer within 30 s: %v\n%s", err, tail(filepath.Join(dir, "log"), 1000))
		}
		select {
		case <-p.exited:
			f.close()
			return nil, fmt.Errorf("redis-server exited: %s", tail(filepath.Join(dir, "log"), 1000))
		case <-ctx.Done():
			f.close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return f, nil
}

func (f *fleetBench) close() {
	f.stopCounting()
	f.rdb.Close()
	f.server.stop()
}

// fleetSpec is one member's config: its own socket and state dir (the
// name), the fleet's Redis and key prefix.
func (f *fleetBench) fleetSpec(name, fleet, simURL string, lim ineosim.Limit, margin string) daemonSpec {
	return daemonSpec{name: name, simURL: simURL, limit: lim, margin: margin, cacheSize: "64MiB",
		fleetURL: f.url, fleetName: fleet}
}

// startDaemons starts the specs one after the other (a fleet member that
// joins seeds or holds per the fleet's rules; starting them together
// would only add start-up contention to the 2 cores).
func (f *fleetBench) startDaemons(ctx context.Context, specs ...daemonSpec) ([]*daemon, error) {
	var ds []*daemon
	for _, s := range specs {
		d, err := f.b.env.startDaemon(ctx, s)
		if err != nil {
			for _, d := range ds {
				d.stop()
			}
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// missesAndHits is row 7's latency part, with a limit so high that no
// request waits: sequential misses through fleet member A and through a
// single daemon (no [fleet]) against the same simulator, in turn, so the
// difference is what Redis adds; the round trips an uncontended miss costs;
// and hit throughput of member A against the single daemon.
func (f *fleetBench) missesAndHits(ctx context.Context) error {
	b := f.b
	sim, simURL, err := ineosim.Start(ineosim.Options{SpotifyLimit: hugeLimit()})
	if err != nil {
		return err
	}
	defer sim.Close()
	// A 20 ms margin, not the 1 ms of the shared daemon: a fleet grant
	// that reaches its caller more than half the margin after Redis made
	// it is given back (it could land in a window filled since), and a
	// busy 2-core machine can take a millisecond to hand one over. At
	// 1,000 per 21 ms no request waits either way.
	const margin = "20ms"
	single := daemonSpec{name: "f0", simURL: simURL, limit: hugeLimit(), margin: margin, cacheSize: "64MiB"}
	ds, err := f.startDaemons(ctx, single,
		f.fleetSpec("f1", "lat", simURL, hugeLimit(), margin),
		f.fleetSpec("f2", "lat", simURL, hugeLimit(), margin),
		f.fleetSpec("f3", "lat", simURL, hugeLimit(), margin))
	if err != nil {
		return err
	}
	defer func() {
		for _, d := range ds {
			d.stop()
		}
	}()
	one, a := ds[0], ds[1]
	if err := f.firstMisses(ctx, 'Q', ds[1:]); err != nil {
		return err
	}

	// Latency: fleet member A and the single daemon in turn, each
	// request a distinct track, the first 200 not measured.
	n := b.opts.missN
	warm := min(200, n/5)
	fc, sc := loadgen.UnixClient(a.socket, 1), loadgen.UnixClient(one.socket, 1)
	defer fc.CloseIdleConnections()
	defer sc.CloseIdleConnections()
	var viaFleet, viaOne []time.Duration
	for i := range warm + n {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		legs := []struct {
			c   *http.Client
			tag byte
			out *[]time.Duration
		}{{fc, 'R', &viaFleet}, {sc, 'S', &viaOne}}
		for k := range legs {
			leg := legs[(i+k)%len(legs)]
			lat, _, _, err := loadgen.Once(ctx, leg.c, "http://sluice"+trackPath(trackID(leg.tag, i)), nil, sluiceMiss)
			if err != nil {
				return fmt.Errorf("miss %d: %w", i, err)
			}
			if i >= warm {
				*leg.out = append(*leg.out, lat)
			}
		}
	}
	slices.Sort(viaFleet)
	slices.Sort(viaOne)
	fs, os1 := loadgen.Summarize(viaFleet), loadgen.Summarize(viaOne)
	b.rep.add(line{section: "7", metric: fmt.Sprintf("fleet: what Redis adds to a miss, p50 / p99 (%s sequential misses each, no wait)", thousands(int64(n))),
		value: fmtDur(fs.P50-os1.P50) + " / " + fmtDur(fs.P99-os1.P99),
		peer:  fmt.Sprintf("fleet member %s − single daemon %s", fmtP50P99(fs.P50, fs.P99), fmtP50P99(os1.P50, os1.P99))})

	// Round trips of an uncontended miss, counted after the latency run
	// (MONITOR makes Redis write every command to one more client).
	// Member A's own count (sluice_fleet_redis_round_trips_total) is
	// the round trips: a pipeline is one exchange however many commands
	// it carries, where MONITOR shows each command.
	idle0, t0 := a.fleetTrips(ctx), time.Now()
	bg, err := f.startCounting(ctx)
	if err != nil {
		return err
	}
	defer f.stopCounting()
	bgA := (a.fleetTrips(ctx) - idle0) / time.Since(t0).Seconds()
	m := min(n, 500)
	trips0 := a.fleetTrips(ctx)
	before, cs0 := f.mon.snapshot(), f.commandstats(ctx)
	t0 = time.Now()
	for i := range m {
		if _, _, _, err := loadgen.Once(ctx, fc, "http://sluice"+trackPath(trackID('T', i)), nil, sluiceMiss); err != nil {
			return fmt.Errorf("counted miss %d: %w", i, err)
		}
	}
	after, cs1 := f.mon.settled(ctx), f.commandstats(ctx)
	took := time.Since(t0)
	trips := a.fleetTrips(ctx) - trips0
	per := max(0, trips-bgA*took.Seconds()) / float64(m)
	cmds, detail := roundTrips(before, after, bg, took, m)
	b.rep.add(line{section: "7", metric: fmt.Sprintf("fleet: Redis round trips per miss, uncontended (%d sequential misses)", m),
		value: fmt.Sprintf("%.2f", per),
		peer: fmt.Sprintf("member A's sluice_fleet_redis_round_trips_total, %.0f background subtracted (%.1f/s); %.2f commands per miss (MONITOR) %s",
			bgA*took.Seconds(), bgA, cmds, detail) + scriptCalls(cs0, cs1, m),
		target: "≤ 2", verdict: verdict(per <= 2)})

	// Hits: the same fixed cached key on member A and on the single
	// daemon, 16 clients, interleaved rounds. A hit never touches Redis:
	// the commands counted meanwhile are the background alone.
	path := trackPath(trackID('K', 0))
	for _, d := range []*daemon{a, one} {
		if _, _, _, err := loadgen.Once(ctx, d.client, "http://sluice"+path, nil, sluiceMiss); err != nil {
			return fmt.Errorf("filling the hit key on %s: %w", d.spec.name, err)
		}
	}
	before, t0 = f.mon.settled(ctx), time.Now()
	res, err := b.hitCell(ctx, []hitTarget{{name: "fleet", socket: a.socket, check: sluiceHit}, {name: "single", socket: one.socket, check: sluiceHit}}, path, 16, false)
	if err != nil {
		return err
	}
	after = f.mon.settled(ctx)
	took = time.Since(t0)
	hr, sr := res["fleet"], res["single"]
	ratio := hr.Throughput() / sr.Throughput()
	hits := len(hr.Latencies) + hr.Errors
	perHit, _ := roundTrips(before, after, bg, took, hits)
	b.rep.add(line{section: "7", metric: "fleet: hit throughput of one member, 16 clients", value: fmtRate(hr.Throughput()),
		peer: fmt.Sprintf("single daemon %s; %s hits, %d Redis commands meanwhile (%s), about %.0f of them background: %.4f per hit beyond it",
			fmtRate(sr.Throughput()), thousands(int64(hits)), after.total-before.total, cmdBreakdown(before, after), bg*took.Seconds(), perHit),
		ratio: fmtRatio(ratio), target: "≥ 0.90× single", verdict: verdict(ratio >= 0.9)})
	return f.hitsWhileRedisStalls(ctx, a, path)
}

// hitsWhileRedisStalls serves the cached key from member a with 16 clients
// for 3 s with Redis answering, then for 3 s while it answers nothing
// (CLIENT PAUSE: a Redis that is busy, or a network that drops packets,
// rather than one that refuses connections at once). Cached answers are
// still served without Redis, so the hits' latency should not change.
func (f *fleetBench) hitsWhileRedisStalls(ctx context.Context, a *daemon, path string) error {
	const runFor = 3 * time.Second
	cl := loadgen.UnixClient(a.socket, 16)
	defer cl.CloseIdleConnections()
	cell := func(warm time.Duration) loadgen.Result {
		return loadgen.Run(ctx, loadgen.Config{Client: cl, Concurrency: 16, Warmup: warm, Duration: runFor,
			URL: func(int, int) string { return "http://sluice" + path }, Check: sluiceHit})
	}
	normal := cell(f.b.opts.warmup)
	if err := f.rdb.Do(ctx, "CLIENT", "PAUSE", strconv.Itoa(int((runFor + 500*time.Millisecond).Milliseconds())), "ALL").Err(); err != nil {
		return fmt.Errorf("CLIENT PAUSE: %w", err)
	}
	stalled := cell(0)
	// The pause ends by itself; the burst needs Redis back.
	deadline := time.Now().Add(30 * time.Second)
	for f.rdb.Ping(ctx).Err() != nil {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("redis did not answer again after CLIENT PAUSE")
		}
	}
	if len(normal.Latencies) == 0 || len(stalled.Latencies) == 0 {
		return fmt.Errorf("hits while Redis stalls: no successful request: %v", cmpOr(normal.FirstErr, stalled.FirstErr))
	}
	ns, ss := normal.Summary(), stalled.Summary()
	r := float64(ss.P99) / float64(ns.P99)
	peer := fmt.Sprintf("Redis answering: %s, max %s; stalled: %s, max %s", fmtRate(normal.Throughput()), fmtDur(ns.Max),
		fmtRate(stalled.Throughput()), fmtDur(ss.Max))
	if stalled.Errors > 0 {
		peer += fmt.Sprintf("; %d failed (first: %v)", stalled.Errors, stalled.FirstErr)
	}
	f.b.rep.add(line{section: "7", metric: "fleet: hit latency p50 / p99 on a member while Redis answers nothing for 3 s (CLIENT PAUSE), 16 clients",
		value: fmtP50P99(ss.P50, ss.P99), peer: peer + "; answering " + fmtP50P99(ns.P50, ns.P99),
		ratio: "p99 " + fmtRatio(r), target: "p99 ≤ 1.50× answering", verdict: verdict(r <= 1.5 && stalled.Errors == 0)})
	return nil
}

// burst is row 7's rate part: 16 closed-loop callers on each of the three
// members, each sending uncached requests one after the other for the
// run, against a strict simulator with a scaled limit. It reports the
// fleet's utilisation of the allowed rate, the simulator's violations,
// the per-host fairness of the wait, and the round trips per miss while
// waiters ask again.
func (f *fleetBench) burst(ctx context.Context) error {
	b := f.b
	const perHost = 16
	const runFor = 15 * time.Second
	const margin = 50 * time.Millisecond
	lim := ineosim.Limit{Requests: 20, Window: time.Second}
	sim, simURL, err := ineosim.Start(ineosim.Options{SpotifyLimit: lim})
	if err != nil {
		return err
	}
	defer sim.Close()
	ds, err := f.startDaemons(ctx,
		f.fleetSpec("g1", "rate", simURL, lim, margin.String()),
		f.fleetSpec("g2", "rate", simURL, lim, margin.String()),
		f.fleetSpec("g3", "rate", simURL, lim, margin.String()))
	if err != nil {
		return err
	}
	defer func() {
		for _, d := range ds {
			d.stop()
		}
	}()
	if err := f.firstMisses(ctx, 'P', ds); err != nil {
		return err
	}
	// The 2 s of background measurement also let the first misses'
	// grants leave the window, so the burst's first window is whole.
	idle0, tIdle := fleetTrips(ctx, ds), time.Now()
	bg, err := f.startCounting(ctx)
	if err != nil {
		return err
	}
	defer f.stopCounting()
	bgTrips := (fleetTrips(ctx, ds) - idle0) / time.Since(tIdle).Seconds()

	type caller struct {
		lat []time.Duration
		err error
	}
	cs := make([]caller, perHost*len(ds))
	clients := make([]*http.Client, len(ds))
	for h, d := range ds {
		clients[h] = loadgen.UnixClient(d.socket, perHost)
		defer clients[h].CloseIdleConnections()
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for ci := range cs {
		h := ci / perHost
		wg.Go(func() {
			<-start
			deadline := time.Now().Add(runFor)
			for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
				lat, _, _, err := loadgen.Once(ctx, clients[h], "http://sluice"+trackPath(trackID('G', ci*100000+n)), nil, sluiceOK)
				if err != nil {
					cs[ci].err = err
					return
				}
				cs[ci].lat = append(cs[ci].lat, lat)
			}
		})
	}
	trips0 := fleetTrips(ctx, ds)
	before := f.mon.snapshot()
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsedAll := time.Since(t0)
	after := f.mon.settled(ctx)
	trips := fleetTrips(ctx, ds) - trips0

	answered := 0
	hostMean := make([]time.Duration, len(ds))
	var callerLo, callerHi time.Duration
	for h := range ds {
		var sum time.Duration
		k := 0
		for ci := h * perHost; ci < (h+1)*perHost; ci++ {
			c := cs[ci]
			if c.err != nil {
				return fmt.Errorf("host %d, caller %d: %w", h+1, ci%perHost, c.err)
			}
			if len(c.lat) == 0 {
				return fmt.Errorf("host %d, caller %d made no request", h+1, ci%perHost)
			}
			var s time.Duration
			for _, l := range c.lat {
				s += l
			}
			mean := s / time.Duration(len(c.lat))
			if callerLo == 0 || mean < callerLo {
				callerLo = mean
			}
			callerHi = max(callerHi, mean)
			sum += s
			k += len(c.lat)
		}
		hostMean[h] = sum / time.Duration(k)
		answered += k
	}

	// Arrivals at the simulator during the burst, in order.
	var at []time.Time
	for _, a := range sim.RequestLog(ineosim.ServiceSpotify) {
		if !a.At.Before(t0) {
			at = append(at, a.At)
		}
	}
	viol := sim.Violations()
	if len(at) < 2*lim.Requests {
		return fmt.Errorf("only %d requests reached the simulator during the burst", len(at))
	}
	// As row 3: n requests need ceil(n/L) windows, so no fewer than
	// (ceil(n/L) − 1) windows between the first and the last.
	elapsed := at[len(at)-1].Sub(at[0])
	windows := time.Duration(math.Ceil(float64(len(at))/float64(lim.Requests)) - 1)
	u := (windows * lim.Window).Seconds() / elapsed.Seconds()
	uMargin := (windows * (lim.Window + margin)).Seconds() / elapsed.Seconds()
	b.rep.add(line{section: "7", metric: fmt.Sprintf("fleet: utilisation, 3 daemons × %d callers, %d per %s (+ %s margin), %s", perHost, lim.Requests, lim.Window, margin, fmtDur(runFor)),
		value: fmt.Sprintf("%d requests in %s", len(at), fmtDur(elapsed)),
		peer:  fmt.Sprintf("minimum %s at the upstream's limit; %.2f× the rate the margin allows", fmtDur(windows*lim.Window), uMargin),
		ratio: fmtRatio(u), target: "≥ 0.90× allowed rate", verdict: verdict(u >= 0.9)})
	b.rep.add(line{section: "7", metric: "fleet: simulator violations in the burst", value: fmt.Sprint(viol),
		peer: fmt.Sprintf("%d upstream requests, %d answered", len(at), answered), target: "0",
		verdict: verdict(viol == 0 && len(at) == answered)})

	lo, hi := slices.Min(hostMean), slices.Max(hostMean)
	var means []string
	for h, m := range hostMean {
		means = append(means, fmt.Sprintf("host %d %s", h+1, fmtDur(m)))
	}
	fr := float64(hi) / float64(lo)
	b.rep.add(line{section: "7", metric: "fleet: fairness across hosts, max/min mean wait of identical callers",
		value:  fmt.Sprintf("%.2f", fr),
		peer:   strings.Join(means, ", ") + fmt.Sprintf("; per caller %s – %s (%.2f)", fmtDur(callerLo), fmtDur(callerHi), float64(callerHi)/float64(callerLo)),
		target: "≤ 1.50", verdict: verdict(fr <= 1.5)})

	cmds, detail := roundTrips(before, after, bg, elapsedAll, answered)
	per := max(0, trips-bgTrips*elapsedAll.Seconds()) / float64(answered)
	b.rep.add(line{section: "7", metric: "fleet: Redis round trips per miss in the burst (waiters ask again)",
		value: fmt.Sprintf("%.2f", per),
		peer: fmt.Sprintf("the members' sluice_fleet_redis_round_trips_total, %.0f background subtracted; %.2f commands per miss (MONITOR) %s",
			bgTrips*elapsedAll.Seconds(), cmds, detail),
		target: "≤ 2", verdict: verdict(per <= 2)})
	b.rep.note("Row 7 counts Redis round trips with MONITOR: every command a daemon sends (EVALSHA runs a whole script in one), not the commands scripts run inside Redis (MONITOR marks those \"lua\"; INFO commandstats and total_commands_processed count them too, so they over-count round trips). The members' background traffic (heartbeats and the like), measured for 2 s with the fleet idle, is subtracted. A pipelined batch counts once per command there: the round-trip rows therefore read the members' own sluice_fleet_redis_round_trips_total (a pipeline counts once; the idle fleet's rate of it subtracted the same way) and show MONITOR's commands beside them.")
	return nil
}

// firstMisses sends each member's first miss: it opens the connections
// (socket, gRPC, Redis) and meets the fleet's hold on a bucket it has
// never seen (one window + margin). Then Redis must have run the
// members' scripts, or they are not in fleet mode.
func (f *fleetBench) firstMisses(ctx context.Context, tag byte, ds []*daemon) error {
	cs0 := f.commandstats(ctx)
	for i, d := range ds {
		if _, _, _, err := loadgen.Once(ctx, d.client, "http://sluice"+trackPath(trackID(tag, i)), nil, sluiceMiss); err != nil {
			return fmt.Errorf("first miss through %s: %w", d.spec.name, err)
		}
	}
	if cs := f.commandstats(ctx); cs["evalsha"]+cs["eval"] <= cs0["evalsha"]+cs0["eval"] {
		return fmt.Errorf("Redis ran no script for the members' first misses: are they in fleet mode?")
	}
	return nil
}

// startCounting attaches the MONITOR and measures the commands the idle
// fleet sends per second (heartbeats and the like), to subtract from what
// is counted next.
func (f *fleetBench) startCounting(ctx context.Context) (float64, error) {
	const idle = 2 * time.Second
	f.stopCounting()
	m, err := startMonitor(f.sock, f.b.env.scripts)
	if err != nil {
		return 0, err
	}
	f.mon = m
	a := f.mon.settled(ctx)
	t := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(idle):
	}
	z := f.mon.snapshot()
	if err := f.mon.failure(); err != nil {
		return 0, fmt.Errorf("redis MONITOR: %w", err)
	}
	return float64(z.total-a.total) / time.Since(t).Seconds(), nil
}

// stopCounting detaches the MONITOR, if attached.
func (f *fleetBench) stopCounting() {
	if f.mon != nil {
		f.mon.close()
		f.mon = nil
	}
}

// roundTrips is the commands sent between two snapshots, less the
// background over took, per miss, with the breakdown by command.
func roundTrips(before, after monCounts, bg float64, took time.Duration, misses int) (float64, string) {
	sent := float64(after.total - before.total)
	bgN := bg * took.Seconds()
	per := max(0, sent-bgN) / float64(misses)
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(after.byCmd)) {
		if d := after.byCmd[name] - before.byCmd[name]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f", name, float64(d)/float64(misses)))
		}
	}
	return per, fmt.Sprintf("per miss: %s; %.0f background commands (%.1f/s) subtracted; %.1f commands run inside scripts per miss",
		strings.Join(parts, ", "), bgN, bg, float64(after.lua-before.lua)/float64(misses))
}

// cmdBreakdown lists the commands sent between two snapshots, by name.
func cmdBreakdown(before, after monCounts) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(after.byCmd)) {
		if d := after.byCmd[name] - before.byCmd[name]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", name, d))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// commandstats reads INFO commandstats: calls per command, scripts' inner
// commands included.
func (f *fleetBench) commandstats(ctx context.Context) map[string]int64 {
	out := map[string]int64{}
	s, err := f.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return out
	}
	for l := range strings.SplitSeq(s, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(l), ":calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		if v, err := strconv.ParseInt(n, 10, 64); err == nil {
			out[strings.TrimPrefix(name, "cmdstat_")] = v
		}
	}
	return out
}

// scriptCalls cross-checks the MONITOR count with INFO commandstats: the
// script runs (EVALSHA and EVAL) per miss.
func scriptCalls(before, after map[string]int64, misses int) string {
	d := after["evalsha"] + after["eval"] - before["evalsha"] - before["eval"]
	if len(after) == 0 {
		return ""
	}
	return fmt.Sprintf("; INFO commandstats: %.2f script runs (EVALSHA/EVAL) per miss", float64(d)/float64(misses))
}

// redisMonitor counts the commands clients send Redis, by name, from its
// MONITOR stream. Commands scripts run inside Redis (client "lua") are
// counted apart, and the bench's own INFO is not counted.
type redisMonitor struct {
	conn    net.Conn
	scripts map[string]string // SHA1 → name of the Go variable
	mu      sync.Mutex
	c       monCounts
	last    time.Time // when the last line arrived
	err     error
	done    chan struct{}
}

type monCounts struct {
	total, lua int64
	byCmd      map[string]int64
}

func startMonitor(sock string, scripts map[string]string) (*redisMonitor, error) {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		conn.Close()
		return nil, err
	}
	r := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	first, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(first) != "+OK" {
		conn.Close()
		return nil, fmt.Errorf("redis MONITOR: %q %v", first, err)
	}
	conn.SetReadDeadline(time.Time{})
	m := &redisMonitor{conn: conn, scripts: scripts, c: monCounts{byCmd: map[string]int64{}}, done: make(chan struct{})}
	go m.read(r)
	return m, nil
}

// read parses lines such as
//
//	+1796408537.425995 [0 unix:/tmp/r.sock] "evalsha" "5f2…" "4" …
//	+1796408537.426061 [0 lua] "TIME"
func (m *redisMonitor) read(r *bufio.Reader) {
	defer close(m.done)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			m.mu.Lock()
			m.err = err
			m.mu.Unlock()
			return
		}
		lua, cmd, ok := parseMonitorLine(l, m.scripts)
		if !ok {
			continue
		}
		m.mu.Lock()
		m.last = time.Now()
		switch {
		case lua:
			m.c.lua++
		case cmd == "info":
			// the bench's own
		default:
			m.c.total++
			m.c.byCmd[cmd]++
		}
		m.mu.Unlock()
	}
}

// parseMonitorLine returns the command of one MONITOR line, and whether a
// script ran it inside Redis (client "lua"). An EVALSHA is named with its
// script: scripts' name for its SHA1, or the SHA1's first 8 hex digits.
func parseMonitorLine(l string, scripts map[string]string) (lua bool, cmd string, ok bool) {
	_, rest, ok := strings.Cut(l, " [")
	if !ok {
		return false, "", false
	}
	client, rest, ok := strings.Cut(rest, "] \"")
	if !ok {
		return false, "", false
	}
	cmd, args, _ := strings.Cut(rest, "\"")
	cmd = strings.ToLower(cmd)
	if sha, found := strings.CutPrefix(args, " \""); cmd == "evalsha" && found && len(sha) >= 40 {
		if name, known := scripts[strings.ToLower(sha[:40])]; known {
			cmd += " " + name
		} else {
			cmd += " " + sha[:8]
		}
	}
	return client == "lua" || strings.HasSuffix(client, " lua"), cmd, true
}

func (m *redisMonitor) snapshot() monCounts {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.c
	c.byCmd = maps.Clone(m.c.byCmd)
	return c
}

// settled waits until the stream has been quiet for 50 ms (or 2 s have
// passed), so the commands of what just finished have been read, and
// returns the counts. Background commands keep coming, but sparsely.
func (m *redisMonitor) settled(ctx context.Context) monCounts {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		m.mu.Lock()
		quiet := time.Since(m.last) >= 50*time.Millisecond
		m.mu.Unlock()
		if quiet {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return m.snapshot()
}

func (m *redisMonitor) failure() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

func (m *redisMonitor) close() {
	m.conn.Close()
	<-m.done
}

// fleetScripts names the Lua scripts in core/fleet's sources by their
// SHA1 (what EVALSHA sends): each `name = redis.NewScript(…)` in file.go
// is "file.name" (grantScript in fleet.go: "fleet.grant"). The
// names make the round-trip breakdown readable whatever scripts the
// fleet has when the bench runs; a script not found shows as its SHA1.
func fleetScripts(dir string) map[string]string {
	out := map[string]string{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			continue
		}
		ast.Inspect(af, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, v := range vs.Values {
				call, ok := v.(*ast.CallExpr)
				if !ok || len(call.Args) != 1 || i >= len(vs.Names) {
					continue
				}
				if sel, ok := call.Fun.(*ast.SelectorExpr); !ok || sel.Sel.Name != "NewScript" {
					continue
				}
				lit, ok := call.Args[0].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				src, err := strconv.Unquote(lit.Value)
				if err != nil {
					continue
				}
				out[fmt.Sprintf("%x", sha1.Sum([]byte(src)))] = strings.TrimSuffix(filepath.Base(file), ".go") + "." + strings.TrimSuffix(vs.Names[i].Name, "Script")
			}
			return true
		})
	}
	return out
}

// fleetTrips is the sum of the daemons' fleetTrips.
func fleetTrips(ctx context.Context, ds []*daemon) float64 {
	var n float64
	for _, d := range ds {
		n += d.fleetTrips(ctx)
	}
	return n
}

// fleetTrips is the daemon's sluice_fleet_redis_round_trips_total; NaN
// when it cannot be read, so the row fails rather than shows none.
func (d *daemon) fleetTrips(ctx context.Context) float64 {
	const name = "sluice_fleet_redis_round_trips_total"
	v, err := d.metrics(ctx, name)
	if n, ok := v[name]; err == nil && ok {
		return n
	}
	return math.NaN()
}
