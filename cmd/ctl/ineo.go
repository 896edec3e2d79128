package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/core/problem"
)

// envelope is iNeo's answer: the outcome is status_code in the body, not
// the HTTP status, which the daemon relays as 200.
type envelope struct {
	OK         bool            `json:"ok"`
	Status     string          `json:"status"`
	StatusCode *int            `json:"status_code"`
	Result     json.RawMessage `json:"result"`
}

// parseEnvelope reads an answer body; an error means the body is not the
// envelope (or lacks status_code), which the daemon should already have
// turned into a 502.
func parseEnvelope(b []byte) (*envelope, error) {
	var env envelope
	if err := json.Unmarshal(bytes.TrimSpace(b), &env); err != nil || env.StatusCode == nil {
		return nil, &upstreamError{msg: "iNeo's answer is not its JSON envelope with a status_code"}
	}
	return &env, nil
}

// ineoAnswer checks an envelope's status_code. The name comes from the
// daemon's Sluice-Upstream-Status header, which uses the documented names,
// else from the body's status phrase.
func ineoAnswer(env *envelope, h http.Header) error {
	if *env.StatusCode == http.StatusOK {
		return nil
	}
	name := env.Status
	if code, n, ok := upstreamStatus(h); ok && code == *env.StatusCode && n != "" {
		name = n
	}
	return &ineoError{Code: *env.StatusCode, Name: name, Class: h.Get("Sluice-Upstream-Class")}
}

