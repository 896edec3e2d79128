package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/core/config"
)

// TestSocketPrecedence: --socket, then $SLUICE_SOCKET, then socket in
// $SLUICE_CONFIG, then the defaults. The config is read for that one key:
// secrets it references (here a file nobody can read and an unset variable)
// are never resolved.
func TestSocketPrecedence(t *testing.T) {
	hit := func(name string) *fakeDaemon {
		return newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"status":"ok","detail":"`+name+`"}`)
		})
	}
	flag, env, cfg := hit("flag"), hit("env"), hit("config")
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "config.toml")
	os.WriteFile(cfgFile, []byte("socket = \""+cfg.socket+"\"\nstate_dir = \"/nonexistent\"\n\n[hellorf]\nenabled = true\n"+
		"client_id = \"env:SLUICE_TEST_UNSET_ID\"\nclient_secret = \"file:/nonexistent/secret\"\n"), 0o600)
	badCfg := filepath.Join(dir, "bad.toml")
	os.WriteFile(badCfg, []byte("socket = \n"), 0o600)

	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // fake daemon reached; "" for none
	}{
		{"flag wins", map[string]string{"SLUICE_SOCKET": env.socket, "SLUICE_CONFIG": cfgFile}, []string{"--socket", flag.socket}, "flag"},
		{"env over config", map[string]string{"SLUICE_SOCKET": env.socket, "SLUICE_CONFIG": cfgFile}, nil, "env"},
		{"config", map[string]string{"SLUICE_CONFIG": cfgFile}, nil, "config"},
		{"unreadable config falls back", map[string]string{"SLUICE_CONFIG": filepath.Join(dir, "missing.toml")}, nil, ""},
		{"broken config falls back", map[string]string{"SLUICE_CONFIG": badCfg}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"XDG_RUNTIME_DIR": dir}
			for k, v := range tc.env {
				env[k] = v
			}
			t.Setenv("XDG_RUNTIME_DIR", dir) // config.DefaultSocket reads the real environment
			r := runPlain(t, env, append(tc.args, "--json", "health")...)
			if tc.want == "" {
				if r.code != exitUnreachable || !strings.Contains(r.stderr, "$SLUICE_CONFIG") ||
					!strings.Contains(r.stderr, config.DefaultSocket()+" (default): no such file") {
					t.Fatalf("want unreachable naming the default and the unused config: %+v", r)
				}
				return
			}
			if r.code != 0 || !strings.Contains(r.stdout, `"detail":"`+tc.want+`"`) {
				t.Fatalf("want %s's daemon: %+v", tc.want, r)
			}
		})
	}
}

// TestUnreachableSaysWhatWasTried: each path tried is named with its own
// reason, one line.
func TestUnreachableSaysWhatWasTried(t *testing.T) {
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// A socket file nobody listens on: a crashed daemon's leftover.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()

	r := runCtl(t, stale, "", "status")
	if r.code != exitUnreachable || strings.Count(r.stderr, "\n") != 1 ||
		!strings.Contains(r.stderr, stale+" (--socket): connection refused") {
		t.Fatalf("stale socket: %+v", r)
	}
	r = runPlain(t, map[string]string{"SLUICE_SOCKET": filepath.Join(dir, "none.sock")}, "status")
	if r.code != exitUnreachable || !strings.Contains(r.stderr, "none.sock ($SLUICE_SOCKET): no such file") {
		t.Fatalf("missing socket: %+v", r)
	}
}

// TestPermissionHint: a permission error names the group to join, and tells a
// user who was added to it already that it takes a new login.
func TestPermissionHint(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	os.WriteFile(sock, nil, 0o600)
	fi, _ := os.Stat(sock)
	gid := int(fi.Sys().(*syscall.Stat_t).Gid)
	if gid == 0 {
		// groupHint says nothing about root's group; use one the test owns.
		if err := os.Chown(sock, -1, 4242); err != nil {
			t.Skip("cannot give the file a group:", err)
		}
		gid = 4242
	}
	name := func(int) string { return "sluice" }
	ue := &client.UnreachableError{Socket: sock, Err: &os.SyscallError{Syscall: "connect", Err: syscall.EACCES}}
	for _, tc := range []struct {
		name string
		g    groupInfo
		want string
	}{
		{"not a member", groupInfo{name: name}, "sudo usermod -aG sluice $USER, then log in again"},
		{"added, not logged in again", groupInfo{account: []int{gid}, name: name}, "only after logging in again"},
		{"member", groupInfo{process: []int{gid}, account: []int{gid}, name: name}, "you are in group sluice"},
	} {
		got := explainUnreachable(ue, "--socket", socketChoice{}, tc.g)
		if !strings.Contains(got, sock+" (--socket): permission denied") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q lacks %q", tc.name, got, tc.want)
		}
	}
}
