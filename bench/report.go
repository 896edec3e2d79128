package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// line is one row of the results table. ratio, target and verdict are
// empty for figures reported without a target.
type line struct {
	section, metric, value, peer, ratio, target, verdict string
}

// report collects the table and free-form notes as the rows complete.
type report struct {
	lines []line
	notes []string
}

func (r *report) add(l line) { r.lines = append(r.lines, l) }

func (r *report) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// verdict is PASS or MISS; ok says which.
func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// machine describes where the numbers were taken; they mean little without.
type machine struct {
	cpu, kernel, goVersion, commit string
	cores                          int
	date                           time.Time
	// foreignShare and steal are the shares of the machine's CPU that
	// other processes and the hypervisor took during the measurements.
	foreignShare, steal float64
}

func readMachine(root string) machine {
	m := machine{cpu: "unknown", cores: runtime.NumCPU(), goVersion: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH, date: time.Now().UTC()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		procs := 0
		for l := range strings.SplitSeq(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "model name":
				if m.cpu == "unknown" {
					m.cpu = strings.TrimSpace(v)
				}
			case "processor":
				procs++
			}
		}
		if procs > 0 {
			m.cores = procs
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	cmd := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		m.commit = strings.TrimSpace(string(out))
	}
	return m
}

// markdown renders the whole report: machine, table, notes.
func (r *report) markdown(m machine, elapsed time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# sluice benchmark results\n\n")
	fmt.Fprintf(&b, "- date: %s\n", m.date.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- CPU: %s, %d cores (GOMAXPROCS %d)\n", m.cpu, m.cores, runtime.GOMAXPROCS(0))
	fmt.Fprintf(&b, "- Go: %s\n", m.goVersion)
	if m.kernel != "" {
		fmt.Fprintf(&b, "- kernel: Linux %s\n", m.kernel)
	}
	if m.commit != "" {
		fmt.Fprintf(&b, "- sluice: %s\n", m.commit)
	}
	fmt.Fprintf(&b, "- bench run time: %s (`make bench`; see bench/README.md)\n", elapsed.Round(time.Second))
	fmt.Fprintf(&b, "- other processes on the machine used %.0f%% of its CPU during the measurements (hypervisor steal %.0f%%)\n", m.foreignShare*100, m.steal*100)
	fmt.Fprintf(&b, "- load: closed-loop HTTP/1.1 keep-alive clients over Unix sockets (row 1 also over loopback TCP), exact percentiles from all samples; load generator, daemon, plugin and peers share the same cores\n\n")

	header := []string{"#", "measurement", "sluice", "peer", "ratio", "target", "result"}
	rows := [][]string{header}
	// Rows run in the order that shares set-up best; the table reads in
	// row order.
	lines := slices.Clone(r.lines)
	slices.SortStableFunc(lines, func(a, b line) int { return strings.Compare(a.section, b.section) })
	for _, l := range lines {
		rows = append(rows, []string{l.section, l.metric, l.value, l.peer, l.ratio, l.target, l.verdict})
	}
	widths := make([]int, len(header))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	writeRow := func(row []string) {
		b.WriteString("|")
		for i, c := range row {
			fmt.Fprintf(&b, " %s%s |", c, strings.Repeat(" ", widths[i]-len([]rune(c))))
		}
		b.WriteString("\n")
	}
	writeRow(rows[0])
	b.WriteString("|")
	for _, w := range widths {
		fmt.Fprintf(&b, "%s|", strings.Repeat("-", w+2))
	}
	b.WriteString("\n")
	for _, row := range rows[1:] {
		writeRow(row)
	}
	if len(r.notes) > 0 {
		b.WriteString("\nNotes:\n\n")
		for _, n := range r.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

// Formatting helpers: one style for every figure in the table.

func fmtRate(perSec float64) string { return fmt.Sprintf("%s req/s", thousands(int64(perSec+0.5))) }

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%d µs", d.Microseconds())
	}
}

func fmtP50P99(p50, p99 time.Duration) string {
	return fmtDur(p50) + " / " + fmtDur(p99)
}

func fmtRatio(x float64) string { return fmt.Sprintf("%.2f×", x) }

func fmtMB(kb int64) string { return fmt.Sprintf("%.1f MB", float64(kb)*1024/1e6) }

func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
