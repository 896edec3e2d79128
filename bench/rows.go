package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/bench/loadgen"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// Answer checks. Each measured request is validated, so a figure can never
// come from error answers (a fast 503 would flatter every number).

func upstreamOK(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if us := resp.Header.Get("Sluice-Upstream-Status"); !strings.HasPrefix(us, "200 ") {
		return fmt.Errorf("Sluice-Upstream-Status %q", us)
	}
	return nil
}

func sluiceHit(resp *http.Response, _ []byte) error {
	if err := upstreamOK(resp); err != nil {
		return err
	}
	if cs := resp.Header.Get("Cache-Status"); !strings.HasPrefix(cs, "sluice; hit") {
		return fmt.Errorf("Cache-Status %q, want a hit", cs)
	}
	return nil
}

func sluiceStored(resp *http.Response, _ []byte) error {
	if err := upstreamOK(resp); err != nil {
		return err
	}
	if cs := resp.Header.Get("Cache-Status"); cs != "sluice; fwd=miss; stored" {
		return fmt.Errorf("Cache-Status %q, want a stored miss", cs)
	}
	return nil
}

func sluiceOK(resp *http.Response, _ []byte) error { return upstreamOK(resp) }

func simOK(resp *http.Response, body []byte) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if !bytes.Contains(body, []byte(`"status_code":200`)) {
		return fmt.Errorf("simulator answered %.100s", body)
	}
	return nil
}

func trackPath(id string) string { return "/v1/ineo/spotify.php?trackId=" + id }

func (b *bench) mainSpec() daemonSpec {
	// The 1 ms margin goes with hugeLimit: the margin is added to the
	// window, and 1,000 per 251 ms could make a fast fill wait.
	return daemonSpec{name: "main", simURL: b.simURL, limit: hugeLimit(), margin: "1ms", cacheSize: "512MiB",
		logLevel: b.opts.logLevel, stateDir: b.opts.mainStateDir}
}

// startMain starts the shared daemon five times, timing each start to
// health ok, and keeps the fifth running; then it takes the idle footprint.
func (b *bench) startMain(ctx context.Context) error {
	const starts = 5
	var times []time.Duration
	spec := b.mainSpec()
	if b.want("1") {
		// Row 1's TCP variant: the shared daemon's loopback listener.
		// Only the shared daemon gets it (the other daemons copy
		// mainSpec and run beside it).
		addr, err := freeTCPAddr()
		if err != nil {
			return err
		}
		spec.httpListen = addr
	}
	for i := range starts {
		d, err := b.env.startDaemon(ctx, spec)
		if err != nil {
			return err
		}
		times = append(times, d.startup)
		if i < starts-1 {
			d.stop()
			continue
		}
		b.main = d
	}
	slices.Sort(times)
	med := times[starts/2]
	b.rep.add(line{section: "5", metric: "process start → /v1/health ok (median of 5)", value: fmtDur(med),
		peer:   fmt.Sprintf("min %s, max %s", fmtDur(times[0]), fmtDur(times[starts-1])),
		target: "≤ 300 ms", verdict: verdict(med <= 300*time.Millisecond)})

	// Idle means started and healthy, nothing requested yet. A short
	// settle lets start-up work finish; no GC is forced, since a user's
	// idle daemon is not forced either.
	time.Sleep(2 * time.Second)
	total, parts, err := b.footprint(ctx, b.main)
	if err != nil {
		return err
	}
	b.idleKB, _ = rssKB(b.main.pid())
	b.rep.add(line{section: "5", metric: "RSS idle, sluiced + running plugins", value: fmtMB(total), peer: parts,
		target: "≤ 80 MB", verdict: verdict(float64(total)*1024 <= 80e6)})
	b.rep.note("RSS counts sluiced and its three plugins (iNeo, hellorf and Spotify all run, against their simulators; the load is iNeo's). sluiced's Go heap \"in use\" can exceed its RSS: pages handed out but never touched (ristretto's admission counters, sized from max_size) are not resident.")
	return nil
}

// footprint sums VmRSS of the daemon and its running plugins (pids from
// /v1/status) and describes the parts.
func (b *bench) footprint(ctx context.Context, d *daemon) (int64, string, error) {
	total, err := rssKB(d.pid())
	if err != nil {
		return 0, "", err
	}
	parts := []string{"sluiced " + fmtMB(total)}
	st, err := d.status(ctx)
	if err != nil {
		return 0, "", err
	}
	for _, p := range st.Providers {
		if p.PID <= 0 {
			continue
		}
		kb, err := rssKB(p.PID)
		if err != nil {
			return 0, "", fmt.Errorf("plugin %s: %w", p.Name, err)
		}
		total += kb
		parts = append(parts, fmt.Sprintf("sluice-%s %s", p.Name, fmtMB(kb)))
	}
	desc := strings.Join(parts, " + ")
	// The Go heap figures from sluiced's /metrics tell live data (what
	// the cache and the rest hold) from what the runtime keeps around.
	if heap, ok := d.heapStats(ctx); ok {
		desc += "; sluiced Go heap " + heap
	}
	return total, desc, nil
}

// heapStats reads go_memstats_heap_alloc_bytes and _heap_inuse_bytes from
// sluiced's Prometheus /metrics.
func (d *daemon) heapStats(ctx context.Context) (string, bool) {
	vals, err := d.metrics(ctx, "go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes")
	if err != nil {
		return "", false
	}
	a, ok1 := vals["go_memstats_heap_alloc_bytes"]
	u, ok2 := vals["go_memstats_heap_inuse_bytes"]
	if !ok1 || !ok2 {
		return "", false
	}
	return fmt.Sprintf("%.1f MB allocated, %.1f MB in use", a/1e6, u/1e6), true
}

// metrics reads the named unlabelled series from sluiced's Prometheus
// /metrics; a name it does not export is absent from the map.
func (d *daemon) metrics(ctx context.Context, names ...string) (map[string]float64, error) {
	_, _, body, err := loadgen.Once(ctx, d.client, "http://sluice/metrics", nil, nil)
	if err != nil {
		return nil, err
	}
	vals := map[string]float64{}
	for l := range strings.SplitSeq(string(body), "\n") {
		name, v, ok := strings.Cut(l, " ")
		if !ok || strings.HasPrefix(name, "#") || !slices.Contains(names, name) {
			continue
		}
		var f float64
		if _, err := fmt.Sscan(v, &f); err == nil {
			vals[name] = f
		}
	}
	return vals, nil
}

