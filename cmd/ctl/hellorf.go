package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/core/problem"
)

// This file holds `sluicectl hellorf`: the hellorf (zcool) music licensing
// API through sluiced. The daemon adds client_id, nonce_str and sign; these
// commands only build parameters, resolve category names, ask before
// spending money, and save files.

// hellorfEnvelope is hellorf's answer: {"result": true, "data": …} or
// {"result": false, "message": …, "code": …}.
type hellorfEnvelope struct {
	Result  *bool           `json:"result"`
	Data    json.RawMessage `json:"data"`
	Message json.RawMessage `json:"message"`
	Code    json.RawMessage `json:"code"`
}

// hellorfError is an answer with result false, whatever its HTTP status.
type hellorfError struct {
	Status  int
	Code    string
	Name    string // from Sluice-Upstream-Status, e.g. "audio_not_found"
	Message string
	// Class is the plugin's verdict from Sluice-Upstream-Class.
	Class string
}

func (e *hellorfError) Error() string {
	msg := "hellorf answered code " + e.Code
	if e.Name != "" && !strings.HasPrefix(e.Name, "code_") {
		msg += " " + e.Name
	}
	if e.Message != "" {
		msg += ": " + glossMessage(e.Message)
	}
	switch e.Name {
	case "bad_sign", "invalid_client_id", "nonce_expired":
		msg += " (sluiced's hellorf credentials or this host's clock are wrong; see the daemon log)"
	}
	return msg
}

func (e *hellorfError) ExitCode() int {
	// Without the plugin's class, a 4xx blames the request, except 401:
	// a refused signature is sluiced's configuration, not the caller's.
	if e.Class == "caller-error" || ((e.Class == "" || e.Class == "unknown") && e.Status >= 400 && e.Status < 500 && e.Status != http.StatusUnauthorized) {
		return exitCaller
	}
	return exitUpstream
}

func parseHellorf(status int, h http.Header, body []byte) (*hellorfEnvelope, error) {
	var env hellorfEnvelope
	if json.Unmarshal(bytes.TrimSpace(body), &env) != nil || env.Result == nil {
		if status/100 != 2 {
			return nil, newHTTPStatusError(status, body)
		}
		return nil, &upstreamError{msg: "hellorf's answer is not its JSON object with a result"}
	}
	if *env.Result && status/100 == 2 {
		return &env, nil
	}
	if *env.Result {
		return &env, newHTTPStatusError(status, body)
	}
	e := &hellorfError{Status: status, Code: scalar(env.Code), Class: h.Get("Sluice-Upstream-Class")}
	_ = json.Unmarshal(env.Message, &e.Message)
	if code, name, ok := upstreamStatus(h); ok && strconv.Itoa(code) == e.Code {
		e.Name = name
	}
	return &env, e
}

// hellorfCall sends one request to /v1/hellorf/audio/{op}. With --json the
// upstream's body is printed verbatim, failure or not.
func (o *options) hellorfCall(ctx context.Context, method, op string, q url.Values, body io.Reader, h http.Header) (*hellorfEnvelope, *client.Response, error) {
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	resp, err := o.cl.Call(ctx, method, "/v1/hellorf/audio/"+op, q, body, h)
	if err != nil {
		return nil, nil, o.requestError(resp, err)
	}
	if o.json {
		if err := o.writeBody(resp.Body); err != nil {
			return nil, nil, err
		}
	}
	env, err := parseHellorf(resp.Status, resp.Header, resp.Body)
	return env, resp, err
}

// get runs a GET and decodes data into v (skipped with --json, which has
// printed the body already).
func (o *options) hellorfGet(ctx context.Context, op string, q url.Values, v any) (bool, error) {
	env, _, err := o.hellorfCall(ctx, http.MethodGet, op, q, nil, nil)
	if err != nil || o.json {
		return false, err
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		return false, &upstreamError{msg: fmt.Sprintf("hellorf's %s data is not what its document shows: %v", op, err)}
	}
	return true, nil
}

func newHellorfCmd(o *options) *cobra.Command {
	return group("hellorf", "hellorf (zcool) music licensing: search, buy licences, download",
		newHellorfCategoriesCmd(o), newHellorfSearchCmd(o), newHellorfDetailCmd(o), newHellorfPurchaseCmd(o),
		newHellorfPurchasesCmd(o), newHellorfPurchaseDetailCmd(o), newHellorfWarrantCmd(o), newHellorfDownloadCmd(o))
}

// named is one {id, name} category entry.
type named struct {
	ID   json.Number `json:"id"`
	Name string      `json:"name"`
}

type hellorfCategories struct {
	Genres      []named `json:"genres"`
	Moods       []named `json:"moods"`
	Instruments []named `json:"instruments"`
	Bpms        []named `json:"bpms"`
}

func newHellorfCategoriesCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "categories",
		Short: "List genres, moods, instruments and tempo ranges with their ids",
		Args:  cobra.NoArgs,
		RunE: o.action(func(ctx context.Context, _ []string) error {
			var c hellorfCategories
			if ok, err := o.hellorfGet(ctx, "categories", nil, &c); !ok {
				return err
			}
			var out strings.Builder
			for i, g := range []struct {
				title string
				list  []named
			}{{"GENRE", c.Genres}, {"MOOD", c.Moods}, {"INSTRUMENT", c.Instruments}, {"BPM", c.Bpms}} {
				if i > 0 {
					out.WriteString("\n")
				}
				t := newTable()
				t.row("ID", g.title)
				for _, n := range g.list {
					t.row(n.ID.String(), glossName(n.Name))
				}
				out.WriteString(t.String())
			}
			return o.print(out.String())
		}),
	}
}

// resolveCategory turns a category given by id or name into its id. Names
// match case-insensitively, exactly or as a unique part of one name; a bpm
// may also be a tempo like "110bpm", which picks the range holding it.
func resolveCategory(flag, v string, list []named) (string, error) {
	v = strings.TrimSpace(v)
	if _, err := strconv.Atoi(v); err == nil {
		return v, nil
	}
	if flag == "bpm" {
		if n, err := strconv.Atoi(strings.TrimSuffix(strings.ToLower(v), "bpm")); err == nil {
			for _, c := range list {
				if lo, hi, ok := bpmRange(c.Name); ok && n >= lo && n < hi {
					return c.ID.String(), nil
				}
			}
			return "", usageErrorf("--bpm %s: no tempo range holds it", v)
		}
	}
	// A name matches in Chinese as hellorf writes it or in the English of
	// sluice's gloss table ("calm" for 平静).
	var partial []named
	for _, c := range list {
		en := englishName(c.Name)
		if strings.EqualFold(c.Name, v) || (en != "" && strings.EqualFold(en, v)) {
			return c.ID.String(), nil
		}
		if strings.Contains(strings.ToLower(c.Name), strings.ToLower(v)) ||
			(en != "" && strings.Contains(strings.ToLower(en), strings.ToLower(v))) {
			partial = append(partial, c)
		}
	}
	if len(partial) == 1 {
		return partial[0].ID.String(), nil
	}
	var names []string
	for _, c := range list {
		names = append(names, c.ID.String()+" "+glossName(c.Name))
	}
	if len(partial) > 1 {
		names = names[:0]
		for _, c := range partial {
			names = append(names, c.ID.String()+" "+glossName(c.Name))
		}
		return "", usageErrorf("--%s %q matches several: %s", flag, v, strings.Join(names, ", "))
	}
	return "", usageErrorf("--%s %q is not a known %s; known: %s (see sluicectl hellorf categories)", flag, v, flag, strings.Join(names, ", "))
}

var bpmRangeRE = regexp.MustCompile(`(\d+)\s*-\s*(\d+)\s*bpm`)

// bpmRange reads "适中(100-120 bpm)" as [100, 120).
func bpmRange(name string) (int, int, bool) {
	m := bpmRangeRE.FindStringSubmatch(strings.ToLower(name))
	if m == nil {
		return 0, 0, false
	}
	lo, _ := strconv.Atoi(m[1])
	hi, _ := strconv.Atoi(m[2])
	return lo, hi, true
}

// parseDuration reads --duration: "20-60", "20-", "-60" or "45" (seconds).
func parseDurationRange(v string) (from, to string, err error) {
	bad := usageErrorf("--duration %q: want seconds as FROM-TO, FROM-, -TO or N (e.g. 20-60)", v)
	lo, hi, isRange := strings.Cut(strings.TrimSpace(v), "-")
	if !isRange {
		hi = lo
	}
	for _, s := range []string{lo, hi} {
		if s == "" {
			continue
		}
		if n, err := strconv.Atoi(s); err != nil || n < 0 {
			return "", "", bad
		}
	}
	if lo == "" && hi == "" {
		return "", "", bad
	}
	if lo != "" && hi != "" {
		a, _ := strconv.Atoi(lo)
		b, _ := strconv.Atoi(hi)
		if a > b {
			return "", "", bad
		}
	}
	return lo, hi, nil
}

// searchItem is what the search table shows of a track.
type searchItem struct {
	ID          json.Number `json:"id"`
	Title       string      `json:"title"`
	Artist      string      `json:"artist"`
	Duration    json.Number `json:"duration"`
	BPM         json.Number `json:"bpm"`
	Genres      []named     `json:"genres"`
	Moods       []named     `json:"moods"`
	Instruments []named     `json:"instruments"`
	Type        string      `json:"type"`
	Preview     string      `json:"preview_mp3_url"`
}

type searchPage struct {
	CurrentPage json.Number  `json:"current_page"`
	PerPage     json.Number  `json:"per_page"`
	Total       json.Number  `json:"total"`
	List        []searchItem `json:"list"`
}

func namesOf(list []named) string {
	var out []string
	for _, n := range list {
		out = append(out, glossName(n.Name))
	}
	return strings.Join(out, ", ")
}

func seconds(n json.Number) string {
	s, err := n.Int64()
	if err != nil {
		return n.String()
	}
	return clockDuration(time.Duration(s) * time.Second)
}

