// Package config loads, validates and watches sluice's TOML configuration
// file.
//
// Loading is strict: unknown keys (including keys whose case differs from the
// documented spelling), TOML syntax errors, values of the wrong type and
// values failing validation are all errors, each reported as an *Error
// carrying the file, line and key, so a typo never silently falls back to a
// default. A file that sets no key at all (empty, or comments only) is
// refused too: that is what a file being rewritten looks like for a moment.
// Keys absent from the file take the defaults that Default returns;
// the annotated example at the repository root (config.toml) lists every key.
//
// Credentials are Secret values. They may be written inline, as "env:NAME" or
// as "file:PATH" and are resolved at load time; no rendering of a Config
// (fmt, JSON, slog) ever shows them.
//
// Watch reports changes to the file so the daemon can reload; it is robust to
// the ways files get replaced in practice (editors' rename-over, sed -i,
// Kubernetes ConfigMap symlink swaps). Callers compare Hash of the new bytes
// with the old to skip reloads that changed nothing.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration. Every field holds a usable value after
// Parse or Default: absent keys carry their defaults.
type Config struct {
	// Path is the file the config was loaded from ("" for Default).
	Path string `toml:"-" json:"path,omitempty"`
	// switchedOff lists the providers whose table says enabled = false in
	// so many words (sandbox mode enables the others).
	switchedOff map[string]bool

	Socket     string   `toml:"socket" json:"socket"`
	SocketMode FileMode `toml:"socket_mode" json:"socket_mode"`
	StateDir   string   `toml:"state_dir" json:"state_dir"`
	// PluginDir is where provider plugin binaries live; empty means the
	// directory of the sluice executable.
	PluginDir string `toml:"plugin_dir" json:"plugin_dir"`
	// LogLevel is one of debug, info, warn, error (lower-cased on load).
	LogLevel string `toml:"log_level" json:"log_level"`
	// AccessLog says which requests get an access-log line: "all",
	// "misses" (every request but cache hits) or "off".
	AccessLog string `toml:"access_log" json:"access_log"`
	// MaxConnections caps the socket connections open at once; 0 derives
	// it from the process's file-descriptor limit (see the daemon).
	MaxConnections int `toml:"max_connections" json:"max_connections"`

	// HTTPListen is an optional TCP address ("127.0.0.1:8750") served
	// besides the socket, for clients that can only be given a base URL.
	// Empty: off. It must be loopback unless HTTPListenAllowRemote.
	HTTPListen            string `toml:"http_listen" json:"http_listen,omitempty"`
	HTTPListenAllowRemote bool   `toml:"http_listen_allow_remote" json:"http_listen_allow_remote,omitempty"`
	// HTTPHosts are further names a TCP caller may put in Host (besides
	// the listener's own address and localhost); any other Host is a DNS
	// rebinding attempt and gets 421.
	HTTPHosts []string `toml:"http_hosts" json:"http_hosts,omitempty"`
	// HTTPLevel is the tier of a TCP caller whose uid the kernel cannot
	// name (none, read or admin; lower-cased on load).
	HTTPLevel string `toml:"http_level" json:"http_level"`
	// HTTPAdminToken, when set, grants admin on the TCP listener to a
	// caller sending "Authorization: Bearer <token>".
	HTTPAdminToken Secret `toml:"http_admin_token" json:"http_admin_token"`

	Scheduler Scheduler `toml:"scheduler" json:"scheduler"`
	Cache     Cache     `toml:"cache" json:"cache"`
	Providers Providers `toml:"providers" json:"providers"`
	// Fleet shares rate budgets with other daemons through Redis; absent,
	// this daemon runs alone.
	Fleet  Fleet  `toml:"fleet" json:"fleet"`
	Access Access `toml:"access" json:"access"`
}

// Scheduler configures the per-upstream rate-limit scheduler.
type Scheduler struct {
	// Margin is added to every rate-limit window as a safety gap against
	// clock skew between us and the upstream.
	Margin Duration `toml:"margin" json:"margin"`
	// MaxWait is the longest a request queues for rate budget before it is
	// answered 429 (callers may ask for less).
	MaxWait Duration `toml:"max_wait" json:"max_wait"`
}

