package e2e

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sluice-dev/sluice/internal/testenv"
)

// ctl runs the real sluicectl binary against env's daemon.
func ctl(t *testing.T, env *testenv.Env, args ...string) (string, int) {
	t.Helper()
	return ctlSocket(t, env.Socket, args...)
}

func ctlSocket(t *testing.T, socket string, args ...string) (string, int) {
	t.Helper()
	return runCtl(t, socket, nil, args...)
}

// runCtl runs sluicectl against socket, as another user when cred is set.
func runCtl(t *testing.T, socket string, cred *syscall.Credential, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(testenv.BinDir(t), "sluicectl"), append([]string{"--socket", socket}, args...)...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Stdin = strings.NewReader("")
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}
