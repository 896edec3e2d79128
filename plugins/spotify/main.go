// Command sluice-spotify is sluice's provider plugin for the Spotify Web API
// catalogue: search, artists, an artist's albums, albums, an album's tracks
// and tracks, one by id or several by ids, under the upstream's own paths
// (/v1/spotify/v1/search, ...).
//
// Callers never handle a client id, secret or token: the plugin holds one
// Client Credentials token for everyone (fetched once however many callers
// arrive together, refreshed before it expires and once on a 401), validates
// every call before it spends a request, answers with links that lead back
// through sluice, and turns a 429, or a 5xx with Retry-After, into a pause of
// the spotify.api bucket for every caller.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/proto"
	"github.com/sluice-dev/sluice/core/provider"
)

func main() {
	provider.Serve(func(l *slog.Logger) provider.Provider { return newSpotify(l) })
}

// Buckets. Spotify publishes no number for the Web API; it counts a rolling
// 30 s window, and 50 per 30 s keeps well inside what apps in Development
// Mode observe. Token fetches go to another host (the accounts service) and
// are not counted in the Web API's window, so they have their own bucket: a
// pause of spotify.api after a 429 does not stop a token refresh, and a
// refresh never spends a catalogue request.
const (
	bucketAPI      = "spotify.api"
	bucketAccounts = "spotify.accounts"
)

// Defaults applied when the config leaves a key out (core/config sets the
// same ones; these keep the plugin sane if run with a sparse section).
const (
	defaultAPIURL        = "https://api.spotify.com"
	defaultAccountsURL   = "https://accounts.spotify.com"
	defaultTTL           = time.Hour
	defaultRefreshMargin = 60 * time.Second
	defaultMaxRetryAfter = 60 * time.Second
	defaultTimeout       = 30 * time.Second
	defaultSearchMax     = 10
	// maxSearchLimit is the largest search limit Spotify accepts at all
	// (Extended Quota Mode); search_max_limit may not exceed it.
	maxSearchLimit = 50
)

// settings is the [providers.spotify] section as the daemon sends it: TOML
// key names, secrets resolved, durations as Go duration strings.
type settings struct {
	APIURL             string `json:"api_url"`
	AccountsURL        string `json:"accounts_url"`
	ClientID           string `json:"client_id"`
	ClientSecret       string `json:"client_secret"`
	TTL                string `json:"ttl"`
	TokenRefreshMargin string `json:"token_refresh_margin"`
	MaxRetryAfter      string `json:"max_retry_after"`
	SearchMaxLimit     int    `json:"search_max_limit"`
	DefaultMarket      string `json:"default_market"`
	Timeout            string `json:"timeout"`
}

// config is the validated, parsed settings. It is replaced whole on every
// Configure, so a call keeps one consistent view.
type config struct {
	// apiBase and accountsBase are the URLs without trailing slash; path
	// prefixes are kept, and apiBase has no trailing /v1 (Spotify's
	// version segment, which the request paths carry).
	apiBase, accountsBase string
	clientID, secret      string
	ttl, refreshMargin    time.Duration
	maxRetryAfter         time.Duration
	timeout               time.Duration
	searchMax             int
	market                string
}

// credentials identify what a token was issued for; a change invalidates
// the token and any remembered rejection.
func (c *config) credentials() string {
	return c.accountsBase + "\x00" + c.clientID + "\x00" + c.secret
}

type spotify struct {
	log    *slog.Logger
	tokens *tokenSource

	mu  sync.RWMutex
	cfg *config
}

func newSpotify(l *slog.Logger) *spotify {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &spotify{log: l, tokens: newTokenSource(l)}
}

// idSummary is the phrase every id error names.
const idSummary = "a 22-character base62 Spotify id"

