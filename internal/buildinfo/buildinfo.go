// Package buildinfo says which build a binary is, the same way for sluiced
// and sluicectl: the version `make` stamps with -ldflags "-X main.version=…"
// (git describe), else what the go tool recorded from the module or its
// work tree, so a plain `go build` or `go install` still names its commit.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Unknown is the version of a build that carries no version information.
const Unknown = "dev"

// Version returns stamped when the linker set it (the Makefile's fallback
// "dev" counts as unset), else the build's own record.
func Version(stamped string) string {
	if stamped != "" && stamped != Unknown {
		return stamped
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Unknown
	}
	return FromBuildInfo(bi)
}

// FromBuildInfo is the version recorded in bi: the module version of a `go
// install module@version` (or one the go tool derived from a tagged work
// tree), else the commit a work-tree build was made from, with "-dirty" for
// uncommitted changes, as `git describe --always --dirty` writes it.
func FromBuildInfo(bi *debug.BuildInfo) string {
	var rev string
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	v := bi.Main.Version
	// A work-tree build gets a pseudo-version (v0.0.0-date-commit, with
	// "+dirty") from Go 1.24 on; the commit says the same more plainly.
	if v != "" && v != "(devel)" && (rev == "" || !strings.HasPrefix(v, "v0.0.0-")) {
		return v
	}
	if rev == "" {
		return Unknown
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		rev += "-dirty"
	}
	return rev
}
