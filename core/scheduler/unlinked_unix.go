//go:build unix

package scheduler

import (
	"os"
	"syscall"
)

// unlinked reports whether f's file has lost its last name (its directory
// was removed or replaced), so that writes to it are lost. One fstat, no
// allocation.
func unlinked(f *os.File) bool {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return true
	}
	return st.Nlink == 0
}
