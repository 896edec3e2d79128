package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// maxSocketPath is the usable length of sun_path on Linux (108 bytes
// including the terminating NUL); a longer path fails only at bind time with
// a confusing error, so we catch it here.
const maxSocketPath = 107

// normalizeAndValidate fills dynamic defaults for keys set to "", normalises
// spellings (case, trailing slashes) and checks every value.
func (c *Config) normalizeAndValidate() []fieldErr {
	var errs []fieldErr
	bad := func(key, format string, args ...any) {
		errs = append(errs, fieldErr{key, fmt.Sprintf(format, args...)})
	}

	if c.Socket == "" {
		c.Socket = DefaultSocket()
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir()
	}
	if !filepath.IsAbs(c.Socket) {
		bad("socket", "must be an absolute path")
	} else if len(c.Socket) > maxSocketPath {
		bad("socket", "path is %d bytes long; Unix sockets allow at most %d", len(c.Socket), maxSocketPath)
	}
	if !filepath.IsAbs(c.StateDir) {
		bad("state_dir", "must be an absolute path")
	}
	if c.PluginDir != "" && !filepath.IsAbs(c.PluginDir) {
		bad("plugin_dir", "must be an absolute path (or empty for the directory of the sluice executable)")
	}

	c.LogLevel = strings.ToLower(strings.TrimSpace(c.LogLevel))
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "must be one of debug, info, warn, error")
	}

	c.AccessLog = strings.ToLower(strings.TrimSpace(c.AccessLog))
	switch c.AccessLog {
	case "all", "misses", "off":
	default:
		bad("access_log", "must be one of all, misses, off")
	}
	if c.MaxConnections < 0 {
		bad("max_connections", "must not be negative (0 derives it from the file-descriptor limit)")
	}

	errs = append(errs, c.checkHTTP()...)
	errs = append(errs, c.checkFleet()...)

	positive := func(key string, d Duration) {
		if d.Duration <= 0 {
			bad(key, "must be greater than zero")
		}
	}
	// Durations that may be zero (margins, max_wait = fail at once) need no
	// check: the Duration type already refuses negatives.
	positive("cache.default_ttl", c.Cache.DefaultTTL)
	if c.Cache.MaxSize <= 0 {
		bad("cache.max_size", "must be greater than zero")
	}

	p := &c.Providers

	// iNeo
	errs = append(errs, checkURL("providers.ineo.base_url", &p.Ineo.BaseURL, true)...)
	positive("providers.ineo.link_ttl", p.Ineo.LinkTTL)
	positive("providers.ineo.timeout", p.Ineo.Timeout)
	errs = append(errs, checkSHA("providers.ineo.plugin_sha256", &p.Ineo.PluginSHA256)...)
	errs = append(errs, checkLimit("providers.ineo.limits.spotify", p.Ineo.Limits.Spotify)...)
	errs = append(errs, checkLimit("providers.ineo.limits.tmanage", p.Ineo.Limits.Tmanage)...)

	// hellorf: base_url is per customer, so there is nothing to fall back on.
	errs = append(errs, checkURL("providers.hellorf.base_url", &p.Hellorf.BaseURL, p.Hellorf.Enabled)...)
	positive("providers.hellorf.categories_ttl", p.Hellorf.CategoriesTTL)
	positive("providers.hellorf.purchase_guard", p.Hellorf.PurchaseGuard)
	positive("providers.hellorf.timeout", p.Hellorf.Timeout)
	positive("providers.hellorf.search_ttl", p.Hellorf.SearchTTL)
	errs = append(errs, checkSHA("providers.hellorf.plugin_sha256", &p.Hellorf.PluginSHA256)...)
	errs = append(errs, checkLimit("providers.hellorf.limits.api", p.Hellorf.Limits.API)...)

	// Spotify
	errs = append(errs, checkURL("providers.spotify.api_url", &p.Spotify.APIURL, true)...)
	errs = append(errs, checkURL("providers.spotify.accounts_url", &p.Spotify.AccountsURL, true)...)
	positive("providers.spotify.ttl", p.Spotify.TTL)
	positive("providers.spotify.max_retry_after", p.Spotify.MaxRetryAfter)
	positive("providers.spotify.timeout", p.Spotify.Timeout)
	if m := strings.ToUpper(strings.TrimSpace(p.Spotify.DefaultMarket)); m != "" {
		if len(m) != 2 || !isASCIILetter(m[0]) || !isASCIILetter(m[1]) {
			bad("providers.spotify.default_market", "must be a two-letter country code such as \"DE\"")
		}
		p.Spotify.DefaultMarket = m
	}
	// The Web API accepts limit values up to 50.
	if n := p.Spotify.SearchMaxLimit; n < 1 || n > 50 {
		bad("providers.spotify.search_max_limit", "must be between 1 and 50")
	}
	errs = append(errs, checkSHA("providers.spotify.plugin_sha256", &p.Spotify.PluginSHA256)...)
	errs = append(errs, checkLimit("providers.spotify.limits.api", p.Spotify.Limits.API)...)
	errs = append(errs, checkLimit("providers.spotify.limits.accounts", p.Spotify.Limits.Accounts)...)

	errs = append(errs, c.checkVendorLimits()...)

	// access: uint32 already rules out negatives and overflow; (uid_t)-1 is
	// the "no id" sentinel and can never be a real caller.
	for _, l := range []struct {
		key string
		ids []uint32
	}{
		{"access.read_uids", c.Access.ReadUIDs},
		{"access.read_gids", c.Access.ReadGIDs},
		{"access.admin_uids", c.Access.AdminUIDs},
		{"access.admin_gids", c.Access.AdminGIDs},
	} {
		if slices.Contains(l.ids, ^uint32(0)) {
			bad(l.key, "4294967295 is not a valid id")
		}
	}
	return errs
}

