package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/hellorf/hellorfsim"
)

// probeEnv, when set, turns the test binary into the socket probe: it
// tries every socket path listed (one a line) and prints one verdict a line.
// It is handled in init, before TestMain builds anything, because the probe
// runs as another user who can neither build nor write a cache.
const probeEnv = "SLUICE_E2E_SOCKET_PROBE"

func init() {
	if paths := os.Getenv(probeEnv); paths != "" {
		for _, p := range strings.Split(paths, "\n") {
			fmt.Printf("%s\t%s\n", p, probeSocket(p))
		}
		os.Exit(0)
	}
}

// probeSocket connects to path and, if it can, asks for gRPC health; it
// says "refused: ..." only when the kernel refused the connection.
func probeSocket(path string) string {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return "refused: " + err.Error()
	}
	c.Close()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "CONNECTED (no gRPC client: " + err.Error() + ")"
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "plugin"})
	if err != nil {
		return "CONNECTED; gRPC answered " + status.Code(err).String()
	}
	return "CONNECTED; gRPC health answered " + resp.GetStatus().String()
}

// TestPluginSocketsPrivate: under umask 000, and outside systemd, no other
// user can reach a plugin's gRPC socket or the host's broker sockets: every
// one lives in a 0700 directory of the daemon's own, under its private
// parent, and none in the shared temp directory.
func TestPluginSocketsPrivate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the probe must run as another uid (65534)")
	}
	hsim, hURL, err := hellorfsim.Start(hellorfsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hsim.Close() })
	env := testenv.Start(t, testenv.Options{
		Extra: testenv.HellorfSection(hURL, hellorfsim.DefaultClientID, hellorfsim.DefaultClientSecret),
		// A manual start by a careless shell: nothing the umask leaves
		// open may be what keeps other users out.
		Launcher: []string{"sh", "-c", `umask 000; exec "$@"`, "sh"},
	})
	daemon := env.DaemonPID()
	var plugins []int
	testenv.Eventually(t, 30*time.Second, "both plugins running", func() bool {
		plugins = testenv.ChildPluginPIDs(daemon)
		return len(plugins) == 2
	})
	// Each plugin listens on its own socket and the host on one broker
	// socket per plugin (the host service); wait for all of them.
	var socks []string
	testenv.Eventually(t, 30*time.Second, "plugin and broker sockets listening", func() bool {
		socks = listeningSockets(t, append([]int{daemon}, plugins...), env.Socket)
		return len(socks) >= 2*len(plugins)
	})

	parent := filepath.Join(os.TempDir(), fmt.Sprintf("sluice-%d-plugins", os.Geteuid()))
	for _, s := range socks {
		if filepath.Dir(s) == filepath.Clean(os.TempDir()) {
			t.Errorf("socket %s lies in the shared temp directory", s)
		}
		if !strings.HasPrefix(s, parent+"/") {
			t.Errorf("socket %s is not under the daemon's private parent %s", s, parent)
		}
		for d := filepath.Dir(s); d != filepath.Dir(parent); d = filepath.Dir(d) {
			fi, err := os.Lstat(d)
			if err != nil {
				t.Errorf("socket %s: %v", s, err)
				break
			}
			st := fi.Sys().(*syscall.Stat_t)
			if !fi.IsDir() || fi.Mode().Perm() != 0o700 || st.Uid != uint32(os.Geteuid()) {
				t.Errorf("socket %s: directory %s is %v owned by uid %d, want a 0700 directory of uid %d", s, d, fi.Mode(), st.Uid, os.Geteuid())
			}
			if d == "/" || d == "." {
				break
			}
		}
	}

	for path, verdict := range probeAs(t, 65534, socks) {
		t.Logf("uid 65534 -> %s: %s", path, verdict)
		if !strings.HasPrefix(verdict, "refused: ") {
			t.Errorf("uid 65534 reached %s: %s", path, verdict)
		}
	}
}

// TestPluginSocketDirCleaned: the daemon's plugin socket directory goes at
// a clean exit, and one a crashed daemon left behind goes at the next start.
func TestPluginSocketDirCleaned(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	own := func() []string {
		m, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("sluice-%d-plugins", os.Geteuid()), fmt.Sprintf("%d-*", env.DaemonPID())))
		return m
	}
	first := own()
	if len(first) != 1 {
		t.Fatalf("daemon %d socket directories: %v, want exactly one", env.DaemonPID(), first)
	}
	env.KillDaemon()
	if _, err := os.Lstat(first[0]); err != nil {
		t.Fatalf("SIGKILL should leave the directory behind for this test to mean anything: %v", err)
	}
	env.StartDaemon()
	testenv.Eventually(t, 10*time.Second, "crashed daemon's socket directory removed at the next start", func() bool {
		_, err := os.Lstat(first[0])
		return os.IsNotExist(err)
	})
	second := own()
	if len(second) != 1 {
		t.Fatalf("daemon %d socket directories: %v, want exactly one", env.DaemonPID(), second)
	}
	env.StopDaemon()
	if _, err := os.Lstat(second[0]); !os.IsNotExist(err) {
		t.Errorf("socket directory %s outlived a clean exit (%v)", second[0], err)
	}
}

// listeningSockets lists the bound paths of the listening Unix sockets the
// processes hold, except skip (the daemon's own API socket).
func listeningSockets(t *testing.T, pids []int, skip string) []string {
	t.Helper()
	inodes := map[string]bool{}
	for _, pid := range pids {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && strings.HasPrefix(l, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
			}
		}
	}
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || !inodes[fields[6]] {
			continue
		}
		flags, _ := strconv.ParseUint(fields[3], 16, 32)
		const soAcceptCon = 0x10000
		if flags&soAcceptCon == 0 || fields[7] == skip || strings.HasPrefix(fields[7], "@") {
			continue
		}
		out = append(out, fields[7])
	}
	return out
}

// probeAs runs the probe as uid (and gid) uid against paths, from a copy of
// this test binary the other user can execute.
func probeAs(t *testing.T, uid uint32, paths []string) map[string]string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: its parent is 0700, so the other user could not reach
	// the copy.
	dir, err := os.MkdirTemp("", "sl-probe-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "probe")
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = "/"
	cmd.Env = []string{probeEnv + "=" + strings.Join(paths, "\n"), "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, NoSetGroups: true}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe as uid %d: %v\n%s", uid, err, out)
	}
	verdicts := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if p, v, ok := strings.Cut(line, "\t"); ok {
			verdicts[p] = v
		}
	}
	for _, p := range paths {
		if _, ok := verdicts[p]; !ok {
			t.Errorf("probe gave no verdict for %s:\n%s", p, out)
		}
	}
	return verdicts
}