func newHellorfSearchCmd(o *options) *cobra.Command {
	var genre, mood, bpm, instrument, duration string
	var level, page, perPage int
	var purchasable, vhifun bool
	cmd := &cobra.Command{
		Use:   "search [KEYWORD...]",
		Short: "Search tracks by tag keywords and categories",
		Long: `Search tracks. hellorf's search is tag-based, not by title: give separate
words, combined with and, or, not and parentheses (phrases are not supported).
Categories may be given by id or by name (see 'sluicectl hellorf categories');
--bpm also takes a tempo such as 110bpm. Links in the answer work for 10
minutes; the daemon caches answers only while they do.`,
		Example: `  sluicectl hellorf search piano
  sluicectl hellorf search 'piano and (rain or night)' --bpm 110bpm --duration 20-60
  sluicectl hellorf search --genre 流行 --mood 欢快 --per-page 50`,
		RunE: o.action(func(ctx context.Context, args []string) error {
			q := url.Values{}
			if kw := strings.TrimSpace(strings.Join(args, " ")); kw != "" {
				q.Set("keyword", kw)
			}
			cats := map[string]struct {
				param, value string
				list         func(*hellorfCategories) []named
			}{
				"genre":      {"genre_id", genre, func(c *hellorfCategories) []named { return c.Genres }},
				"mood":       {"mood_id", mood, func(c *hellorfCategories) []named { return c.Moods }},
				"instrument": {"instrument_id", instrument, func(c *hellorfCategories) []named { return c.Instruments }},
				"bpm":        {"bpm_id", bpm, func(c *hellorfCategories) []named { return c.Bpms }},
			}
			var all *hellorfCategories
			for _, flag := range []string{"genre", "mood", "instrument", "bpm"} {
				c := cats[flag]
				if c.value == "" {
					continue
				}
				if _, err := strconv.Atoi(c.value); err != nil && all == nil {
					// A name: look it up (the daemon caches categories).
					all = &hellorfCategories{}
					if err := o.categories(ctx, all); err != nil {
						return err
					}
				}
				var list []named
				if all != nil {
					list = c.list(all)
				}
				id, err := resolveCategory(flag, c.value, list)
				if err != nil {
					return err
				}
				q.Set(c.param, id)
			}
			if duration != "" {
				from, to, err := parseDurationRange(duration)
				if err != nil {
					return err
				}
				if from != "" {
					q.Set("duration_from", from)
				}
				if to != "" {
					q.Set("duration_to", to)
				}
			}
			setInt(q, "level_type", level)
			setInt(q, "page", page)
			setInt(q, "per_page", perPage)
			if purchasable {
				q.Set("can_purchase", "1")
			}
			if vhifun {
				q.Set("is_vhifun", "1")
			}
			var res searchPage
			if ok, err := o.hellorfGet(ctx, "search", q, &res); !ok {
				return err
			}
			return o.print(formatSearch(&res))
		}),
	}
	f := cmd.Flags()
	f.StringVar(&genre, "genre", "", "genre id or name")
	f.StringVar(&mood, "mood", "", "mood id or name")
	f.StringVar(&instrument, "instrument", "", "instrument id or name")
	f.StringVar(&bpm, "bpm", "", "tempo range id or name, or a tempo such as 110bpm")
	f.StringVar(&duration, "duration", "", "length in seconds: FROM-TO, FROM-, -TO or N")
	for flag, pick := range map[string]func(*hellorfCategories) []named{
		"genre":      func(c *hellorfCategories) []named { return c.Genres },
		"mood":       func(c *hellorfCategories) []named { return c.Moods },
		"instrument": func(c *hellorfCategories) []named { return c.Instruments },
		"bpm":        func(c *hellorfCategories) []named { return c.Bpms },
	} {
		_ = cmd.RegisterFlagCompletionFunc(flag, completeCategory(o, pick))
	}
	f.IntVar(&level, "level", 0, "1 Absolute, 2 Boost, 3 Chic, 99 Shutterstock, 100 Shutterstock preferred")
	f.BoolVar(&purchasable, "purchasable", false, "only tracks that can be bought")
	f.BoolVar(&vhifun, "vhifun", false, "only vhifun tracks")
	f.IntVar(&page, "page", 0, "page number (default 1)")
	f.IntVar(&perPage, "per-page", 0, "tracks per page, up to 100 (default 30)")
	return cmd
}

func setInt(q url.Values, k string, v int) {
	if v != 0 {
		q.Set(k, strconv.Itoa(v))
	}
}

// categories fetches the category list without printing it, even with
// --json.
func (o *options) categories(ctx context.Context, c *hellorfCategories) error {
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	resp, err := o.cl.Call(ctx, http.MethodGet, "/v1/hellorf/audio/categories", nil, nil, nil)
	if err != nil {
		return o.requestError(resp, err)
	}
	env, err := parseHellorf(resp.Status, resp.Header, resp.Body)
	if err != nil {
		return fmt.Errorf("looking up category names: %w", err)
	}
	if err := json.Unmarshal(env.Data, c); err != nil {
		return &upstreamError{msg: "hellorf's categories are not what its document shows: " + err.Error()}
	}
	return nil
}

