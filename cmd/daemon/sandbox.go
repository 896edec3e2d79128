package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/sluice-dev/sluice/core/config"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// sandbox runs the built-in upstream simulators on loopback for `sluiced
// --sandbox`: the real daemon, plugins, scheduler and cache, pointed at fakes
// that behave as the upstream documents say (bans included).
type sandbox struct {
	ineo    *ineosim.Sim
	ineoURL string
}

func startSandbox() (*sandbox, error) {
	sim, url, err := ineosim.Start(ineosim.Options{})
	if err != nil {
		return nil, err
	}
	return &sandbox{ineo: sim, ineoURL: url}, nil
}

// Rewrite points every provider at its simulator with the simulator's test
// credentials, and keeps sandbox state apart from a real daemon's.
func (s *sandbox) Rewrite(c *config.Config) {
	c.StateDir = filepath.Join(c.StateDir, "sandbox")
	ineo := &c.Providers.Ineo
	ineo.Enabled = true
	ineo.BaseURL = s.ineoURL
	ineo.AccessKey = config.NewSecret(ineosim.DefaultAccessKey)
	ineo.TmanageAuth = config.NewSecret(ineosim.DefaultTmanageAuth)
}

func (s *sandbox) Banner() string {
	return strings.Join([]string{
		"sluiced: SANDBOX MODE — no real upstream is contacted.",
		fmt.Sprintf("  iNeo simulator: %s (Telegram login code: %s)", s.ineoURL, ineosim.DefaultLoginCode),
	}, "\n")
}

func (s *sandbox) Close() { s.ineo.Close() }