func (p *spotify) Describe() *proto.Description {
	id := func(kind string) string { return "the " + kind + "'s id: " + idSummary }
	market := &proto.Param{Name: "market", Summary: "ISO 3166-1 alpha-2 country code; default_market from config when absent"}
	offset := &proto.Param{Name: "offset", Summary: "index of the first item, 0 or more"}
	ids := func(kind string, most int) *proto.Param {
		return &proto.Param{Name: "ids", Required: true, Summary: fmt.Sprintf(
			"comma-separated %s ids, 1 to %d, each %s; an unknown id answers null in its place", kind, most, idSummary)}
	}
	op := func(name, path, summary string, params ...*proto.Param) *proto.Operation {
		return &proto.Operation{Name: name, Methods: []string{http.MethodGet}, Path: path, Params: params,
			Cacheable: true, Bucket: bucketAPI, Summary: summary}
	}
	d := &proto.Description{
		Name:    "spotify",
		Version: "1",
		Operations: []*proto.Operation{
			// q is checked by the plugin, not declared required: Spotify's
			// own next links spell it "query", and those must work too.
			op("search", "v1/search", "search the catalogue: albums, artists, playlists, tracks, shows, episodes, audiobooks",
				&proto.Param{Name: "q", Summary: "search query (field filters such as artist: and year: allowed)"},
				&proto.Param{Name: "type", Required: true, Summary: "comma-separated: " + strings.Join(searchTypes, ", ")},
				market,
				&proto.Param{Name: "limit", Summary: "results per type, 1 to search_max_limit (10 in Development Mode); default 5, or search_max_limit if smaller"},
				&proto.Param{Name: "offset", Summary: "index of the first result, 0 to 1000"},
				&proto.Param{Name: "include_external", Summary: "audio"}),
			op("artist", "v1/artists/{id}", "one artist; {id} is "+id("artist")),
			op("artist.albums", "v1/artists/{id}/albums", "an artist's albums, paged; {id} is "+id("artist"),
				&proto.Param{Name: "include_groups", Summary: "comma-separated: " + strings.Join(albumGroups, ", ")},
				market,
				&proto.Param{Name: "limit", Summary: "1 to 10; default 5"},
				offset),
			op("album", "v1/albums/{id}", "one album with its first 50 tracks; {id} is "+id("album"), market),
			op("album.tracks", "v1/albums/{id}/tracks", "an album's tracks, paged; {id} is "+id("album"),
				market,
				&proto.Param{Name: "limit", Summary: "1 to 50; default 20"},
				offset),
			op("track", "v1/tracks/{id}", "one track; {id} is "+id("track"), market),
			op("tracks", "v1/tracks", "several tracks at once", ids("track", 50), market),
			op("albums", "v1/albums", "several albums at once, each with its first 50 tracks", ids("album", 20), market),
			op("artists", "v1/artists", "several artists at once", ids("artist", 50)),
		},
		Buckets: []*proto.Bucket{
			// One request on its way at a time: Spotify counts every
			// request that arrives during a Retry-After, and one sent
			// while a 429 is still coming back would. At Spotify's
			// 100-300 ms per answer that still allows 3-10 requests a
			// second, above the 50 per 30 s budget.
			{Name: bucketAPI, Requests: 50, WindowMs: 30_000, MaxInFlight: 1},
			{Name: bucketAccounts, Requests: 10, WindowMs: 30_000},
		},
		// Callers must not smuggle credentials of their own; the
		// Authorization header never reaches a plugin at all.
		CredentialParams: []string{"client_id", "client_secret", "access_token"},
	}
	p.describeCanonical(d, p.config())
	return d
}

// describeCanonical tells the host how validate rewrites parameters, so it
// keys the cache on what Spotify is sent: undocumented parameters dropped,
// query renamed q, values trimmed, market upper-cased, offset 0 named, and (once configured) the market
// and page size sent when the caller names none. With cfg nil (described
// before Configure) the defaults are left out.
// wholePattern captures a whole number without its sign and leading zeros
// (offset=00 is offset=0), as validate parses and sends it. Anything else
// is captured whole and left to validate, whose refusal says more.
const wholePattern = `[+]?0*([0-9]+)|(.*)`

func (p *spotify) describeCanonical(d *proto.Description, cfg *config) {
	for _, op := range d.GetOperations() {
		op.DropUnknownParams = true
		rule := rules[op.GetName()]
		params := make([]*proto.Param, 0, len(op.GetParams()))
		for _, ps := range op.GetParams() {
			// A copy: the market and offset Params are shared by
			// several operations, and their defaults differ.
			ps = &proto.Param{Name: ps.GetName(), Required: ps.GetRequired(), Summary: ps.GetSummary(), Pattern: ps.GetPattern(),
				// validate trims every value it sends.
				TrimSpace: true}
			switch ps.GetName() {
			case "q":
				if op.GetName() == "search" {
					ps.Aliases = []string{"query"}
				}
			case "offset":
				// Spotify's own href and previous links spell out
				// offset=0: the first page is one entry either way.
				ps.DefaultValue = "0"
				ps.Pattern = wholePattern
			case "market":
				ps.Upper = true
				if cfg != nil && rule.market {
					ps.DefaultValue = cfg.market
				}
			case "limit":
				ps.Pattern = wholePattern
				if cfg != nil && rule.maxLimit != 0 {
					maxLimit := rule.maxLimit
					if maxLimit < 0 {
						maxLimit = cfg.searchMax
					}
					ps.DefaultValue = strconv.Itoa(min(rule.defLimit, maxLimit))
				}
			}
			params = append(params, ps)
		}
		op.Params = params
	}
}

func (p *spotify) Configure(_ context.Context, raw []byte) error {
	cfg, err := parseConfig(raw)
	if err != nil {
		return err
	}
	p.mu.Lock()
	old := p.cfg
	p.cfg = cfg
	p.mu.Unlock()
	if old == nil || old.credentials() != cfg.credentials() {
		// New credentials: forget the token and any rejection of the old
		// ones, so fixing a secret and reloading is enough.
		p.tokens.reset()
	}
	return nil
}