func formatSearch(r *searchPage) string {
	if len(r.List) == 0 {
		return fmt.Sprintf("no tracks (%s in total)\n", r.Total)
	}
	t := newTable()
	t.row("ID", "TITLE", "ARTIST", "LENGTH", "BPM", "GENRES", "MOODS")
	for _, it := range r.List {
		t.row(it.ID.String(), it.Title, it.Artist, seconds(it.Duration), it.BPM.String(), namesOf(it.Genres), namesOf(it.Moods))
	}
	s := t.String()
	total, _ := r.Total.Int64()
	per, _ := r.PerPage.Int64()
	pageInfo := "page " + r.CurrentPage.String()
	if per > 0 {
		pageInfo += fmt.Sprintf(" of %d", (total+per-1)/per)
	}
	return s + fmt.Sprintf("%s, %d tracks\n", pageInfo, total)
}

type permission struct {
	ID       json.Number `json:"id"`
	Name     string      `json:"name"`
	Price    string      `json:"price"`
	Type     string      `json:"type"`
	Duration string      `json:"duration"`
	BPM      json.Number `json:"bpm"`
}

type audioDetail struct {
	Audio       searchItem   `json:"audio"`
	Permissions []permission `json:"permissions"`
}

func formatDetail(d *audioDetail) string {
	a := d.Audio
	t := newTable()
	t.row("id", a.ID.String())
	t.row("title", a.Title)
	t.row("artist", a.Artist)
	if a.Type != "" {
		t.row("type", glossName(a.Type))
	}
	t.row("length", seconds(a.Duration))
	t.row("bpm", a.BPM.String())
	t.row("genres", namesOf(a.Genres))
	t.row("moods", namesOf(a.Moods))
	t.row("instruments", namesOf(a.Instruments))
	t.row("preview", a.Preview)
	out := t.String() + "\n"
	if len(d.Permissions) == 0 {
		return out + "no licences offered for this track\n"
	}
	p := newTable()
	p.row("PERMISSION", "NAME", "PRICE", "TYPE", "DURATION", "BPM")
	for _, pm := range d.Permissions {
		p.row(pm.ID.String(), glossName(pm.Name), pm.Price, pm.Type, pm.Duration, pm.BPM.String())
	}
	return out + p.String()
}

func newHellorfDetailCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "detail AUDIO_ID",
		Short: "Show a track with the licences it can be bought under and their prices",
		Args:  cobra.ExactArgs(1),
		RunE: o.action(func(ctx context.Context, args []string) error {
			var d audioDetail
			if ok, err := o.hellorfGet(ctx, "detail", url.Values{"audio_id": {args[0]}}, &d); !ok {
				return err
			}
			return o.print(formatDetail(&d))
		}),
	}
}

