package main

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The bench runs on the same few cores as everything else on the machine
// (other builds, test suites). It cannot stop them, but it can tell how much
// CPU they took while it measured: the machine's total busy time from
// /proc/stat minus the CPU time of the bench and everything it started. A
// row measured while others used a noticeable share is flagged, so nobody
// mistakes noise for a regression.

// clockTicks is USER_HZ, the unit of /proc CPU times; 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// cpuSnap is a point-in-time reading, in CPU-seconds.
type cpuSnap struct {
	at    time.Time
	busy  float64 // whole machine: user+nice+system+irq+softirq
	steal float64 // taken by the hypervisor
	own   float64 // the bench process and all its descendants, live or reaped
}

func readCPU() cpuSnap {
	s := cpuSnap{at: time.Now()}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		// cpu user nice system idle iowait irq softirq steal ...
		if len(f) >= 9 && f[0] == "cpu" {
			v := func(i int) float64 { x, _ := strconv.ParseFloat(f[i], 64); return x / clockTicks }
			s.busy = v(1) + v(2) + v(3) + v(6) + v(7)
			s.steal = v(8)
		}
	}
	s.own = ownCPU()
	return s
}

// ownCPU is the CPU time of this process, of its reaped children (and
// theirs), and of its live descendants including what they reaped.
func ownCPU() float64 {
	var total float64
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			total += tv(ru.Utime) + tv(ru.Stime)
		}
	}
	procs := procTable()
	self := os.Getpid()
	for pid, p := range procs {
		if pid != self && descends(procs, pid, self) {
			total += p.cpu + p.reaped
		}
	}
	return total
}

// treeCPU is the CPU time of process pid and its live descendants (0 for
// pid 0): what one server, e.g. nginx's master and workers, has used.
func treeCPU(pid int) float64 {
	if pid == 0 {
		return 0
	}
	var total float64
	procs := procTable()
	for p, pr := range procs {
		if p == pid || descends(procs, p, pid) {
			total += pr.cpu
		}
	}
	return total
}

// procEntry is one process as /proc/PID/stat shows it, times in
// CPU-seconds: cpu its own, reaped its waited-for children's.
type procEntry struct {
	ppid        int
	cpu, reaped float64
}

func procTable() map[int]procEntry {
	procs := map[int]procEntry{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st := string(b)
		i := strings.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		// Fields after the command: state(3) ppid(4) ... utime(14)
		// stime(15) cutime(16) cstime(17), numbered as in proc(5).
		f := strings.Fields(st[i+1:])
		if len(f) < 15 {
			continue
		}
		v := func(k int) float64 { x, _ := strconv.ParseFloat(f[k], 64); return x / clockTicks }
		ppid, _ := strconv.Atoi(f[1])
		procs[pid] = procEntry{ppid: ppid, cpu: v(11) + v(12), reaped: v(13) + v(14)}
	}
	return procs
}

// descends reports whether pid has ancestor among its parents.
func descends(procs map[int]procEntry, pid, ancestor int) bool {
	for anc, n := procs[pid].ppid, 0; anc > 1 && n < 64; n++ {
		if anc == ancestor {
			return true
		}
		anc = procs[anc].ppid
	}
	return false
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// foreign is what other processes used between a and b, as CPU-seconds
// and as a share of the machine's capacity; steal is the hypervisor's share.
func foreign(a, b cpuSnap, cores int) (cpuSec, share, steal float64) {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return 0, 0, 0
	}
	cpuSec = max(0, (b.busy-a.busy)-(b.own-a.own))
	capacity := wall * float64(cores)
	return cpuSec, cpuSec / capacity, (b.steal - a.steal) / capacity
}

// waitQuiet waits up to limit for a one-second window in which other
// processes use less than maxShare of the CPU, and returns the last share
// seen. It does not fail: a busy machine is reported, not refused.
func waitQuiet(ctx context.Context, e *env, cores int, maxShare float64, limit time.Duration) float64 {
	deadline := time.Now().Add(limit)
	warned := false
	for {
		a := readCPU()
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(time.Second):
		}
		_, share, _ := foreign(a, readCPU(), cores)
		if share < maxShare || time.Now().After(deadline) {
			return share
		}
		if !warned {
			e.logf("other processes use %.0f%% of the CPU; waiting up to %s for quiet", share*100, limit)
			warned = true
		}
	}
}
