// Command bench measures sluiced against its targets and against peers (a
// bare Go HTTP server, nginx with proxy_cache, the iNeo simulator reached
// directly) in one run, prints a Markdown table and writes it to
// bench/RESULTS.md. `make bench` runs it; bench/README.md explains each row.
//
// It builds its own non-race binaries, starts the iNeo simulator in-process
// and sluiced (and the peers) as subprocesses on loopback and Unix sockets in
// a temp dir, and stops everything it started when it ends, fails or is
// interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

func main() {
	os.Exit(run())
}

// options are the bench's knobs; the defaults are what `make bench` runs.
type options struct {
	out    string
	cell   time.Duration // measured part of one closed-loop cell
	warmup time.Duration // unmeasured lead-in of each cell
	missN  int           // sequential misses per miss-overhead variant
	fillN  int           // cached answers for the footprint and scaling rows
	rows   []string      // which rows to run
	// logLevel of the shared daemon; info (the default, one access-log
	// line per request) is what a user runs.
	logLevel string
	// mainStateDir, when set, puts the shared daemon's state_dir there
	// (e.g. on tmpfs) to see what persistence costs.
	mainStateDir string
}

func run() int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var o options
	rows := fs.String("rows", "1,2,3,4,5,6,7", "comma-separated rows to run (see bench/README.md)")
	fs.StringVar(&o.out, "out", "", "where to write the Markdown results (default <module>/bench/RESULTS.md; \"-\" for none)")
	fs.DurationVar(&o.cell, "cell", 3*time.Second, "measured duration of each closed-loop cell")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "warm-up before each closed-loop cell")
	fs.IntVar(&o.missN, "misses", 3000, "sequential uncached requests per miss-overhead variant")
	fs.IntVar(&o.fillN, "fill", 100000, "cached answers for the footprint and scaling rows (stages 1k, 10k, then this)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log_level of the shared daemon (diagnostic: compare with warn)")
	fs.StringVar(&o.mainStateDir, "state-dir", "", "state_dir of the shared daemon (diagnostic; default: in the temp dir)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	o.rows = strings.Split(*rows, ",")

	// Ctrl-C or SIGTERM cancels the context; every row returns promptly
	// and the deferred close stops what was started. The timeout is a
	// safety net well above the ~5 minutes a full run takes.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()

	e, err := newEnv(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer e.close()
	if o.out == "" {
		o.out = filepath.Join(e.root, "bench", "RESULTS.md")
	}
	began := time.Now()
	m := readMachine(e.root)
	e.logf("building sluiced and plugins (non-race) into %s", e.bin)
	if err := e.build(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}

	b := &bench{env: e, rep: &report{}, opts: o, cores: m.cores}
	measureFrom := readCPU()
	if err := b.runAll(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	_, m.foreignShare, m.steal = foreign(measureFrom, readCPU(), m.cores)
	md := b.rep.markdown(m, time.Since(began))
	fmt.Print(md)
	if o.out != "-" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		e.logf("wrote %s", o.out)
	}
	return 0
}

// bench is one run: the environment, the report, and the shared simulator
// and daemon that rows 1, 2, 4, 5 and 6 measure.
type bench struct {
	env    *env
	rep    *report
	opts   options
	sim    *ineosim.Sim
	simURL string
	main   *daemon
	cores  int
	// idleKB is the shared daemon's own idle RSS (row 5).
	idleKB int64
}

func (b *bench) want(row string) bool { return slices.Contains(b.opts.rows, row) }

// runAll runs the rows in an order that shares set-up: one simulator with a
// huge limit and one daemon serve the hit, miss, coalescing, footprint and
// scaling rows; the scheduler rows get fresh pairs with real or scaled
// limits. A row that fails is reported in the table and the others go on;
// only a cancelled context stops the run.
func (b *bench) runAll(ctx context.Context) error {
	needMain := b.want("1") || b.want("2") || b.want("4") || b.want("5") || b.want("6")
	if needMain {
		// A limit so high the scheduler never waits: these rows measure
		// sluice's own costs, not the rate limit.
		sim, url, err := ineosim.Start(ineosim.Options{SpotifyLimit: hugeLimit()})
		if err != nil {
			return err
		}
		b.env.onClose(func() { sim.Close() })
		b.sim, b.simURL = sim, url
		b.step(ctx, "5", "start-up and idle footprint", true, b.startMain)
		if b.main == nil {
			return fmt.Errorf("sluiced did not start; see the table:\n%s", b.rep.markdown(machine{}, 0))
		}
	}
	if b.want("1") {
		b.step(ctx, "1", "cache hits vs bare server and nginx", true, b.hits)
	}
	if b.want("2") {
		b.step(ctx, "2", "miss overhead", true, b.missOverhead)
	}
	if b.want("4") {
		b.step(ctx, "4", "coalescing", true, b.coalescing)
	}
	if b.want("5") || b.want("6") {
		b.step(ctx, "5/6", "fill, hit scaling and loaded footprint", true, b.scaling)
	}
	if b.want("5") {
		b.step(ctx, "5", "footprint with a full 32 MiB cache", false, b.boundedFootprint)
	}
	if b.main != nil {
		b.main.stop()
	}
	if b.want("6") {
		b.step(ctx, "6", "scheduler fairness", false, b.fairness)
	}
	if b.want("7") {
		if bin, err := exec.LookPath("redis-server"); err != nil {
			// The bench installs nothing for this row.
			reason := "redis-server is not installed (Debian package redis-server); row 7 skipped"
			b.env.logf("%s", reason)
			b.rep.add(line{section: "7", metric: "fleet of 3 daemons through Redis", value: "skipped", peer: reason, verdict: "SKIP"})
		} else {
			b.step(ctx, "7", "fleet: 3 daemons, one Redis, one strict simulator", true,
				func(ctx context.Context) error { return b.fleetRow(ctx, bin) })
		}
	}
	if b.want("3") {
		b.step(ctx, "3", "scheduler utilization, about 65 s", false, b.utilization)
	}
	return ctx.Err()
}

// step runs one row, turning its error into a table line. cpuBound rows
// (throughput, latency) are flagged when other processes took a noticeable
// share of the CPU meanwhile; rows timed by the rate limit are not.
func (b *bench) step(ctx context.Context, section, what string, cpuBound bool, f func(context.Context) error) {
	if ctx.Err() != nil {
		return
	}
	// Wait (briefly) for other work on the machine to calm down, then
	// account for what it takes anyway.
	if cpuBound {
		waitQuiet(ctx, b.env, b.cores, 0.10, 20*time.Second)
	}
	b.env.logf("row %s: %s", section, what)
	t := time.Now()
	before := readCPU()
	defer func() {
		sec, share, steal := foreign(before, readCPU(), b.cores)
		if cpuBound && (share >= 0.05 || steal >= 0.05) {
			b.rep.note("row %s (%s): other processes on the machine used %.0f%% of its CPU (%.1f CPU-s) meanwhile, steal %.0f%%; its figures are disturbed by that.",
				section, what, share*100, sec, steal*100)
		}
	}()
	if err := f(ctx); err != nil {
		b.env.logf("row %s failed: %v", section, err)
		msg := strings.SplitN(err.Error(), "\n", 2)[0]
		b.rep.add(line{section: section, metric: what, value: "ERROR", verdict: "MISS"})
		b.rep.note("row %s (%s) failed: %s", section, what, msg)
		return
	}
	b.env.logf("row %s done in %s", section, time.Since(t).Round(100*time.Millisecond))
}

// hugeLimit makes the rate limit irrelevant for the rows that measure
// sluice's own overhead: 1,000 grants per 1 ms (+ the 1 ms margin the shared
// daemon uses) is 500,000 per second, far above what two cores push through
// the miss path. It is deliberately not "100,000 per second": the scheduler
// keeps max(requests, 1024) grants of history (up to a minute), and a
// 100,000-request limit would make every snapshot of it (each 256 KiB of
// journal) hundreds of KiB for a history no real config has (the real iNeo
// limits keep about 50 grants a minute). 1,000 keeps the history at the
// scheduler's 1,024-grant cap.
func hugeLimit() ineosim.Limit { return ineosim.Limit{Requests: 1000, Window: time.Millisecond} }
