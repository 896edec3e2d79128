//go:build linux

package pluginhost

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// pinnedImage copies the plugin binary at path into a sealed memfd,
// hashing it on the way, and returns the memfd if the digest is want. The
// plugin is then started from the memfd: what runs is what was checked,
// whatever happens to path meanwhile (a rename over it, a write into it).
// The seals make the copy itself unchangeable. It costs the binary's size
// in memory that cannot be swapped out while the plugin runs, and only for
// pinned plugins.
func pinnedImage(path string, want []byte) (*os.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("error verifying checksum: %w", err)
	}
	defer src.Close()
	name := "sluice-plugin-" + filepath.Base(path)
	// MFD_EXEC: where vm.memfd_noexec is 1, a memfd made without it
	// cannot be executed. Kernels before 6.3 know no such flag (EINVAL)
	// and make every memfd executable.
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	switch {
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL):
		// vm.memfd_noexec = 2, or a seccomp filter: no executable
		// memfd here. The caller checks the binary by its path instead.
		return nil, fmt.Errorf("%w: memfd_create: %w", errNoImage, err)
	case err != nil:
		// Out of descriptors or memory: no start, rather than one
		// without the protection.
		return nil, fmt.Errorf("error verifying checksum: memfd_create: %w", err)
	}
	if fd < 3 {
		// The child's stdin, stdout and stderr are put at 0-2 before
		// it execs the memfd by number: keep it clear of them.
		nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("error verifying checksum: %w", err)
		}
		fd = nfd
	}
	img := os.NewFile(uintptr(fd), "memfd:"+filepath.Base(path))
	if err := copyChecked(img, src, want); err != nil {
		img.Close()
		return nil, err
	}
	const seals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(img.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		img.Close()
		return nil, fmt.Errorf("error verifying checksum: sealing the checked copy: %w", err)
	}
	return img, nil
}

// imagePath is the name under which a child execs img: the child still
// holds the descriptor (it is closed on exec, after the kernel opened it).
func imagePath(img *os.File) string {
	return "/proc/self/fd/" + strconv.Itoa(int(img.Fd()))
}