func newHellorfPurchaseCmd(o *options) *cobra.Command {
	var permID, warrant, thirdUser string
	var yes, repeat bool
	cmd := &cobra.Command{
		Use:   "purchase AUDIO_ID --permission ID --warrant NAME [--third-user ID]",
		Short: "Buy a licence for a track (SPENDS MONEY; asks first unless --yes)",
		Long: `Buy a licence for a track. This spends money. sluicectl first looks the
track up, shows the licence and its price and asks for confirmation; --yes
answers for scripts. The daemon refuses unless allow_purchase = true in its
config, and refuses an identical purchase (same track, permission, licensee
and third-party user) within purchase_guard as a probable duplicate, naming
the first purchase; --repeat buys again on purpose.

If the answer is lost (a timeout), the purchase may still have been made:
check 'sluicectl hellorf purchases --audio AUDIO_ID' before trying again.`,
		Example: `  sluicectl hellorf detail 505947
  sluicectl hellorf purchase 505947 --permission 35 --warrant 'ACME Ltd'`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = o.action(func(ctx context.Context, args []string) error {
		audio := args[0]
		if !yes {
			if err := o.confirmPurchase(ctx, audio, permID, warrant, thirdUser); err != nil {
				return err
			}
		}
		form := url.Values{"audio_id": {audio}, "permission_id": {permID}, "warrant_name": {warrant}}
		if thirdUser != "" {
			form.Set("third_user_id", thirdUser)
		}
		h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
		if repeat {
			h.Set("Sluice-Confirm", "repeat-purchase")
		}
		env, _, err := o.hellorfCall(ctx, http.MethodPost, "purchase", nil, strings.NewReader(form.Encode()), h)
		if err != nil || o.json {
			return forCLI(err)
		}
		var d struct {
			ID  json.Number `json:"id"`
			URL string      `json:"url"`
		}
		if err := json.Unmarshal(env.Data, &d); err != nil {
			return &upstreamError{msg: "the purchase was made, but hellorf's answer has no readable id: " + oneLine(string(env.Data))}
		}
		t := newTable()
		t.row("purchase", d.ID.String())
		t.row("download", d.URL)
		if exp := urlExpiry(d.URL); !exp.IsZero() {
			t.row("link expires", exp.Local().Format(timeLayout))
		}
		return o.print(t.String() + fmt.Sprintf("\nSave the audio with: sluicectl hellorf download %s\nand the licence with: sluicectl hellorf warrant %s\n", d.ID, d.ID))
	})
	f := cmd.Flags()
	f.StringVar(&permID, "permission", "", "licence permission id, from 'sluicectl hellorf detail' (required)")
	f.StringVar(&warrant, "warrant", "", "licensee name printed on the certificate (required)")
	f.StringVar(&thirdUser, "third-user", "", "your own id for the licensee")
	f.BoolVar(&yes, "yes", false, "do not ask for confirmation")
	f.BoolVar(&repeat, "repeat", false, "buy again even though an identical purchase was made recently")
	_ = cmd.MarkFlagRequired("permission")
	_ = cmd.MarkFlagRequired("warrant")
	return cmd
}

// confirmPurchase shows what is about to be bought and at what price, and
// asks. Nothing is bought unless the answer is yes.
func (o *options) confirmPurchase(ctx context.Context, audio, permID, warrant, thirdUser string) error {
	// Look the track up without printing it, even with --json.
	saved := o.json
	o.json = false
	var d audioDetail
	_, err := o.hellorfGet(ctx, "detail", url.Values{"audio_id": {audio}}, &d)
	o.json = saved
	if err != nil {
		return fmt.Errorf("looking up the track: %w", err)
	}
	var perm *permission
	var offered []string
	for i, p := range d.Permissions {
		offered = append(offered, fmt.Sprintf("%s (%s, %s)", p.ID, p.Name, p.Price))
		if p.ID.String() == permID {
			perm = &d.Permissions[i]
		}
	}
	if perm == nil {
		if len(offered) == 0 {
			return &usageError{err: fmt.Errorf("track %s cannot be bought: hellorf offers no licence for it", audio), quiet: true}
		}
		return usageErrorf("--permission %s is not offered for track %s; offered: %s", permID, audio, strings.Join(offered, ", "))
	}
	who := fmt.Sprintf("%q", warrant)
	if thirdUser != "" {
		who += fmt.Sprintf(" (third-party user %q)", thirdUser)
	}
	fmt.Fprintf(o.stderr, "Buy a licence for track %s %q\n  licence: %s %s (%s)\n  price:   %s\n  licensee: %s\nThis spends money. Buy? [y/N] ",
		d.Audio.ID, d.Audio.Title, perm.ID, perm.Name, perm.Type, perm.Price, who)
	answer, err := o.readLine()
	if errors.Is(err, io.EOF) {
		fmt.Fprintln(o.stderr)
	} else if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if a := strings.ToLower(answer); a != "y" && a != "yes" {
		return &usageError{err: errors.New("not confirmed; nothing was bought"), quiet: true}
	}
	return nil
}

// urlExpiry reads a signed URL's Expires (Unix seconds).
func urlExpiry(raw string) time.Time {
	u, err := url.Parse(raw)
	if err != nil {
		return time.Time{}
	}
	for k, vs := range u.Query() {
		if strings.EqualFold(k, "expires") && len(vs) > 0 {
			if n, err := strconv.ParseInt(vs[0], 10, 64); err == nil {
				return time.Unix(n, 0)
			}
		}
	}
	return time.Time{}
}

type purchaseItem struct {
	ID          json.Number `json:"id"`
	ThirdUserID string      `json:"third_user_id"`
	Permission  named       `json:"plus_permission"`
	AbleID      json.Number `json:"able_id"`
	AssetType   string      `json:"asset_type"`
	WarrantName string      `json:"warrant_name"`
	DownloadAt  *string     `json:"download_at"`
	CreatedAt   string      `json:"created_at"`
}

type purchasePage struct {
	CurrentPage json.RawMessage `json:"current_page"`
	Total       json.RawMessage `json:"total"`
	List        []purchaseItem  `json:"list"`
}

func formatPurchases(r *purchasePage) string {
	if len(r.List) == 0 {
		return "no purchases\n"
	}
	t := newTable()
	t.row("PURCHASE", "AUDIO", "LICENCE", "LICENSEE", "THIRD USER", "BOUGHT", "DOWNLOADED")
	for _, p := range r.List {
		dl := ""
		if p.DownloadAt != nil {
			dl = *p.DownloadAt
		}
		lic := p.Permission.Name
		if p.Permission.ID != "" {
			lic = p.Permission.ID.String() + " " + lic
		}
		t.row(p.ID.String(), p.AbleID.String(), lic, p.WarrantName, p.ThirdUserID, p.CreatedAt, dl)
	}
	return t.String() + fmt.Sprintf("page %s, %s purchases\n", scalar(r.CurrentPage), scalar(r.Total))
}

func newHellorfPurchasesCmd(o *options) *cobra.Command {
	var from, to, downloaded, audio string
	var page, perPage int
	cmd := &cobra.Command{
		Use:   "purchases",
		Short: "List the account's purchases, newest first",
		Long: `List the account's purchases, newest first. Never answered from the cache.
Times are as hellorf writes them: YYYY-MM-DD HH:MM:SS.`,
		Example: `  sluicectl hellorf purchases --audio 505947
  sluicectl hellorf purchases --from '2026-01-01 00:00:00' --downloaded no`,
		Args: cobra.NoArgs,
		RunE: o.action(func(ctx context.Context, _ []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"begin_at": from, "end_at": to, "audio_id": audio} {
				if v != "" {
					q.Set(k, v)
				}
			}
			switch strings.ToLower(downloaded) {
			case "":
			case "yes", "y", "1":
				q.Set("is_download", "1")
			case "no", "n", "2":
				q.Set("is_download", "2")
			default:
				return usageErrorf("--downloaded %q: want yes or no", downloaded)
			}
			setInt(q, "page", page)
			setInt(q, "per_page", perPage)
			var r purchasePage
			if ok, err := o.hellorfGet(ctx, "my-purchases", q, &r); !ok {
				return err
			}
			return o.print(formatPurchases(&r))
		}),
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "bought at or after, YYYY-MM-DD HH:MM:SS")
	f.StringVar(&to, "to", "", "bought at or before, YYYY-MM-DD HH:MM:SS")
	f.StringVar(&downloaded, "downloaded", "", "yes or no")
	_ = cmd.RegisterFlagCompletionFunc("downloaded", fixedValues("yes", "no"))
	f.StringVar(&audio, "audio", "", "only purchases of this track")
	f.IntVar(&page, "page", 0, "page number (default 1)")
	f.IntVar(&perPage, "per-page", 0, "purchases per page, up to 100 (default 10)")
	return cmd
}

func newHellorfPurchaseDetailCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "purchase-detail PURCHASE_ID",
		Short: "Show one purchase with its track",
		Args:  cobra.ExactArgs(1),
		RunE: o.action(func(ctx context.Context, args []string) error {
			var d struct {
				Audio    searchItem                 `json:"audio"`
				Purchase map[string]json.RawMessage `json:"purchase"`
			}
			if ok, err := o.hellorfGet(ctx, "purchase-detail", url.Values{"purchase_id": {args[0]}}, &d); !ok {
				return err
			}
			t := newTable()
			t.row("purchase", scalar(d.Purchase["id"]))
			t.row("audio", d.Audio.ID.String()+" "+d.Audio.Title)
			t.row("licence", scalar(d.Purchase["permission_id"])+" "+scalar(d.Purchase["permission_name"]))
			t.row("price", scalar(d.Purchase["price"]))
			t.row("asset", scalar(d.Purchase["asset_type"]))
			t.row("file size", scalar(d.Purchase["fileSize"]))
			t.row("licensee", scalar(d.Purchase["warrant_name"]))
			if v := scalar(d.Purchase["third_user_id"]); v != "" {
				t.row("third user", v)
			}
			t.row("bought", scalar(d.Purchase["created_at"]))
			return o.print(t.String())
		}),
	}
}

// fileName picks a safe local name: the base of what the server suggests
// (Content-Disposition or a URL), never a path.
func fileName(suggested, fallback string) string {
	name := filepath.Base(filepath.Clean("/" + strings.ReplaceAll(suggested, "\\", "/")))
	if name == "/" || name == "." || name == ".." || strings.HasPrefix(name, ".") {
		return fallback
	}
	return name
}

func dispositionName(v string) string {
	_, params, err := mime.ParseMediaType(v)
	if err != nil {
		return ""
	}
	return params["filename"]
}

func newHellorfWarrantCmd(o *options) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "warrant PURCHASE_ID [-o FILE]",
		Short: "Save a purchase's licence certificate (a PDF)",
		Long: `Save a purchase's licence certificate. The file streams through the daemon
without being cached. Without -o it is saved under the name hellorf gives it
(warrant-ID.pdf) in the current directory; -o - writes it to stdout.`,
		Args: cobra.ExactArgs(1),
		RunE: o.action(func(ctx context.Context, args []string) error {
			ctx, cancel := o.withTimeout(ctx)
			defer cancel()
			resp, err := o.cl.Do(ctx, http.MethodGet, "/v1/hellorf/audio/download-warrant", url.Values{"purchase_id": {args[0]}}, nil, nil)
			if err != nil {
				return o.requestError(nil, err)
			}
			defer resp.Body.Close()
			if isProblem(resp.Header) || resp.StatusCode/100 != 2 || strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				if err != nil {
					return o.requestError(nil, fmt.Errorf("reading answer: %w", err))
				}
				if o.json {
					if err := o.writeBody(b); err != nil {
						return err
					}
				}
				if isProblem(resp.Header) {
					return parseProblem(resp.StatusCode, resp.Header, b)
				}
				if _, err := parseHellorf(resp.StatusCode, resp.Header, b); err != nil {
					return err
				}
				return &upstreamError{msg: "hellorf answered JSON instead of the certificate"}
			}
			name := out
			if name == "" {
				name = fileName(dispositionName(resp.Header.Get("Content-Disposition")), "warrant-"+args[0]+".pdf")
			}
			n, err := o.saveStream(resp.Body, name, resp.ContentLength, 0, false)
			if err != nil {
				return err
			}
			if name != "-" {
				return o.print(fmt.Sprintf("saved %s (%s)\n", name, humanBytes(n)))
			}
			return nil
		}),
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write; - for stdout")
	return cmd
}

