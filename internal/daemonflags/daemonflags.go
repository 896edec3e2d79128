// Package daemonflags is sluiced's command line, in one place so that the
// daemon parses it and its man page, sluiced(8), is generated from it:
// a flag added here is documented without anyone remembering to.
package daemonflags

import "flag"

// Values are the parsed flags.
type Values struct {
	Config      *string
	Socket      *string
	Sandbox     *bool
	StateDir    *string
	Reset       *bool
	Version     *bool
	CheckConfig *string
}

// DefaultConfig is the config file read when neither --config nor
// SLUICE_CONFIG names one.
const DefaultConfig = "/etc/sluice/config.toml"

// New defines sluiced's flags. Defaults that come from the environment are
// read through getenv (the man page generator passes one that returns "").
func New(getenv func(string) string) (*flag.FlagSet, Values) {
	fs := flag.NewFlagSet("sluiced", flag.ContinueOnError)
	cfg := getenv("SLUICE_CONFIG")
	if cfg == "" {
		cfg = DefaultConfig
	}
	return fs, Values{
		Config:      fs.String("config", cfg, "config file (env SLUICE_CONFIG)"),
		Socket:      fs.String("socket", getenv("SLUICE_SOCKET"), "socket path, overriding the config (env SLUICE_SOCKET)"),
		Sandbox:     fs.Bool("sandbox", false, "run against built-in simulators of the upstreams with test credentials"),
		StateDir:    fs.String("state-dir", getenv("SLUICE_STATE_DIR"), "rate-limit and plugin state directory, overriding the config's state_dir (env SLUICE_STATE_DIR); one daemon per directory; --sandbox uses its sandbox/ subdirectory"),
		Reset:       fs.Bool("reset", false, "with --sandbox: empty the sandbox's state dir (<state dir>/sandbox: rate-limit state, purchase guard) first; the cache starts empty anyway"),
		Version:     fs.Bool("version", false, "print the version and exit"),
		CheckConfig: fs.String("check-config", "", "validate a config file and exit (0 ok, 1 invalid)"),
	}
}
