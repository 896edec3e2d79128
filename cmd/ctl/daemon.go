package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/buildinfo"
)

// This file holds the commands about the daemon itself: status, health,
// reload, cache and version.

// fetch sends a request to one of the daemon's own endpoints, decodes the
// JSON answer into out (for human output) and returns it verbatim (for
// --json). The client's typed methods decode only, so --json could not print
// the daemon's bytes; this is the same logic on top of client.Call. okStatus
// lists non-2xx statuses that still carry the endpoint's document (503 for
// health).
// With --json a failure's body (a problem document) is printed as well.
func (o *options) fetch(ctx context.Context, method, path string, out any, okStatus ...int) ([]byte, error) {
	return o.fetchDoc(ctx, o.json, method, path, out, okStatus...)
}

// fetchDoc is fetch; show says whether --json prints a failure's body, which
// commands that report a failure their own way (version, watch) do not want.
func (o *options) fetchDoc(ctx context.Context, show bool, method, path string, out any, okStatus ...int) ([]byte, error) {
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	resp, err := o.cl.Call(ctx, method, path, nil, nil, nil)
	if err != nil {
		return nil, o.classify(resp, err, show)
	}
	if resp.Status/100 != 2 && !slices.Contains(okStatus, resp.Status) {
		if show {
			if err := o.writeBody(resp.Body); err != nil {
				return nil, err
			}
		}
		// Not a problem document, but the daemon's own status: treat it as
		// one, as the client's typed methods do.
		return nil, &problem.Problem{Status: resp.Status, Title: http.StatusText(resp.Status), Detail: oneLine(string(resp.Body))}
	}
	if err := json.Unmarshal(resp.Body, out); err != nil {
		return nil, fmt.Errorf("decoding the answer to %s %s: %w", method, path, err)
	}
	return resp.Body, nil
}

// writeBody prints a body verbatim. On a terminal a missing final newline is
// added so the shell prompt does not land on the body's last line; a pipe
// gets the exact bytes.
func (o *options) writeBody(b []byte) error {
	if _, err := o.stdout.Write(b); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	if o.tty && len(b) > 0 && b[len(b)-1] != '\n' {
		return o.print("\n")
	}
	return nil
}

// print writes human output.
func (o *options) print(s string) error {
	if _, err := fmt.Fprint(o.stdout, s); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

func newStatusCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's version, config, providers, rate buckets and cache",
		Args:  cobra.NoArgs,
		RunE: o.action(func(ctx context.Context, _ []string) error {
			var st api.Status
			raw, err := o.fetch(ctx, http.MethodGet, "/v1/status", &st)
			if err != nil {
				return err
			}
			if o.json {
				return o.writeBody(raw)
			}
			return o.print(formatStatus(&st, time.Now()))
		}),
	}
}

func newHealthCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Print ok, or why the daemon is unavailable (exit 6)",
		Args:  cobra.NoArgs,
		RunE: o.action(func(ctx context.Context, _ []string) error {
			var h api.Health
			raw, err := o.fetch(ctx, http.MethodGet, "/v1/health", &h, http.StatusServiceUnavailable)
			if err != nil {
				return err
			}
			if o.json {
				err = o.writeBody(raw)
			} else {
				err = o.print(formatHealth(&h))
			}
			if err != nil {
				return err
			}
			if h.Status != "ok" {
				// The answer, detail included, is already on stdout.
				return &exitError{code: exitUnavailable}
			}
			return nil
		}),
	}
}

func newReloadCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Reload the daemon's config; an invalid config is reported with file:line and key",
		Args:  cobra.NoArgs,
		RunE: o.action(func(ctx context.Context, _ []string) error {
			var r api.ReloadResult
			raw, err := o.fetch(ctx, http.MethodPost, "/v1/reload", &r)
			if err != nil {
				return fmt.Errorf("reload: %w", err)
			}
			if o.json {
				return o.writeBody(raw)
			}
			return o.print(r.Status + "\n")
		}),
	}
}

func newCacheCmd(o *options) *cobra.Command {
	stats := &cobra.Command{
		Use:   "stats",
		Short: "Show cache statistics",
		Args:  cobra.NoArgs,
		RunE: o.action(func(ctx context.Context, _ []string) error {
			var s api.CacheStats
			raw, err := o.fetch(ctx, http.MethodGet, "/v1/cache", &s)
			if err != nil {
				return err
			}
			if o.json {
				return o.writeBody(raw)
			}
			return o.print(formatCacheStats(&s))
		}),
	}
	purge := &cobra.Command{
		Use:               "purge [PROVIDER]",
		Short:             "Drop cached answers: one provider's, or all",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeProviders(o),
		RunE: o.action(func(ctx context.Context, args []string) error {
			path, provider := "/v1/cache", ""
			if len(args) == 1 {
				provider = args[0]
				path += "/" + url.PathEscape(provider)
			}
			var r api.PurgeResult
			raw, err := o.fetch(ctx, http.MethodDelete, path, &r)
			if err != nil {
				return err
			}
			if o.json {
				return o.writeBody(raw)
			}
			return o.print(formatPurge(&r, provider))
		}),
	}
	return group("cache", "Inspect or purge the answer cache", stats, purge)
}

func newVersionCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print sluicectl's version, and the daemon's if it is running",
		Args:  cobra.NoArgs,
		RunE: o.action(func(ctx context.Context, _ []string) error {
			v := versionInfo{Sluicectl: ownVersion(), Go: runtime.Version()}
			// The daemon's version is a courtesy: version must work without
			// a daemon, so a failure here is shown, not returned.
			wait := 5 * time.Second
			if o.timeout > 0 {
				wait = min(wait, o.timeout)
			}
			ctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			var st api.Status
			if _, err := o.fetchDoc(ctx, false, http.MethodGet, "/v1/status", &st); err == nil {
				v.Sluiced = st.Version
			} else {
				v.sluicedErr = err
			}
			if o.json {
				b, err := json.MarshalIndent(v, "", "  ")
				if err != nil {
					return fmt.Errorf("encoding version: %w", err)
				}
				return o.writeBody(append(b, '\n'))
			}
			return o.print(formatVersion(&v, o.cl.Socket()))
		}),
	}
}

type versionInfo struct {
	Sluicectl  string `json:"sluicectl"`
	Go         string `json:"go"`
	Sluiced    string `json:"sluiced,omitempty"`
	sluicedErr error
}

// version is set only by the linker: the Makefile builds sluicectl and
// sluiced with the same -X main.version=$(VERSION), so both name the same
// build. It is never assigned at run time.
var version string

// ownVersion is the stamped version, else what the go tool recorded (see
// internal/buildinfo), the same rule sluiced follows.
func ownVersion() string { return buildinfo.Version(version) }