// Cache configures the response cache.
type Cache struct {
	MaxSize    Size     `toml:"max_size" json:"max_size"`
	DefaultTTL Duration `toml:"default_ttl" json:"default_ttl"`
	// ExpiryMargin: an answer is dropped this long before the earliest expiry
	// of any link inside it, so a client never receives an already dead link.
	ExpiryMargin Duration `toml:"expiry_margin" json:"expiry_margin"`
}

// Providers holds one section per upstream. The sections are values, not
// pointers: a section absent from the file simply has its defaults.
type Providers struct {
	Ineo    Ineo    `toml:"ineo" json:"ineo"`
	Hellorf Hellorf `toml:"hellorf" json:"hellorf"`
	Spotify Spotify `toml:"spotify" json:"spotify"`
}

// Fleet configures fleet mode (see core/fleet and docs/fleet.md).
type Fleet struct {
	// RedisURL is redis://, rediss:// or unix:///path?db=N; a secret (it
	// may hold a password): inline, env: or file:.
	RedisURL Secret `toml:"redis_url" json:"redis_url"`
	// SentinelAddrs and MasterName select a Sentinel-managed master
	// instead of RedisURL.
	SentinelAddrs []string `toml:"sentinel_addrs" json:"sentinel_addrs,omitempty"`
	MasterName    string   `toml:"master_name" json:"master_name,omitempty"`
	// ClusterAddrs are seed nodes of a Redis Cluster, instead of RedisURL.
	ClusterAddrs []string `toml:"cluster_addrs" json:"cluster_addrs,omitempty"`
	// Username, Password and TLS log in to the master (Sentinel) or the
	// nodes (Cluster); a redis_url carries its own. Password is a secret.
	Username string `toml:"username" json:"username,omitempty"`
	Password Secret `toml:"password" json:"password"`
	TLS      bool   `toml:"tls" json:"tls,omitempty"`
	// SentinelUsername and SentinelPassword log in to the Sentinels
	// themselves (their requirepass or ACL user), which may differ from
	// the master's. SentinelPassword is a secret.
	SentinelUsername string `toml:"sentinel_username" json:"sentinel_username,omitempty"`
	SentinelPassword Secret `toml:"sentinel_password" json:"sentinel_password"`
	// Name prefixes every key: two fleets can share one Redis.
	Name string `toml:"name" json:"name"`
}

// Enabled reports whether a [fleet] store is configured.
func (f Fleet) Enabled() bool {
	return f.RedisURL.IsSet() || len(f.SentinelAddrs) > 0 || len(f.ClusterAddrs) > 0
}

// Ineo configures the iNeo provider (Spotify download links and Telegram
// account management).
type Ineo struct {
	Enabled     bool   `toml:"enabled" json:"enabled"`
	BaseURL     string `toml:"base_url" json:"base_url"`
	AccessKey   Secret `toml:"access_key" json:"access_key"`
	TmanageAuth Secret `toml:"tmanage_auth" json:"tmanage_auth"`
	// LinkTTL is how long a download link from spotify.php stays valid.
	LinkTTL            Duration   `toml:"link_ttl" json:"link_ttl"`
	AllowDeleteAccount bool       `toml:"allow_delete_account" json:"allow_delete_account"`
	PluginSHA256       string     `toml:"plugin_sha256" json:"plugin_sha256,omitempty"`
	Timeout            Duration   `toml:"timeout" json:"timeout"`
	Limits             IneoLimits `toml:"limits" json:"limits"`
	// StaleIfExhausted keeps answers this long past their freshness, to be
	// served when the budget cannot give a fresh one in time (0: off, the
	// default: iNeo's answers are download links that expire).
	StaleIfExhausted Duration `toml:"stale_if_exhausted" json:"stale_if_exhausted"`
}

// IneoLimits overrides iNeo's per-service rate limits; nil means the
// plugin's built-in defaults (6 per 7s for spotify, 10 per 11s for tmanage).
type IneoLimits struct {
	Spotify *Limit `toml:"spotify" json:"spotify,omitempty"`
	Tmanage *Limit `toml:"tmanage" json:"tmanage,omitempty"`
}

// APILimits overrides a provider's single API rate limit; nil means the
// plugin's built-in default.
type APILimits struct {
	API *Limit `toml:"api" json:"api,omitempty"`
}

