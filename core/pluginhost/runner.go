package pluginhost

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"

	"github.com/sluice-dev/sluice/core/provider"
)

// pluginRunner starts one plugin binary as a child of sluiced. It exists
// because go-plugin (v1.8.0) honours UnixSocketConfig.TempDir only for a
// RunnerFunc: with a plain Cmd, the plugin's socket and the host's broker
// sockets go to <tmp>/pluginNNN with whatever mode the umask leaves, so
// under umask 000 any local user could drive a plugin (and pay with it).
// With a RunnerFunc, go-plugin makes a 0700 directory under TempDir for
// each plugin, listens for the host's broker there, and passes it to the
// plugin in PLUGIN_UNIX_SOCKET_DIR for the plugin's own sockets.
type pluginRunner struct {
	cmd       *exec.Cmd
	path      string
	checksum  []byte // expected SHA-256 of the binary; nil if unpinned
	socketDir string
	stdout    io.ReadCloser
	stderr    io.ReadCloser
	pid       int
	// testHookVerified, if set, runs between the checksum check and the
	// start (a test replaces the binary there).
	testHookVerified func()
	// log is go-plugin's logger for this plugin (nil in tests).
	log hclog.Logger
}

var _ runner.Runner = (*pluginRunner)(nil)

// baseEnv is a plugin's whole environment besides go-plugin's handshake:
// nothing of the daemon's (no secrets, NOTIFY_SOCKET, LISTEN_*,
// CREDENTIALS_DIRECTORY) reaches a plugin. One P per plugin: a plugin
// mostly waits on two sockets, and with more Ps every hand-off between its
// goroutines wakes another thread; on a small VM that cost ~100 us per
// cache miss (bench row 2).
var baseEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "GOMAXPROCS=1"}

// newPluginRunner builds the runner for path from go-plugin's template
// command, which carries only the handshake environment.
func newPluginRunner(path string, checksum []byte, tmpl *exec.Cmd, socketDir string) (*pluginRunner, error) {
	cmd := exec.Command(path)
	cmd.Env = append(append([]string{}, baseEnv...), handshakeEnv(tmpl.Env)...)
	// The kernel kills the plugin if the daemon dies, even by SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	return &pluginRunner{cmd: cmd, path: path, checksum: checksum, socketDir: socketDir, stdout: stdout, stderr: stderr}, nil
}

// handshakeEnv keeps only the variables go-plugin itself sets (the magic
// cookie and PLUGIN_*): should the host's environment ever be let into the
// template, it still would not reach the plugin.
func handshakeEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == provider.Handshake.MagicCookieKey || strings.HasPrefix(k, "PLUGIN_") {
			out = append(out, kv)
		}
	}
	return out
}

// Start verifies the pinned checksum (go-plugin's SecureConfig cannot:
// with a RunnerFunc it checks an empty path) and starts the plugin. A
// pinned plugin is started from the very bytes that were checked (see
// pinnedImage), not by its path again: a binary swapped between the check
// and the start would otherwise run unchecked.
func (r *pluginRunner) Start(context.Context) error {
	var err error
	if r.checksum != nil {
		var img *os.File
		img, err = pinnedImage(r.path, r.checksum)
		switch {
		case err == nil:
			defer img.Close() // the started process holds its own reference
			r.cmd.Path = imagePath(img)
		case errors.Is(err, errNoImage):
			// Still checked, by its path: only the moment between the
			// check and the start is left open.
			if r.log != nil {
				r.log.Warn("plugin_sha256: no executable memfd on this system, so the pinned binary is checked at its path and started from it", "plugin", r.path, "reason", err.Error())
			}
			err = r.verifyPath()
		}
	}
	if err == nil {
		if r.testHookVerified != nil {
			r.testHookVerified()
		}
		err = r.cmd.Start()
	}
	if err != nil {
		// go-plugin removes the socket directory only for a plugin that
		// started; a binary that cannot start would leave one per retry.
		os.RemoveAll(r.socketDir)
		return err
	}
	r.pid = r.cmd.Process.Pid
	return nil
}

// errNoImage: the system cannot start a plugin from a checked copy.
var errNoImage = errors.New("no executable in-memory copy")

// verifyPath checks the binary at r.path against the pin.
func (r *pluginRunner) verifyPath() error {
	f, err := os.Open(r.path)
	if err != nil {
		return fmt.Errorf("error verifying checksum: %w", err)
	}
	defer f.Close()
	return copyChecked(nil, f, r.checksum)
}

// copyChecked copies src to dst (nil: nowhere) and reports whether its
// SHA-256 is want.
func copyChecked(dst io.Writer, src io.Reader, want []byte) error {
	h := sha256.New()
	w := io.Writer(h)
	if dst != nil {
		w = io.MultiWriter(h, dst)
	}
	if _, err := io.Copy(w, src); err != nil {
		return fmt.Errorf("error verifying checksum: %w", err)
	}
	if !bytes.Equal(h.Sum(nil), want) {
		return plugin.ErrChecksumsDoNotMatch
	}
	return nil
}

func (r *pluginRunner) Wait(context.Context) error { return r.cmd.Wait() }

func (r *pluginRunner) Kill(context.Context) error {
	if r.cmd.Process == nil {
		return nil
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

func (r *pluginRunner) Stdout() io.ReadCloser { return r.stdout }
func (r *pluginRunner) Stderr() io.ReadCloser { return r.stderr }
func (r *pluginRunner) Name() string          { return r.path }

// ID is empty until the process started: go-plugin's Kill treats an empty
// ID as nothing to kill.
func (r *pluginRunner) ID() string {
	if r.pid == 0 {
		return ""
	}
	return strconv.Itoa(r.pid)
}

func (r *pluginRunner) Diagnose(context.Context) string {
	return fmt.Sprintf("plugin %s did not complete the go-plugin handshake: is it a sluice plugin, built for this architecture, and executable by the daemon's user?", r.path)
}

// Host and plugin share one filesystem view: addresses pass unchanged.
func (r *pluginRunner) PluginToHost(n, a string) (string, string, error) { return n, a, nil }
func (r *pluginRunner) HostToPlugin(n, a string) (string, string, error) { return n, a, nil }

// runnerFunc adapts newPluginRunner to go-plugin's ClientConfig.RunnerFunc
// and hands the runner to got, so the supervisor learns the plugin's pid.
func runnerFunc(path string, checksum []byte, got **pluginRunner) func(hclog.Logger, *exec.Cmd, string) (runner.Runner, error) {
	return func(log hclog.Logger, tmpl *exec.Cmd, socketDir string) (runner.Runner, error) {
		r, err := newPluginRunner(path, checksum, tmpl, socketDir)
		if err != nil {
			return nil, err
		}
		r.log = log
		*got = r
		return r, nil
	}
}
