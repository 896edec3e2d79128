package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluice-dev/sluice/internal/daemonflags"
	"github.com/sluice-dev/sluice/internal/manref"
)

// This file holds what integrates sluicectl with the shell and the manual:
// `sluicectl completion SHELL` and the hidden `sluicectl gen-man DIR`.
//
// The man pages are written by a small roff generator rather than
// cobra/doc, which would pull in go-md2man for what is a few dozen lines of
// roff. The generator is pure (command tree and header in, page text out);
// only writeManPages touches the file system.

const completionLong = `Print a script that makes the shell complete sluicectl's commands,
flags and arguments. Values the daemon knows are completed by asking the
running daemon (within 2 s; nothing is offered when it is not running):
providers for 'cache purge', hellorf's genres, moods, instruments and tempo
ranges for 'hellorf search' (by English name where sluicectl has one).
Fixed values (--type, --platform, --downloaded) need no daemon.

  bash:  needs the bash-completion package (Debian/Ubuntu: apt install
         bash-completion; Fedora: dnf install bash-completion; macOS:
         brew install bash-completion@2), which the script relies on.
         source <(sluicectl completion bash)
         or save it as /usr/share/bash-completion/completions/sluicectl
         (~/.local/share/bash-completion/completions/sluicectl for yourself)
  zsh:   needs compinit: "autoload -U compinit; compinit" in ~/.zshrc
         (oh-my-zsh and most frameworks do this), then
         sluicectl completion zsh > "${fpath[1]}/_sluicectl"
  fish:  nothing else:
         sluicectl completion fish > ~/.config/fish/completions/sluicectl.fish
  powershell:
         PowerShell 5 or later:
         sluicectl completion powershell | Out-String | Invoke-Expression
         (add that line to $PROFILE to keep it)

Open a new shell afterwards.`

// newCompletionCmd replaces cobra's default completion command, which the
// root disables (CompletionOptions.DisableDefaultCmd); this one behaves like
// every other sluicectl command, e.g. a wrong shell is a usage error with
// exit status 2.
func newCompletionCmd(o *options) *cobra.Command {
	var noDesc bool
	cmd := &cobra.Command{
		Use:       "completion {bash|zsh|fish|powershell}",
		Short:     "Print a shell completion script",
		Long:      completionLong,
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
	}
	cmd.RunE = func(_ *cobra.Command, args []string) error {
		o.started = true
		root, w := cmd.Root(), o.stdout
		var err error
		switch args[0] {
		case "bash":
			err = root.GenBashCompletionV2(w, !noDesc)
		case "zsh":
			if noDesc {
				err = root.GenZshCompletionNoDesc(w)
			} else {
				err = root.GenZshCompletion(w)
			}
		case "fish":
			err = root.GenFishCompletion(w, !noDesc)
		case "powershell":
			if noDesc {
				err = root.GenPowerShellCompletion(w)
			} else {
				err = root.GenPowerShellCompletionWithDesc(w)
			}
		}
		if err != nil {
			return fmt.Errorf("writing the %s completion script: %w", args[0], err)
		}
		return nil
	}
	cmd.Flags().BoolVar(&noDesc, "no-descriptions", false, "complete without the commands' and flags' descriptions")
	return cmd
}

// newGenManCmd is hidden: it is for packagers (make man), not users.
func newGenManCmd(o *options, getenv func(string) string) *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "Write a man page for every sluicectl command into DIR",
		Long:   "Write a man page (section 1) for every sluicectl command into DIR, creating it if need be.\nThe pages are dated $SOURCE_DATE_EPOCH when it is set, so builds are reproducible.",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Not o.action: writing pages needs no daemon and no socket.
			o.started = true
			date, err := manDate(getenv("SOURCE_DATE_EPOCH"), time.Now())
			if err != nil {
				return err
			}
			return writeManPages(cmd.Root(), args[0], manHeader{date: date, version: ownVersion()})
		},
	}
}

// newGenManRefCmd is hidden like gen-man: it writes sluiced(8) from
// sluiced's flag set and sluice.toml(5) from the commented example config
// (internal/manref), so that make man and make install need no other tool.
func newGenManRefCmd(o *options, getenv func(string) string) *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man-ref CONFIG_TOML DIR",
		Short:  "Write sluiced(8) and sluice.toml(5) under DIR (man8, man5)",
		Long:   "Write DIR/man8/sluiced.8 from sluiced's flags and DIR/man5/sluice.toml.5 from CONFIG_TOML,\nthe commented example config that documents every key. Dated like gen-man.",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.started = true
			date, err := manDate(getenv("SOURCE_DATE_EPOCH"), time.Now())
			if err != nil {
				return err
			}
			src, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("reading the config reference: %w", err)
			}
			ref, err := manref.ParseReference(src)
			if err != nil {
				return err
			}
			h := manref.Header{Date: date, Version: ownVersion()}
			// Defaults as they are without anyone's environment.
			fs, _ := daemonflags.New(func(string) string { return "" })
			for _, p := range []struct{ path, text string }{
				{filepath.Join(args[1], "man8", "sluiced.8"), manref.DaemonPage(fs, h)},
				{filepath.Join(args[1], "man5", "sluice.toml.5"), manref.ConfigPage(ref, h)},
			} {
				if err := os.MkdirAll(filepath.Dir(p.path), 0o755); err != nil {
					return fmt.Errorf("creating the man page directory: %w", err)
				}
				if err := os.WriteFile(p.path, []byte(p.text), 0o644); err != nil {
					return fmt.Errorf("writing man page: %w", err)
				}
			}
			return nil
		},
	}
}

