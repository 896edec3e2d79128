package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/BurntSushi/toml"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/core/config"
)

// This file decides which socket sluicectl dials and, when that fails,
// explains what was tried.

// socketChoice is the socket sluicectl dials by default and where that came
// from, so an unreachable daemon can be explained in the user's terms.
type socketChoice struct {
	path string
	from string // "$SLUICE_SOCKET", "socket in /etc/sluice/config.toml", "default"
	// tried are the default paths considered, in order, when from is
	// "default": the user's own daemon's and the system service's.
	tried []string
	// configNote says why $SLUICE_CONFIG was not used, e.g. it could not be
	// read; shown only if the daemon cannot be reached.
	configNote string
}

// chooseSocket applies the precedence --socket (handled by the flag), then
// $SLUICE_SOCKET, then `socket` in $SLUICE_CONFIG, then the defaults.
func chooseSocket(getenv func(string) string, own, system string) socketChoice {
	if s := getenv("SLUICE_SOCKET"); s != "" {
		return socketChoice{path: s, from: "$SLUICE_SOCKET"}
	}
	var note string
	if cfg := getenv("SLUICE_CONFIG"); cfg != "" {
		s, err := configSocket(cfg)
		if err == nil && s != "" {
			return socketChoice{path: s, from: "socket in " + cfg + " ($SLUICE_CONFIG)"}
		}
		if err != nil {
			note = "$SLUICE_CONFIG " + cfg + " was not used: " + reason(err)
		}
	}
	tried := []string{own}
	if system != own { // root's own default is the system socket
		tried = append(tried, system)
	}
	return socketChoice{path: clientSocket(own, system), from: "default", tried: tried, configNote: note}
}

// configSocket reads only the top-level `socket` key of a sluiced config.
// Decoding into a struct with that one field leaves every other key
// undecoded, so `env:` and `file:` secrets are never resolved: the user may
// not be allowed to read them, and sluicectl has no business with them.
func configSocket(path string) (string, error) {
	var c struct {
		Socket string `toml:"socket"`
	}
	if _, err := toml.DecodeFile(path, &c); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return "", fmt.Errorf("not valid TOML (line %d)", pe.Position.Line)
		}
		return "", err
	}
	if c.Socket != "" && !filepath.IsAbs(c.Socket) {
		return "", fmt.Errorf("socket %q is not an absolute path", c.Socket)
	}
	return c.Socket, nil
}

// systemSocket is where the system service's socket unit listens.
const systemSocket = "/run/sluice/sluice.sock"

// clientSocket is the socket sluicectl dials by default: the user's own
// daemon's, or, when there is none, the system service's. A member of
// group sluice then reaches the system daemon without --socket. (sluiced
// itself never falls back: it would try to take over the system socket.)
func clientSocket(own, system string) string {
	if _, err := os.Stat(own); err != nil {
		if fi, err := os.Stat(system); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return system
		}
	}
	return own
}

// groupInfo is what the permission hint needs to know about the user's
// groups, passed in so tests can play a user who was just added to one.
type groupInfo struct {
	// process are the groups this process runs with (os.Getgroups and the
	// primary group).
	process []int
	// account are the groups the user database lists for the user now;
	// they reach processes only at the next login.
	account []int
	name    func(gid int) string
}

func currentGroups() groupInfo {
	g := groupInfo{name: func(gid int) string {
		if gr, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
			return gr.Name
		}
		return strconv.Itoa(gid)
	}}
	g.process, _ = os.Getgroups()
	g.process = append(g.process, os.Getgid())
	if u, err := user.Current(); err == nil {
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if n, err := strconv.Atoi(id); err == nil {
					g.account = append(g.account, n)
				}
			}
		}
	}
	return g
}

// describeUnreachable replaces the client's generic message with what was
// tried and why each path failed, so a user can tell "not running" from
// "not allowed" from "wrong path".
func (o *options) describeUnreachable(ue *client.UnreachableError) string {
	return explainUnreachable(ue, o.socketFrom(), o.choice, currentGroups())
}

// socketFrom is where the dialled socket came from.
func (o *options) socketFrom() string {
	if o.socketFlag {
		return "--socket"
	}
	return o.choice.from
}

func explainUnreachable(ue *client.UnreachableError, from string, c socketChoice, g groupInfo) string {
	var tries []string
	tries = append(tries, ue.Socket+" ("+from+"): "+dialReason(ue.Socket, ue.Err, g))
	if from == "default" {
		for _, p := range c.tried {
			if p == ue.Socket {
				continue
			}
			_, err := os.Stat(p)
			if err == nil {
				// It exists but was not chosen: the other default was.
				continue
			}
			tries = append(tries, p+": "+dialReason(p, err, g))
		}
	}
	msg := "cannot reach sluiced; tried " + strings.Join(tries, "; ")
	if from == "default" && c.configNote != "" {
		msg += "; " + c.configNote
	}
	if from == "default" {
		msg += ". Start sluiced (make run, or systemctl --user start sluice), or name its socket with --socket, $SLUICE_SOCKET or socket in $SLUICE_CONFIG"
	}
	return msg
}

// dialReason says in words why a socket path could not be used.
func dialReason(path string, err error, g groupInfo) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file (is sluiced running? it is not listening there)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (a socket file is left, but no sluiced listens on it)"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied" + groupHint(path, g)
	case errors.Is(err, syscall.ENOTSOCK):
		return "not a socket"
	}
	return reason(err)
}

// groupHint names the group that would let the user in: the group of the
// socket, or of the first directory on its path the user may not enter.
// Group membership reaches processes only at login, which is the usual
// surprise just after `usermod -aG sluice`.
func groupHint(path string, g groupInfo) string {
	gid, ok := guardingGroup(path)
	if !ok || gid == 0 {
		return ""
	}
	name := g.name(gid)
	switch {
	case slices.Contains(g.process, gid):
		return " (you are in group " + name + "; the socket or its directory does not let the group in)"
	case slices.Contains(g.account, gid):
		return " (you were added to group " + name + ", but you are in it only after logging in again; or run: newgrp " + name + ")"
	}
	return " (members of group " + name + " may use it: sudo usermod -aG " + name + " $USER, then log in again)"
}

// guardingGroup is the group owning the deepest existing path element from
// the socket upwards that the user can stat: for /run/sluice/sluice.sock in
// a 0750 directory, /run/sluice's group.
func guardingGroup(path string) (int, bool) {
	for p := path; ; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				return int(st.Gid), true
			}
			return 0, false
		}
		if p == filepath.Dir(p) {
			return 0, false
		}
	}
}

// reason is an error's message without the path the caller already shows.
func reason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// defaultSockets are the user's own default socket and the system one.
func defaultSockets() (string, string) { return config.DefaultSocket(), systemSocket }
