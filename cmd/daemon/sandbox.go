package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/sluice-dev/sluice/core/config"
	"github.com/sluice-dev/sluice/plugins/hellorf/hellorfsim"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
	"github.com/sluice-dev/sluice/plugins/spotify/spotifysim"
)

// sandbox runs the built-in upstream simulators on loopback for `sluiced
// --sandbox`: the real daemon, plugins, scheduler and cache, pointed at fakes
// that behave as the upstream documents say (bans included).
type sandbox struct {
	ineo    *ineosim.Sim
	ineoURL string

	hellorf    *hellorfsim.Sim
	hellorfURL string

	spotify                 *spotifysim.Sim
	spotifyAPI, spotifyAcct string
}

func startSandbox() (_ *sandbox, err error) {
	s := &sandbox{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.ineo, s.ineoURL, err = ineosim.Start(ineosim.Options{}); err != nil {
		return nil, fmt.Errorf("iNeo simulator: %w", err)
	}
	if s.hellorf, s.hellorfURL, err = hellorfsim.Start(hellorfsim.Options{}); err != nil {
		return nil, fmt.Errorf("hellorf simulator: %w", err)
	}
	if s.spotify, s.spotifyAPI, s.spotifyAcct, err = spotifysim.Start(spotifysim.Options{}); err != nil {
		return nil, fmt.Errorf("Spotify simulator: %w", err)
	}
	return s, nil
}

// Rewrite points every provider at its simulator with the simulator's test
// credentials, and keeps sandbox state apart from a real daemon's. Paying
// operations are allowed: simulated purchases cost nothing. Every provider
// runs unless the config says enabled = false for it in so many words (a
// provider left at its default, off for want of credentials, runs: the
// simulator has them).
func (s *sandbox) Rewrite(c *config.Config) {
	c.StateDir = filepath.Join(c.StateDir, "sandbox")
	ineo := &c.Providers.Ineo
	ineo.Enabled = !c.SwitchedOff("ineo")
	ineo.BaseURL = s.ineoURL
	ineo.AccessKey = config.NewSecret(ineosim.DefaultAccessKey)
	ineo.TmanageAuth = config.NewSecret(ineosim.DefaultTmanageAuth)

	h := &c.Providers.Hellorf
	h.Enabled = !c.SwitchedOff("hellorf")
	h.BaseURL = s.hellorfURL
	h.ClientID = config.NewSecret(hellorfsim.DefaultClientID)
	h.ClientSecret = config.NewSecret(hellorfsim.DefaultClientSecret)
	h.AllowPurchase = true

	sp := &c.Providers.Spotify
	sp.Enabled = !c.SwitchedOff("spotify")
	sp.APIURL = s.spotifyAPI
	sp.AccountsURL = s.spotifyAcct
	sp.ClientID = config.NewSecret(spotifysim.DefaultClientID)
	sp.ClientSecret = config.NewSecret(spotifysim.DefaultClientSecret)
}

func (s *sandbox) Banner() string {
	return strings.Join([]string{
		"sluiced: SANDBOX MODE — no real upstream is contacted; every provider talks to a built-in simulator.",
		fmt.Sprintf("  iNeo:    %s (Telegram login code: %s)", s.ineoURL, ineosim.DefaultLoginCode),
		fmt.Sprintf("  hellorf: %s (purchases allowed: they are simulated)", s.hellorfURL),
		fmt.Sprintf("  Spotify: %s (tokens from %s)", s.spotifyAPI, s.spotifyAcct),
	}, "\n")
}

func (s *sandbox) Close() error {
	var errs []error
	if s.ineo != nil {
		errs = append(errs, s.ineo.Close())
	}
	if s.hellorf != nil {
		errs = append(errs, s.hellorf.Close())
	}
	if s.spotify != nil {
		errs = append(errs, s.spotify.Close())
	}
	return errors.Join(errs...)
}