// SpotifyLimits overrides the Spotify buckets: the Web API's and the token
// endpoint's (another host, counted apart).
type SpotifyLimits struct {
	API      *Limit `toml:"api" json:"api,omitempty"`
	Accounts *Limit `toml:"accounts" json:"accounts,omitempty"`
}

// Hellorf configures the hellorf (zcool) music licensing provider.
type Hellorf struct {
	Enabled bool `toml:"enabled" json:"enabled"`
	// BaseURL is per customer (from the vendor's onboarding), so it has no
	// default and is required when the provider is enabled.
	BaseURL       string   `toml:"base_url" json:"base_url"`
	ClientID      Secret   `toml:"client_id" json:"client_id"`
	ClientSecret  Secret   `toml:"client_secret" json:"client_secret"`
	AllowPurchase bool     `toml:"allow_purchase" json:"allow_purchase"`
	CategoriesTTL Duration `toml:"categories_ttl" json:"categories_ttl"`
	// PurchaseGuard is the window within which an identical purchase is
	// refused as a probable duplicate (purchases spend money).
	PurchaseGuard Duration  `toml:"purchase_guard" json:"purchase_guard"`
	PluginSHA256  string    `toml:"plugin_sha256" json:"plugin_sha256,omitempty"`
	Timeout       Duration  `toml:"timeout" json:"timeout"`
	SearchTTL     Duration  `toml:"search_ttl" json:"search_ttl"`
	Limits        APILimits `toml:"limits" json:"limits"`
	// StaleIfExhausted: as for iNeo; off by default (hellorf's answers
	// carry 10-minute links, which bound any stale answer anyway).
	StaleIfExhausted Duration `toml:"stale_if_exhausted" json:"stale_if_exhausted"`
}

// Spotify configures the Spotify Web API provider.
type Spotify struct {
	Enabled            bool     `toml:"enabled" json:"enabled"`
	APIURL             string   `toml:"api_url" json:"api_url"`
	AccountsURL        string   `toml:"accounts_url" json:"accounts_url"`
	ClientID           Secret   `toml:"client_id" json:"client_id"`
	ClientSecret       Secret   `toml:"client_secret" json:"client_secret"`
	TTL                Duration `toml:"ttl" json:"ttl"`
	TokenRefreshMargin Duration `toml:"token_refresh_margin" json:"token_refresh_margin"`
	MaxRetryAfter      Duration `toml:"max_retry_after" json:"max_retry_after"`
	// DefaultMarket is an ISO 3166-1 alpha-2 country code (upper-cased on
	// load), or empty.
	DefaultMarket  string        `toml:"default_market" json:"default_market,omitempty"`
	SearchMaxLimit int           `toml:"search_max_limit" json:"search_max_limit"`
	PluginSHA256   string        `toml:"plugin_sha256" json:"plugin_sha256,omitempty"`
	Timeout        Duration      `toml:"timeout" json:"timeout"`
	Limits         SpotifyLimits `toml:"limits" json:"limits"`
	// StaleIfExhausted: as for iNeo; one hour by default, because a
	// Spotify 429 can last hours and catalogue answers carry no expiring
	// links.
	StaleIfExhausted Duration `toml:"stale_if_exhausted" json:"stale_if_exhausted"`
}

// Access adds users and groups to the socket's permission tiers (see
// core/access); root, the daemon's uid (admin) and the socket's group (read)
// need no listing.
type Access struct {
	ReadUIDs  []uint32 `toml:"read_uids" json:"read_uids,omitempty"`
	ReadGIDs  []uint32 `toml:"read_gids" json:"read_gids,omitempty"`
	AdminUIDs []uint32 `toml:"admin_uids" json:"admin_uids,omitempty"`
	AdminGIDs []uint32 `toml:"admin_gids" json:"admin_gids,omitempty"`
}

func dur(d time.Duration) Duration { return Duration{d} }