// hitRounds is how many interleaved rounds a row-1 cell is split into.
// Eight rounds of 375 ms rather than three of a second: on a shared
// virtual machine one server's throughput drifted by a third from one
// minute to the next (nginx at 16 clients: 26,000 to 36,000 req/s), and
// with three rounds a slow second landing on one server decided the
// ratio. Finer interleaving spreads such drift over every server alike.
const hitRounds = 8

// hits is row 1: one cached answer served over the socket by sluiced, by a
// bare Go server answering the same bytes and headers, and by nginx serving
// the same upstream answer from proxy_cache, at 1, 16 and 64 clients; then
// the same three over loopback TCP (sluiced's http_listen, the bare server
// and nginx each on a TCP port), with the same load generator.
func (b *bench) hits(ctx context.Context) error {
	d := b.main
	path := trackPath(trackID('H', 0))
	if _, _, _, err := loadgen.Once(ctx, d.client, "http://sluice"+path, nil, sluiceStored); err != nil {
		return fmt.Errorf("warm-up miss: %w", err)
	}
	bareSock := filepath.Join(b.env.tmp, "bare.sock")
	bare, err := b.startBare(ctx, d.client, "http://sluice"+path, "bare", "-socket", bareSock)
	if err != nil {
		return err
	}
	defer bare.stop()

	var ng *nginxServer
	nginxSkip := ""
	nginxTCP := ""
	// nginx's second server answers with as many header lines as
	// sluiced's hit (a diagnostic: see nginxEq).
	_, hit, _, err := loadgen.Once(ctx, d.client, "http://sluice"+path, nil, sluiceHit)
	if err != nil {
		return fmt.Errorf("sluiced's hit: %w", err)
	}
	eq := &nginxEq{fields: eqFields(hit.Header)}
	if d.spec.httpListen != "" {
		if nginxTCP, err = freeTCPAddr(); err != nil {
			return err
		}
		if eq.tcp, err = freeTCPAddr(); err != nil {
			return err
		}
	}
	if bin, reason := b.env.findNginx(ctx); reason != "" {
		nginxSkip = reason
	} else if ng, err = b.env.startNginx(ctx, bin, b.simURL, path, nginxTCP, eq); err != nil {
		nginxSkip = "nginx did not start: " + strings.SplitN(err.Error(), "\n", 2)[0]
		ng = nil
	} else {
		defer ng.p.stop()
		b.rep.note("nginx peer: %s, worker_processes auto, proxy_cache on local disk, keepalive_requests unlimited, access_log off.", ng.version)
		names := make([]string, len(eq.fields))
		for i, f := range eq.fields {
			names[i] = f[0]
		}
		b.rep.note("row 1 diagnostic \"nginx answering with as many header lines\": a second nginx server on the same cache adds sluiced's %s to its answer, %d header lines as sluiced's hit has %d (net/http's client pays for each line it parses).",
			strings.Join(names, ", "), 6+len(eq.fields), len(hit.Header))
	}
	if nginxSkip != "" {
		b.env.logf("nginx row skipped: %s", nginxSkip)
		b.rep.note("nginx comparison skipped: %s", nginxSkip)
	}

	targets := []hitTarget{{name: "sluice", socket: d.socket, check: sluiceHit, pid: d.pid(), leanCheck: leanHit("sluice; hit")}, {name: "bare", socket: bareSock, pid: bare.pid()}}
	if ng != nil {
		targets = append(targets, hitTarget{name: "nginx", socket: ng.socket, check: nginxHit, pid: ng.p.pid(), leanCheck: leanHit("nginx; HIT")},
			hitTarget{name: "nginx-eq", socket: ng.eqSocket, check: nginxHit, pid: ng.p.pid(), netHTTPOnly: true})
	}
	if err := b.hitCells(ctx, "", targets, path); err != nil {
		return err
	}

	// The TCP variant: sluiced's loopback listener (its fast lane, Host
	// check and peer-uid lookup included) against the bare server and
	// nginx on TCP. The bare server replays sluiced's TCP hit, whose
	// headers may differ from the socket's (links are written for the
	// listener).
	if tcp := d.spec.httpListen; tcp != "" {
		bareTCP, err := freeTCPAddr()
		if err != nil {
			return err
		}
		tc := loadgen.TCPClient(1)
		if _, _, _, err := loadgen.Once(ctx, tc, "http://"+tcp+path, nil, sluiceHit); err != nil {
			return fmt.Errorf("hit over TCP (http_listen %s): %w", tcp, err)
		}
		bt, err := b.startBare(ctx, tc, "http://"+tcp+path, "bare-tcp", "-listen", bareTCP)
		tc.CloseIdleConnections()
		if err != nil {
			return err
		}
		defer bt.stop()
		tcpTargets := []hitTarget{{name: "sluice", tcp: tcp, check: sluiceHit, pid: d.pid(), leanCheck: leanHit("sluice; hit")}, {name: "bare", tcp: bareTCP, pid: bt.pid()}}
		if ng != nil {
			tcpTargets = append(tcpTargets, hitTarget{name: "nginx", tcp: ng.tcp, check: nginxHit, pid: ng.p.pid(), leanCheck: leanHit("nginx; HIT")},
				hitTarget{name: "nginx-eq", tcp: ng.eqTCP, check: nginxHit, pid: ng.p.pid(), netHTTPOnly: true})
		}
		if err := b.hitCells(ctx, "TCP", tcpTargets, path); err != nil {
			return fmt.Errorf("TCP: %w", err)
		}
	}

	// Diagnostic: the 16-client cell again with access_log = "all",
	// which adds the access-log line (JSON, one write(2) to sluiced's
	// log) to every hit; by default (access_log = "misses") hits are not
	// logged, as nginx here logs nothing. The setting is reloaded live,
	// so the cached answer and everything else stay as they were.
	if d.spec.logLevel == "info" || d.spec.logLevel == "" {
		loud := d.spec
		loud.accessLog = "all"
		if err := b.env.reconfigure(ctx, d, loud); err != nil {
			return err
		}
		res, err := b.hitCell(ctx, targets[:2], path, 16, false)
		if rerr := b.env.reconfigure(ctx, d, d.spec); err == nil {
			err = rerr
		}
		if err != nil {
			return err
		}
		s, bs := res["sluice"], res["bare"]
		b.rep.add(line{section: "1", metric: "diagnostic: hit throughput, 16 clients, access_log = \"all\" (a log line per hit)", value: fmtRate(s.Throughput()),
			peer: "bare Go " + fmtRate(bs.Throughput()), ratio: fmtRatio(s.Throughput() / bs.Throughput())})
	}
	return nil
}