// ineoCall sends GET /v1/ineo/{script}. The answer is returned whenever its
// body is iNeo's envelope, even with the error for a non-200 status_code,
// so that --json can print what iNeo said.
func (o *options) ineoCall(ctx context.Context, script string, q url.Values, h http.Header) (*client.Response, *envelope, error) {
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	resp, err := o.cl.Call(ctx, http.MethodGet, "/v1/ineo/"+script, q, nil, h)
	if err != nil {
		return nil, nil, o.requestError(resp, err)
	}
	if resp.Status/100 != 2 {
		if o.json {
			if err := o.writeBody(resp.Body); err != nil {
				return nil, nil, err
			}
		}
		return nil, nil, newHTTPStatusError(resp.Status, resp.Body)
	}
	env, err := parseEnvelope(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	return resp, env, ineoAnswer(env, resp.Header)
}

// tmanage runs one tmanage-v2.php action. With --json the envelope is
// printed whatever its status_code; print=false leaves that to the caller
// (login prints only its last step's answer, unless the first fails).
func (o *options) tmanage(ctx context.Context, action, phone string, params url.Values, print bool) (*envelope, error) {
	q := url.Values{"action": {action}, "phone": {phone}}
	for k, vs := range params {
		q[k] = vs
	}
	resp, env, err := o.ineoCall(ctx, "tmanage-v2.php", q, nil)
	if o.json && env != nil && (print || err != nil) {
		if werr := o.writeBody(resp.Body); werr != nil {
			return nil, werr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", action, err)
	}
	return env, nil
}

func newIneoCmd(o *options) *cobra.Command {
	return group("ineo", "iNeo web services: Spotify track links, Telegram developer accounts",
		newTrackCmd(o),
		group("tg", "Telegram developer accounts (tmanage-v2.php)",
			newLoginCmd(o), newCreateAppCmd(o), newInfoCmd(o), newLogoutCmd(o), newDeleteCmd(o)),
	)
}

func newTrackCmd(o *options) *cobra.Command {
	var noCache bool
	cmd := &cobra.Command{
		Use:   "track ID|URI|URL",
		Short: "Get a Spotify track's details and direct download link",
		Long: `Get a Spotify track's details and direct download link from iNeo's
spotify.php. The track may be given as a bare id, a spotify:track: URI or an
open.spotify.com URL; the daemon normalises it. Answers are cached by the
daemon until their link expires.`,
		Example: `  sluicectl ineo track 6fx5VOjqYNBHcDf5GIF5g5
  sluicectl ineo track https://open.spotify.com/track/6fx5VOjqYNBHcDf5GIF5g5`,
		Args: cobra.ExactArgs(1),
		RunE: o.action(func(ctx context.Context, args []string) error {
			var h http.Header
			if noCache {
				h = http.Header{"Cache-Control": {"no-cache"}}
			}
			resp, env, err := o.ineoCall(ctx, "spotify.php", url.Values{"trackId": {args[0]}}, h)
			if o.json && env != nil {
				if werr := o.writeBody(resp.Body); werr != nil {
					return werr
				}
			}
			if err != nil {
				return err
			}
			if o.json {
				return nil
			}
			return o.print(formatTrack(parseTrack(env.Result), resp.Header.Get("Cache-Status")))
		}),
	}
	cmd.Flags().BoolVar(&noCache, "no-cache", false, "ask iNeo again instead of answering from the cache")
	return cmd
}

func newLoginCmd(o *options) *cobra.Command {
	var code string
	cmd := &cobra.Command{
		Use:   "login PHONE",
		Short: "Log a Telegram account in: send the code, ask for it, log in",
		Long: `Log a Telegram account in. Telegram sends a code to the account
(action=sendcode); sluicectl asks for it on the terminal and logs in with it
(action=login), carrying sendcode's random_hash between the two steps.

PHONE is the country code and number, digits only, no + (989012345678).`,
		Args: cobra.ExactArgs(1),
		RunE: o.action(func(ctx context.Context, args []string) error {
			phone := args[0]
			sent, err := o.tmanage(ctx, "sendcode", phone, nil, false)
			if err != nil {
				return err
			}
			var r struct {
				RandomHash string `json:"random_hash"`
			}
			if json.Unmarshal(sent.Result, &r) != nil || r.RandomHash == "" {
				return &upstreamError{msg: "sendcode: iNeo's answer carries no random_hash"}
			}
			if code == "" {
				fmt.Fprintf(o.stderr, "Code sent to %s by Telegram. Enter it: ", phone)
				code, err = o.readLine()
				if errors.Is(err, io.EOF) {
					// Nothing typed, not even Enter: end the prompt's line.
					fmt.Fprintln(o.stderr)
				}
				if errors.Is(err, io.EOF) || (err == nil && code == "") {
					return &usageError{err: errors.New("no code entered; not logged in"), quiet: true}
				}
				if err != nil {
					return fmt.Errorf("reading the code: %w", err)
				}
			}
			if _, err := o.tmanage(ctx, "login", phone, url.Values{"random_hash": {r.RandomHash}, "password": {code}}, true); err != nil {
				return err
			}
			if o.json {
				return nil
			}
			return o.print(fmt.Sprintf("Logged in %s.\n", phone))
		}),
	}
	cmd.Flags().StringVar(&code, "code", "", "the code Telegram sent, instead of asking for it (for scripts)")
	return cmd
}

func newCreateAppCmd(o *options) *cobra.Command {
	var title, shortname, site, platform, description string
	cmd := &cobra.Command{
		Use:   "createapp PHONE --title T --shortname S --url U --platform P [--description D]",
		Short: "Register a logged-in account as a developer (creates its API application)",
		Args:  cobra.ExactArgs(1),
		RunE: o.action(func(ctx context.Context, args []string) error {
			params := url.Values{"title": {title}, "shortname": {shortname}, "url": {site}, "platform": {platform}}
			if description != "" {
				params.Set("description", description)
			}
			if _, err := o.tmanage(ctx, "createapplication", args[0], params, true); err != nil {
				return err
			}
			if o.json {
				return nil
			}
			return o.print(fmt.Sprintf("Created application %q (%s) for %s; see its api_id and api_hash with: sluicectl ineo tg info %s\n",
				title, shortname, args[0], args[0]))
		}),
	}
	f := cmd.Flags()
	f.StringVar(&title, "title", "", "application title (required)")
	f.StringVar(&shortname, "shortname", "", "application short name (required)")
	f.StringVar(&site, "url", "", "the project's web site, an absolute URL (required)")
	f.StringVar(&platform, "platform", "", "android, ios, ubuntu_mobile, desktop, black_berry, windows_phone, web or other (required)")
	f.StringVar(&description, "description", "", "application description")
	_ = cmd.RegisterFlagCompletionFunc("platform", fixedValues("android", "ios", "ubuntu_mobile", "desktop", "black_berry", "windows_phone", "web", "other"))
	for _, name := range []string{"title", "shortname", "url", "platform"} {
		// Only fails for an unknown flag name.
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

// appInfo is the part of the information result sluicectl shows.
type appInfo struct {
	AppConfiguration struct {
		APIID        json.RawMessage `json:"api_id"`
		APIHash      json.RawMessage `json:"api_hash"`
		AppTitle     json.RawMessage `json:"app_title"`
		AppShortname json.RawMessage `json:"app_shortname"`
	} `json:"app_configuration"`
}

func formatInfo(result json.RawMessage) (string, error) {
	var info appInfo
	if err := json.Unmarshal(result, &info); err != nil {
		return "", &upstreamError{msg: "information: iNeo's result is not the expected object: " + err.Error()}
	}
	c := info.AppConfiguration
	if scalar(c.APIID) == "" {
		return "", &upstreamError{msg: "information: iNeo's result carries no app_configuration.api_id"}
	}
	t := newTable()
	t.row("api_id", scalar(c.APIID))
	t.row("api_hash", scalar(c.APIHash))
	t.row("title", scalar(c.AppTitle))
	t.row("shortname", scalar(c.AppShortname))
	return t.String(), nil
}

func newInfoCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "info PHONE",
		Short: "Print the account's api_id and api_hash",
		Args:  cobra.ExactArgs(1),
		RunE: o.action(func(ctx context.Context, args []string) error {
			env, err := o.tmanage(ctx, "information", args[0], nil, true)
			if err != nil || o.json {
				return err
			}
			s, err := formatInfo(env.Result)
			if err != nil {
				return err
			}
			return o.print(s)
		}),
	}
}

func newLogoutCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "logout PHONE",
		Short: "Close the account's session",
		Args:  cobra.ExactArgs(1),
		RunE: o.action(func(ctx context.Context, args []string) error {
			if _, err := o.tmanage(ctx, "logout", args[0], nil, true); err != nil || o.json {
				return err
			}
			return o.print(fmt.Sprintf("Logged out %s.\n", args[0]))
		}),
	}
}