func isASCIILetter(b byte) bool { return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' }

// checkURL requires an absolute http(s) URL without credentials, query or
// fragment (a path prefix is fine), and trims trailing slashes. Credentials
// are refused because URLs end up in logs.
func checkURL(key string, u *string, required bool) []fieldErr {
	s := strings.TrimSpace(*u)
	if s == "" {
		if required {
			return []fieldErr{{key, "must be set (an absolute http or https URL)"}}
		}
		return nil
	}
	parsed, err := url.Parse(s)
	if err != nil {
		return []fieldErr{{key, "not a valid URL"}}
	}
	switch {
	case parsed.Scheme != "http" && parsed.Scheme != "https":
		return []fieldErr{{key, "must be an absolute http or https URL"}}
	case parsed.Host == "":
		return []fieldErr{{key, "must include a host"}}
	case parsed.User != nil:
		return []fieldErr{{key, "must not contain credentials; use the provider's secret keys"}}
	case parsed.RawQuery != "" || parsed.Fragment != "" || strings.Contains(s, "?") || strings.Contains(s, "#"):
		return []fieldErr{{key, "must not contain a query or fragment"}}
	}
	*u = trimSlash(s)
	return nil
}

// checkSHA accepts an optional hex SHA-256 and lower-cases it.
func checkSHA(key string, sum *string) []fieldErr {
	s := strings.ToLower(strings.TrimSpace(*sum))
	if s == "" {
		*sum = ""
		return nil
	}
	if len(s) != 64 || strings.Trim(s, "0123456789abcdef") != "" {
		return []fieldErr{{key, "must be a SHA-256 of 64 hex characters"}}
	}
	*sum = s
	return nil
}

func checkLimit(key string, l *Limit) []fieldErr {
	if l == nil {
		return nil
	}
	var errs []fieldErr
	if l.Requests < 1 {
		errs = append(errs, fieldErr{key + ".requests", "must be at least 1"})
	}
	if l.Window.Duration <= 0 {
		errs = append(errs, fieldErr{key + ".window", "must be greater than zero"})
	}
	return errs
}

// unknownKeys reports keys the schema does not have. toml's decoder matches
// field names case-insensitively, so Undecoded alone would let "Log_Level"
// through; we check every key against the exact spellings and add anything
// Undecoded reports as a safety net. Only the outermost unknown key of a
// subtree is reported.
func unknownKeys(md toml.MetaData) []fieldErr {
	return unknownKeysOf(md, md.Undecoded())
}

// unknownKeysOf checks md's keys against the schema and reports undecoded
// too; a decode into a map marks nothing decoded, so such callers pass nil.
func unknownKeysOf(md toml.MetaData, undecoded []toml.Key) []fieldErr {
	var errs []fieldErr
	reported := map[string]bool{}
	isReported := func(k toml.Key) bool {
		for n := 1; n <= len(k); n++ {
			if reported[k[:n].String()] {
				return true
			}
		}
		return false
	}
	report := func(k toml.Key, suggestion string) {
		if isReported(k) {
			return
		}
		reported[k.String()] = true
		what := "unknown key"
		if md.Type(k...) == "Hash" {
			what = "unknown table"
		}
		if suggestion != "" {
			what += fmt.Sprintf(" (did you mean %q?)", suggestion)
		}
		errs = append(errs, fieldErr{k.String(), what})
	}
	root := reflect.TypeFor[Config]()
	for _, k := range md.Keys() {
		if bad, suggestion := schemaCheck(root, k); bad >= 0 {
			report(k[:bad+1], suggestion)
		}
	}
	for _, k := range undecoded {
		report(k, "")
	}
	return errs
}

var unmarshalerType = reflect.TypeFor[toml.Unmarshaler]()

// schemaCheck walks key through the struct types starting at t and returns
// the index of the first part that names no field exactly (with a
// suggestion), or -1.
func schemaCheck(t reflect.Type, key toml.Key) (int, string) {
	for i, part := range key {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		// Leaf types (Duration, Secret, ...) decode themselves; slices and
		// scalars have no sub-keys (the decoder rejects tables there).
		if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(unmarshalerType) {
			return -1, ""
		}
		names := tomlFieldNames(t)
		idx := slices.Index(names, part)
		if idx < 0 {
			return i, suggest(part, names)
		}
		f, _ := t.FieldByName(fieldNameForTag(t, part))
		t = f.Type
	}
	return -1, ""
}

func tomlFieldNames(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		if n := tomlName(f); n != "" {
			names = append(names, n)
		}
	}
	return names
}

func fieldNameForTag(t reflect.Type, tag string) string {
	for f := range t.Fields() {
		if tomlName(f) == tag {
			return f.Name
		}
	}
	return ""
}

func tomlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	switch tag {
	case "-":
		return ""
	case "":
		return f.Name
	}
	return tag
}

// suggest returns the known name closest to an unknown one, if close enough
// to be a plausible typo.
func suggest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if strings.EqualFold(k, name) {
			return k
		}
		if d := levenshtein(strings.ToLower(name), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
