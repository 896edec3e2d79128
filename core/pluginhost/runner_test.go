package pluginhost

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-plugin"
)

// TestPinnedPluginRunsWhatWasChecked: a binary swapped for another right
// after its checksum was checked is not what runs. /bin/true stands for
// the pinned plugin and /bin/false for the swapped-in one.
func TestPinnedPluginRunsWhatWasChecked(t *testing.T) {
	good, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skipf("no /bin/true to stand for a plugin: %v", err)
	}
	evil, err := os.ReadFile("/bin/false")
	if err != nil {
		t.Skipf("no /bin/false to stand for a swapped plugin: %v", err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "sluice-plugin")
	if err := os.WriteFile(path, good, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(good)
	if img, err := pinnedImage(path, sum[:]); errors.Is(err, errNoImage) {
		t.Skipf("this system starts pinned plugins by their path (%v); the swap is not caught", err)
	} else if err != nil {
		t.Fatal(err)
	} else {
		img.Close()
	}
	swap := func() {
		tmp := path + ".new"
		if err := os.WriteFile(tmp, evil, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	start := func(checksum []byte, hook func()) error {
		r, err := newPluginRunner(path, checksum, exec.Command(path), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		r.testHookVerified = hook
		if err := r.Start(context.Background()); err != nil {
			return err
		}
		return r.Wait(context.Background())
	}
	if err := start(sum[:], swap); err != nil {
		t.Fatalf("the binary swapped in after the check ran: %v", err)
	}
	// The swapped-in binary itself is refused, and unpinned it runs.
	if err := start(sum[:], nil); !errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
		t.Fatalf("start of a binary that does not match: %v, want %v", err, plugin.ErrChecksumsDoNotMatch)
	}
	var ee *exec.ExitError
	if err := start(nil, nil); !errors.As(err, &ee) {
		t.Fatalf("unpinned, the swapped-in binary should run (and exit 1): %v", err)
	}
}
