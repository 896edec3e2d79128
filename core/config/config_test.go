package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

const examplePath = "../../config.toml"

// allErrors flattens an error tree into its *Error leaves.
func allErrors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if ce, ok := e.(*Error); ok {
			out = append(out, ce)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		walk(errors.Unwrap(e))
	}
	walk(err)
	return out
}

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	cfg, err := Parse([]byte(src), filepath.Join(t.TempDir(), "config.toml"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

func TestExampleConfigLoadsAndMatchesDefaults(t *testing.T) {
	cfg, raw, err := Load(examplePath)
	if err != nil {
		t.Fatalf("example config does not load: %v", err)
	}
	if len(raw) == 0 {
		t.Fatal("Load returned no raw bytes")
	}
	want := Default()
	want.Path = examplePath
	// The example documents the defaults; if code and docs drift apart, this
	// fails.
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("example config differs from Default():\n got %+v\nwant %+v", cfg, want)
	}
	if cfg.InlineSecrets() {
		t.Error("example config must not contain inline secrets")
	}
}

// commentedKeyRE matches the example's commented-out settings ("# key = v",
// "# [table]") as opposed to prose.
var commentedKeyRE = regexp.MustCompile(`^# ?((?:[a-z0-9_]+ = |\[).*)$`)

// TestExampleConfigCoversEveryKey uncomments every commented-out setting of
// the example, checks that the result is a valid config, and that together
// the set and commented keys cover every key of the schema.
func TestExampleConfigCoversEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for l := range strings.SplitSeq(string(data), "\n") {
		if m := commentedKeyRE.FindStringSubmatch(l); m != nil {
			l = m[1]
		}
		lines = append(lines, l)
	}
	full := strings.Join(lines, "\n")

	// Resolve the example references the uncommented file now contains.
	dir := t.TempDir()
	for _, m := range regexp.MustCompile(`"env:([A-Z0-9_]+)"`).FindAllStringSubmatch(full, -1) {
		t.Setenv(m[1], "x-"+m[1])
	}
	for _, m := range regexp.MustCompile(`"file:([^"]+)"`).FindAllStringSubmatch(full, -1) {
		if err := os.WriteFile(filepath.Join(dir, m[1]), []byte("secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	path := filepath.Join(dir, "config.toml")
	// [fleet] lists three ways to reach Redis, one of them at a time: the
	// file that must load takes the Sentinel one, whose logins are the
	// most keys.
	loadable := regexp.MustCompile(`(?m)^(redis_url|cluster_addrs) = .*$`).ReplaceAllString(full, "")
	if err := os.WriteFile(path, []byte(loadable), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(path); err != nil {
		t.Fatalf("uncommented example does not load: %v\n%s", err, loadable)
	}

	var m map[string]any
	if _, err := toml.Decode(full, &m); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	var flatten func(prefix string, v any)
	flatten = func(prefix string, v any) {
		if mm, ok := v.(map[string]any); ok {
			for k, vv := range mm {
				flatten(strings.TrimPrefix(prefix+"."+k, "."), vv)
			}
			return
		}
		have[prefix] = true
	}
	flatten("", m)
	for _, k := range schemaLeaves(reflect.TypeFor[Config](), "") {
		if !have[k] {
			t.Errorf("config.toml does not document key %s", k)
		}
	}
}

func schemaLeaves(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(unmarshalerType) {
		return []string{prefix}
	}
	var out []string
	for f := range t.Fields() {
		name := tomlName(f)
		if name == "" {
			continue
		}
		out = append(out, schemaLeaves(f.Type, strings.TrimPrefix(prefix+"."+name, "."))...)
	}
	return out
}

func TestDefaults(t *testing.T) {
	// One key set to its default: a file setting no key is refused.
	cfg := mustParse(t, "log_level = \"info\"\n")
	want := Default()
	want.Path = cfg.Path
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("empty file != Default():\n got %+v\nwant %+v", cfg, want)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"socket_mode 0660", cfg.SocketMode == 0o660},
		{"log_level info", cfg.LogLevel == "info"},
		{"plugin_dir empty", cfg.PluginDir == ""},
		{"scheduler.margin 250ms", cfg.Scheduler.Margin.Duration == 250*time.Millisecond},
		{"scheduler.max_wait 2m", cfg.Scheduler.MaxWait.Duration == 2*time.Minute},
		{"cache.max_size 64MiB", cfg.Cache.MaxSize == 64<<20},
		{"cache.default_ttl 1h", cfg.Cache.DefaultTTL.Duration == time.Hour},
		{"cache.expiry_margin 30s", cfg.Cache.ExpiryMargin.Duration == 30*time.Second},
		{"ineo enabled", cfg.Providers.Ineo.Enabled},
		{"ineo base_url", cfg.Providers.Ineo.BaseURL == "https://api.ineo-team.ir"},
		{"ineo link_ttl 10m", cfg.Providers.Ineo.LinkTTL.Duration == 10*time.Minute},
		{"ineo timeout 30s", cfg.Providers.Ineo.Timeout.Duration == 30*time.Second},
		{"ineo no delete", !cfg.Providers.Ineo.AllowDeleteAccount},
		{"ineo limits nil", cfg.Providers.Ineo.Limits.Spotify == nil && cfg.Providers.Ineo.Limits.Tmanage == nil},
		{"hellorf disabled", !cfg.Providers.Hellorf.Enabled},
		{"hellorf no purchase", !cfg.Providers.Hellorf.AllowPurchase},
		{"hellorf categories_ttl 24h", cfg.Providers.Hellorf.CategoriesTTL.Duration == 24*time.Hour},
		{"hellorf purchase_guard 10m", cfg.Providers.Hellorf.PurchaseGuard.Duration == 10*time.Minute},
		{"hellorf search_ttl 10m", cfg.Providers.Hellorf.SearchTTL.Duration == 10*time.Minute},
		{"hellorf limits nil", cfg.Providers.Hellorf.Limits.API == nil},
		{"spotify disabled", !cfg.Providers.Spotify.Enabled},
		{"spotify api_url", cfg.Providers.Spotify.APIURL == "https://api.spotify.com"},
		{"spotify accounts_url", cfg.Providers.Spotify.AccountsURL == "https://accounts.spotify.com"},
		{"spotify ttl 1h", cfg.Providers.Spotify.TTL.Duration == time.Hour},
		{"spotify token_refresh_margin 60s", cfg.Providers.Spotify.TokenRefreshMargin.Duration == time.Minute},
		{"spotify max_retry_after 60s", cfg.Providers.Spotify.MaxRetryAfter.Duration == time.Minute},
		{"spotify search_max_limit 10", cfg.Providers.Spotify.SearchMaxLimit == 10},
		{"spotify timeout 30s", cfg.Providers.Spotify.Timeout.Duration == 30*time.Second},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("default %s does not hold", c.name)
		}
	}
}

func TestDefaultPaths(t *testing.T) {
	root := os.Geteuid() == 0
	tests := []struct {
		name             string
		runtime, state   string
		wantSock, wantSt string
	}{
		{"xdg set", "/run/user/1234", "/home/u/.state", "/run/user/1234/sluice/sluice.sock", "/home/u/.state/sluice"},
		{"xdg unset", "", "", filepath.Join(os.TempDir(), "sluice-"+strconv.Itoa(os.Geteuid()), "sluice.sock"), ""},
		{"xdg relative is ignored", "rel/dir", "rel/state", filepath.Join(os.TempDir(), "sluice-"+strconv.Itoa(os.Geteuid()), "sluice.sock"), ""},
		// systemd's StateDirectory= wins over everything, root or not.
		{"systemd state directory", "", "", filepath.Join(os.TempDir(), "sluice-"+strconv.Itoa(os.Geteuid()), "sluice.sock"), "/var/lib/sluice:/var/lib/other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("XDG_RUNTIME_DIR", tt.runtime)
			t.Setenv("XDG_STATE_HOME", tt.state)
			t.Setenv("HOME", "/home/someone")
			t.Setenv("STATE_DIRECTORY", "")
			wantSock, wantState := tt.wantSock, tt.wantSt
			if wantState == "" {
				wantState = "/home/someone/.local/state/sluice"
			}
			if root {
				wantSock, wantState = "/run/sluice/sluice.sock", "/var/lib/sluice"
			}
			if dirs, ok := strings.CutPrefix(tt.wantSt, "/var/lib/sluice:"); ok {
				t.Setenv("STATE_DIRECTORY", "/var/lib/sluice:"+dirs)
				wantState = "/var/lib/sluice"
			}
			if got := DefaultSocket(); got != wantSock {
				t.Errorf("DefaultSocket() = %q, want %q", got, wantSock)
			}
			if got := DefaultStateDir(); got != wantState {
				t.Errorf("DefaultStateDir() = %q, want %q", got, wantState)
			}
			cfg := mustParse(t, `socket = ""`+"\n"+`state_dir = ""`)
			if cfg.Socket != wantSock || cfg.StateDir != wantState {
				t.Errorf("empty socket/state_dir not defaulted: %q %q", cfg.Socket, cfg.StateDir)
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		check func(*Config) bool
	}{
		{"top level", `
socket = "/tmp/x/s.sock"
socket_mode = "0600"
state_dir = "/var/tmp/st"
plugin_dir = "/opt/sluice/plugins"
log_level = "DEBUG"`, func(c *Config) bool {
			return c.Socket == "/tmp/x/s.sock" && c.SocketMode == 0o600 && c.StateDir == "/var/tmp/st" &&
				c.PluginDir == "/opt/sluice/plugins" && c.LogLevel == "debug" && c.Level().String() == "DEBUG"
		}},
		{"0o mode", `socket_mode = "0o640"`, func(c *Config) bool { return c.SocketMode.Perm() == 0o640 }},
		{"scheduler and cache", `
[scheduler]
margin = "0s"
max_wait = "1h30m"
[providers.ineo]
enabled = false
[cache]
max_size = "1.5GiB"
default_ttl = "2m"
expiry_margin = "0s"`, func(c *Config) bool {
			return c.Scheduler.Margin.Duration == 0 && c.Scheduler.MaxWait.Duration == 90*time.Minute &&
				c.Cache.MaxSize == 3<<29 && c.Cache.DefaultTTL.Duration == 2*time.Minute
		}},
		{"size as integer", "[cache]\nmax_size = 1024", func(c *Config) bool { return c.Cache.MaxSize == 1024 }},
		{"ineo limits", `
[providers.ineo]
enabled = false
base_url = "http://127.0.0.1:8080/ineo/"
allow_delete_account = true
plugin_sha256 = "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789"
[providers.ineo.limits.spotify]
requests = 5
window = "8s"
[providers.ineo.limits.tmanage]
requests = 9
window = "12s"`, func(c *Config) bool {
			i := c.Providers.Ineo
			return !i.Enabled && i.BaseURL == "http://127.0.0.1:8080/ineo" && i.AllowDeleteAccount &&
				i.PluginSHA256 == strings.ToLower("ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789") &&
				*i.Limits.Spotify == Limit{Requests: 5, Window: dur(8 * time.Second)} && *i.Limits.Tmanage == Limit{Requests: 9, Window: dur(12 * time.Second)}
		}},
		{"dotted and inline limits", `
providers.ineo.limits.spotify = { requests = 3, window = "7s" }
[providers.spotify]
limits.api.requests = 20
limits.api.window = "30s"`, func(c *Config) bool {
			return *c.Providers.Ineo.Limits.Spotify == Limit{Requests: 3, Window: dur(7 * time.Second)} &&
				*c.Providers.Spotify.Limits.API == Limit{Requests: 20, Window: dur(30 * time.Second)}
		}},
		{"hellorf", `
[providers.hellorf]
enabled = true
base_url = "https://h.example.com/v1"
client_id = "id"
client_secret = "secret"
allow_purchase = true
purchase_guard = "1m"
[providers.hellorf.limits.api]
requests = 2
window = "1s"`, func(c *Config) bool {
			h := c.Providers.Hellorf
			return h.Enabled && h.BaseURL == "https://h.example.com/v1" && h.AllowPurchase &&
				h.PurchaseGuard.Duration == time.Minute && h.Limits.API.Requests == 2
		}},
		{"spotify", `
[providers.spotify]
enabled = true
client_id = "id"
client_secret = "secret"
default_market = "de"
search_max_limit = 50`, func(c *Config) bool {
			s := c.Providers.Spotify
			return s.Enabled && s.DefaultMarket == "DE" && s.SearchMaxLimit == 50
		}},
		{"access", `
[access]
read_uids = [1000, 1001]
admin_gids = [0]`, func(c *Config) bool {
			return reflect.DeepEqual(c.Access.ReadUIDs, []uint32{1000, 1001}) && reflect.DeepEqual(c.Access.AdminGIDs, []uint32{0})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, tt.src)
			if !tt.check(cfg) {
				t.Errorf("unexpected config: %+v", cfg)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	src := strings.Repeat("\n", 10) + "[providers.ineo.limits.spotify]\nrequests = 0\nwindow = \"7s\"\n"
	_, err := Parse([]byte(src), "/etc/sluice/config.toml")
	want := "/etc/sluice/config.toml:12: providers.ineo.limits.spotify.requests: must be at least 1"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Line != 12 || ce.Key != "providers.ineo.limits.spotify.requests" {
		t.Fatalf("errors.As: %#v", ce)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		line    int
		key     string
		msg     string // substring
		nErrors int    // 0: don't care
	}{
		{"unknown top-level key", "log_level = \"info\"\n\nsokcet = \"/x\"\n", 3, "sokcet", `unknown key (did you mean "socket"?)`, 1},
		{"CRLF line endings", "log_level = \"info\"\r\n\r\nsokcet = \"/x\"\r\n", 3, "sokcet", "unknown key", 1},
		{"byte order mark", "\ufeffsokcet = \"/x\"\n", 1, "sokcet", "unknown key", 1},
		{"unknown key in limits table", "[providers.ineo]\nenabled = true\n\n[providers.ineo.limits.spotify]\nrequests = 1\nwindow = \"7s\"\nburst = 3\n", 7, "providers.ineo.limits.spotify.burst", "unknown key", 1},
		{"key with wrong case", "\nLog_Level = \"info\"\n", 2, "Log_Level", `did you mean "log_level"`, 1},
		{"unknown table", "[providers]\n\n[providers.deezer]\nenabled = true\n", 3, "providers.deezer", "unknown table", 1},
		{"unknown dotted key", "[providers]\nineo.enabld = true\n", 2, "providers.ineo.enabld", `did you mean "enabled"`, 1},
		{"bad duration", "[scheduler]\nmargin = \"250ms\"\nmax_wait = \"30 seconds\"\n", 3, "scheduler.max_wait", "invalid duration", 1},
		{"negative duration", "[cache]\n\ndefault_ttl = \"-1h\"\n", 3, "cache.default_ttl", "must not be negative", 1},
		{"duration as integer", "[providers.ineo]\ntimeout = 30\n", 2, "providers.ineo.timeout", "not a TOML integer", 1},
		{"zero duration", "[providers.spotify]\n\n\nttl = \"0s\"\n", 4, "providers.spotify.ttl", "greater than zero", 1},
		{"requests zero", "[providers.ineo.limits.spotify]\nwindow = \"7s\"\nrequests = 0\n", 3, "providers.ineo.limits.spotify.requests", "must be at least 1", 1},
		{"window zero", "[providers.ineo.limits.tmanage]\nrequests = 1\nwindow = \"0s\"\n", 3, "providers.ineo.limits.tmanage.window", "greater than zero", 1},
		{"empty limit table", "\n[providers.hellorf.limits.api]\n", 2, "providers.hellorf.limits.api.requests", "at least 1", 2},
		{"inline limit", "[providers.ineo]\nlimits.spotify = { requests = 0, window = \"7s\" }\n", 2, "providers.ineo.limits.spotify.requests", "at least 1", 1},
		{"wrong type", "[providers.ineo.limits.spotify]\nrequests = \"six\"\nwindow = \"7s\"\n", 2, "providers.ineo.limits.spotify.requests", "must be an integer, not a string", 1},
		{"syntax error", "log_level = \"info\"\n[scheduler]\nmargin = \"250ms\n", 3, "scheduler.margin", "", 1},
		{"syntax error bare value", "socket_mode = \"0660\"\nlog_level = verbose\n", 2, "log_level", "expected value", 1},
		{"duplicate key", "log_level = \"info\"\nlog_level = \"debug\"\n", 2, "", "already been defined", 1},
		{"scalar where table expected", "[providers]\n\nineo = 1\n", 3, "providers.ineo", "must be a table, not an integer", 1},
		{"array of tables where table expected", "[[providers]]\n", 1, "providers", "must be a table, not an array", 1},
		{"socket_mode integer", "socket_mode = 660\n", 1, "socket_mode", "octal string", 1},
		{"socket_mode too wide", "socket_mode = \"4755\"\n", 1, "socket_mode", "at most 0777", 1},
		{"socket_mode not octal", "socket_mode = \"0689\"\n", 1, "socket_mode", "invalid file mode", 1},
		{"relative socket", "socket = \"run/s.sock\"\n", 1, "socket", "absolute", 1},
		{"socket too long", "socket = \"/" + strings.Repeat("x", 120) + "\"\n", 1, "socket", "at most 107", 1},
		{"relative plugin_dir", "\nplugin_dir = \"plugins\"\n", 2, "plugin_dir", "absolute", 1},
		{"log level", "log_level = \"verbose\"\n", 1, "log_level", "debug, info, warn, error", 1},
		{"bad size", "[cache]\nmax_size = \"64 megs\"\n", 2, "cache.max_size", "invalid size", 1},
		{"zero size", "[cache]\nmax_size = 0\n", 2, "cache.max_size", "greater than zero", 1},
		{"ftp url", "[providers.ineo]\nbase_url = \"ftp://x\"\n", 2, "providers.ineo.base_url", "http or https", 1},
		{"relative url", "[providers.spotify]\naccounts_url = \"accounts.spotify.com\"\n", 2, "providers.spotify.accounts_url", "http or https", 1},
		{"url with credentials", "[providers.spotify]\napi_url = \"https://u:p@api.spotify.com\"\n", 2, "providers.spotify.api_url", "credentials", 1},
		{"url with query", "[providers.ineo]\nbase_url = \"https://x/?a=b\"\n", 2, "providers.ineo.base_url", "query", 1},
		{"empty default url", "[providers.ineo]\nbase_url = \"\"\n", 2, "providers.ineo.base_url", "must be set", 1},
		{"hellorf enabled without base_url", "log_level = \"info\"\n[providers.hellorf]\nenabled = true\nclient_id = \"i\"\nclient_secret = \"s\"\n", 2, "providers.hellorf.base_url", "must be set", 1},
		{"hellorf enabled without credentials", "log_level = \"info\"\n[providers.hellorf]\nenabled = true\nbase_url = \"https://h.example.com\"\nclient_secret = \"s\"\n", 2, "providers.hellorf.client_id", "required when the provider is enabled", 1},
		{"market", "[providers.spotify]\ndefault_market = \"DEU\"\n", 2, "providers.spotify.default_market", "two-letter", 1},
		{"market non-letters", "[providers.spotify]\ndefault_market = \"D1\"\n", 2, "providers.spotify.default_market", "two-letter", 1},
		{"search limit", "[providers.spotify]\nsearch_max_limit = 0\n", 2, "providers.spotify.search_max_limit", "between 1 and 50", 1},
		{"sha256 short", "[providers.hellorf]\nplugin_sha256 = \"abc\"\n", 2, "providers.hellorf.plugin_sha256", "64 hex", 1},
		{"sha256 not hex", "[providers.spotify]\nplugin_sha256 = \"" + strings.Repeat("g", 64) + "\"\n", 2, "providers.spotify.plugin_sha256", "64 hex", 1},
		{"negative uid", "[access]\nread_uids = [1000, -1]\n", 2, "access.read_uids", "out of range", 1},
		{"uid sentinel", "[access]\nadmin_uids = [4294967295]\n", 2, "access.admin_uids", "not a valid id", 1},
		{"uid list not ints", "[access]\nread_gids = [\"wheel\"]\n", 2, "access.read_gids", "must be an integer", 1},
		{"secret not a string", "[providers.ineo]\naccess_key = 12345\n", 2, "providers.ineo.access_key", "must be a string", 1},
		{"empty env reference", "[providers.ineo]\naccess_key = \"env:\"\n", 2, "providers.ineo.access_key", "variable name", 1},
		{"path key is not a key", "Path = \"/x\"\n", 1, "Path", "unknown key", 1},
		{"empty file", "", 0, "", "sets no keys", 1},
		{"only whitespace", " \n\t\n\r\n", 0, "", "sets no keys", 1},
		{"only comments", "# socket = \"/x\"\n\n  # [providers.ineo]\n", 0, "", "sets no keys", 1},
		{"byte order mark only", "\ufeff", 0, "", "sets no keys", 1},
		{"fleet name with braces", "[fleet]\nredis_url = \"redis://r:6379\"\nname = \"a{b}\"\n", 3, "fleet.name", "letters, digits", 1},
		{"fleet name with colon", "[fleet]\nredis_url = \"redis://r:6379\"\nname = \"a:b\"\n", 3, "fleet.name", "letters, digits", 1},
		{"fleet url and sentinels", "[fleet]\nredis_url = \"redis://r:6379\"\nsentinel_addrs = [\"s:26379\"]\nmaster_name = \"m\"\n", 3, "fleet.sentinel_addrs", "not both", 1},
		{"fleet sentinels without master", "[fleet]\nsentinel_addrs = [\"s:26379\"]\n", 1, "fleet.master_name", "required with sentinel_addrs", 1},
		{"fleet sentinels and cluster", "[fleet]\nsentinel_addrs = [\"s:26379\"]\nmaster_name = \"m\"\ncluster_addrs = [\"c:7000\"]\n", 4, "fleet.cluster_addrs", "not both", 1},
		{"fleet url with password", "[fleet]\nredis_url = \"redis://r:6379\"\npassword = \"pw\"\n", 3, "fleet.password", "in the URL", 1},
		{"fleet url with tls", "[fleet]\nredis_url = \"redis://r:6379\"\ntls = true\n", 3, "fleet.tls", "rediss://", 1},
		{"fleet sentinel password without sentinels", "[fleet]\ncluster_addrs = [\"c:7000\"]\nsentinel_password = \"pw\"\n", 3, "fleet.sentinel_password", "only with sentinel_addrs", 1},
		{"fleet master without sentinels", "[fleet]\nredis_url = \"redis://r:6379\"\nmaster_name = \"m\"\n", 1, "fleet.sentinel_addrs", "required with master_name", 1},
		{"multi-line string hides fake keys", "log_level = \"\"\"\nsocket = 1\n[nope]\n\"\"\"\n", 1, "log_level", "debug, info", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.src), "/etc/sluice/config.toml")
			if err == nil {
				t.Fatalf("no error; config %+v", cfg)
			}
			if cfg != nil {
				t.Error("config returned together with an error")
			}
			errs := allErrors(err)
			if len(errs) == 0 {
				t.Fatalf("error %v (%T) is not a *config.Error", err, err)
			}
			if tt.nErrors != 0 && len(errs) != tt.nErrors {
				t.Errorf("got %d errors, want %d: %v", len(errs), tt.nErrors, err)
			}
			for _, e := range errs {
				if e.File == "/etc/sluice/config.toml" && e.Line == tt.line && (tt.key == "" || e.Key == tt.key) && strings.Contains(e.Msg, tt.msg) {
					return
				}
			}
			t.Errorf("no error at line %d key %q containing %q; got:\n%v", tt.line, tt.key, tt.msg, err)
		})
	}
}

func TestMultipleErrorsInFileOrder(t *testing.T) {
	src := "log_level = \"loud\"\n[cache]\nmax_size = 0\nbogus = 1\n"
	_, err := Parse([]byte(src), "c.toml")
	errs := allErrors(err)
	var lines []int
	for _, e := range errs {
		lines = append(lines, e.Line)
	}
	if !reflect.DeepEqual(lines, []int{1, 3, 4}) {
		t.Fatalf("lines = %v, want [1 3 4]; err: %v", lines, err)
	}
	if got := strings.Count(err.Error(), "\n"); got != 2 {
		t.Errorf("want one line per error, got:\n%v", err)
	}
}

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	credDir := t.TempDir()
	write := func(d, name, content string) {
		if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(dir, "key-next-to-config", "from-config-dir\n")
	write(credDir, "key-in-creds", "from-cred-dir\r\n")
	write(dir, "empty", "\n")
	abs := filepath.Join(dir, "abs-key")
	write(dir, "abs-key", "absolute")

	tests := []struct {
		name      string
		env       map[string]string
		src       string
		value     string
		source    string
		errSubstr string
	}{
		{"inline", nil, `access_key = "inline-value"`, "inline-value", "inline", ""},
		{"absent", nil, ``, "", "", ""},
		{"env", map[string]string{"SLUICE_T_KEY": "from-env"}, `access_key = "env:SLUICE_T_KEY"`, "from-env", "env:SLUICE_T_KEY", ""},
		{"env missing", nil, `access_key = "env:SLUICE_T_MISSING"`, "", "", "SLUICE_T_MISSING is not set"},
		{"env empty", map[string]string{"SLUICE_T_EMPTY": ""}, `access_key = "env:SLUICE_T_EMPTY"`, "", "", "SLUICE_T_EMPTY is empty"},
		{"file relative to config", map[string]string{"CREDENTIALS_DIRECTORY": ""}, `access_key = "file:key-next-to-config"`, "from-config-dir", "file:" + filepath.Join(dir, "key-next-to-config"), ""},
		{"file relative to credentials dir", map[string]string{"CREDENTIALS_DIRECTORY": credDir}, `access_key = "file:key-in-creds"`, "from-cred-dir", "file:" + filepath.Join(credDir, "key-in-creds"), ""},
		{"file absolute", map[string]string{"CREDENTIALS_DIRECTORY": credDir}, `access_key = "file:` + abs + `"`, "absolute", "file:" + abs, ""},
		{"file missing", nil, `access_key = "file:/nonexistent/sluice-key"`, "", "", "cannot read secret file /nonexistent/sluice-key"},
		{"file empty", map[string]string{"CREDENTIALS_DIRECTORY": ""}, `access_key = "file:empty"`, "", "", "is empty"},
		{"disabled provider is not resolved", nil, "enabled = false\naccess_key = \"env:SLUICE_T_MISSING\"", "", "env:SLUICE_T_MISSING", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			src := "[providers.ineo]\n" + tt.src + "\n"
			cfg, err := Parse([]byte(src), filepath.Join(dir, "config.toml"))
			if tt.errSubstr != "" {
				errs := allErrors(err)
				if len(errs) != 1 || errs[0].Line != 2 || errs[0].Key != "providers.ineo.access_key" || !strings.Contains(errs[0].Msg, tt.errSubstr) {
					t.Fatalf("got %v, want error at line 2 on providers.ineo.access_key containing %q", err, tt.errSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := cfg.Providers.Ineo.AccessKey
			if s.Value() != tt.value || s.IsSet() != (tt.value != "") || s.Source() != tt.source {
				t.Errorf("Value=%q IsSet=%v Source=%q; want %q %q", s.Value(), s.IsSet(), s.Source(), tt.value, tt.source)
			}
		})
	}
}

func TestInlineSecrets(t *testing.T) {
	t.Setenv("SLUICE_T_ID", "id")
	tests := []struct {
		src  string
		want bool
	}{
		{"log_level = \"info\"", false},
		{"[providers.spotify]\nclient_id = \"env:SLUICE_T_ID\"", false},
		{"[providers.spotify]\nclient_secret = \"plain\"", true},
		// A disabled provider's inline secret is still in the file.
		{"[providers.hellorf]\nenabled = false\nclient_secret = \"plain\"", true},
	}
	for _, tt := range tests {
		if got := mustParse(t, tt.src).InlineSecrets(); got != tt.want {
			t.Errorf("InlineSecrets(%q) = %v, want %v", tt.src, got, tt.want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.toml")
	_, raw, err := Load(missing)
	var ce *Error
	if !errors.As(err, &ce) || ce.File != missing || !errors.Is(err, fs.ErrNotExist) || raw != nil {
		t.Fatalf("missing file: err=%v raw=%v", err, raw)
	}

	bad := filepath.Join(dir, "bad.toml")
	content := []byte("log_level = \"nope\"\n")
	if err := os.WriteFile(bad, content, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, raw, err := Load(bad)
	if err == nil || cfg != nil || string(raw) != string(content) {
		t.Fatalf("invalid file: cfg=%v raw=%q err=%v", cfg, raw, err)
	}
	if Hash(raw) != Hash(content) || Hash(raw) == Hash(append(raw, ' ')) {
		t.Error("Hash does not track content")
	}
	if Hash(nil) != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("Hash(nil) = %s", Hash(nil))
	}
}

func TestKeyIndex(t *testing.T) {
	src := `# comment with key = 1
a = 1
"quoted.key" = "x" # trailing
multi = """
b = 2
[fake]
"""
lit = '''
c = 3'''
arr = [
  1, # d = 4
  2,
]
[t1 . "sub"]
x.y = { p = 1, q = { r = 2 } }
[[arr2]]
z = 'e = 5'
`
	ix := indexKeys([]byte(src))
	tests := []struct {
		key  string
		line int
	}{
		{"a", 2},
		{`"quoted.key"`, 3},
		{"multi", 4},
		{"b", 0},
		{"fake", 0},
		{"lit", 8},
		{"c", 0},
		{"arr", 10},
		{"d", 0},
		{`t1.sub`, 14},
		{`t1.sub.x.y.q.r`, 15},
		{`t1.sub.missing`, 14},
		{"arr2.z", 17},
		{"e", 0},
	}
	for _, tt := range tests {
		if got := ix.line(tt.key); got != tt.line {
			t.Errorf("line(%s) = %d, want %d", tt.key, got, tt.line)
		}
	}
	if got := ix.owner(5); got != "multi" {
		t.Errorf("owner(5) = %q, want multi", got)
	}
}

// TestEveryDecodeErrorInFileOrder: values of the wrong type no longer stop
// the load at the first one the decoder's map walk happens to meet; every
// mistake is listed once, in file order, with its line, together with
// unknown keys and the other keys' validation errors.
func TestEveryDecodeErrorInFileOrder(t *testing.T) {
	src := `log_level = 3
socket_mode = 660
bogus = 1

[scheduler]
margin = 250
max_wait = "2m"

[cache]
max_size = "64 megs"
default_ttl = "0s"

[providers]
spotify = 1

[providers.ineo]
timeout = "thirty"
access_key = 12
link_ttl = "10m"

[providers.ineo.limits.spotify]
requests = "six"
window = "7s"

[providers.hellorf]
enabled = "yes"

[access]
read_uids = ["wheel"]
`
	want := []string{
		"c.toml:1: log_level: must be a string, not an integer",
		"c.toml:2: socket_mode: must be an octal string",
		"c.toml:3: bogus: unknown key",
		"c.toml:6: scheduler.margin: must be a duration string",
		"c.toml:10: cache.max_size: invalid size",
		"c.toml:11: cache.default_ttl: must be greater than zero",
		"c.toml:14: providers.spotify: must be a table, not an integer",
		"c.toml:17: providers.ineo.timeout: invalid duration",
		"c.toml:18: providers.ineo.access_key: must be a string",
		"c.toml:22: providers.ineo.limits.spotify.requests: must be an integer, not a string",
		"c.toml:26: providers.hellorf.enabled: must be a boolean, not a string",
		"c.toml:29: access.read_uids: must be an integer, not a string",
	}
	// The decoder's map walk is random: the answer must not be.
	for range 20 {
		_, err := Parse([]byte(src), "c.toml")
		errs := allErrors(err)
		if len(errs) != len(want) {
			t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(want), err)
		}
		for i, e := range errs {
			if !strings.HasPrefix(e.Error(), want[i]) {
				t.Fatalf("error %d is %q, want %q...; all:\n%v", i, e.Error(), want[i], err)
			}
		}
	}
}
