package scheduler

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRestartKeepsWindow(t *testing.T) {
	t.Parallel()
	const (
		window = 500 * time.Millisecond
		margin = 50 * time.Millisecond
		span   = window + margin
	)
	limit := Limit{Requests: 5, Window: window}
	// A missing, nested state dir is created private.
	dir := filepath.Join(t.TempDir(), "a", "state")

	s1, err := New(Options{StateDir: dir, Margin: margin})
	if err != nil {
		t.Fatal(err)
	}
	mustConfigure(t, s1, "b", limit)
	first := mustAcquire(t, s1, "b")
	for range 4 {
		mustAcquire(t, s1, "b")
	}
	// No Close: a SIGKILL gives the daemon no chance to save on the way out,
	// so every grant must already be on disk (snapshot plus journal). Stop
	// the timers only after reading the files to keep goleak quiet.
	if st := loadDir(t, dir); len(st["b"].Grants) != 5 {
		t.Fatalf("state on disk holds %+v, want 5 grants of b", st)
	}
	if err := s1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, StateFile): 0o600, filepath.Join(dir, JournalFile): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v (err %v), want %v", path, fi.Mode().Perm(), err, want)
		}
	}

	s2 := newTestScheduler(t, Options{StateDir: dir, Margin: margin})
	mustConfigure(t, s2, "b", limit)
	if got := bucketStatus(t, s2, "b").InWindow; got != 5 {
		t.Fatalf("InWindow after restart = %d, want 5", got)
	}
	g := mustAcquire(t, s2, "b")
	// Compare wall clocks: the monotonic clock does not survive a restart.
	if d := g.At.Round(0).Sub(first.At.Round(0)); d < span {
		t.Fatalf("first grant after restart only %s after the burst began, want ≥ %s", d, span)
	}
	if s2.StateError() != "" {
		t.Fatalf("StateError = %q", s2.StateError())
	}
}