func newDeleteCmd(o *options) *cobra.Command {
	var confirm string
	cmd := &cobra.Command{
		Use:   "delete PHONE",
		Short: "DANGER: delete the Telegram account permanently",
		Long: `DANGER: delete the Telegram account permanently (action=deleteaccount).
Nothing can be recovered. sluicectl asks for the phone number again before
sending anything; --confirm PHONE answers that question for scripts. The
daemon refuses unless allow_delete_account = true in its config; before
asking, sluicectl checks that with a request the daemon refuses locally
(no access=yes), which never reaches iNeo.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = o.action(func(ctx context.Context, args []string) error {
		phone := args[0]
		confirmGiven := cmd.Flags().Changed("confirm")
		if !confirmGiven {
			// Nobody should type a phone number twice for an action
			// the daemon then refuses.
			if err := o.deleteAllowed(ctx, phone); err != nil {
				return err
			}
		}
		if err := o.confirmDelete(phone, confirm, confirmGiven); err != nil {
			return err
		}
		if _, err := o.tmanage(ctx, "deleteaccount", phone, url.Values{"access": {"yes"}}, true); err != nil || o.json {
			return err
		}
		return o.print(fmt.Sprintf("Deleted Telegram account %s.\n", phone))
	})
	cmd.Flags().StringVar(&confirm, "confirm", "", "skip the question: the phone number again, which must equal PHONE")
	return cmd
}

// deleteAllowed asks the daemon whether deleteaccount is enabled without
// deleting anything: the iNeo plugin checks allow_delete_account before
// access=yes, and without access=yes it refuses the call locally (400 on
// access), so the probe never reaches iNeo and costs no rate budget. A 403
// (disabled, or the caller's access tier) or any other problem is the
// answer; a 400 on access means the real call would be accepted.
func (o *options) deleteAllowed(ctx context.Context, phone string) error {
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	q := url.Values{"action": {"deleteaccount"}, "phone": {phone}}
	resp, err := o.cl.Call(ctx, http.MethodGet, "/v1/ineo/tmanage-v2.php", q, nil, nil)
	var p *problem.Problem
	if errors.As(err, &p) && p.Status == http.StatusBadRequest && p.Param == "access" {
		return nil
	}
	if err != nil {
		return o.requestError(resp, err)
	}
	return nil
}

// confirmDelete makes the user type the number again, so a slip in history
// or a wrong argument cannot delete an account. Nothing is sent unless it
// matches.
func (o *options) confirmDelete(phone, confirm string, confirmGiven bool) error {
	abort := func(why string) error {
		return &usageError{err: fmt.Errorf("%s; nothing was deleted", why), quiet: true}
	}
	if confirmGiven {
		if confirm != phone {
			return abort(fmt.Sprintf("--confirm %q does not match %s", confirm, phone))
		}
		return nil
	}
	fmt.Fprintf(o.stderr, "WARNING: this permanently deletes the Telegram account %s and everything in it.\n"+
		"It cannot be undone. Type the phone number again to confirm: ", phone)
	typed, err := o.readLine()
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading the confirmation: %w", err)
	}
	if errors.Is(err, io.EOF) {
		fmt.Fprintln(o.stderr)
	}
	if typed != phone {
		return abort("confirmation does not match")
	}
	return nil
}