// saveStream copies body into name ("-" = stdout). For a file it writes
// NAME.part and renames it when complete; with resume it appends to an
// existing NAME.part from offset. It shows progress on a terminal.
func (o *options) saveStream(body io.Reader, name string, length, offset int64, resume bool) (int64, error) {
	if name == "-" {
		var w io.Writer = o.stdout
		var bar *progress
		// A file going to the terminal itself gets no bar across it.
		if o.live != nil && !o.tty {
			bar = newProgress(o.stderr, offset, length)
			w = io.MultiWriter(o.stdout, bar)
		}
		n, err := io.Copy(w, body)
		if bar != nil {
			bar.done()
		}
		if err != nil {
			return n, fmt.Errorf("writing to stdout after %d bytes: %w", n, err)
		}
		return n, nil
	}
	part := name + ".part"
	flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if resume {
		flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	f, err := os.OpenFile(part, flags, 0o644)
	if err != nil {
		return 0, fmt.Errorf("creating %s: %w", part, err)
	}
	var w io.Writer = f
	var bar *progress
	if o.live != nil {
		bar = newProgress(o.stderr, offset, length)
		w = io.MultiWriter(f, bar)
	}
	n, err := io.Copy(w, body)
	if bar != nil {
		bar.done()
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return offset + n, &interruptedError{name: name, got: offset + n, err: err}
	}
	if length >= 0 && n != length {
		return offset + n, &interruptedError{name: name, got: offset + n, err: fmt.Errorf("got %d of %d bytes", n, length)}
	}
	if err := os.Rename(part, name); err != nil {
		return offset + n, fmt.Errorf("saving %s: %w", name, err)
	}
	return offset + n, nil
}

// interruptedError is a download cut off before its end; NAME.part keeps
// what arrived.
type interruptedError struct {
	name string
	got  int64
	err  error
}

func (e *interruptedError) Error() string {
	return fmt.Sprintf("download of %s interrupted after %s (%v); %s.part keeps what arrived: run the same command again to resume",
		e.name, humanBytes(e.got), e.err, e.name)
}
func (e *interruptedError) Unwrap() error { return e.err }
func (e *interruptedError) ExitCode() int { return exitUpstream }

// progress draws a one-line progress bar for a file transfer on a
// terminal, at most ten times a second: how much, how fast and, when the
// length is known, how long until done.
type progress struct {
	w          io.Writer
	now        func() time.Time // injected by tests
	start      time.Time
	last       time.Time
	base, n    int64
	total      int64 // -1 if unknown
	lastLength int
}

func newProgress(w io.Writer, offset, length int64) *progress {
	total := int64(-1)
	if length >= 0 {
		total = offset + length
	}
	return &progress{w: w, now: time.Now, start: time.Now(), base: offset, total: total}
}

func (p *progress) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if p.now().Sub(p.last) >= 100*time.Millisecond {
		p.draw(false)
	}
	return len(b), nil
}

// draw paints the bar; final replaces the ETA with the time taken.
func (p *progress) draw(final bool) {
	now := p.now()
	p.last = now
	got := p.base + p.n
	elapsed := now.Sub(p.start)
	// The rate is of this transfer only: resumed bytes came earlier.
	rate := float64(p.n) / max(elapsed.Seconds(), 0.001)
	line := humanBytes(got)
	if p.total > 0 {
		const width = 30
		filled := int(int64(width) * min(got, p.total) / p.total)
		line = fmt.Sprintf("[%s%s] %3d%% %s / %s", strings.Repeat("#", filled), strings.Repeat(".", width-filled), 100*got/p.total, humanBytes(got), humanBytes(p.total))
	}
	line += fmt.Sprintf("  %s/s", humanBytes(int64(rate)))
	switch {
	case final:
		line += "  in " + clockDuration(elapsed.Round(time.Second))
	case p.total > 0 && p.n > 0 && got < p.total:
		eta := time.Duration(float64(p.total-got) / rate * float64(time.Second))
		line += "  ETA " + clockDuration(eta.Round(time.Second))
	case p.total > 0 && got < p.total:
		line += "  ETA -"
	}
	pad := max(p.lastLength-len(line), 0)
	p.lastLength = len(line)
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
}

func (p *progress) done() {
	p.draw(true)
	fmt.Fprintln(p.w)
}

// resumeMeta is kept next to NAME.part so a resumed download asks for the
// rest of the same object (If-Range), not of a changed one.
type resumeMeta struct {
	ETag string `json:"etag"`
	Size int64  `json:"size"`
}

func newHellorfDownloadCmd(o *options) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "download PURCHASE_ID [-o FILE]",
		Short: "Save a purchase's audio; resumes an interrupted download",
		Long: `Save a purchase's audio. sluicectl gets a signed download link from
hellorf through the daemon (audio/purchase-download; links work for about 10
minutes and the daemon caches them only while they do) and fetches the file
from hellorf's object storage directly. It writes FILE.part and renames it
when complete; if interrupted, running the same command again resumes with
an HTTP Range request. Without -o the name comes from the link.`,
		Args: cobra.ExactArgs(1),
		RunE: o.action(func(ctx context.Context, args []string) error {
			return o.download(ctx, args[0], out)
		}),
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write; - for stdout (no resume)")
	return cmd
}

// downloadLink asks the daemon for the purchase's signed URL; fresh skips
// the daemon's cache (after the cached link was refused).
func (o *options) downloadLink(ctx context.Context, purchase string, fresh bool) (string, error) {
	var h http.Header
	if fresh {
		h = http.Header{"Cache-Control": {"no-cache"}}
	}
	saved := o.json
	o.json = false
	env, _, err := o.hellorfCall(ctx, http.MethodGet, "purchase-download", url.Values{"purchase_id": {purchase}}, nil, h)
	o.json = saved
	if err != nil {
		return "", err
	}
	var d struct {
		URL string `json:"url"`
	}
	if json.Unmarshal(env.Data, &d) != nil || d.URL == "" {
		return "", &upstreamError{msg: "hellorf's purchase-download answer has no url"}
	}
	return d.URL, nil
}