func parseConfig(raw []byte) (*config, error) {
	var s settings
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("spotify config: %w", err)
	}
	cfg := &config{clientID: s.ClientID, secret: s.ClientSecret, searchMax: s.SearchMaxLimit}
	var err error
	if cfg.apiBase, err = baseURL("api_url", s.APIURL, defaultAPIURL); err != nil {
		return nil, err
	}
	// The OpenAPI description's base URL ends in /v1, and copying it into
	// api_url is an easy mistake: the plugin's paths carry /v1 themselves,
	// so requests would go to /v1/v1/... and every one would be a 404.
	cfg.apiBase = strings.TrimSuffix(cfg.apiBase, "/v1")
	if cfg.accountsBase, err = baseURL("accounts_url", s.AccountsURL, defaultAccountsURL); err != nil {
		return nil, err
	}
	if cfg.clientID == "" || cfg.secret == "" {
		return nil, fmt.Errorf("spotify config: client_id and client_secret are required")
	}
	durations := []struct {
		key string
		in  string
		out *time.Duration
		def time.Duration
	}{
		{"ttl", s.TTL, &cfg.ttl, defaultTTL},
		{"token_refresh_margin", s.TokenRefreshMargin, &cfg.refreshMargin, defaultRefreshMargin},
		{"max_retry_after", s.MaxRetryAfter, &cfg.maxRetryAfter, defaultMaxRetryAfter},
		{"timeout", s.Timeout, &cfg.timeout, defaultTimeout},
	}
	for _, d := range durations {
		*d.out = d.def
		if d.in == "" {
			continue
		}
		v, err := time.ParseDuration(d.in)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("spotify config: %s must be a positive duration, not %q", d.key, d.in)
		}
		*d.out = v
	}
	if cfg.searchMax == 0 {
		cfg.searchMax = defaultSearchMax
	}
	if cfg.searchMax < 1 || cfg.searchMax > maxSearchLimit {
		return nil, fmt.Errorf("spotify config: search_max_limit must be 1 to %d (10 in Development Mode, up to 50 with Extended Quota)", maxSearchLimit)
	}
	if m := strings.ToUpper(strings.TrimSpace(s.DefaultMarket)); m != "" {
		if !marketRE.MatchString(m) {
			return nil, fmt.Errorf("spotify config: default_market must be an ISO 3166-1 alpha-2 country code, not %q", s.DefaultMarket)
		}
		cfg.market = m
	}
	return cfg, nil
}

// baseURL checks an absolute http(s) URL and drops a trailing slash; a path
// prefix stays.
func baseURL(key, v, def string) (string, error) {
	if v == "" {
		v = def
	}
	u, err := url.Parse(strings.TrimRight(v, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("spotify config: %s must be an absolute http(s) URL without query, not %q", key, v)
	}
	return u.String(), nil
}

func (p *spotify) config() *config {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.cfg
}

var marketRE = regexp.MustCompile(`^[A-Z]{2}$`)

func (p *spotify) Call(ctx context.Context, req *provider.Request, w *provider.ResponseWriter, up *provider.Upstream) error {
	return p.serve(ctx, req, w, up)
}

// Tests substitute fakes that reach the simulator directly.
type answerWriter = provider.AnswerWriter

// upstream is provider.Sender plus Refusal: a token request is not spent on
// a call the pause of spotify.api will refuse anyway.
type upstream interface {
	provider.Sender
	AwaitPause(ctx context.Context, bucket string) (context.Context, error)
}

func (p *spotify) serve(ctx context.Context, req *provider.Request, w answerWriter, up upstream) error {
	cfg := p.config()
	if cfg == nil {
		return problem.New(http.StatusServiceUnavailable, "spotify provider not configured")
	}
	// Everything checkable is checked before a token or a request is spent.
	path, params, err := validate(req, cfg)
	if err != nil {
		return err
	}
	up.SetTimeout(cfg.timeout)
	res, err := p.fetch(ctx, cfg, up, path, params)
	if err != nil {
		return err
	}
	if res.status/100 == 2 {
		// Only the documented JSON is Spotify's answer: anything else under
		// a 2xx (a captive portal, a cut body) would be cached as one.
		if err := checkShape(req.Operation, params, res.body); err != nil {
			p.log.Warn("Spotify's 2xx answer is not the documented JSON; not relayed or cached",
				"operation", req.Operation, "status", res.status, "content_type", res.contentType, "bytes", len(res.body), "why", err.Error())
			return problem.New(http.StatusBadGateway, fmt.Sprintf(
				"Spotify answered HTTP %d with a body that is not the JSON the Web API documents for %s (%v); not cached", res.status, req.Operation, err))
		}
	}
	h := http.Header{"Content-Type": {res.contentType}}
	hint := provider.CacheHint{Outcome: fmt.Sprintf("spotify:%d", res.status)}
	body := res.body
	if res.status == http.StatusOK {
		hint.Cacheable, hint.TTL = true, cfg.ttl
		public := req.PublicBase
		if public == "" {
			public = "http://sluice/v1/spotify"
		}
		// Links must lead back through sluice, or a client that follows
		// next would talk to Spotify without credentials or rate limit.
		body = rewriteLinks(body, linkBases(cfg.apiBase, strings.TrimRight(public, "/")))
	}
	if err := w.WriteHead(res.status, h, hint); err != nil {
		return err
	}
	_, err = w.Write(body)
	return err
}
