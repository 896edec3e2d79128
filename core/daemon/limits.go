package daemon

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/core/config"
)

// Connection cap defaults (max_connections = 0). Every descriptor the
// daemon itself needs comes out of the same RLIMIT_NOFILE as the
// connections: the state files, the log, the config watch, and per plugin
// its gRPC and broker sockets, pipes and the plugin directory. fdReserve
// plus a sixteenth of the limit leaves room for those with plenty to
// spare (a daemon with three plugins uses about 40). maxDefaultConns
// bounds memory where the limit is huge (Go raises the soft limit to the
// hard one, often 524288): an idle connection costs 13 KiB (fast lane) to
// 22 KiB (net/http) as measured on the released build (the race-built test
// daemon's ~120 KiB was the race runtime's), so 1024 of them are at most
// about 22 MiB, and a local daemon has no use for more by default.
const (
	fdReserve       = 128
	maxDefaultConns = 1024
)

// maxConnections is the config's cap, or the default from the fd limit.
func maxConnections(cfg *config.Config) int {
	if cfg.MaxConnections > 0 {
		return cfg.MaxConnections
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return maxDefaultConns / 4
	}
	return connsForLimit(rl.Cur)
}

func connsForLimit(limit uint64) int {
	room := int64(limit) - fdReserve - int64(limit/16)
	return int(min(max(room, 16), maxDefaultConns))
}

// Memory limit. The cache charges each entry what it holds in the heap
// plus two fifths for fragmentation and the collector's room (core/cache
// chargeOf, measured), so a full cache is about 5/7 of max_size of live
// data. The soft limit (debug.SetMemoryLimit) makes the GC collect harder
// as the runtime's memory nears it, instead of letting the heap double as
// GOGC would: max_size, plus memBase for the daemon itself (the runtime,
// the plugins' clients, buffers, answers in flight: the bench's 32 MiB
// daemon holds 5 MB of anonymous memory idle), plus memPerConn for each
// connection open now (an idle one measured 13 KiB on the fast lane,
// 22 KiB under net/http; refreshed every floodCheck). Soft means the
// daemon is never killed for passing it: live data over it makes the GC
// run more, at most about half the CPU, and the units' MemoryHigh/MemoryMax
// are the hard bounds.
//
// Measured on bench row 5 (a 32 MiB cache, 64 clients filling it with new
// answers; target: RSS ≤ idle + 1.5 × max_size at every stage). Entries
// charged by heap bytes alone, limit 32 MiB + 1.25 × max_size: idle +
// 66 MB. Limit 16 MiB + 1.25 × max_size: idle + 56 MB, the GC running
// near the limit all the time (live data and fragmentation no collection
// returns filled it). Charge two fifths higher, same limit: idle + 49 MB,
// the limit now pinning RSS with the GC at ease, so the quarter went:
// see the figures in docs/RELIABILITY.md.
const (
	memBase    = 16 << 20
	memPerConn = 32 << 10
)

// memoryLimit is the soft limit for cfg with open connections, or false
// when the user set GOMEMLIMIT, which is theirs to choose.
func memoryLimit(cfg *config.Config, open int) (int64, bool) {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return 0, false
	}
	size := int64(cfg.Cache.MaxSize)
	return memBase + size + int64(open)*memPerConn, true
}

// setMemoryLimit applies memoryLimit, at start, on every reload and as
// connections come and go.
func (d *Daemon) setMemoryLimit(cfg *config.Config) {
	open := 0
	if d.front != nil {
		open = d.front.ConnStats().Open
	}
	if n, ok := memoryLimit(cfg, open); ok && n != d.memLimit.Swap(n) {
		debug.SetMemoryLimit(n)
		d.log.Debug("soft memory limit set", "bytes", n, "connections", open)
	}
}

// Flood release: once the connections held have dropped well below their
// peak, the memory they used (goroutine stacks, buffers) is handed back to
// the system at once rather than by the runtime's slow background
// scavenger: after 20,000 idle connections closed, 570 MB stayed resident.
// See releaseMemory for why one debug.FreeOSMemory is not enough.
const (
	floodCheck = 10 * time.Second
	// floodMin is the smallest peak worth a release.
	floodMin = 256
)

func (d *Daemon) releaseAfterFlood(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.setMemoryLimit(d.cfg.Load())
		st := d.front.ConnStats()
		if st.Peak >= floodMin && st.Open <= st.Peak/4 {
			releaseMemory()
			d.log.Info("connection flood over; memory returned to the system", "peak_connections", st.Peak, "open", st.Open, "closed_for_room", st.Evicted)
			d.front.ResetPeak()
		}
	}
}

// releaseMemory collects twice, then returns every free page to the system.
// net/http keeps each connection's read and write buffers (4 KiB each) in
// sync.Pools for the next connection. A pool only lets go of an object
// after two collections (the first moves it to the pool's victim cache,
// the second drops it), and an idle daemon collects rarely: with the
// single collection debug.FreeOSMemory makes, the buffers of a few
// thousand closed connections stayed live and resident (6,000 closed
// connections: 65 MB resident instead of 31).
func releaseMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}
