package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

// metricValue reads one unlabelled series from the daemon's own /metrics.
func metricValue(t *testing.T, env *testenv.Env, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := env.Client.Call(ctx, http.MethodGet, "/metrics", nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(r.Body), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	t.Fatalf("%s missing from /metrics", name)
	return 0
}
