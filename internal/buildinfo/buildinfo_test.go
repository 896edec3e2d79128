package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "3fc7af1a2b3c4d5e6f708192a3b4c5d6e7f80910"
	for _, tc := range []struct {
		name    string
		version string
		set     []debug.BuildSetting
		want    string
	}{
		{"go install module@version", "v1.4.0", nil, "v1.4.0"},
		{"tagged work tree", "v1.4.0", vcs(rev, "false"), "v1.4.0"},
		{"work tree, clean", "(devel)", vcs(rev, "false"), "3fc7af1a2b3c"},
		{"work tree, dirty", "(devel)", vcs(rev, "true"), "3fc7af1a2b3c-dirty"},
		{"pseudo-version", "v0.0.0-20261204150000-3fc7af1a2b3c+dirty", vcs(rev, "true"), "3fc7af1a2b3c-dirty"},
		{"nothing recorded", "(devel)", nil, "dev"},
	} {
		bi := &debug.BuildInfo{Main: debug.Module{Version: tc.version}, Settings: tc.set}
		if got := FromBuildInfo(bi); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestVersionPrefersStamp(t *testing.T) {
	if got := Version("v2.0.0-3-gabcdef"); got != "v2.0.0-3-gabcdef" {
		t.Fatalf("stamped: %q", got)
	}
	if got := Version("dev"); got == "" {
		t.Fatal("unstamped: empty")
	}
}
