package config

import (
	"strings"
	"testing"
)

// FuzzParse: no input crashes the parser, every failure is a located
// *Error, and no error message repeats an inline secret.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"", "log_level = \"debug\"\n", "[scheduler]\nmargin = \"250ms\"\n",
		"[providers.ineo]\naccess_key = \"s3cr3t-value\"\n[providers.ineo.limits.spotify]\nrequests = 6\nwindow = \"7s\"\n",
		"[providers.ineo]\naccess_key = 12\n", "bogus = 1\n", "[cache]\nmax_size = \"64MiB\"\n", "socket_mode = \"0660\"\n",
		"[providers.ineo.limits.spotify]\nrequests = 0\n", "a = [\n", "[[x]]\n", "\"q\\\"k\" = 1\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src string) {
		_, err := Parse([]byte(src), "/fuzz/config.toml")
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "/fuzz/config.toml") {
			t.Fatalf("error without the file name: %v", err)
		}
		if strings.Contains(src, "s3cr3t-value") && strings.Contains(err.Error(), "s3cr3t-value") {
			t.Fatalf("error repeats a secret: %v", err)
		}
	})
}