// hitCells measures targets at 1, 16 and 64 clients, first with net/http's
// client (what most apps are), then with the lean client (what shows the
// servers' own costs: see loadgen.LeanConfig). transport labels the lines
// ("" for the socket).
func (b *bench) hitCells(ctx context.Context, transport string, targets []hitTarget, path string) error {
	for _, lean := range []bool{false, true} {
		var label []string
		if transport != "" {
			label = append(label, transport)
		}
		if lean {
			label = append(label, "lean client")
		}
		prefix := ""
		if len(label) > 0 {
			prefix = strings.Join(label, ", ") + ": "
		}
		ts := targets
		if lean {
			ts = slices.DeleteFunc(slices.Clone(targets), func(t hitTarget) bool { return t.netHTTPOnly })
		}
		for _, c := range []int{1, 16, 64} {
			res, err := b.hitCell(ctx, ts, path, c, lean)
			if err != nil {
				return err
			}
			b.hitLines(prefix, res, c)
		}
	}
	return nil
}

// startBare fetches sluiced's hit at url through c and starts a bare server
// (named name, listening per listenArgs) that replays exactly that hit:
// same status, headers and body, so both servers write the same bytes.
func (b *bench) startBare(ctx context.Context, c *http.Client, url, name string, listenArgs ...string) (*proc, error) {
	_, resp, body, err := loadgen.Once(ctx, c, url, nil, sluiceHit)
	if err != nil {
		return nil, fmt.Errorf("sluiced's hit to replay: %w", err)
	}
	ansPath := filepath.Join(b.env.tmp, name+".json")
	ans, err := json.Marshal(struct {
		Status int                 `json:"status"`
		Header map[string][]string `json:"header"`
		Body   []byte              `json:"body"`
	}{resp.StatusCode, resp.Header, body})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(ansPath, ans, 0o600); err != nil {
		return nil, err
	}
	args := append([]string{filepath.Join(b.env.bin, "bareserver"), "-answer", ansPath}, listenArgs...)
	p, err := b.env.startProc(name, syscall.SIGTERM, filepath.Join(b.env.tmp, name+".log"), args...)
	if err != nil {
		return nil, err
	}
	t := hitTarget{name: "bare"}
	if listenArgs[0] == "-listen" {
		t.tcp = listenArgs[1]
	} else {
		t.socket = listenArgs[1]
	}
	bc := t.client(1)
	defer bc.CloseIdleConnections()
	if err := waitAnswer(ctx, bc, t.url(trackPath(trackID('H', 0))), p, 10*time.Second, nil); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// hitLines adds one concurrency level's row-1 lines; prefix names the
// transport ("" for the socket).
func (b *bench) hitLines(prefix string, res map[string]hitResult, c int) {
	s, bs := res["sluice"], res["bare"]
	ss, bss := s.Summary(), bs.Summary()
	clients := fmt.Sprintf("%d client", c)
	if c > 1 {
		clients += "s"
	}
	tr := s.Throughput() / bs.Throughput()
	b.rep.add(line{section: "1", metric: prefix + "hit throughput, " + clients, value: fmtRate(s.Throughput()),
		peer: "bare Go " + fmtRate(bs.Throughput()), ratio: fmtRatio(tr), target: "≥ 0.80× bare", verdict: verdict(tr >= 0.8)})
	latPeer := "bare " + fmtP50P99(bss.P50, bss.P99)
	if n, ok := res["nginx"]; ok {
		ns := n.Summary()
		tn := s.Throughput() / n.Throughput()
		b.rep.add(line{section: "1", metric: prefix + "hit throughput vs nginx, " + clients, value: fmtRate(s.Throughput()),
			peer: "nginx " + fmtRate(n.Throughput()), ratio: fmtRatio(tn), target: "≥ 1.00× nginx", verdict: verdict(tn >= 1.0)})
		latPeer += "; nginx " + fmtP50P99(ns.P50, ns.P99)
		if e, ok := res["nginx-eq"]; ok {
			b.rep.add(line{section: "1", metric: prefix + "diagnostic: hit throughput vs nginx answering with as many header lines, " + clients,
				value: fmtRate(s.Throughput()), peer: "nginx " + fmtRate(e.Throughput()), ratio: fmtRatio(s.Throughput() / e.Throughput())})
		}
	} else {
		b.rep.add(line{section: "1", metric: prefix + "hit throughput vs nginx, " + clients, value: fmtRate(s.Throughput()),
			peer: "nginx: skipped", target: "≥ 1.00× nginx", verdict: "SKIP"})
	}
	pr := float64(ss.P99) / float64(bss.P99)
	b.rep.add(line{section: "1", metric: prefix + "hit latency p50 / p99, " + clients, value: fmtP50P99(ss.P50, ss.P99),
		peer: latPeer, ratio: "p99 " + fmtRatio(pr), target: "p99 ≤ 1.50× bare", verdict: verdict(pr <= 1.5)})
	if s.cpuPerReq > 0 {
		// Per hit: the server's own CPU, then the whole machine's
		// (server, load generator, kernel) and how many of its cores
		// were busy. Fewer busy cores at a lower throughput mean the
		// closed loop waited on wake-ups, not on CPU.
		side := func(r hitResult) string {
			return fmt.Sprintf("%s (machine %s, %.2f cores busy)", fmtCPU(r.cpuPerReq), fmtCPU(r.machinePerReq), r.cores)
		}
		peer := "bare " + fmtCPU(bs.cpuPerReq)
		if n, ok := res["nginx"]; ok && n.cpuPerReq > 0 {
			peer += "; nginx " + side(n)
		}
		b.rep.add(line{section: "1", metric: prefix + "diagnostic: server CPU per hit, " + clients, value: side(s), peer: peer})
	}
}

// fmtCPU renders CPU-seconds per request in microseconds.
func fmtCPU(sec float64) string { return fmt.Sprintf("%.1f µs", sec*1e6) }

// hitTarget is one server of a hit cell, on a Unix socket or, with tcp
// set, on a loopback TCP address (sent as the Host, which sluiced's
// listener accepts as its own).
type hitTarget struct {
	name, socket, tcp string
	check             loadgen.Check
	// pid, when set, is the server's process: its CPU time (and its
	// children's, e.g. nginx's workers) is measured per request.
	pid int
	// leanCheck is check for the lean client.
	leanCheck func(status int, head []byte) error
	// netHTTPOnly: measured with net/http's client only (a diagnostic of
	// what that client's parsing costs; the lean client parses little).
	netHTTPOnly bool
}

// lean is the lean client's run of this target.
func (t hitTarget) lean(path string, c int, warm, d time.Duration) loadgen.LeanConfig {
	network, addr, host := "unix", t.socket, t.name
	if t.tcp != "" {
		network, addr, host = "tcp", t.tcp, t.tcp
	}
	return loadgen.LeanConfig{Host: host, Path: path, Concurrency: c, Warmup: warm, Duration: d, Check: t.leanCheck,
		Dial: func(ctx context.Context) (net.Conn, error) {
			var dd net.Dialer
			return dd.DialContext(ctx, network, addr)
		}}
}

// leanHit checks a lean client's answer as check does a net/http one: 200
// and a Cache-Status starting with want.
func leanHit(want string) func(int, []byte) error {
	return func(status int, head []byte) error {
		if status != http.StatusOK {
			return fmt.Errorf("HTTP %d", status)
		}
		if cs := loadgen.Header(head, "Cache-Status"); !strings.HasPrefix(cs, want) {
			return fmt.Errorf("Cache-Status %q, want %q", cs, want)
		}
		return nil
	}
}

func (t hitTarget) client(conns int) *http.Client {
	if t.tcp != "" {
		return loadgen.TCPClient(conns)
	}
	return loadgen.UnixClient(t.socket, conns)
}

func (t hitTarget) url(path string) string {
	if t.tcp != "" {
		return "http://" + t.tcp + path
	}
	return "http://" + t.name + path
}

// freeTCPAddr picks a free loopback port for a server the bench starts.
func freeTCPAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// hitCell measures one concurrency level against each target. Each target
// gets the cell's measured time in rounds interleaved with the others', so
// a burst of background load on a shared machine does not land on one
// server only. One client per target is kept across rounds, so only the
// first round needs the full warm-up.
//
// With a target's pid set, the CPU time its process tree used during the
// measured rounds is read from /proc: the server's own cost per answer,
// which, unlike throughput, does not depend on how the machine's cores
// were shared with the load generator at that moment.
//
// lean drives the lean client (loadgen.RunLean) instead of net/http's.
func (b *bench) hitCell(ctx context.Context, targets []hitTarget, path string, c int, lean bool) (map[string]hitResult, error) {
	rounds := make(map[string][]loadgen.Result)
	cpu := make(map[string]float64)
	// The whole machine's busy CPU-seconds and the wall-clock seconds
	// of the same rounds.
	machine, wall := make(map[string]float64), make(map[string]float64)
	conns := make(map[string]*http.Client)
	for _, t := range targets {
		conns[t.name] = t.client(c)
	}
	for r := range hitRounds {
		for _, t := range targets {
			warm := b.opts.warmup
			if r > 0 {
				warm = min(warm, 100*time.Millisecond)
			}
			u := t.url(path)
			// The warm-up's CPU is counted too, so it is spread
			// over its requests below.
			before, mb, t0 := treeCPU(t.pid), readCPU().busy, time.Now()
			var res loadgen.Result
			if lean {
				res = loadgen.RunLean(ctx, t.lean(path, c, warm, b.opts.cell/hitRounds))
			} else {
				res = loadgen.Run(ctx, loadgen.Config{Client: conns[t.name], Concurrency: c,
					Warmup: warm, Duration: b.opts.cell / hitRounds, URL: func(int, int) string { return u }, Check: t.check})
			}
			cpu[t.name] += treeCPU(t.pid) - before
			machine[t.name] += readCPU().busy - mb
			wall[t.name] += time.Since(t0).Seconds()
			rounds[t.name] = append(rounds[t.name], res)
		}
	}
	res := map[string]hitResult{}
	for _, t := range targets {
		conns[t.name].CloseIdleConnections()
		r := loadgen.Merge(rounds[t.name]...)
		if len(r.Latencies) == 0 {
			return nil, fmt.Errorf("%s, %d clients: no successful request: %v", t.name, c, r.FirstErr)
		}
		if r.Errors > 0 {
			b.rep.note("row 1 %s, %d clients: %d failed requests (first: %v)", t.name, c, r.Errors, r.FirstErr)
		}
		hr := hitResult{Result: r}
		if t.pid != 0 {
			hr.cpuPerReq = cpu[t.name] / float64(r.Sent)
			hr.machinePerReq = machine[t.name] / float64(r.Sent)
			hr.cores = machine[t.name] / wall[t.name]
		}
		res[t.name] = hr
	}
	return res, nil
}

// hitResult is one target's merged rounds and, when its pid was known, the
// CPU-seconds its processes and the whole machine spent per request sent
// (warm-ups included), and the machine's cores busy meanwhile.
type hitResult struct {
	loadgen.Result
	cpuPerReq, machinePerReq, cores float64
}

// missOverhead is row 2: sequential uncached requests through sluiced →
// plugin → simulator, against the same requests sent straight to the
// simulator, once with state_dir on the temp dir's file system (as a real
// install has it on disk) and once on tmpfs, which shows how much of the
// overhead is the scheduler persisting each grant (a journal append) before
// the request leaves.
func (b *bench) missOverhead(ctx context.Context) error {
	diskState := b.main.spec.stateDir
	if diskState == "" {
		diskState = filepath.Join(b.main.dir, "state")
	}
	relay, err := b.startRelay(ctx)
	if err != nil {
		return err
	}
	defer relay.CloseIdleConnections()
	if err := b.missVariant(ctx, b.main, relay, diskState, "MDR"); err != nil {
		return err
	}
	if fsName("/dev/shm") != "tmpfs" {
		b.rep.note("row 2 tmpfs variant skipped: /dev/shm is not a tmpfs")
		return b.persistProbe(diskState, "")
	}
	shmDir, err := os.MkdirTemp("/dev/shm", "slb-state-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(shmDir)
	spec := b.mainSpec()
	spec.name, spec.stateDir = "tmpfs", shmDir
	d, err := b.env.startDaemon(ctx, spec)
	if err != nil {
		return err
	}
	defer d.stop()
	if err := b.missVariant(ctx, d, relay, shmDir, "TES"); err != nil {
		return err
	}
	return b.persistProbe(diskState, shmDir)
}

// startRelay starts the miss row's floor (bench/relay): a front and a back
// process with the hops of a miss through sluiced and none of its work. The
// back gets GOMAXPROCS=1, as sluiced gives its plugins.
func (b *bench) startRelay(ctx context.Context) (*http.Client, error) {
	backSock, frontSock := filepath.Join(b.env.tmp, "relay-back.sock"), filepath.Join(b.env.tmp, "relay.sock")
	logPath, bin := filepath.Join(b.env.tmp, "relay.log"), filepath.Join(b.env.bin, "relay")
	back, err := b.env.startProcEnv("relay back", syscall.SIGTERM, logPath, []string{"GOMAXPROCS=1"},
		bin, "-role", "back", "-socket", backSock, "-upstream", b.simURL, "-credential", "accessKey="+ineosim.DefaultAccessKey)
	if err != nil {
		return nil, err
	}
	b.env.onClose(back.stop)
	front, err := b.env.startProc("relay front", syscall.SIGTERM, logPath, bin, "-role", "front", "-socket", frontSock, "-back", backSock)
	if err != nil {
		return nil, err
	}
	b.env.onClose(front.stop)
	rc := loadgen.UnixClient(frontSock, 1)
	if err := waitAnswer(ctx, rc, "http://relay/spotify.php?trackId="+trackID('W', 0), front, 10*time.Second, simOK); err != nil {
		return nil, err
	}
	return rc, nil
}

// missVariant measures one daemon's misses against two references, in
// turn for each request: the same request sent straight to the simulator
// (the overhead's baseline) and through the relay chain (the floor of the
// overhead). tags are the track-id tags for sluice, direct and relay.
func (b *bench) missVariant(ctx context.Context, d *daemon, rc *http.Client, stateDir string, tags string) error {
	fs := fsName(stateDir)
	dc, sc := loadgen.UnixClient(d.socket, 1), loadgen.TCPClient(1)
	defer dc.CloseIdleConnections()
	defer sc.CloseIdleConnections()
	key := url.QueryEscape(ineosim.DefaultAccessKey)
	// The first requests open connections (socket, gRPC stream, the
	// plugin's keep-alive to the simulator) and are not measured.
	const warm = 200
	var logFrom int64 // the access log's size when measuring began
	via := make([]time.Duration, 0, b.opts.missN)
	direct := make([]time.Duration, 0, b.opts.missN)
	relay := make([]time.Duration, 0, b.opts.missN)
	for i := range warm + b.opts.missN {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		legs := []struct {
			c     *http.Client
			url   string
			check loadgen.Check
			out   *[]time.Duration
		}{
			{dc, "http://sluice" + trackPath(trackID(tags[0], i)), sluiceStored, &via},
			{sc, b.simURL + "/spotify.php?trackId=" + trackID(tags[1], i) + "&accessKey=" + key, simOK, &direct},
			{rc, "http://relay/spotify.php?trackId=" + trackID(tags[2], i), simOK, &relay},
		}
		// Rotating which goes first cancels any advantage of following
		// another (warm caches, a just-woken core).
		for k := range legs {
			leg := legs[(i+k)%len(legs)]
			lat, _, _, err := loadgen.Once(ctx, leg.c, leg.url, nil, leg.check)
			if err != nil {
				return fmt.Errorf("request %d: %w", i, err)
			}
			if i >= warm {
				*leg.out = append(*leg.out, lat)
			}
		}
		if i == warm-1 {
			if st, err := os.Stat(d.logPath); err == nil {
				logFrom = st.Size()
			}
		}
	}
	slices.Sort(via)
	slices.Sort(direct)
	vs, ds := loadgen.Summarize(via), loadgen.Summarize(direct)
	o50, o99 := vs.P50-ds.P50, vs.P99-ds.P99
	where := "state_dir on " + fs
	if fs == "tmpfs" {
		where += " (diagnostic)"
	}
	b.rep.add(line{section: "2", metric: "miss overhead p50, " + where, value: fmtDur(o50),
		peer: fmt.Sprintf("sluice %s − direct %s", fmtDur(vs.P50), fmtDur(ds.P50)), target: "≤ 300 µs", verdict: verdict(o50 <= 300*time.Microsecond)})
	b.rep.add(line{section: "2", metric: "miss overhead p99, " + where, value: fmtDur(o99),
		peer: fmt.Sprintf("sluice %s − direct %s", fmtDur(vs.P99), fmtDur(ds.P99)), target: "≤ 1 ms", verdict: verdict(o99 <= time.Millisecond)})
	slices.Sort(relay)
	rs := loadgen.Summarize(relay)
	b.rep.add(line{section: "2", metric: "diagnostic: miss floor p50 / p99, the same hops through bare relays, " + where,
		value: fmtDur(rs.P50-ds.P50) + " / " + fmtDur(rs.P99-ds.P99),
		peer:  fmt.Sprintf("relay %s / %s − direct", fmtDur(rs.P50), fmtDur(rs.P99))})
	b.rep.add(line{section: "2", metric: "diagnostic: sluice's miss overhead above that floor, p50 / p99, " + where,
		value: fmtDur(vs.P50-rs.P50) + " / " + fmtDur(vs.P99-rs.P99),
		peer:  fmt.Sprintf("sluice %s / %s − relay", fmtDur(vs.P50), fmtDur(vs.P99))})

	// sluiced's access log says where the time went: "wait" is the
	// plugin's grant request to the scheduler (which persists the grant
	// before answering), "upstream_took" the plugin's HTTP exchange with
	// the simulator, "took" the whole request inside sluiced.
	recs, err := readAccessLog(d.logPath, logFrom)
	if err != nil {
		return err
	}
	if len(recs) > 0 {
		var took, wait, up, rest []time.Duration
		for _, r := range recs {
			took, wait, up = append(took, r.Took), append(wait, r.Wait), append(up, r.UpstreamTook)
			rest = append(rest, r.Took-r.Wait-r.UpstreamTook)
		}
		med := func(x []time.Duration) time.Duration { slices.Sort(x); return loadgen.Percentile(x, 0.5) }
		b.rep.add(line{section: "2", metric: "diagnostic: sluiced's own time per miss (access log medians), " + where,
			value: "took " + fmtDur(med(took)),
			peer:  fmt.Sprintf("grant wait %s + upstream %s + rest %s", fmtDur(med(wait)), fmtDur(med(up)), fmtDur(med(rest)))})
	}
	return nil
}

// accessRec is one of sluiced's JSON access-log records ("request");
// log/slog writes durations as integer nanoseconds.
type accessRec struct {
	Msg          string        `json:"msg"`
	Provider     string        `json:"provider"`
	Cache        string        `json:"cache"`
	Took         time.Duration `json:"took"`
	Wait         time.Duration `json:"wait"`
	UpstreamTook time.Duration `json:"upstream_took"`
}

// readAccessLog returns the provider requests that went upstream, logged
// after offset.
func readAccessLog(path string, offset int64) ([]accessRec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return nil, err
	}
	var out []accessRec
	dec := json.NewDecoder(f)
	for dec.More() {
		var r accessRec
		if err := dec.Decode(&r); err != nil {
			// Plugin output or a partial last line: not a record.
			break
		}
		if r.Msg == "request" && r.Provider != "" && r.UpstreamTook > 0 {
			out = append(out, r)
		}
	}
	return out, nil
}

// persistProbe times the scheduler's per-grant persistence (one append of
// a journal record to an open file, no fsync) on each state_dir's file
// system: if the disk variant's miss overhead were dominated by
// persistence, this is where the time would go.
func (b *bench) persistProbe(diskState, tmpfsState string) error {
	const record = 105 // bytes of a grant record and its restamp, as measured
	for _, dir := range []string{diskState, tmpfsState} {
		if dir == "" {
			continue
		}
		lat, err := appendLatency(filepath.Join(dir, "probe"), record, 3000)
		if err != nil {
			return fmt.Errorf("persistence probe: %w", err)
		}
		s := loadgen.Summarize(lat)
		b.rep.add(line{section: "2", metric: fmt.Sprintf("diagnostic: journal append of a %d B grant record on %s", record, fsName(dir)),
			value: fmtP50P99(s.P50, s.P99), peer: "p50 / p99, 3,000 appends"})
	}
	b.rep.note("Row 2: the scheduler persists every grant before the request leaves, as one append to its journal (no fsync; the snapshot is rewritten once the journal reaches 256 KiB, about every 2,400 grants); the tmpfs variant and the append probe lines show how much of the miss overhead that is.")
	return nil
}

// appendLatency mirrors core/scheduler's journal append, timed n times.
func appendLatency(dir string, size, n int) ([]time.Duration, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	f, err := os.OpenFile(filepath.Join(dir, "journal"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data := append(bytes.Repeat([]byte("x"), size-1), '\n')
	out := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		if _, err := f.Write(data); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t))
	}
	slices.Sort(out)
	return out, nil
}

