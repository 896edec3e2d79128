package config

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	testDebounce = 50 * time.Millisecond
	waitTimeout  = 5 * time.Second
)

// startWatch runs watch on path until the test ends and returns the number
// of notifications so far. It returns once the watches are in place.
func startWatch(t *testing.T, path string, debounce time.Duration) func() int64 {
	t.Helper()
	var n atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- watch(ctx, path, debounce, func() { n.Add(1) }, nil, func() { close(ready) })
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("watch exited early: %v", err)
	case <-time.After(waitTimeout):
		cancel()
		t.Fatal("watch did not become ready")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("watch returned %v after cancel, want nil", err)
			}
		case <-time.After(waitTimeout):
			t.Error("watch did not return after cancel")
		}
	})
	return n.Load
}

// waitCount polls until count() >= want or the deadline passes.
func waitCount(t *testing.T, count func() int64, want int64) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for count() < want {
		if time.Now().After(deadline) {
			t.Fatalf("got %d notifications, want at least %d", count(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stayAtMost fails if count() exceeds max at any time during d. It is an
// assertion that nothing more happens, not a synchronisation point.
func stayAtMost(t *testing.T, count func() int64, max int64, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if c := count(); c > max {
			t.Fatalf("got %d notifications, want at most %d", c, max)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func mustRename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

func TestWatchNotifies(t *testing.T) {
	tests := []struct {
		name string
		// setup creates the config and returns its path.
		setup func(t *testing.T, dir string) string
		// change modifies the config; it runs twice (round 1 and 2) so that
		// the watch is shown to survive its own kind of change.
		change func(t *testing.T, dir, path string, round int)
	}{
		{
			name: "write in place",
			change: func(t *testing.T, dir, path string, round int) {
				f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.WriteString("log_level = \"debug\"\n"); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "rename over",
			change: func(t *testing.T, dir, path string, round int) {
				before := inode(t, path)
				tmp := filepath.Join(dir, "config.toml.tmp")
				writeFile(t, tmp, "log_level = \"warn\"\n")
				mustRename(t, tmp, path)
				if inode(t, path) == before {
					t.Fatal("rename did not replace the inode")
				}
			},
		},
		{
			name: "sed -i",
			change: func(t *testing.T, dir, path string, round int) {
				before := inode(t, path)
				if sed, err := exec.LookPath("sed"); err == nil {
					if out, err := exec.Command(sed, "-i", "s/info/error/;s/error/info/", path).CombinedOutput(); err != nil {
						t.Fatalf("sed: %v: %s", err, out)
					}
				} else {
					// What GNU sed -i does: write a temp file next to the
					// original and rename it over.
					tmp := filepath.Join(dir, "sedAbC123")
					writeFile(t, tmp, "log_level = \"error\"\n")
					mustRename(t, tmp, path)
				}
				if inode(t, path) == before {
					t.Fatal("sed -i did not replace the inode")
				}
			},
		},
		{
			name: "kubernetes ..data swap",
			setup: func(t *testing.T, dir string) string {
				if err := os.Mkdir(filepath.Join(dir, "..v0"), 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(dir, "..v0", "config.toml"), "log_level = \"info\"\n")
				mustSymlink(t, "..v0", filepath.Join(dir, "..data"))
				path := filepath.Join(dir, "config.toml")
				mustSymlink(t, filepath.Join("..data", "config.toml"), path)
				return path
			},
			change: func(t *testing.T, dir, path string, round int) {
				// The kubelet's atomic writer: new timestamped dir, new
				// ..data_tmp symlink renamed over ..data, old dir removed.
				prev, err := os.Readlink(filepath.Join(dir, "..data"))
				if err != nil {
					t.Fatal(err)
				}
				next := "..v" + string(rune('0'+round))
				if err := os.Mkdir(filepath.Join(dir, next), 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(dir, next, "config.toml"), "log_level = \"warn\"\n")
				mustSymlink(t, next, filepath.Join(dir, "..data_tmp"))
				mustRename(t, filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data"))
				if err := os.RemoveAll(filepath.Join(dir, prev)); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "symlink to another directory, target edited",
			setup: func(t *testing.T, dir string) string {
				elsewhere := t.TempDir()
				target := filepath.Join(elsewhere, "real.toml")
				writeFile(t, target, "log_level = \"info\"\n")
				path := filepath.Join(dir, "config.toml")
				mustSymlink(t, target, path)
				return path
			},
			change: func(t *testing.T, dir, path string, round int) {
				target, err := filepath.EvalSymlinks(path)
				if err != nil {
					t.Fatal(err)
				}
				writeFile(t, target, "log_level = \"debug\"\n")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "config.toml")
			if tt.setup != nil {
				path = tt.setup(t, dir)
			} else {
				writeFile(t, path, "log_level = \"info\"\n")
			}
			count := startWatch(t, path, testDebounce)
			for round := int64(1); round <= 2; round++ {
				tt.change(t, dir, path, int(round))
				waitCount(t, count, round)
			}
		})
	}
}

func TestWatchDebouncesBurst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	writeFile(t, path, "")
	debounce := 200 * time.Millisecond
	count := startWatch(t, path, debounce)
	for i := range 10 {
		writeFile(t, path, "# write "+string(rune('0'+i))+"\n")
	}
	waitCount(t, count, 1)
	stayAtMost(t, count, 2, 3*debounce)
}

func TestWatchIgnoresOtherFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	writeFile(t, path, "")
	count := startWatch(t, path, testDebounce)
	for _, name := range []string{"other.toml", "config.toml.bak", ".config.toml.swp"} {
		writeFile(t, filepath.Join(dir, name), "x")
	}
	stayAtMost(t, count, 0, 6*testDebounce)
	// The watch is alive: a real change still counts.
	writeFile(t, path, "log_level = \"warn\"\n")
	waitCount(t, count, 1)
}

func TestWatchFileCreatedLater(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	count := startWatch(t, path, testDebounce)
	writeFile(t, path, "")
	waitCount(t, count, 1)
}

func TestWatchMissingDirectory(t *testing.T) {
	err := Watch(context.Background(), filepath.Join(t.TempDir(), "nope", "config.toml"), testDebounce, func() {}, nil)
	if err == nil {
		t.Fatal("want an error for a missing directory")
	}
}
