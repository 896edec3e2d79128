package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// openPty opens a pseudo-terminal pair: what the child writes to the
// slave can be read from the master. 200 columns, so nothing is cut.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 200}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// ctlRun is one sluicectl run whose stderr is a terminal (term) or a pipe.
type ctlRun struct {
	code           int
	stdout, stderr string
}

// ctlOnTerminal runs the real sluicectl with stdout to a pipe and stderr
// to a fresh pseudo-terminal when term is set (else to a pipe too), and
// returns what each received.
func ctlOnTerminal(t *testing.T, socket string, term bool, args ...string) ctlRun {
	t.Helper()
	cmd := exec.Command(filepath.Join(testenv.BinDir(t), "sluicectl"), append([]string{"--socket", socket}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stdin = &out, strings.NewReader("")
	var master, slave *os.File
	var read sync.WaitGroup
	if term {
		master, slave = openPty(t)
		cmd.Stderr = slave
	} else {
		cmd.Stderr = &errb
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if term {
		slave.Close() // the child holds it now; EIO on the master at its exit
		read.Add(1)
		go func() {
			defer read.Done()
			_, _ = io.Copy(&errb, master) // ends with EIO once the child is gone
		}()
	}
	err := cmd.Wait()
	read.Wait()
	r := ctlRun{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// TestCtlLongWaitShowsOnTerminal: on a terminal, sluicectl says what a call
// waits for while it waits for rate budget (from the daemon's 102 interim
// answers), shows the page an --all walk is on, and leaves a clean line
// behind; with stderr piped, or with --json, it draws nothing.
func TestCtlLongWaitShowsOnTerminal(t *testing.T) {
	t.Parallel()
	e := startSpotify(t, spotifyOpts{})
	ctx := testenv.Ctx(t, 2*time.Minute)

	// iNeo's spotify.php budget here is 6 per 7 s: use it up, then three
	// sluicectl runs at once must wait for it.
	if errs := burst(ctx, e.Client, 100, 6); errors.Join(errs...) != nil {
		t.Fatal(errors.Join(errs...))
	}
	runs := []struct {
		term bool
		args []string
		got  ctlRun
	}{
		{term: true, args: []string{"ineo", "track", trackID(1)}},
		{term: false, args: []string{"ineo", "track", trackID(2)}},
		{term: true, args: []string{"--json", "ineo", "track", trackID(3)}},
	}
	var wg sync.WaitGroup
	for i := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runs[i].got = ctlOnTerminal(t, e.Socket, runs[i].term, runs[i].args...)
		}()
	}
	wg.Wait()
	for i, r := range runs {
		if r.got.code != 0 || !strings.Contains(r.got.stdout, trackID(i+1)) {
			t.Fatalf("%v: exit %d\nstdout %q\nstderr %q", r.args, r.got.code, r.got.stdout, r.got.stderr)
		}
	}
	tty := runs[0].got.stderr
	if !regexp.MustCompile(`\rwaiting for ineo\.spotify: 6 of 6 used, (next|\d ahead of you, your) slot in \d+\.\d s\x1b\[K`).MatchString(tty) {
		t.Fatalf("terminal stderr of a waiting call: %q", tty)
	}
	if !strings.HasSuffix(tty, "\r\x1b[K") {
		t.Fatalf("the live line is not taken away at the end: %q", tty)
	}
	for _, r := range runs[1:] {
		if r.got.stderr != "" {
			t.Fatalf("%v (terminal %v): stderr %q, want nothing", r.args, r.term, r.got.stderr)
		}
	}

	// An --all walk says which page it is on.
	r := ctlOnTerminal(t, e.Socket, true, "spotify", "albums", spotifysim.Artist95ID, "--all", "--limit", "10")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ALBUMS: ") {
		t.Fatalf("albums --all: exit %d\n%s\n%q", r.code, r.stdout, r.stderr)
	}
	if !regexp.MustCompile(`\ralbums: page 2 of \d+ \(10 of \d+ so far\)\x1b\[K`).MatchString(r.stderr) || !strings.HasSuffix(r.stderr, "\r\x1b[K") {
		t.Fatalf("albums --all on a terminal: stderr %q", r.stderr)
	}
}
