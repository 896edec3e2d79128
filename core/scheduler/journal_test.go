package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// loadDir reads the state in dir (snapshot plus journal) the way New does.
func loadDir(t *testing.T, dir string) map[string]diskBucket {
	t.Helper()
	st, err := newPersister(dir, slog.New(slog.DiscardHandler)).load()
	if err != nil {
		t.Fatalf("loading %s: %v", dir, err)
	}
	return st
}

// crash stops s the way SIGKILL stops the daemon: nothing is written after
// this, so records still buffered are lost and the journal is not folded
// into a snapshot. The buckets are closed too, only so their timers do not
// outlive the test.
func crash(t *testing.T, s *Scheduler) {
	t.Helper()
	p := s.persist
	p.writeMu.Lock()
	p.closed = true
	p.closeJournal()
	p.writeMu.Unlock()
	if err := s.Close(); err != nil {
		t.Fatalf("Close after crash: %v", err)
	}
}

// mirrorSnapshot is the snapshot s would write at nowWall, as JSON.
func mirrorSnapshot(t *testing.T, s *Scheduler, nowWall int64) string {
	t.Helper()
	p := s.persist
	p.mu.Lock()
	st := p.snapshotLocked(nowWall)
	p.mu.Unlock()
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// bucketView is what a bucket's scheduling depends on, in wall-clock terms
// so that it compares across a restart.
type bucketView struct {
	Log         []int64
	InWindow    int
	Next        int64 // predicted grant of a caller arriving at now
	PausedUntil int64
	PauseReason string
}

func viewBucket(t *testing.T, s *Scheduler, name string, now time.Time) bucketView {
	t.Helper()
	b, err := s.lookup(name)
	if err != nil {
		t.Fatalf("bucket %q: %v", name, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pruneLocked(now)
	v := bucketView{InWindow: b.inWindowLocked(now), Next: b.predictTailLocked(now).UnixNano(), PauseReason: b.pauseReason}
	for _, x := range b.log {
		v.Log = append(v.Log, x.UnixNano())
	}
	if !b.pausedUntil.IsZero() {
		v.PausedUntil = b.pausedUntil.UnixNano()
	}
	return v
}

func journalSize(t *testing.T, dir string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, JournalFile))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestRestartEquivalence runs grants, restamps, pauses and resumes, kills the
// scheduler without Close and checks that a new one on the same dir has the
// same state: the same persisted buckets (configured or not), and for every
// configured bucket the same grant log, window count, next-grant prediction
// and pause. Each scenario runs with the journal compacted only at startup
// and with a small threshold that compacts it every few grants.
func TestRestartEquivalence(t *testing.T) {
	t.Parallel()
	hour := time.Now().Add(time.Hour)
	scenarios := []struct {
		name   string
		margin time.Duration
		limits map[string]Limit
		// final are the limits at the end of run, configured after the
		// restart; nil means limits.
		final map[string]Limit
		run   func(t *testing.T, s *Scheduler)
	}{
		{
			name:   "sequential grants",
			limits: map[string]Limit{"a": {5, 10 * time.Second}},
			run: func(t *testing.T, s *Scheduler) {
				for range 5 {
					mustAcquire(t, s, "a")
				}
			},
		},
		{
			name:   "concurrent grants in several buckets",
			limits: map[string]Limit{"a": {3, 10 * time.Second}, "b": {50, 10 * time.Second}},
			run: func(t *testing.T, s *Scheduler) {
				var wg sync.WaitGroup
				for i := range 43 {
					wg.Go(func() {
						name := "b"
						if i < 3 {
							name = "a"
						}
						if _, err := s.Acquire(context.Background(), name, time.Second); err != nil {
							t.Errorf("Acquire(%q): %v", name, err)
						}
					})
				}
				wg.Wait()
			},
		},
		{
			name:   "pauses and resumes",
			limits: map[string]Limit{"p1": {2, 10 * time.Second}, "p2": {2, 10 * time.Second}},
			run: func(t *testing.T, s *Scheduler) {
				mustAcquire(t, s, "p1")
				s.Pause("p1", hour, "ban")
				s.Pause("p1", hour.Add(time.Minute), "longer ban")
				s.Pause("p2", hour, "429")
				s.Resume("p2")
				mustAcquire(t, s, "p2")
				s.Pause("unconfigured", hour, "early ban")
				s.Pause("unconfigured, resumed", hour, "early 429")
				s.Resume("unconfigured, resumed")
			},
		},
		{
			// Raising the limit releases three waiters in one dispatch,
			// at one instant: they must stay three grants on disk.
			name:   "grants released together",
			limits: map[string]Limit{"s": {1, time.Hour}},
			final:  map[string]Limit{"s": {4, time.Hour}},
			run: func(t *testing.T, s *Scheduler) {
				mustAcquire(t, s, "s")
				var chans []<-chan result
				for i := range 3 {
					chans = append(chans, acquireAsync(context.Background(), s, "s", 0))
					waitQueued(t, s, "s", i+1)
				}
				mustConfigure(t, s, "s", Limit{4, time.Hour})
				for _, ch := range chans {
					if r := receive(t, ch, 5*time.Second); r.err != nil {
						t.Fatal(r.err)
					}
				}
			},
		},
		{
			name:   "history cap",
			margin: time.Nanosecond,
			limits: map[string]Limit{"c": {10, time.Nanosecond}},
			run: func(t *testing.T, s *Scheduler) {
				for range historyCap + 500 {
					mustAcquire(t, s, "c")
				}
			},
		},
		{
			name:   "window lengthened",
			limits: map[string]Limit{"w": {2, time.Second}},
			final:  map[string]Limit{"w": {2, 2 * time.Minute}},
			run: func(t *testing.T, s *Scheduler) {
				mustAcquire(t, s, "w")
				mustAcquire(t, s, "w")
				mustConfigure(t, s, "w", Limit{2, 2 * time.Minute})
			},
		},
	}
	for _, sc := range scenarios {
		for _, compactAt := range []int64{journalCompactSize, 512} {
			t.Run(fmt.Sprintf("%s/compact at %d", sc.name, compactAt), func(t *testing.T) {
				t.Parallel()
				margin := sc.margin
				if margin == 0 {
					// Wide enough that a starved CI machine does not hand
					// out grants late (each one spends budget unused; with
					// a snapshot every few grants, a burst of them once
					// exhausted bucket b).
					margin = 200 * time.Millisecond
				}
				final := sc.final
				if final == nil {
					final = sc.limits
				}
				dir := t.TempDir()
				s1, err := New(Options{StateDir: dir, Margin: margin})
				if err != nil {
					t.Fatal(err)
				}
				s1.persist.compactAt = compactAt
				for name, l := range sc.limits {
					mustConfigure(t, s1, name, l)
				}
				sc.run(t, s1)
				// The last grant's restamp is written with the next write,
				// and a crash before it loses it (TestCrashLosesOnlyRestamp);
				// here the crash comes after that write.
				if err := s1.persist.flushAll(false); err != nil {
					t.Fatal(err)
				}
				// A millisecond ahead: the wall and monotonic readings of two
				// time.Now calls can disagree by microseconds, which must not
				// move the newest grant out of the window on either side.
				now := time.Now().Add(time.Millisecond)
				want := make(map[string]bucketView)
				for name := range final {
					want[name] = viewBucket(t, s1, name, now)
				}
				wantDisk := mirrorSnapshot(t, s1, now.UnixNano())
				crash(t, s1)

				s2 := newTestScheduler(t, Options{StateDir: dir, Margin: margin})
				if e := s2.StateError(); e != "" {
					t.Fatalf("StateError after restart: %q", e)
				}
				if got := mirrorSnapshot(t, s2, now.UnixNano()); got != wantDisk {
					t.Fatalf("state after restart\n got %s\nwant %s", got, wantDisk)
				}
				for name, l := range final {
					mustConfigure(t, s2, name, l)
				}
				for name, w := range want {
					if got := viewBucket(t, s2, name, now); !reflect.DeepEqual(got, w) {
						t.Errorf("bucket %q after restart:\n got %+v\nwant %+v", name, got, w)
					}
				}
			})
		}
	}
}

// TestJournalReplay covers loading a snapshot plus journal, including torn
// and corrupt journals.
func TestJournalReplay(t *testing.T) {
	t.Parallel()
	const snapshot = `{"version":1,"buckets":{"x":{"grants":[1000,2000],"retain_ns":60000000000}}}`
	const ops = `{"op":"grant","b":"x","t":3000}
{"op":"restamp","b":"x","t":2000,"d":500}
{"op":"pause","b":"x","until":5000,"reason":"ban"}
{"op":"retain","b":"x","retain":90000000000,"cap":2048}
{"op":"grant","b":"y","t":7000}
`
	opsState := map[string]diskBucket{
		"x": {Grants: []int64{1000, 2500, 3000}, RetainNS: 90e9, Cap: 2048, PauseUntil: 5000, PauseReason: "ban"},
		"y": {Grants: []int64{7000}},
	}
	base := map[string]diskBucket{"x": {Grants: []int64{1000, 2000}, RetainNS: 60e9}}
	tests := []struct {
		name     string
		snapshot string
		journal  string
		want     map[string]diskBucket
		wantErr  string // substring; the partial state must still be want
		wantInfo string // substring of an Info record
	}{
		{name: "no journal", snapshot: snapshot, want: base},
		{name: "empty journal", snapshot: snapshot, journal: "", want: base},
		{name: "every op", snapshot: snapshot, journal: ops, want: opsState},
		{name: "journal without snapshot", journal: `{"op":"grant","b":"x","t":5}` + "\n", want: map[string]diskBucket{"x": {Grants: []int64{5}}}},
		{name: "replayed twice is replayed once", snapshot: snapshot, journal: ops + ops, want: opsState},
		{name: "grant already in the snapshot", snapshot: snapshot, journal: `{"op":"grant","b":"x","t":1000}` + "\n", want: base},
		{
			name:     "ties in an old snapshot are kept",
			snapshot: `{"version":1,"buckets":{"x":{"grants":[1000,1000]}}}`,
			journal:  `{"op":"grant","b":"x","t":1000}` + "\n",
			want:     map[string]diskBucket{"x": {Grants: []int64{1000, 1000}}},
		},
		{
			name:     "restamp of a grant the snapshot pruned",
			snapshot: snapshot, journal: `{"op":"restamp","b":"x","t":500,"d":2500}` + "\n",
			want: map[string]diskBucket{"x": {Grants: []int64{1000, 2000, 3000}, RetainNS: 60e9}},
		},
		{
			name:     "resume clears the pause",
			snapshot: `{"version":1,"buckets":{"x":{"pause_until":5000,"pause_reason":"ban"}}}`,
			journal:  `{"op":"pause","b":"x","until":0,"reason":""}` + "\n",
			want:     map[string]diskBucket{"x": {}},
		},
		{
			name:     "retain never shrinks",
			snapshot: snapshot, journal: `{"op":"retain","b":"x","retain":1,"cap":1}` + "\n",
			want: map[string]diskBucket{"x": {Grants: []int64{1000, 2000}, RetainNS: 60e9, Cap: 1}},
		},
		{name: "blank lines", snapshot: snapshot, journal: "\n\n" + ops + "\n \n", want: opsState},
		{name: "torn last line", snapshot: snapshot, journal: ops + `{"op":"grant","b":"x","t":40`, want: opsState, wantInfo: "torn"},
		{name: "torn last line with newline", snapshot: snapshot, journal: ops + `{"op":"gra` + "\n", want: opsState, wantInfo: "torn"},
		{name: "zeroed tail", snapshot: snapshot, journal: ops + "\x00\x00\x00\x00\x00\x00", want: opsState, wantInfo: "torn"},
		{
			name:     "complete last line without newline",
			snapshot: snapshot, journal: strings.TrimSuffix(ops, "\n"), want: opsState, wantInfo: "newline",
		},
		{
			name: "corrupt line before the end", snapshot: snapshot,
			journal: `{"op":"grant","b":"x","t":3000}` + "\n{garbage\n" + `{"op":"grant","b":"x","t":4000}` + "\n",
			want:    map[string]diskBucket{"x": {Grants: []int64{1000, 2000, 3000}, RetainNS: 60e9}}, wantErr: "line 2",
		},
		{
			name: "unreadable snapshot, journal still counts", snapshot: "{garbage",
			journal: `{"op":"grant","b":"x","t":5}` + "\n", want: map[string]diskBucket{"x": {Grants: []int64{5}}}, wantErr: "parsing state",
		},
		{name: "unknown op", snapshot: snapshot, journal: `{"op":"frobnicate","b":"x"}` + "\n", want: base, wantErr: "unknown op"},
		{name: "invalid grant time", snapshot: snapshot, journal: `{"op":"grant","b":"x","t":0}` + "\n", want: base, wantErr: "invalid grant"},
		{name: "record without bucket", snapshot: snapshot, journal: `{"op":"grant","t":5}` + "\n", want: base, wantErr: "without bucket"},
		{name: "restamp overflow", snapshot: snapshot, journal: `{"op":"restamp","b":"x","t":9223372036854775000,"d":1000}` + "\n", want: base, wantErr: "invalid restamp"},
		{name: "negative pause", snapshot: snapshot, journal: `{"op":"pause","b":"x","until":-1}` + "\n", want: base, wantErr: "negative"},
		{name: "negative cap", snapshot: snapshot, journal: `{"op":"retain","b":"x","retain":1,"cap":-1}` + "\n", want: base, wantErr: "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tc.snapshot != "" {
				if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(tc.snapshot), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.journal != "" || tc.name == "empty journal" {
				if err := os.WriteFile(filepath.Join(dir, JournalFile), []byte(tc.journal), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			h := &recordingHandler{}
			got, err := newPersister(dir, slog.New(h)).load()
			if tc.wantErr == "" && err != nil {
				t.Fatalf("load: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("load error %v, want one containing %q", err, tc.wantErr)
			}
			if g, w := stateJSON(t, got), stateJSON(t, tc.want); g != w {
				t.Fatalf("loaded\n got %s\nwant %s", g, w)
			}
			if tc.wantInfo != "" && h.count(slog.LevelInfo, tc.wantInfo) != 1 {
				t.Fatalf("no Info record about %q", tc.wantInfo)
			}
		})
	}
}

func stateJSON(t *testing.T, m map[string]diskBucket) string {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestCorruptJournal checks the scheduler's reaction: a torn last line is
// no reason for the safe mode, a corrupt line before it is; the snapshot's
// pause survives even then.
func TestCorruptJournal(t *testing.T) {
	t.Parallel()
	const margin = 20 * time.Millisecond
	banned := time.Now().Add(time.Hour).Round(0)
	snapshot := fmt.Sprintf(`{"version":1,"buckets":{"b":{"pause_until":%d,"pause_reason":"ban"}}}`, banned.UnixNano())
	recent := time.Now().UnixNano()
	good := fmt.Sprintf(`{"op":"grant","b":"c","t":%d}`+"\n", recent)
	tests := []struct {
		name          string
		journal       string
		wantUntrusted bool
	}{
		{"torn last line", good + `{"op":"grant","b":"c","t":1`, false},
		{"corrupt middle line", good + "}{\n" + good, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(snapshot), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, JournalFile), []byte(tc.journal), 0o600); err != nil {
				t.Fatal(err)
			}
			before := time.Now()
			s := newTestScheduler(t, Options{StateDir: dir, Margin: margin})
			if got := s.StateError() != ""; got != tc.wantUntrusted || (s.untrusted != "") != tc.wantUntrusted {
				t.Fatalf("StateError %q, untrusted %q; want a load error: %v", s.StateError(), s.untrusted, tc.wantUntrusted)
			}
			mustConfigure(t, s, "b", Limit{Requests: 5, Window: time.Minute})
			mustConfigure(t, s, "c", Limit{Requests: 5, Window: time.Minute})
			mustConfigure(t, s, "d", Limit{Requests: 5, Window: 100 * time.Millisecond})
			if st := bucketStatus(t, s, "b"); !st.PausedUntil.Equal(banned) || st.PauseReason != "ban" {
				t.Fatalf("snapshot's pause lost: %+v", st)
			}
			if st := bucketStatus(t, s, "c"); st.InWindow != 1 {
				t.Fatalf("grant before the bad line: InWindow %d, want 1", st.InWindow)
			}
			st := bucketStatus(t, s, "d")
			if safe := strings.Contains(st.PauseReason, "unreadable"); safe != tc.wantUntrusted {
				t.Fatalf("safe-mode pause %v (%+v), want %v", safe, st, tc.wantUntrusted)
			}
			if tc.wantUntrusted {
				if g := mustAcquire(t, s, "d"); g.At.Sub(before) < 100*time.Millisecond+margin {
					t.Fatalf("granted %s after startup in safe mode", g.At.Sub(before))
				}
			}
			// The first write folds the journal into a snapshot, bad
			// lines and all, so the next start is clean.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if n := journalSize(t, dir); n != 0 {
				t.Fatalf("journal holds %d bytes after Close", n)
			}
			if got := loadDir(t, dir); len(got["c"].Grants) == 0 || got["b"].PauseReason != "ban" {
				t.Fatalf("state after Close: %+v", got)
			}
		})
	}
}

// TestCrashBetweenRenameAndTruncate leaves a new snapshot next to the
// journal it already contains, as a crash in the middle of a compaction
// does, and checks that nothing is counted twice.
func TestCrashBetweenRenameAndTruncate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const margin = 10 * time.Millisecond
	s1, err := New(Options{StateDir: dir, Margin: margin})
	if err != nil {
		t.Fatal(err)
	}
	mustConfigure(t, s1, "a", Limit{Requests: 100, Window: time.Minute})
	mustConfigure(t, s1, "b", Limit{Requests: 1, Window: time.Hour})
	for range 10 {
		mustAcquire(t, s1, "a")
	}
	mustAcquire(t, s1, "b")
	s1.Pause("b", time.Now().Add(time.Hour), "ban")
	s1.Pause("unconfigured", time.Now().Add(time.Hour), "early ban")
	if err := s1.persist.flushAll(false); err != nil {
		t.Fatal(err)
	}
	crash(t, s1)
	want := loadDir(t, dir)
	if len(want["a"].Grants) != 10 {
		t.Fatalf("state before the compaction: %+v", want)
	}
	journal, err := os.ReadFile(filepath.Join(dir, JournalFile))
	if err != nil || !bytes.Contains(journal, []byte(`"op":"restamp"`)) || !bytes.Contains(journal, []byte(`"op":"pause"`)) {
		t.Fatalf("journal before the compaction (err %v):\n%s", err, journal)
	}

	// The first half of a compaction: the snapshot is renamed into place,
	// the journal not yet emptied.
	p := newPersister(dir, slog.New(slog.DiscardHandler))
	if _, err := p.load(); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	st := p.snapshotLocked(time.Now().UnixNano())
	p.mu.Unlock()
	if err := p.write(st); err != nil {
		t.Fatal(err)
	}
	if after, err := os.ReadFile(filepath.Join(dir, JournalFile)); err != nil || !bytes.Equal(after, journal) {
		t.Fatalf("journal changed (err %v)", err)
	}

	if got := loadDir(t, dir); stateJSON(t, got) != stateJSON(t, want) {
		t.Fatalf("state after the interrupted compaction\n got %s\nwant %s", stateJSON(t, got), stateJSON(t, want))
	}
	s2 := newTestScheduler(t, Options{StateDir: dir, Margin: margin})
	mustConfigure(t, s2, "a", Limit{Requests: 100, Window: time.Minute})
	if st := bucketStatus(t, s2, "a"); st.InWindow != 10 {
		t.Fatalf("InWindow after restart = %d, want 10", st.InWindow)
	}
}