func (o *options) download(ctx context.Context, purchase, out string) error {
	link, err := o.downloadLink(ctx, purchase, false)
	if err != nil {
		return err
	}
	name := out
	if name == "" {
		u, _ := url.Parse(link)
		suggested := ""
		if u != nil {
			suggested = dispositionName(u.Query().Get("response-content-disposition"))
			if suggested == "" {
				suggested = path.Base(u.Path)
			}
		}
		name = fileName(suggested, "hellorf-"+purchase+".mp3")
	}
	part, metaPath := name+".part", name+".part.json"
	var meta resumeMeta
	var offset int64
	if name != "-" {
		if fi, err := os.Stat(part); err == nil && fi.Size() > 0 {
			if b, err := os.ReadFile(metaPath); err == nil && json.Unmarshal(b, &meta) == nil {
				offset = fi.Size()
			}
		}
	}
	// The object store is not hellorf's API: no signature, no rate limit,
	// and not through the daemon. --timeout bounds the wait for each
	// answer's head, not a long transfer.
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: o.timeout}}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
		if err != nil {
			return &upstreamError{msg: "hellorf's download link is not a URL"}
		}
		if offset > 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
			if meta.ETag != "" {
				req.Header.Set("If-Range", meta.ETag)
			}
		}
		resp, err := hc.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // the URL is signed: keep it out of messages
			}
			return &upstreamError{msg: "fetching the audio: " + err.Error()}
		}
		switch {
		case resp.StatusCode == http.StatusForbidden && attempt == 0:
			// Most likely the link expired (a cached one near its end,
			// or a long pause before resuming): ask for a fresh one.
			resp.Body.Close()
			if link, err = o.downloadLink(ctx, purchase, true); err != nil {
				return err
			}
			continue
		case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && offset > 0 && offset == meta.Size:
			resp.Body.Close()
			return o.finishDownload(name, part, metaPath, offset)
		case resp.StatusCode == http.StatusPartialContent && offset > 0:
			start, total, ok := contentRange(resp.Header.Get("Content-Range"))
			if !ok || start != offset || (meta.Size > 0 && total != meta.Size) {
				resp.Body.Close()
				return &upstreamError{msg: "the object store answered a different range than asked; delete " + part + " and try again"}
			}
		case resp.StatusCode == http.StatusOK:
			offset = 0 // a whole answer (the object changed, or no resume)
			meta = resumeMeta{ETag: resp.Header.Get("ETag"), Size: resp.ContentLength}
			if name != "-" {
				b, _ := json.Marshal(meta)
				if err := os.WriteFile(metaPath, b, 0o644); err != nil {
					resp.Body.Close()
					return fmt.Errorf("writing %s: %w", metaPath, err)
				}
			}
		default:
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return &upstreamError{msg: fmt.Sprintf("the object store answered HTTP %d: %s", resp.StatusCode, oneLine(string(b)))}
		}
		n, err := o.saveStream(resp.Body, name, resp.ContentLength, offset, offset > 0)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if name == "-" {
			return nil
		}
		os.Remove(metaPath)
		return o.print(fmt.Sprintf("saved %s (%s)\n", name, humanBytes(n)))
	}
}

// finishDownload completes a download whose .part already holds every
// byte.
func (o *options) finishDownload(name, part, metaPath string, size int64) error {
	if err := os.Rename(part, name); err != nil {
		return fmt.Errorf("saving %s: %w", name, err)
	}
	os.Remove(metaPath)
	return o.print(fmt.Sprintf("saved %s (%s)\n", name, humanBytes(size)))
}

// contentRange reads "bytes START-END/TOTAL".
func contentRange(v string) (start, total int64, ok bool) {
	var end int64
	if _, err := fmt.Sscanf(v, "bytes %d-%d/%d", &start, &end, &total); err != nil {
		return 0, 0, false
	}
	return start, total, true
}

// confirmHeader matches the daemon's advice to HTTP callers on how to buy
// again on purpose (the 409 of the purchase guard, and the 502/504 of a
// purchase whose answer was lost).
var confirmHeader = regexp.MustCompile(`(repeat the request with the header|confirmed with) Sluice-Confirm: repeat-purchase`)

// forCLI tells a sluicectl user about --repeat where the daemon tells an
// HTTP caller about the Sluice-Confirm header, which sluicectl sets for
// them. The problem is copied: --json has printed the daemon's own already.
func forCLI(err error) error {
	var p *problem.Problem
	if !errors.As(err, &p) || !confirmHeader.MatchString(p.Detail) {
		return err
	}
	q := *p
	q.Detail = confirmHeader.ReplaceAllStringFunc(p.Detail, func(m string) string {
		if strings.HasPrefix(m, "confirmed") {
			return "run with --repeat"
		}
		return "run the same command with --repeat"
	})
	return &q
}
