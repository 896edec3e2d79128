// Package durable writes the files sluice's safety records live in (the
// scheduler's snapshot, hellorf's purchase guard) so that a crash or a power
// loss leaves either the old file or the new one, never a torn one or none.
package durable

import (
	"fmt"
	"os"
	"path/filepath"
)

// ReplaceFile replaces path with data (mode 0600) atomically and durably:
// a temp file beside it (path + ".tmp", a fixed name: callers serialise
// their writes, and a fixed name keeps repeated errors identical), written
// and fsynced, renamed into place, and the directory fsynced. The directory
// must exist. On failure the temp file is removed and the old file stays.
func ReplaceFile(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	// O_CREATE keeps the mode of a temp file that already existed.
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = SyncDir(filepath.Dir(path))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// SyncDir fsyncs a directory, so an entry created or renamed in it
// survives a power loss.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