// Default returns the configuration used when the file sets nothing. Socket
// and StateDir depend on the effective uid and the XDG environment.
func Default() *Config {
	return &Config{
		Socket:     DefaultSocket(),
		SocketMode: 0o660,
		StateDir:   DefaultStateDir(),
		LogLevel:   "info",
		AccessLog:  "misses",
		HTTPLevel:  "none",
		Scheduler: Scheduler{
			Margin:  dur(250 * time.Millisecond),
			MaxWait: dur(2 * time.Minute),
		},
		Cache: Cache{
			MaxSize:      64 << 20,
			DefaultTTL:   dur(time.Hour),
			ExpiryMargin: dur(30 * time.Second),
		},
		Providers: Providers{
			Ineo: Ineo{
				Enabled: true,
				BaseURL: "https://api.ineo-team.ir",
				LinkTTL: dur(10 * time.Minute),
				Timeout: dur(30 * time.Second),
			},
			Hellorf: Hellorf{
				CategoriesTTL: dur(24 * time.Hour),
				PurchaseGuard: dur(10 * time.Minute),
				Timeout:       dur(30 * time.Second),
				SearchTTL:     dur(10 * time.Minute),
			},
			Spotify: Spotify{
				APIURL:             "https://api.spotify.com",
				AccountsURL:        "https://accounts.spotify.com",
				TTL:                dur(time.Hour),
				TokenRefreshMargin: dur(60 * time.Second),
				MaxRetryAfter:      dur(60 * time.Second),
				SearchMaxLimit:     10,
				Timeout:            dur(30 * time.Second),
				StaleIfExhausted:   dur(time.Hour),
			},
		},
	}
}

// Hash returns the hex SHA-256 of data, so the daemon can skip reloads whose
// content did not change.
func Hash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Load reads and parses the file at path. It returns the raw bytes whenever
// the file could be read, even if parsing failed, so a caller can remember
// the hash of a broken file and not complain about it again until it changes.
func Load(path string) (*Config, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, &Error{File: path, Msg: fmt.Sprintf("cannot read config file: %v", unwrapPath(err)), Err: err}
	}
	cfg, err := Parse(data, path)
	return cfg, data, err
}

// Parse parses and validates config data; path is used in error messages,
// stored in Config.Path, and anchors relative "file:" secret paths. The
// returned error is an *Error or an errors.Join of several.
func Parse(data []byte, path string) (*Config, error) {
	ix := indexKeys(data)

	// Parse alone first: it tells syntax errors (whose message may quote file
	// text) apart from decode errors (whose message we produce or know).
	var raw map[string]any
	rawMD, err := toml.Decode(string(data), &raw)
	if err != nil {
		return nil, syntaxError(path, data, ix, err)
	}

	if len(raw) == 0 {
		// A file truncated before being rewritten (": > config.toml", an
		// editor, "gen > config.toml") reads like this for a moment; loaded,
		// it would switch hellorf and Spotify off, purge the cache and drop
		// iNeo's credentials.
		return nil, &Error{File: path, Msg: emptyConfigMsg}
	}

	cfg := Default()
	cfg.Path = path
	md, err := toml.Decode(string(data), cfg)
	if err != nil {
		return nil, decodeErrors(path, data, ix, rawMD, err)
	}

	for _, name := range []string{"ineo", "hellorf", "spotify"} {
		if md.IsDefined("providers", name, "enabled") {
			if v, _ := raw["providers"].(map[string]any)[name].(map[string]any)["enabled"].(bool); !v {
				if cfg.switchedOff == nil {
					cfg.switchedOff = map[string]bool{}
				}
				cfg.switchedOff[name] = true
			}
		}
	}

	var errs []*Error
	add := func(key, msg string) {
		errs = append(errs, &Error{File: path, Line: ix.line(key), Key: key, Msg: msg})
	}
	for _, u := range unknownKeys(md) {
		add(u.key, u.msg)
	}
	for _, f := range cfg.normalizeAndValidate() {
		add(f.key, f.msg)
	}
	for _, f := range cfg.resolveSecrets(secretBaseDir(path)) {
		add(f.key, f.msg)
	}
	if err := joinErrors(errs); err != nil {
		return nil, err
	}
	return cfg, nil
}

// SwitchedOff reports whether the file says enabled = false for provider in
// so many words, as opposed to leaving it at its default.
func (c *Config) SwitchedOff(provider string) bool { return c.switchedOff[provider] }

// emptyConfigMsg refuses a file that sets nothing; every config sluice
// accepts names at least one key.
const emptyConfigMsg = "the file sets no keys (it is empty or holds only comments); " +
	"refused, because a file caught mid-rewrite looks the same. " +
	"To run on the defaults, set any key, e.g. log_level = \"info\""

func secretBaseDir(path string) string {
	if path == "" {
		return "."
	}
	return filepath.Dir(path)
}

