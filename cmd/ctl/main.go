// Command sluicectl is the command-line client of sluiced. It talks to the
// daemon only through the typed client package over the daemon's Unix
// socket, prints human-readable answers (or the daemon's JSON verbatim with
// --json), and maps every outcome to a documented exit status so scripts can
// tell a bad request from a broken upstream from a daemon that is not
// running.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/sluice-dev/sluice/core/api/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr,
		tty: isTerminal(os.Stdout), errTTY: isTerminal(os.Stderr)}, os.Getenv)
	stop()
	os.Exit(code)
}

// stdio is the process's standard streams, passed in so tests can run whole
// commands in-process.
type stdio struct {
	in     io.Reader
	out    io.Writer
	err    io.Writer
	tty    bool // out is a terminal
	errTTY bool // err is a terminal: progress may be drawn there
}

// isTerminal reports whether f is a terminal: whether it answers a
// terminal's ioctl. A character device is not enough (/dev/null is one);
// golang.org/x/term is not a dependency, and x/sys is.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// options is everything the commands share: the global flags, the streams
// and the client. The command tree closes over one options value, so there is
// no package-level state and tests can build as many trees as they like.
type options struct {
	socket  string
	json    bool
	timeout time.Duration

	stdin  *bufio.Reader // one buffered reader, so prompts never lose typed-ahead input
	stdout io.Writer
	stderr io.Writer
	tty    bool
	errTTY bool

	// live is the progress line on stderr; nil (draws nothing) unless
	// stderr is a terminal and --json is off.
	live *liveLine

	// choice is the default socket and where it came from; socketFlag is
	// set when --socket overrode it. Both explain an unreachable daemon.
	choice     socketChoice
	socketFlag bool

	cl *client.Client
	// started is set once a command's own code runs: an error before that
	// came from cobra (unknown command, bad flag, wrong argument count) and
	// is a usage error.
	started bool
}

// run executes one sluicectl invocation and returns its exit status. Errors
// are rendered here, once, as a single "sluicectl: ..." line on stderr.
func run(ctx context.Context, args []string, s stdio, getenv func(string) string) int {
	o := &options{stdin: bufio.NewReader(s.in), stdout: s.out, stderr: s.err, tty: s.tty, errTTY: s.errTTY}
	root := newRootCmd(o, getenv)
	root.SetArgs(args)
	root.SetIn(s.in)
	root.SetOut(s.out)
	root.SetErr(s.err)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ec exitCoder
	if !o.started && !errors.As(err, &ec) {
		err = &usageError{err: err}
	}
	msg := render(err)
	var unreach *client.UnreachableError
	if errors.As(err, &unreach) {
		msg = oneLine(strings.Replace(err.Error(), unreach.Error(), o.describeUnreachable(unreach), 1))
	}
	if msg != "" {
		fmt.Fprintln(s.err, "sluicectl: "+msg)
	}
	var ue *usageError
	if errors.As(err, &ue) && !ue.quiet {
		fmt.Fprintf(s.err, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return exitCode(err)
}

const rootLong = `sluicectl is the command-line client of sluiced, the local daemon that
fronts third-party web APIs (iNeo, hellorf, Spotify) for local programs.

It reaches the daemon over its Unix socket: --socket, else $SLUICE_SOCKET,
else the socket key of the config file named by $SLUICE_CONFIG (only that
key is read), else the default socket path (yours, or the system service's
/run/sluice/sluice.sock when you have none). When the daemon cannot be
reached, the message lists the paths tried and why each failed. Errors go to stderr as one line starting with
"sluicectl:"; with --json, answers are printed exactly as the daemon (or the
upstream, for provider calls) sent them.

Exit status:
  0  success
  1  unexpected or internal error (including a 500 from sluiced)
  2  caller error: bad usage, an aborted confirmation, a 4xx problem from
     sluiced (400 invalid parameter, 403 disabled by policy, 404 unknown
     provider or operation, 405, 409, 413, 422 invalid config), or an
     upstream status_code that blames the request (the provider's code table
     decides, e.g. iNeo 4001 parameter_error, 2003 login_fail)
  3  upstream error: 502 or 504 from sluiced, an upstream 5xx answer (an
     upstream 4xx is the caller's: 2; its 429: 5), any other non-200 iNeo
     status_code (e.g. 10 ip_blocked, 602 download_error), or no answer
     within --timeout
  4  sluiced unreachable: not running, or the wrong --socket / SLUICE_SOCKET
  5  rate budget exceeded (429); the message says when to retry
  6  sluiced is up but the provider is unavailable (503, e.g. its plugin is
     down), or health is not ok`

func newRootCmd(o *options, getenv func(string) string) *cobra.Command {
	root := &cobra.Command{
		Use:   "sluicectl",
		Short: "Command-line client of sluiced",
		Long:  rootLong,
		// Errors and usage are rendered by run, once, in sluicectl's own
		// format.
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		RunE:              func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err: err} })

	own, system := defaultSockets()
	o.choice = chooseSocket(getenv, own, system)
	pf := root.PersistentFlags()
	pf.StringVar(&o.socket, "socket", o.choice.path, "path of sluiced's Unix socket; default: $SLUICE_SOCKET, else socket in $SLUICE_CONFIG, else the default path")
	pf.BoolVar(&o.json, "json", false, "machine output: print the daemon's JSON or the upstream body verbatim")
	pf.DurationVar(&o.timeout, "timeout", 60*time.Second, "give up on each request to sluiced after this long (0: never)")

	root.AddCommand(
		newStatusCmd(o),
		newHealthCmd(o),
		newReloadCmd(o),
		newCacheCmd(o),
		newCallCmd(o),
		newIneoCmd(o),
		newHellorfCmd(o),
		newSpotifyCmd(o),
		newVersionCmd(o),
		newWatchCmd(o),
		newCompletionCmd(o),
		newGenManCmd(o, getenv),
		newGenManRefCmd(o, getenv),
	)
	return root
}

// action adapts a command's body to cobra: it marks the invocation as
// started (see options.started), checks the global flags and makes the
// client.
func (o *options) action(fn func(ctx context.Context, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		o.started = true
		if o.timeout < 0 {
			return usageErrorf("--timeout must not be negative")
		}
		if o.socket == "" {
			return usageErrorf("--socket must not be empty")
		}
		if f := cmd.Flag("socket"); f != nil {
			o.socketFlag = f.Changed
		}
		o.cl = client.New(o.socket)
		if o.errTTY && !o.json {
			o.live = newLiveLine(o.stderr, func() int { return termWidth(o.stderr) })
			o.cl.OnWaiting(o.live.waiting)
		}
		err := fn(cmd.Context(), args)
		o.live.clear()
		return err
	}
}

// group makes a command that only holds subcommands: bare, it prints its
// help; with an unknown subcommand it is a usage error rather than cobra's
// silent help.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(subs...)
	return cmd
}

// withTimeout bounds one request by --timeout. It is per request, not per
// command, so time spent at a prompt does not count.
func (o *options) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if o.timeout == 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, o.timeout)
}

// readLine reads one line of input for a prompt, without its line ending.
// io.EOF is returned only when nothing at all was typed.
func (o *options) readLine() (string, error) {
	line, err := o.stdin.ReadString('\n')
	if err != nil && (!errors.Is(err, io.EOF) || line == "") {
		return "", err
	}
	return strings.TrimSpace(line), nil
}