func TestRestartKeepsPausesAndUnconfiguredBuckets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	limit := Limit{Requests: 1, Window: 10 * time.Second}

	s1, err := New(Options{StateDir: dir, Margin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mustConfigure(t, s1, "paused", limit)
	mustConfigure(t, s1, "idle", limit)
	until := time.Now().Add(time.Hour)
	s1.Pause("paused", until, "banned")
	mustAcquire(t, s1, "idle")
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	// Run 2 configures only "paused"; its writes must keep "idle"'s grant.
	s2, err := New(Options{StateDir: dir, Margin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mustConfigure(t, s2, "paused", limit)
	st := bucketStatus(t, s2, "paused")
	// The pause is stored as wall time converted via the monotonic clock;
	// two time.Now calls can disagree on their offset by microseconds.
	if st.PauseReason != "banned" || st.PausedUntil.Round(0).Sub(until.Round(0)).Abs() > time.Millisecond {
		t.Fatalf("pause after restart: %v %q, want %v banned", st.PausedUntil, st.PauseReason, until)
	}
	s2.Resume("paused")
	mustAcquire(t, s2, "paused")
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}

	s3 := newTestScheduler(t, Options{StateDir: dir, Margin: 10 * time.Millisecond})
	mustConfigure(t, s3, "idle", limit)
	if st := bucketStatus(t, s3, "idle"); st.InWindow != 1 {
		t.Fatalf("idle bucket lost its grant across a run that did not configure it: %+v", st)
	}
	if _, err := s3.Acquire(context.Background(), "idle", 100*time.Millisecond); err == nil {
		t.Fatal("idle bucket granted again inside its window")
	}
}

// TestUnreadableState covers the safe default: when the saved grants cannot
// be known, because the state cannot be read or (the last run could not
// save it either) cannot be written, every bucket is assumed full at
// startup.
func TestUnreadableState(t *testing.T) {
	t.Parallel()
	const (
		window = 150 * time.Millisecond
		margin = 20 * time.Millisecond
	)
	tests := []struct {
		name  string
		setup func(t *testing.T) string // returns the state dir
		// phase is where StateError must place the failure, reason what
		// the pause must say; "" means load and "unreadable".
		phase, reason string
		// unwritable: the dir cannot be written either, so nothing may
		// be granted at all until it can (fail closed).
		unwritable bool
	}{
		{"garbage", stateFileWith("{not json"), "", "", false},
		{"empty file", stateFileWith(""), "", "", false},
		{"unknown version", stateFileWith(`{"version":99,"buckets":{}}`), "", "", false},
		{"negative grant", stateFileWith(`{"version":1,"buckets":{"b":{"grants":[-5]}}}`), "", "", false},
		{"state dir under a regular file", func(t *testing.T) string {
			f := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(f, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(f, "sub")
		}, "", "", true},
		{"state file is a directory", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, StateFile), 0o700); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "", "", true},
		// Readable but not writable, even for root: the snapshot's temp
		// name is taken by a directory that is not empty. (A read-only or
		// full file system: internal/e2e mounts both.)
		{"state readable, snapshot not writable", func(t *testing.T) string {
			dir := stateFileWith(`{"version":1,"buckets":{}}`)(t)
			if err := os.MkdirAll(filepath.Join(dir, StateFile+".tmp", "x"), 0o700); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "save", "cannot be saved", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := tc.setup(t)
			before := time.Now()
			s := newTestScheduler(t, Options{StateDir: dir, Margin: margin})
			phase, reason := cmp.Or(tc.phase, "load"), cmp.Or(tc.reason, "unreadable")
			if !strings.Contains(s.StateError(), phase) {
				t.Fatalf("StateError = %q, want the %s failure", s.StateError(), phase)
			}
			mustConfigure(t, s, "b", Limit{Requests: 5, Window: window})
			st := bucketStatus(t, s, "b")
			if !strings.Contains(st.PauseReason, reason) || st.LastError == "" {
				t.Fatalf("status does not report the condition: %+v", st)
			}
			if tc.unwritable {
				_, err := s.Acquire(context.Background(), "b", 0)
				if !errors.Is(err, ErrStateUnwritable) {
					t.Fatalf("Acquire on an unwritable state dir: %v, want ErrStateUnwritable", err)
				}
				if st := bucketStatus(t, s, "b"); st.Held == "" || st.Granted != 0 {
					t.Fatalf("status %+v: want held, nothing granted", st)
				}
				return
			}
			g := mustAcquire(t, s, "b")
			if d := g.At.Sub(before); d < window+margin {
				t.Fatalf("first grant %s after startup, want ≥ %s", d, window+margin)
			}
		})
	}
}

func stateFileWith(content string) func(t *testing.T) string {
	return func(t *testing.T) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
}

// TestSaveFailureHolds breaks the state dir after a clean start (a regular
// file in its place stops even root) and checks that the scheduler fails
// closed: no grant is handed out, callers are told at once why (with the
// errno), the error is reported and logged once, and the first write that
// works again releases the buckets by itself, with no restart.
func TestSaveFailureHolds(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	h := &recordingHandler{}
	s := newTestScheduler(t, Options{StateDir: dir, Margin: 10 * time.Millisecond, Logger: slog.New(h)})
	mustConfigure(t, s, "b", Limit{Requests: 10, Window: time.Minute})
	mustAcquire(t, s, "b")
	if s.StateError() != "" {
		t.Fatalf("StateError on a healthy dir: %q", s.StateError())
	}

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		// No deadline on the wait: the refusal must come by itself.
		_, err := s.Acquire(context.Background(), "b", 0)
		var ue *UnwritableError
		if !errors.As(err, &ue) || !errors.Is(err, ErrStateUnwritable) || ue.RetryAfter <= 0 || ue.Errno() != "ENOTDIR" {
			t.Fatalf("Acquire with a broken state dir: %v, want an UnwritableError naming ENOTDIR", err)
		}
	}
	if e := s.StateError(); !strings.Contains(e, "save") {
		t.Fatalf("StateError = %q, want the save failure", e)
	}
	if st := bucketStatus(t, s, "b"); st.LastError == "" || !strings.HasPrefix(st.Held, "state_unwritable") || st.Granted != 1 || st.InWindow != 1 {
		t.Fatalf("status %+v: want held, and only the first grant counted", st)
	}
	if n := h.count(slog.LevelError, "not saved"); n != 1 {
		t.Fatalf("%d errors logged for one repeated failure, want 1", n)
	}

	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	// The background retry releases the hold; nothing else writes.
	waitFor(t, 10*time.Second, "the hold to end", func() bool { return bucketStatus(t, s, "b").Held == "" })
	mustAcquire(t, s, "b")
	if e := s.StateError(); e != "" {
		t.Fatalf("StateError after recovery = %q", e)
	}
	crash(t, s)
	if got := loadDir(t, dir)["b"].Grants; len(got) != 2 {
		t.Fatalf("%d grants on disk, want 2 (the withdrawn ones never sent)", len(got))
	}
}

// TestReadOnlyStateDir is the permission variant of the save failure; root
// ignores directory modes, so it only runs unprivileged.
func TestReadOnlyStateDir(t *testing.T) {
	t.Parallel()
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions; TestSaveFailureKeepsServing covers this for root")
	}
	dir := t.TempDir()
	s := newTestScheduler(t, Options{StateDir: dir, Margin: 10 * time.Millisecond})
	mustConfigure(t, s, "b", Limit{Requests: 10, Window: time.Minute})
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	for range 3 {
		mustAcquire(t, s, "b")
	}
	if !strings.Contains(s.StateError(), "save") {
		t.Fatalf("StateError = %q, want the save failure", s.StateError())
	}
}