// manDate is $SOURCE_DATE_EPOCH (https://reproducible-builds.org/specs/source-date-epoch/)
// when set, else now.
func manDate(epoch string, now time.Time) (time.Time, error) {
	if epoch == "" {
		return now, nil
	}
	s, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return time.Time{}, usageErrorf("SOURCE_DATE_EPOCH must be whole seconds since 1970: %w", err)
	}
	return time.Unix(s, 0).UTC(), nil
}

type manHeader struct {
	date    time.Time
	version string
}

// writeManPages writes one page per documented command under dir.
func writeManPages(root *cobra.Command, dir string, h manHeader) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the man page directory: %w", err)
	}
	for _, c := range manCommands(root) {
		path := filepath.Join(dir, manName(c)+".1")
		if err := os.WriteFile(path, []byte(manPage(c, h)), 0o644); err != nil {
			return fmt.Errorf("writing man page: %w", err)
		}
	}
	return nil
}

// manCommands lists cmd and its descendants that deserve a page, parents
// first: not hidden (gen-man itself, cobra's __complete), not deprecated,
// and not the help command.
func manCommands(cmd *cobra.Command) []*cobra.Command {
	if !cmd.IsAvailableCommand() || cmd.IsAdditionalHelpTopicCommand() {
		return nil
	}
	out := []*cobra.Command{cmd}
	for _, c := range cmd.Commands() {
		out = append(out, manCommands(c)...)
	}
	return out
}

// manName is the page's name: "sluicectl-ineo-track".
func manName(c *cobra.Command) string {
	return strings.ReplaceAll(c.CommandPath(), " ", "-")
}

// manPage renders one command's page in roff (man(7) macros).
func manPage(c *cobra.Command, h manHeader) string {
	// -h/--help is added to a command only when it runs; add it here so
	// every page lists it, as --help does.
	c.InitDefaultHelpFlag()

	var b strings.Builder
	name := manName(c)
	fmt.Fprintf(&b, ".TH %s 1 %s %s %s\n", manref.QuoteArg(strings.ToUpper(name)), manref.QuoteArg(h.date.Format("2006-01-02")),
		manref.QuoteArg("sluicectl "+h.version), manref.QuoteArg("sluicectl manual"))
	// No hyphenation and a ragged right margin: command and flag names
	// broken across lines, or spread apart, would be hard to copy.
	b.WriteString(".nh\n.ad l\n")

	b.WriteString(".SH NAME\n")
	b.WriteString(manref.RoffLine(name+" - "+c.Short) + "\n")

	b.WriteString(".SH SYNOPSIS\n")
	use := c.UseLine()
	path := c.CommandPath()
	b.WriteString(`\fB` + manref.RoffEscape(path) + `\fR` + manref.RoffEscape(strings.TrimPrefix(use, path)) + "\n")
	if c.HasAvailableSubCommands() {
		b.WriteString(".br\n" + `\fB` + manref.RoffEscape(path) + `\fR \fICOMMAND\fR` + "\n")
	}

	desc, exit := c.Long, ""
	if !c.HasParent() {
		// The root's help ends with the exit status table, which is a
		// section of its own in a man page.
		if before, after, ok := strings.Cut(desc, "\nExit status:\n"); ok {
			desc, exit = before, after
		}
	}
	if strings.TrimSpace(desc) == "" {
		desc = c.Short
	}
	b.WriteString(".SH DESCRIPTION\n")
	b.WriteString(roffText(desc))

	if fs := c.NonInheritedFlags(); fs.HasAvailableFlags() {
		b.WriteString(".SH OPTIONS\n")
		b.WriteString(roffFlags(fs))
	}
	if fs := c.InheritedFlags(); fs.HasAvailableFlags() {
		b.WriteString(".SH GLOBAL OPTIONS\n")
		b.WriteString(roffFlags(fs))
	}

	b.WriteString(".SH EXIT STATUS\n")
	switch {
	case exit != "":
		b.WriteString(roffExitStatus(exit))
	case c.HasParent():
		b.WriteString("See EXIT STATUS in\n.BR " + manref.RoffEscape(c.Root().Name()) + " (1).\n")
	default:
		b.WriteString("0 on success, non-zero on failure.\n")
	}

	var also []string
	if c.HasParent() {
		also = append(also, manName(c.Parent()))
	}
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() && !sub.IsAdditionalHelpTopicCommand() {
			also = append(also, manName(sub))
		}
	}
	if len(also) > 0 {
		b.WriteString(".SH SEE ALSO\n")
		for i, a := range also {
			sep := ","
			if i == len(also)-1 {
				sep = ""
			}
			b.WriteString(".BR " + manref.RoffEscape(a) + " (1)" + sep + "\n")
		}
	}
	return b.String()
}

