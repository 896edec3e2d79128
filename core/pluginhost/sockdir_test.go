package pluginhost

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestSockDirStaleAndLive: a directory nobody holds locked (a crashed
// daemon's) is removed at the next start; one a live daemon holds is left
// alone, whatever its name says about pids; the new directory is 0700
// under a 0700 parent even when the umask would allow more; Close removes
// it.
func TestSockDirStaleAndLive(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	parent := filepath.Join(t.TempDir(), "p")
	if err := os.Mkdir(parent, 0o777); err != nil {
		t.Fatal(err)
	}
	// A live daemon's, held locked by another process.
	live, err := openSockDirT(parent)
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("sleep", "60")
	holder.ExtraFiles = []*os.File{live.lock}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	live.lock.Close() // only the holder keeps the lock now
	// A crashed daemon's directory; its pid (1) is alive, as a reused
	// pid would be.
	stale := filepath.Join(parent, "1-stale")
	if err := os.MkdirAll(filepath.Join(stale, "plugin-dir1"), 0o700); err != nil {
		t.Fatal(err)
	}

	d, removed, err := openSockDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if removed != 1 {
		t.Errorf("removed %d stale directories, want 1", removed)
	}
	if _, err := os.Lstat(stale); !os.IsNotExist(err) {
		t.Errorf("stale directory survived: %v", err)
	}
	if _, err := os.Lstat(live.path); err != nil {
		t.Errorf("a live daemon's directory was removed: %v", err)
	}
	for _, p := range []string{parent, d.path} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s is %v under umask 000, want 0700", p, fi.Mode().Perm())
		}
	}
	if !strings.HasPrefix(filepath.Base(d.path), strconv.Itoa(os.Getpid())+"-") {
		t.Errorf("directory %s does not name its daemon's pid", d.path)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(d.path); !os.IsNotExist(err) {
		t.Errorf("Close left %s behind (%v)", d.path, err)
	}
}

// TestSockDirRefusesForeignParent: a parent that is a symlink, a file, or
// another user's directory is never used: whoever planted it could reach
// the sockets.
func TestSockDirRefusesForeignParent(t *testing.T) {
	base := t.TempDir()
	target := filepath.Join(base, "target")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{"symlink": link, "file": file}
	if os.Geteuid() == 0 {
		foreign := filepath.Join(base, "foreign")
		if err := os.Mkdir(foreign, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(foreign, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		cases["another user's"] = foreign
	}
	for name, parent := range cases {
		t.Run(name, func(t *testing.T) {
			if d, _, err := openSockDir(parent); err == nil {
				d.Close()
				t.Fatalf("used %s as the socket parent", parent)
			}
		})
	}
	// The Host still starts, with a one-off private directory.
	h, err := New(Options{SocketParent: link})
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(h.sockDir.path, target) || strings.HasPrefix(h.sockDir.path, link) {
		t.Errorf("host socket dir %s is under the refused parent", h.sockDir.path)
	}
	if fi, err := os.Lstat(h.sockDir.path); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("fallback socket dir %s: %v %v, want 0700", h.sockDir.path, fi, err)
	}
	path := h.sockDir.path
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("Close left %s behind", path)
	}
}

func openSockDirT(parent string) (*sockDir, error) {
	d, _, err := openSockDir(parent)
	return d, err
}