// coalescing is row 4: 1,000 identical concurrent requests for an uncached
// track while the simulator takes 50 ms, so they overlap; sluice should send
// one upstream request.
func (b *bench) coalescing(ctx context.Context) error {
	const n = 1000
	const delay = 50 * time.Millisecond
	d := b.main
	path := "http://sluice" + trackPath(trackID('C', 0))

	// One client (so one connection) per caller, opened before the burst
	// so the burst measures sluice, not 1,000 dials.
	clients := make([]*http.Client, n)
	for i := range clients {
		clients[i] = loadgen.UnixClient(d.socket, 1)
	}
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()
	var wg sync.WaitGroup
	var warmErr atomic.Pointer[error]
	for _, c := range clients {
		wg.Go(func() {
			if _, _, _, err := loadgen.Once(ctx, c, "http://sluice/v1/health", nil, nil); err != nil {
				warmErr.CompareAndSwap(nil, &err)
			}
		})
	}
	wg.Wait()
	if p := warmErr.Load(); p != nil {
		return fmt.Errorf("opening connections: %w", *p)
	}

	b.sim.SetDelay(delay)
	defer b.sim.SetDelay(0)
	before := b.sim.Requests(ineosim.ServiceSpotify)
	type outcome struct {
		cacheStatus string
		done        time.Time
		err         error
	}
	outs := make([]outcome, n)
	start := make(chan struct{})
	for i, c := range clients {
		wg.Go(func() {
			<-start
			_, resp, _, err := loadgen.Once(ctx, c, path, nil, sluiceOK)
			outs[i].done, outs[i].err = time.Now(), err
			if resp != nil {
				outs[i].cacheStatus = resp.Header.Get("Cache-Status")
			}
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	upstream := b.sim.Requests(ineosim.ServiceSpotify) - before

	var last time.Time
	kinds := map[string]int{}
	failed := 0
	var firstErr error
	for _, o := range outs {
		if o.err != nil {
			failed++
			firstErr = cmpOr(firstErr, o.err)
			continue
		}
		kinds[o.cacheStatus]++
		if o.done.After(last) {
			last = o.done
		}
	}
	if failed > 0 {
		b.rep.note("row 4: %d of %d calls failed (first: %v)", failed, n, firstErr)
	}
	var kindList []string
	for k, v := range kinds {
		kindList = append(kindList, fmt.Sprintf("%d × %q", v, k))
	}
	slices.Sort(kindList)
	b.rep.note("row 4 answers by Cache-Status: %s.", strings.Join(kindList, ", "))
	b.rep.add(line{section: "4", metric: "coalescing: upstream requests for 1,000 identical concurrent calls", value: fmt.Sprint(upstream),
		peer: fmt.Sprintf("%d answered 200", n-failed), target: "1", verdict: verdict(upstream == 1 && failed == 0)})
	b.rep.add(line{section: "4", metric: "coalescing: time until all 1,000 answered", value: fmtDur(last.Sub(t0)),
		peer: "simulator delay " + fmtDur(delay)})
	return nil
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// scaling covers rows 5 and 6 (cache side): fill the cache with distinct
// answers in stages of 1k, 10k and fillN entries (64 concurrent clients),
// measure hit throughput over random cached keys at each stage, and take
// the footprint with fillN answers cached.
func (b *bench) scaling(ctx context.Context) error {
	d := b.main
	if err := d.purgeCache(ctx); err != nil {
		return err
	}
	urls := make([]string, b.opts.fillN)
	for i := range urls {
		urls[i] = "http://sluice" + trackPath(trackID('F', i))
	}
	stages := []int{1000, 10000, b.opts.fillN}
	filled := 0
	var base float64
	for _, n := range stages {
		if n <= filled || n > len(urls) {
			continue
		}
		t := time.Now()
		if err := fill(ctx, d, urls[filled:n], 64); err != nil {
			return fmt.Errorf("filling the cache to %d: %w", n, err)
		}
		took := time.Since(t)
		b.rep.add(line{section: "5", metric: fmt.Sprintf("miss throughput while filling %s → %s entries (64 clients)", thousands(int64(filled)), thousands(int64(n))),
			value: fmtRate(float64(n-filled) / took.Seconds()), peer: "took " + fmtDur(took)})
		filled = n
		st, err := d.cacheStats(ctx)
		if err != nil {
			return err
		}

		// Random keys over everything cached, so the lookup really
		// ranges over n entries; one generator per client, seeded per
		// client, so the clients do not share (or lock) one. Rounds
		// alternate with a control (one fixed cached key, the row-1
		// workload) so a reader can tell a slower cache from a machine
		// that got busier between stages.
		const c = 16
		waitQuiet(ctx, b.env, b.cores, 0.10, 10*time.Second)
		cpuBefore := readCPU()
		rngs := make([]*rand.Rand, c)
		for i := range rngs {
			rngs[i] = rand.New(rand.NewPCG(uint64(n), uint64(i)))
		}
		cl := loadgen.UnixClient(d.socket, c)
		var randRounds, ctrlRounds []loadgen.Result
		for r := range hitRounds {
			warm := b.opts.warmup
			if r > 0 {
				warm = min(warm, 100*time.Millisecond)
			}
			randRounds = append(randRounds, loadgen.Run(ctx, loadgen.Config{Client: cl, Concurrency: c, Warmup: warm, Duration: b.opts.cell / hitRounds,
				URL: func(ci, _ int) string { return urls[rngs[ci].IntN(n)] }, Check: sluiceHit}))
			ctrlRounds = append(ctrlRounds, loadgen.Run(ctx, loadgen.Config{Client: cl, Concurrency: c, Warmup: min(warm, 100*time.Millisecond), Duration: b.opts.cell / hitRounds,
				URL: func(int, int) string { return urls[0] }, Check: sluiceHit}))
		}
		cl.CloseIdleConnections()
		_, busy, _ := foreign(cpuBefore, readCPU(), b.cores)
		r, ctrl := loadgen.Merge(randRounds...), loadgen.Merge(ctrlRounds...)
		if len(r.Latencies) == 0 || len(ctrl.Latencies) == 0 {
			return fmt.Errorf("hit throughput at %d entries: no successful request: %v", n, cmpOr(r.FirstErr, ctrl.FirstErr))
		}
		if r.Errors > 0 {
			b.rep.note("row 6 at %s entries: %d of %d requests were not hits (first: %v); sluice stored only %s of the %s answers",
				thousands(int64(n)), r.Errors, r.Errors+len(r.Latencies), r.FirstErr, thousands(int64(st.Entries)), thousands(int64(n)))
		}
		tp := r.Throughput()
		l := line{section: "6", metric: fmt.Sprintf("hit throughput, 16 clients, random keys, %s cached", thousands(int64(n))),
			value: fmtRate(tp), peer: fmt.Sprintf("%s entries, %s; fixed-key control %s", thousands(int64(st.Entries)), fmtBytes(st.Bytes), fmtRate(ctrl.Throughput()))}
		if busy >= 0.05 {
			l.peer += fmt.Sprintf("; other processes took %.0f%% CPU", busy*100)
		}
		if base == 0 {
			base = tp
			l.ratio, l.target = "1.00×", "(baseline)"
		} else {
			l.ratio, l.target, l.verdict = fmtRatio(tp/base), "≥ 0.90× the 1k figure", verdict(tp/base >= 0.9)
		}
		b.rep.add(l)
	}
	st, err := d.cacheStats(ctx)
	if err != nil {
		return err
	}
	total, parts, err := b.footprint(ctx, d)
	if err != nil {
		return err
	}
	if own, err := rssKB(d.pid()); err == nil && b.idleKB > 0 && st.Bytes > 0 {
		parts += fmt.Sprintf("; cache counts %s; sluiced's RSS over idle per cached MiB %.2f", fmtBytes(st.Bytes), float64(own-b.idleKB)*1024/float64(st.Bytes))
	}
	b.rep.add(line{section: "5", metric: fmt.Sprintf("RSS with %s answers cached, sluiced + running plugins", thousands(int64(st.Entries))),
		value: fmtMB(total), peer: parts})
	return nil
}

// fill requests every url once with workers concurrent clients; each must
// be a miss that was stored.
func fill(ctx context.Context, d *daemon, urls []string, workers int) error {
	cl := loadgen.UnixClient(d.socket, workers)
	defer cl.CloseIdleConnections()
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil && firstErr.Load() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(urls) {
					return
				}
				if _, _, _, err := loadgen.Once(ctx, cl, urls[i], nil, sluiceStored); err != nil {
					err = fmt.Errorf("%s: %w", urls[i], err)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	return ctx.Err()
}

// fairness is row 6 (scheduler side): 20 callers each making sequential
// uncached requests against a scaled limit (10 per 200 ms, margin 20 ms)
// for 5 s. FIFO granting should give every caller about the same mean wait.
func (b *bench) fairness(ctx context.Context) error {
	const callers = 20
	const runFor = 5 * time.Second
	const target = 1.25
	lim := ineosim.Limit{Requests: 10, Window: 200 * time.Millisecond}
	sim, simURL, err := ineosim.Start(ineosim.Options{SpotifyLimit: lim})
	if err != nil {
		return err
	}
	defer sim.Close()
	d, err := b.env.startDaemon(ctx, daemonSpec{name: "fair", simURL: simURL, limit: lim, margin: "20ms", cacheSize: "64MiB"})
	if err != nil {
		return err
	}
	defer d.stop()
	cl := loadgen.UnixClient(d.socket, callers)
	defer cl.CloseIdleConnections()

	type caller struct {
		lat []time.Duration
		err error
	}
	cs := make([]caller, callers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for ci := range cs {
		wg.Go(func() {
			<-start
			deadline := time.Now().Add(runFor)
			for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
				lat, _, _, err := loadgen.Once(ctx, cl, "http://sluice"+trackPath(trackID('W', ci*100000+n)), nil, sluiceOK)
				if err != nil {
					cs[ci].err = err
					return
				}
				cs[ci].lat = append(cs[ci].lat, lat)
			}
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)

	var lo, hi time.Duration
	total := 0
	for i, c := range cs {
		if c.err != nil {
			return fmt.Errorf("caller %d: %w", i, c.err)
		}
		if len(c.lat) == 0 {
			return fmt.Errorf("caller %d made no request", i)
		}
		var sum time.Duration
		for _, l := range c.lat {
			sum += l
		}
		mean := sum / time.Duration(len(c.lat))
		if i == 0 || mean < lo {
			lo = mean
		}
		if mean > hi {
			hi = mean
		}
		total += len(c.lat)
	}
	ratio := float64(hi) / float64(lo)
	b.rep.add(line{section: "6", metric: "scheduler fairness: max/min per-caller mean wait (20 callers, 10 per 200 ms + 20 ms margin, 5 s)",
		value: fmt.Sprintf("%.2f", ratio), peer: fmt.Sprintf("means %s – %s", fmtDur(lo), fmtDur(hi)),
		target: fmt.Sprintf("≤ %.2f", target), verdict: verdict(ratio <= target)})
	allowed := float64(lim.Requests) / (lim.Window + 20*time.Millisecond).Seconds()
	got := float64(total) / elapsed.Seconds()
	viol := sim.Violations()
	b.rep.add(line{section: "6", metric: "scheduler fairness run: granted rate (first window's burst included), simulator violations", value: fmt.Sprintf("%.1f req/s, %d violations", got, viol),
		peer: fmt.Sprintf("allowed %.1f req/s", allowed), ratio: fmtRatio(got / allowed), target: "0 violations", verdict: verdict(viol == 0)})
	b.rep.note("Row 6 fairness: the wait is each caller's client-side latency, which is the scheduler wait plus about a millisecond of serving; target ≤ %.2f chosen because FIFO granting to identical closed-loop callers leaves only the start-up burst (the first 10 callers wait nothing once) as a difference.", target)
	return nil
}

// utilization is row 3: 60 distinct track requests at the real 6 per 7 s
// limit with the default 250 ms margin, all sent at once; they need 10
// windows, so the minimum is 9 × 7 s after the first grant.
func (b *bench) utilization(ctx context.Context) error {
	const n = 60
	const margin = 250 * time.Millisecond
	sim, simURL, err := ineosim.Start(ineosim.Options{}) // the vendor's limits
	if err != nil {
		return err
	}
	defer sim.Close()
	d, err := b.env.startDaemon(ctx, daemonSpec{name: "util", simURL: simURL, margin: margin.String(), cacheSize: "64MiB"})
	if err != nil {
		return err
	}
	defer d.stop()
	cl := loadgen.UnixClient(d.socket, n)
	defer cl.CloseIdleConnections()

	errs := make([]error, n)
	done := make([]time.Time, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, _, _, errs[i] = loadgen.Once(ctx, cl, "http://sluice"+trackPath(trackID('U', i)), nil, sluiceStored)
			done[i] = time.Now()
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	var last time.Time
	for i := range n {
		if errs[i] != nil {
			return fmt.Errorf("request %d: %w", i, errs[i])
		}
		if done[i].After(last) {
			last = done[i]
		}
	}
	elapsed := last.Sub(t0)
	minimum := 9 * 7 * time.Second
	withMargin := 9 * (7*time.Second + margin)
	u := minimum.Seconds() / elapsed.Seconds()
	b.rep.add(line{section: "3", metric: "60 track requests at 6 per 7 s: elapsed vs 9 × 7 s", value: fmtDur(elapsed),
		peer: "minimum " + fmtDur(minimum), ratio: fmtRatio(u), target: "≥ 0.95× allowed rate", verdict: verdict(u >= 0.95)})
	b.rep.add(line{section: "3", metric: "60 track requests: elapsed vs 9 × (7 s + 250 ms margin)", value: fmtDur(elapsed),
		peer: "minimum " + fmtDur(withMargin), ratio: fmtRatio(withMargin.Seconds() / elapsed.Seconds())})
	viol, reqs := sim.Violations(), sim.Requests(ineosim.ServiceSpotify)
	b.rep.add(line{section: "3", metric: "60 track requests: simulator violations", value: fmt.Sprint(viol),
		peer: fmt.Sprintf("%d upstream requests", reqs), target: "0", verdict: verdict(viol == 0 && reqs == n)})
	return nil
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// fsName names the file system holding path, from statfs's magic number.
func fsName(path string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		// The state dir may not exist yet; its parent says the same.
		if parent := filepath.Dir(path); parent != path {
			return fsName(parent)
		}
		return "unknown"
	}
	switch uint64(st.Type) {
	case 0xEF53:
		return "ext4"
	case 0x01021994:
		return "tmpfs"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x794C7630:
		return "overlayfs"
	default:
		return fmt.Sprintf("fs 0x%x", uint64(st.Type))
	}
}

// statusKB reads a kB field of /proc/pid/status (e.g. "RssFile:"), or -1.
func statusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			if f := strings.Fields(v); len(f) > 0 {
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return n
				}
			}
		}
	}
	return -1
}

// boundedSize is the max_size of row 5's bounded-cache daemon: small
// enough that the fill overflows it several times.
const boundedSize = 32 << 20

// boundedFootprint is row 5's memory bound: a daemon of its own with
// max_size = 32MiB, filled with distinct answers in stages past what it
// holds. At each stage sluiced's own RSS must stay within its idle RSS
// plus 1.5 × max_size: the cache charges entries what they hold in the
// heap, and the soft memory limit (max_size + a quarter + the daemon's
// own) keeps garbage from doubling it. RSS per cached MiB is the growth
// over idle divided by what the cache counts.
func (b *bench) boundedFootprint(ctx context.Context) error {
	spec := b.mainSpec()
	spec.name, spec.cacheSize, spec.stateDir = "bounded", "32MiB", ""
	d, err := b.env.startDaemon(ctx, spec)
	if err != nil {
		return err
	}
	defer d.stop()
	time.Sleep(2 * time.Second)
	idle, err := rssKB(d.pid())
	if err != nil {
		return err
	}
	idleFile := statusKB(d.pid(), "RssFile:")
	limit := idle + int64(1.5*boundedSize/1024)
	filled := 0
	for _, n := range []int{10_000, 25_000, 50_000} {
		urls := make([]string, 0, n-filled)
		for i := filled; i < n; i++ {
			urls = append(urls, "http://sluice"+trackPath(trackID('B', i)))
		}
		start := time.Now()
		if err := fill(ctx, d, urls, 64); err != nil {
			return fmt.Errorf("filling the bounded cache to %d: %w", n, err)
		}
		took := time.Since(start)
		filled = n
		st, err := d.cacheStats(ctx)
		if err != nil {
			return err
		}
		kb, err := rssKB(d.pid())
		if err != nil {
			return err
		}
		per := "-"
		if st.Bytes > 0 {
			per = fmt.Sprintf("%.2f", float64(kb-idle)*1024/float64(st.Bytes))
		}
		// The fill's rate shows what holding RSS down costs: the soft
		// limit makes the GC run more as the heap nears it.
		peer := fmt.Sprintf("idle %s; %s entries cached, counted %s; RSS per cached MiB over idle %s; fill %.0f req/s", fmtMB(idle),
			thousands(int64(st.Entries)), fmtBytes(st.Bytes), per, float64(len(urls))/took.Seconds())
		// The binary's own pages (file-backed) are faulted in as code
		// runs for the first time: part of the growth over idle is not
		// memory the cache holds.
		if f := statusKB(d.pid(), "RssFile:"); f >= 0 && idleFile >= 0 {
			peer += fmt.Sprintf("; file-backed RSS %s (idle %s)", fmtMB(f), fmtMB(idleFile))
		}
		if heap, ok := d.heapStats(ctx); ok {
			peer += "; Go heap " + heap
		}
		b.rep.add(line{section: "5", metric: fmt.Sprintf("sluiced RSS, max_size 32MiB, %s answers requested", thousands(int64(n))),
			value: fmtMB(kb), peer: peer, target: "≤ idle + 1.5 × max_size (" + fmtMB(limit) + ")", verdict: verdict(kb <= limit)})
	}
	return nil
}