// TestCrashLosesOnlyRestamp: a restamp is not written by itself, so a crash
// right after Acquire returned leaves the grant with its grant-time stamp,
// which is earlier (more conservative for the grants after a restart only by
// the length of one write, which the margin covers) but still counted.
func TestCrashLosesOnlyRestamp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s1, err := New(Options{StateDir: dir, Margin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mustConfigure(t, s1, "b", Limit{Requests: 5, Window: time.Minute})
	g := mustAcquire(t, s1, "b")
	crash(t, s1)
	got := loadDir(t, dir)["b"].Grants
	if len(got) != 1 || got[0] > g.At.UnixNano() || g.At.UnixNano()-got[0] > int64(time.Second) {
		t.Fatalf("grants on disk %v, want one at or shortly before %d", got, g.At.UnixNano())
	}
}

// TestJournalCompactsAtThreshold checks that the journal is folded into the
// snapshot whenever it passes its threshold, and that nothing is lost.
func TestJournalCompactsAtThreshold(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const threshold = 1024
	s := newTestScheduler(t, Options{StateDir: dir, Margin: 10 * time.Millisecond})
	s.persist.compactAt = threshold
	mustConfigure(t, s, "b", Limit{Requests: 1000, Window: time.Minute})
	const n = 200
	compactions := 0
	var prev int64
	for range n {
		mustAcquire(t, s, "b")
		size := journalSize(t, dir)
		if size >= threshold {
			t.Fatalf("journal at %d bytes, threshold %d", size, threshold)
		}
		if size < prev {
			compactions++
		}
		prev = size
	}
	// About 110 bytes per grant and restamp: a compaction every ~9 grants.
	if compactions < n/20 {
		t.Fatalf("%d compactions in %d grants", compactions, n)
	}
	if err := s.persist.flushAll(false); err != nil {
		t.Fatal(err)
	}
	if got := loadDir(t, dir)["b"].Grants; len(got) != n {
		t.Fatalf("%d grants on disk, want %d", len(got), n)
	}
	if e := s.StateError(); e != "" {
		t.Fatalf("StateError = %q", e)
	}
}

// TestJournalBytesPerGrant checks that a grant costs a small append, not a
// snapshot.
func TestJournalBytesPerGrant(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newTestScheduler(t, Options{StateDir: dir, Margin: 10 * time.Millisecond})
	mustConfigure(t, s, "b", Limit{Requests: 10000, Window: time.Minute})
	mustAcquire(t, s, "b") // the first write after startup is a snapshot
	snapshot, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	before := journalSize(t, dir)
	const n = 200
	for range n {
		mustAcquire(t, s, "b")
	}
	grew := journalSize(t, dir) - before
	t.Logf("journal grew %d bytes for %d grants (%.1f per grant, restamp included)", grew, n, float64(grew)/n)
	if grew <= 0 || grew >= n*128 {
		t.Fatalf("journal grew %d bytes for %d grants, want less than %d", grew, n, n*128)
	}
	if after, err := os.ReadFile(filepath.Join(dir, StateFile)); err != nil || !bytes.Equal(after, snapshot) {
		t.Fatalf("snapshot rewritten by grants (err %v)", err)
	}
}

// TestJournalAppendFailure makes an append fail and checks that the lost
// records reach disk through a snapshot: at once when the dir is fine, and
// once it is usable again when it is not.
func TestJournalAppendFailure(t *testing.T) {
	t.Parallel()
	for _, breakDir := range []bool{false, true} {
		t.Run(fmt.Sprintf("dir broken %v", breakDir), func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "state")
			h := &recordingHandler{}
			s := newTestScheduler(t, Options{StateDir: dir, Margin: 10 * time.Millisecond, Logger: slog.New(h)})
			mustConfigure(t, s, "b", Limit{Requests: 100, Window: time.Minute})
			mustAcquire(t, s, "b")

			// A read-only descriptor of a file that stays linked: the next
			// append fails with the file looking healthy.
			ro := filepath.Join(t.TempDir(), "ro")
			if err := os.WriteFile(ro, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(ro)
			if err != nil {
				t.Fatal(err)
			}
			p := s.persist
			p.writeMu.Lock()
			p.closeJournal()
			p.journal = f
			p.writeMu.Unlock()
			if breakDir {
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(dir, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}

			for range 3 {
				_, err := s.Acquire(context.Background(), "b", -1)
				if breakDir && !errors.Is(err, ErrStateUnwritable) {
					t.Fatalf("Acquire with a failing journal and no dir for a snapshot: %v, want ErrStateUnwritable", err)
				}
				if !breakDir && err != nil {
					t.Fatalf("Acquire with a failing journal (the snapshot saves it): %v", err)
				}
			}
			if n := h.count(slog.LevelInfo, "append failed"); n != 1 {
				t.Fatalf("%d append failures logged, want 1 (then only snapshots until one works)", n)
			}
			if breakDir {
				if e := s.StateError(); !strings.Contains(e, "save") {
					t.Fatalf("StateError = %q, want the save failure", e)
				}
				if n := h.count(slog.LevelError, "not saved"); n != 1 {
					t.Fatalf("%d errors logged for one repeated failure, want 1", n)
				}
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
				waitFor(t, 10*time.Second, "the hold to end", func() bool { return s.Held() == "" })
				mustAcquire(t, s, "b")
			}
			if e := s.StateError(); e != "" {
				t.Fatalf("StateError = %q", e)
			}
			want := bucketStatus(t, s, "b").Granted
			if err := p.flushAll(false); err != nil {
				t.Fatal(err)
			}
			crash(t, s)
			if got := loadDir(t, dir)["b"].Grants; uint64(len(got)) != want {
				t.Fatalf("%d grants on disk, want %d", len(got), want)
			}
		})
	}
}

// TestJournalUnopenable covers a state dir where the snapshot can be
// written but the journal cannot be opened: grants go on, the failure is
// reported, and it clears once the journal can be opened.
func TestJournalUnopenable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newTestScheduler(t, Options{StateDir: dir, Margin: 10 * time.Millisecond})
	mustConfigure(t, s, "b", Limit{Requests: 100, Window: time.Minute})
	// New has opened the journal; replace it by a directory, which the
	// next save finds unlinked and cannot reopen.
	jpath := filepath.Join(dir, JournalFile)
	if err := os.Remove(jpath); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(jpath, 0o700); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.Acquire(context.Background(), "b", -1); err != nil {
			t.Fatalf("Acquire: %v", err)
		}
	}
	if e := s.StateError(); !strings.Contains(e, "save") || !strings.Contains(e, JournalFile) {
		t.Fatalf("StateError = %q, want the journal's save failure", e)
	}
	if err := os.Remove(jpath); err != nil {
		t.Fatal(err)
	}
	mustAcquire(t, s, "b")
	if e := s.StateError(); e != "" {
		t.Fatalf("StateError after recovery = %q", e)
	}
	if err := s.persist.flushAll(false); err != nil {
		t.Fatal(err)
	}
	crash(t, s)
	if got := loadDir(t, dir)["b"].Grants; len(got) != 4 {
		t.Fatalf("%d grants on disk, want 4", len(got))
	}
}

