//go:build !unix

package scheduler

import "os"

// unlinked reports whether f is no longer the file at its path (its
// directory was removed or replaced), so that writes to it are lost.
func unlinked(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return true
	}
	pi, err := os.Stat(f.Name())
	return err != nil || !os.SameFile(fi, pi)
}
