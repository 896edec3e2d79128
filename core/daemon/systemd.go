package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// httpSocketName is the FileDescriptorName= of the socket unit that
// passes the TCP listener (systemd/sluice-http.socket).
const httpSocketName = "http"

// activatedListeners returns the sockets systemd passed (socket
// activation): the main socket and the TCP listener (the one named
// httpSocketName), each nil when not passed. The LISTEN_* variables are
// removed so nothing started later inherits them.
func activatedListeners() (main, http net.Listener, err error) {
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, nil, fmt.Errorf("socket activation: %w", err)
	}
	var mains []net.Listener
	for name, lns := range named {
		for _, ln := range lns {
			if ln == nil {
				return nil, nil, fmt.Errorf("socket activation: the socket named %q is not a listening socket", name)
			}
			if name != httpSocketName {
				mains = append(mains, ln)
				continue
			}
			if http != nil {
				return nil, nil, fmt.Errorf("socket activation: more than one socket named %q passed, want 1", httpSocketName)
			}
			if _, ok := ln.Addr().(*net.TCPAddr); !ok {
				return nil, nil, fmt.Errorf("socket activation: the socket named %q is %s, not TCP", httpSocketName, ln.Addr())
			}
			http = ln
		}
	}
	if len(mains) > 1 {
		return nil, nil, fmt.Errorf("socket activation: %d sockets passed besides %q, want 1 (name the TCP one with FileDescriptorName=%s)",
			len(mains), httpSocketName, httpSocketName)
	}
	if len(mains) == 1 {
		main = mains[0]
	}
	return main, http, nil
}

// notify sends a state to systemd when NOTIFY_SOCKET is set; errors are not
// fatal (the daemon also runs without systemd).
func (d *Daemon) notify(state string) {
	if _, err := sdnotify.SdNotify(false, state); err != nil {
		d.log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

// notifyReloading tells systemd a reload started, with the monotonic
// timestamp Type=notify-reload requires.
func (d *Daemon) notifyReloading() {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return
	}
	d.notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000))
}

// readyGrace is how long READY=1 waits for every enabled plugin to become
// ready before it is sent anyway. A plugin that cannot start (no
// credentials, a checksum mismatch) must not hold the whole unit in
// "activating" until TimeoutStartSec kills it along with the providers
// that work: status and health say which one is down.
const readyGrace = 5 * time.Second

// announceReady waits until the socket answers with every enabled plugin
// ready, or answers at all once readyGrace has passed, then sends READY=1.
func (d *Daemon) announceReady(ctx context.Context) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	start := time.Now()
	for {
		healthy, err := d.selfCheck(ctx)
		if err == nil && (healthy || time.Since(start) >= readyGrace) {
			d.readySent.Store(true)
			d.notify(sdnotify.SdNotifyReady)
			if healthy {
				d.log.Info("ready: notified systemd")
			} else {
				d.log.Warn("ready: notified systemd with a provider not ready; see sluicectl status", "waited", readyGrace)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// watchdog pings systemd while the daemon answers a health check over its
// own socket, so a wedged accept loop or handler stops the pings. A plugin
// that is down does not: its supervisor restarts it, and a restart of the
// daemon by systemd would take every working provider down with it.
func (d *Daemon) watchdog(ctx context.Context) {
	interval, err := sdnotify.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := d.selfCheck(ctx); err != nil {
				d.log.Warn("watchdog: health check failed; not pinging systemd", "err", err)
				continue
			}
			d.notify(sdnotify.SdNotifyWatchdog)
		}
	}
}

// selfCheck asks the daemon's own socket for /v1/health. err is set when
// the daemon did not answer; healthy when it answered 200 (every enabled
// plugin ready).
func (d *Daemon) selfCheck(ctx context.Context) (healthy bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", d.socket)
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sluice/v1/health", nil)
	if err != nil {
		return false, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusServiceUnavailable:
		return false, nil
	}
	return false, fmt.Errorf("health answered %d", resp.StatusCode)
}