// roffFlags lists a flag set as tagged paragraphs.
func roffFlags(fs *pflag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		arg, usage := pflag.UnquoteUsage(f)
		b.WriteString(".TP\n")
		if f.Shorthand != "" && f.ShorthandDeprecated == "" {
			b.WriteString(`\fB` + manref.RoffEscape("-"+f.Shorthand) + `\fR, `)
		}
		b.WriteString(`\fB` + manref.RoffEscape("--"+f.Name) + `\fR`)
		if arg != "" {
			b.WriteString(` \fI` + manref.RoffEscape(arg) + `\fR`)
		}
		b.WriteString("\n")
		if def := manDefault(f); def != "" {
			usage += " (default: " + def + ")"
		}
		b.WriteString(manref.RoffLine(oneLine(usage)) + "\n")
	})
	return b.String()
}

// manDefault is how a flag's default reads in a man page, or "" when it has
// none worth saying. A default computed from the environment gen-man runs
// in (the socket path depends on the user and $XDG_RUNTIME_DIR) is described
// rather than baked into the page as the packager's own value.
func manDefault(f *pflag.Flag) string {
	if f.Name == "socket" {
		return "/run/sluice/sluice.sock for root, else $XDG_RUNTIME_DIR/sluice/sluice.sock"
	}
	switch f.DefValue {
	case "", "false", "[]":
		return ""
	}
	return f.DefValue
}

// roffText renders help text: blank lines separate paragraphs, and indented
// lines (examples, tables) are kept as they are laid out, indented, in
// no-fill mode; everything else is left to roff to fill.
func roffText(s string) string {
	var b strings.Builder
	lines := strings.Split(trimLines(s), "\n")
	for i := 0; i < len(lines); {
		line := lines[i]
		switch {
		case strings.TrimSpace(line) == "":
			i++
		case line[0] == ' ' || line[0] == '\t':
			// An indented block runs to the next unindented line; blank
			// lines inside it are kept.
			j := i
			for j < len(lines) && (strings.TrimSpace(lines[j]) == "" || lines[j][0] == ' ' || lines[j][0] == '\t') {
				j++
			}
			block := lines[i:j]
			for len(block) > 0 && strings.TrimSpace(block[len(block)-1]) == "" {
				block = block[:len(block)-1]
			}
			b.WriteString(".PP\n.RS 4\n.nf\n")
			indent := commonIndent(block)
			for _, l := range block {
				if strings.TrimSpace(l) == "" {
					b.WriteString("\n")
					continue
				}
				b.WriteString(manref.RoffLine(l[indent:]) + "\n")
			}
			b.WriteString(".fi\n.RE\n")
			i = j
		default:
			b.WriteString(".PP\n")
			for i < len(lines) && strings.TrimSpace(lines[i]) != "" && lines[i][0] != ' ' && lines[i][0] != '\t' {
				b.WriteString(manref.RoffLine(strings.TrimSpace(lines[i])) + "\n")
				i++
			}
		}
	}
	return b.String()
}

// trimLines drops blank lines around s, but not the indentation of its
// first line, which says whether it starts an indented block.
func trimLines(s string) string {
	s = strings.TrimRight(s, " \t\n")
	for {
		first, rest, ok := strings.Cut(s, "\n")
		if !ok || strings.TrimSpace(first) != "" {
			return s
		}
		s = rest
	}
}

func commonIndent(lines []string) int {
	n := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		k := len(l) - len(strings.TrimLeft(l, " \t"))
		if n < 0 || k < n {
			n = k
		}
	}
	return max(n, 0)
}

// exitItem is the start of an entry in the exit status table of rootLong:
// "  2  caller error: ...".
var exitItem = regexp.MustCompile(`^\s+(\d+)\s{2,}(\S.*)$`)

// roffExitStatus renders the exit status table as tagged paragraphs, one
// per status, so that man wraps each description to the reader's terminal;
// text it cannot read as such a table is rendered as it is.
func roffExitStatus(s string) string {
	var b strings.Builder
	items := 0
	for _, line := range strings.Split(trimLines(s), "\n") {
		if m := exitItem.FindStringSubmatch(line); m != nil {
			b.WriteString(".TP\n.B " + m[1] + "\n" + manref.RoffLine(m[2]) + "\n")
			items++
			continue
		}
		if items == 0 {
			return roffText(s)
		}
		if t := strings.TrimSpace(line); t != "" {
			b.WriteString(manref.RoffLine(t) + "\n")
		}
	}
	return b.String()
}