// InlineSecrets reports whether any secret is written inline in the file
// (rather than as env: or file:), in which case the file itself must be kept
// private.
func (c *Config) InlineSecrets() bool {
	for _, s := range c.secrets() {
		if s.secret.kind == secretInline {
			return true
		}
	}
	return false
}

// Level returns LogLevel as a slog.Level (info if unrecognised, which
// validation prevents).
func (c *Config) Level() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return slog.LevelInfo
	}
	return l
}

type namedSecret struct {
	key     string
	secret  *Secret
	enabled bool
	// required: the provider cannot work at all without it.
	required bool
}

func (c *Config) secrets() []namedSecret {
	p := &c.Providers
	return []namedSecret{
		// Resolved whenever set: systemd may activate the TCP listener
		// without http_listen, and a reference that cannot be read is
		// a mistake to report either way.
		{"http_admin_token", &c.HTTPAdminToken, true, false},
		// iNeo's two tokens serve two services: either alone is useful,
		// and a call needing the missing one is answered 503.
		{"providers.ineo.access_key", &p.Ineo.AccessKey, p.Ineo.Enabled, false},
		{"providers.ineo.tmanage_auth", &p.Ineo.TmanageAuth, p.Ineo.Enabled, false},
		{"providers.hellorf.client_id", &p.Hellorf.ClientID, p.Hellorf.Enabled, true},
		{"providers.hellorf.client_secret", &p.Hellorf.ClientSecret, p.Hellorf.Enabled, true},
		{"providers.spotify.client_id", &p.Spotify.ClientID, p.Spotify.Enabled, true},
		{"providers.spotify.client_secret", &p.Spotify.ClientSecret, p.Spotify.Enabled, true},
		{"fleet.redis_url", &c.Fleet.RedisURL, true, false},
		{"fleet.password", &c.Fleet.Password, true, false},
		{"fleet.sentinel_password", &c.Fleet.SentinelPassword, true, false},
	}
}

// resolveSecrets resolves env: and file: references of enabled providers. A
// disabled provider's references are left alone: its credentials are not
// needed, and e.g. systemd may not provide a credential for it at all.
func (c *Config) resolveSecrets(baseDir string) []fieldErr {
	var errs []fieldErr
	for _, s := range c.secrets() {
		if !s.enabled {
			continue
		}
		if err := s.secret.resolve(baseDir); err != nil {
			errs = append(errs, fieldErr{s.key, err.Error()})
			continue
		}
		// Caught here rather than by the plugin: a reload would otherwise
		// retire the working plugin and report success while the provider
		// ends up failed.
		if s.required && !s.secret.IsSet() {
			errs = append(errs, fieldErr{s.key, "required when the provider is enabled"})
		}
	}
	return errs
}

// DefaultSocket is the socket path used when neither the config file nor the
// command line names one: /run/sluice/sluice.sock for root, else
// $XDG_RUNTIME_DIR/sluice/sluice.sock, else a per-uid directory under the
// system temp dir.
func DefaultSocket() string {
	uid := os.Geteuid()
	if uid == 0 {
		return "/run/sluice/sluice.sock"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(d) {
		return filepath.Join(d, "sluice", "sluice.sock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("sluice-%d", uid), "sluice.sock")
}

// DefaultStateDir is $STATE_DIRECTORY when systemd sets it (the unit's
// StateDirectory=, as the system service runs as user sluice), else
// /var/lib/sluice for root, else $XDG_STATE_HOME/sluice, else
// ~/.local/state/sluice.
func DefaultStateDir() string {
	// systemd may list several, colon-separated; the first is ours.
	if d, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":"); filepath.IsAbs(d) {
		return d
	}
	uid := os.Geteuid()
	if uid == 0 {
		return "/var/lib/sluice"
	}
	// The XDG spec says relative values must be ignored.
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "sluice")
	}
	if home, err := os.UserHomeDir(); err == nil && filepath.IsAbs(home) {
		return filepath.Join(home, ".local", "state", "sluice")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("sluice-%d", uid), "state")
}

// fieldErr is a validation problem before it is located in the file.
type fieldErr struct {
	key string
	msg string
}

// trimSlash removes trailing slashes so plugins can append "/v1/..." safely.
func trimSlash(s string) string { return strings.TrimRight(s, "/") }
