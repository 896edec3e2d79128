package main

import (
	"crypto/sha1"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestParseMonitorLine: row 7 counts the commands the daemons send Redis
// (one round trip each) from MONITOR, apart from those scripts run inside
// Redis, and names each EVALSHA by its script.
func TestParseMonitorLine(t *testing.T) {
	grant := fmt.Sprintf("%x", sha1.Sum([]byte("return 1")))
	scripts := map[string]string{grant: "fleet.grant"}
	for _, tc := range []struct {
		name, line string
		lua        bool
		cmd        string
		ok         bool
	}{
		{"known script", `+1796408537.425995 [0 unix:/tmp/r.sock] "evalsha" "` + grant + `" "4" "{p:b}:log"` + "\r\n", false, "evalsha fleet.grant", true},
		{"unknown script", `+1796408537.425995 [0 unix:/tmp/r.sock] "evalsha" "5f2a0b1c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a" "1" "k"` + "\r\n", false, "evalsha 5f2a0b1c", true},
		{"inside a script", `+1796408537.426061 [0 lua] "TIME"` + "\r\n", true, "time", true},
		{"TCP client", `+1796408537.426061 [3 127.0.0.1:60866] "ZREM" "k" "m"` + "\r\n", false, "zrem", true},
		{"not a command", "+OK\r\n", false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lua, cmd, ok := parseMonitorLine(tc.line, scripts)
			if lua != tc.lua || cmd != tc.cmd || ok != tc.ok {
				t.Errorf("parseMonitorLine = %v, %q, %v; want %v, %q, %v", lua, cmd, ok, tc.lua, tc.cmd, tc.ok)
			}
		})
	}
}

// TestFleetScripts: the scripts are named from core/fleet's sources, by
// the SHA1 EVALSHA sends, whatever the fleet's scripts are today.
func TestFleetScripts(t *testing.T) {
	dir := t.TempDir()
	src := "package fleet\n\nvar grantScript = redis.NewScript(`return 1`)\nvar other = 3\n"
	if err := os.WriteFile(filepath.Join(dir, "fleet.go"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	got := fleetScripts(dir)
	if want := fmt.Sprintf("%x", sha1.Sum([]byte("return 1"))); got[want] != "fleet.grant" || len(got) != 1 {
		t.Errorf("fleetScripts = %v, want {%s: fleet.grant}", got, want)
	}
	if real := fleetScripts(filepath.Join("..", "core", "fleet")); len(real) == 0 {
		t.Error("no script found in core/fleet")
	}
}