// TestCloseFoldsJournal checks that Close leaves everything in the snapshot
// and an empty journal.
func TestCloseFoldsJournal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := New(Options{StateDir: dir, Margin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mustConfigure(t, s, "b", Limit{Requests: 10, Window: time.Minute})
	for range 5 {
		mustAcquire(t, s, "b")
	}
	s.Pause("b", time.Now().Add(time.Hour), "ban")
	if n := journalSize(t, dir); n == 0 {
		t.Fatal("nothing journaled before Close")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := journalSize(t, dir); n != 0 {
		t.Fatalf("journal holds %d bytes after Close", n)
	}
	if _, err := os.Stat(filepath.Join(dir, StateFile+".tmp")); !os.IsNotExist(err) {
		t.Fatalf("temp file left behind: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st diskState
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	if b := st.Buckets["b"]; len(b.Grants) != 5 || b.PauseReason != "ban" || b.Cap != historyCap || b.RetainNS != int64(time.Minute+10*time.Millisecond) {
		t.Fatalf("snapshot after Close: %+v", b)
	}
}

// TestCompactionFailureKeepsJournal: when the journal outgrows its threshold
// but no snapshot can be written, grants go on being journaled (they are
// saved, so StateError stays empty), the failure is logged once, and
// compaction resumes once the snapshot can be written again.
func TestCompactionFailureKeepsJournal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := &recordingHandler{}
	s := newTestScheduler(t, Options{StateDir: dir, Margin: 10 * time.Millisecond, Logger: slog.New(h)})
	const threshold = 512
	s.persist.compactAt = threshold
	mustConfigure(t, s, "b", Limit{Requests: 1000, Window: time.Minute})
	mustAcquire(t, s, "b")
	// A directory where the snapshot's temp file goes fails every
	// snapshot; the open journal is unaffected.
	tmp := filepath.Join(dir, StateFile+".tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		mustAcquire(t, s, "b")
	}
	if size := journalSize(t, dir); size < 2*threshold {
		t.Fatalf("journal at %d bytes; want it past the threshold while snapshots fail", size)
	}
	if e := s.StateError(); e != "" {
		t.Fatalf("StateError = %q; the grants are saved in the journal", e)
	}
	if n := h.count(slog.LevelWarn, "not compacted"); n != 1 {
		t.Fatalf("%d compaction warnings, want 1", n)
	}
	if err := os.Remove(tmp); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		mustAcquire(t, s, "b")
	}
	if size := journalSize(t, dir); size >= 2*threshold {
		t.Fatalf("journal at %d bytes after snapshots work again", size)
	}
	if err := s.persist.flushAll(false); err != nil {
		t.Fatal(err)
	}
	crash(t, s)
	if got := loadDir(t, dir)["b"].Grants; len(got) != 31 {
		t.Fatalf("%d grants on disk, want 31", len(got))
	}
}
