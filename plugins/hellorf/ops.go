package main

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/core/problem"
)

// kind says how an operation's answer is handled.
type kind int

const (
	kindJSON     kind = iota // a JSON answer, relayed whole
	kindPurchase             // JSON, but spends money: guarded, never retried
	kindFile                 // a file, streamed
)

// ttlKind says which configured lifetime bounds a cacheable answer.
type ttlKind int

const (
	ttlNone       ttlKind = iota
	ttlCategories         // categories_ttl
	ttlSearch             // search_ttl (answers with 10-minute links)
	ttlLinkOnly           // only the Expires= of the link inside
)

// operation is one upstream endpoint. The table below is the single source
// of truth: Describe declares it to the host and validate enforces it.
type operation struct {
	name, path, method, summary string
	params                      []param
	kind                        kind
	cacheable, destructive      bool
	ttl                         ttlKind
	// linkRule: the answer holds links that die linkLife after the
	// answer, whether or not they carry an Expires=. purchase-download is
	// under it too: its URL does state Expires=, but on hellorf's clock,
	// and every link hellorf hands out lives 10 minutes (README §2), so
	// counting from our own send time bounds it even when no Date header
	// shows how far hellorf's clock is ahead.
	linkRule bool
}

// param is one accepted parameter; check returns the canonical value to send
// or an error message (the host has already rejected missing required ones).
type param struct {
	name     string
	required bool
	summary  string
	check    func(string) (string, string)
	// whole: a whole number, sent without leading zeros (007 is 7).
	whole bool
	// def is hellorf's documented default, sent when the caller names none.
	def string
}

// sluice's own bounds. The document states no maximum for any of these;
// they only stop absurd input before it costs a signed request, and a
// refusal says they are sluice's (ownRange, text), so nobody mistakes them
// for hellorf's rules.
const (
	maxKeywordRunes = 200
	maxNameRunes    = 100
	maxPerPage      = 100
	maxPage         = 10000
	maxDuration     = 24 * 3600
)

// dateLayout is begin_at/end_at's format ("2017-01-01 23:23:23").
const dateLayout = "2006-01-02 15:04:05"

// wholePattern captures a whole number without its leading zeros, as
// positiveInt sends it. Anything else is captured whole and left to
// positiveInt, whose refusal says more.
const wholePattern = `0*([0-9]+)|(.*)`

var (
	id = func(name, summary string, required bool) param {
		return param{name: name, required: required, summary: summary, check: positiveInt(1, 1<<53), whole: true}
	}
	catID = func(name, summary string) param { return id(name, summary+" (an id from audio/categories)", false) }
	page  = param{name: "page", summary: "page number, from 1", check: ownRange(1, maxPage), whole: true, def: "1"}
)

var operations = []*operation{
	{name: "audio.categories", path: "audio/categories", method: http.MethodGet, kind: kindJSON, cacheable: true, ttl: ttlCategories,
		summary: "genres, moods, instruments and bpm ranges, each [{id, name}]"},
	{name: "audio.search", path: "audio/search", method: http.MethodGet, kind: kindJSON, cacheable: true, ttl: ttlSearch, linkRule: true,
		summary: "search tracks by tag keywords and category filters; links in the answer expire after 10 minutes",
		params: []param{
			{name: "keyword", summary: "tag keywords; and, or, not and parentheses combine them", check: text(maxKeywordRunes)},
			catID("mood_id", "mood"), catID("genre_id", "genre"), catID("bpm_id", "tempo range"), catID("instrument_id", "instrument"),
			{name: "duration_from", summary: "shortest duration in seconds", check: ownRange(0, maxDuration), whole: true},
			{name: "duration_to", summary: "longest duration in seconds", check: ownRange(0, maxDuration), whole: true},
			{name: "level_type", summary: "1 Absolute, 2 Boost, 3 Chic, 99 Shutterstock, 100 Shutterstock preferred", check: enum("1", "2", "3", "99", "100")},
			{name: "is_vhifun", summary: "1: only vhifun tracks", check: enum("1")},
			{name: "can_purchase", summary: "1: only tracks that can be purchased", check: enum("1")},
			page,
			{name: "per_page", summary: fmt.Sprintf("results per page, 1-%d (hellorf's default 30; the maximum is sluice's)", maxPerPage), check: ownRange(1, maxPerPage), whole: true, def: "30"},
		}},
	{name: "audio.detail", path: "audio/detail", method: http.MethodGet, kind: kindJSON, cacheable: true, ttl: ttlSearch, linkRule: true,
		summary: "one track with its licence permissions and prices",
		params:  []param{id("audio_id", "track id", true)}},
	{name: "audio.purchase", path: "audio/purchase", method: http.MethodPost, kind: kindPurchase, destructive: true,
		summary: "buy a licence for a track: SPENDS MONEY; needs allow_purchase = true",
		params: []param{
			id("audio_id", "track id", true),
			id("permission_id", "licence permission id from audio/detail", true),
			{name: "warrant_name", required: true, summary: "name of the licensee printed on the certificate", check: text(maxNameRunes)},
			{name: "third_user_id", summary: "your own user id for the licensee", check: text(maxNameRunes)},
		}},
	{name: "audio.my-purchases", path: "audio/my-purchases", method: http.MethodGet, kind: kindJSON,
		summary: "the account's purchases, newest first (never cached)",
		params: []param{
			{name: "begin_at", summary: "from, as 2017-01-01 23:23:23", check: datetime},
			{name: "end_at", summary: "until, as 2017-01-01 23:23:23", check: datetime},
			{name: "is_download", summary: "1 downloaded, 2 not downloaded", check: enum("1", "2")},
			id("audio_id", "track id", false),
			{name: "per_page", summary: fmt.Sprintf("results per page, 1-%d (hellorf's default 10; the maximum is sluice's)", maxPerPage), check: ownRange(1, maxPerPage), whole: true, def: "10"},
			page,
		}},
	{name: "audio.purchase-detail", path: "audio/purchase-detail", method: http.MethodGet, kind: kindJSON, cacheable: true, ttl: ttlSearch, linkRule: true,
		summary: "one purchase with its track",
		params:  []param{id("purchase_id", "purchase id", true)}},
	{name: "audio.download-warrant", path: "audio/download-warrant", method: http.MethodGet, kind: kindFile,
		summary: "the licence certificate of a purchase, a file (streamed, never cached)",
		params:  []param{id("purchase_id", "purchase id", true)}},
	{name: "audio.purchase-download", path: "audio/purchase-download", method: http.MethodGet, kind: kindJSON, cacheable: true, ttl: ttlLinkOnly, linkRule: true,
		summary: "a signed download URL for a purchase; cached only until its Expires (at most 10 minutes)",
		params:  []param{id("purchase_id", "purchase id", true)}},
}

var opsByName = func() map[string]*operation {
	m := map[string]*operation{}
	for _, op := range operations {
		m[op.name] = op
	}
	return m
}()

// validate checks every parameter locally and returns the canonical set to
// send. Unknown parameters are refused rather than dropped: a misspelt
// filter (genre=3 for genre_id=3) would otherwise silently widen a search and
// still cost a request. Empty optional values count as absent.
func validate(op *operation, in url.Values) (url.Values, error) {
	known := map[string]*param{}
	for i := range op.params {
		known[op.params[i].name] = &op.params[i]
	}
	names := make([]string, 0, len(in))
	for k := range in {
		names = append(names, k)
	}
	// Sorted, so the parameter a 400 names does not depend on map order.
	slices.Sort(names)
	for _, k := range names {
		if _, ok := known[k]; !ok {
			return nil, problem.BadParam(k, unknownParamDetail(op, k))
		}
		if len(in[k]) > 1 {
			return nil, problem.BadParam(k, fmt.Sprintf("parameter %q given %d times; give it once", k, len(in[k])))
		}
	}
	out := url.Values{}
	for _, ps := range op.params {
		v := in.Get(ps.name)
		if ps.required && strings.TrimSpace(v) == "" {
			return nil, problem.BadParam(ps.name, fmt.Sprintf("missing required parameter %q", ps.name))
		}
		if v == "" {
			continue
		}
		canon, msg := ps.check(v)
		if msg != "" {
			return nil, problem.BadParam(ps.name, fmt.Sprintf("%s %s", ps.name, msg))
		}
		out.Set(ps.name, canon)
	}
	if err := crossCheck(out); err != nil {
		return nil, err
	}
	return out, nil
}

func unknownParamDetail(op *operation, k string) string {
	accepted := make([]string, 0, len(op.params))
	for _, ps := range op.params {
		accepted = append(accepted, ps.name)
	}
	if len(accepted) == 0 {
		return fmt.Sprintf("unknown parameter %q: %s takes no parameters", k, op.path)
	}
	return fmt.Sprintf("unknown parameter %q for %s; it accepts %s", k, op.path, strings.Join(accepted, ", "))
}

// crossCheck catches ranges that are valid value by value but empty
// together.
func crossCheck(v url.Values) error {
	if from, to := v.Get("duration_from"), v.Get("duration_to"); from != "" && to != "" {
		f, _ := strconv.Atoi(from)
		t, _ := strconv.Atoi(to)
		if f > t {
			return problem.BadParam("duration_to", fmt.Sprintf("duration_to (%d) is less than duration_from (%d)", t, f))
		}
	}
	if from, to := v.Get("begin_at"), v.Get("end_at"); from != "" && to != "" && to < from {
		// The fixed-width layout sorts like the times it names.
		return problem.BadParam("end_at", fmt.Sprintf("end_at (%s) is before begin_at (%s)", to, from))
	}
	return nil
}

// positiveInt accepts a decimal integer in [lo, hi] and canonicalises it
// ("007" → "7"), so equivalent spellings are one cache entry and one guard
// key.
func positiveInt(lo, hi uint64) func(string) (string, string) {
	return func(v string) (string, string) {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n < lo || n > hi {
			return "", fmt.Sprintf("must be a whole number from %d to %d, got %q", lo, hi, v)
		}
		return strconv.FormatUint(n, 10), ""
	}
}

// ownLimitNote ends a refusal that enforces one of sluice's own bounds.
const ownLimitNote = "; that bound is sluice's own, not hellorf's: its document states none"

// ownRange is positiveInt for a range whose upper end is sluice's own bound
// (page, per_page, durations), and says so when it refuses.
func ownRange(lo, hi uint64) func(string) (string, string) {
	check := positiveInt(lo, hi)
	return func(v string) (string, string) {
		canon, msg := check(v)
		if msg != "" {
			msg += ownLimitNote
		}
		return canon, msg
	}
}

func enum(values ...string) func(string) (string, string) {
	return func(v string) (string, string) {
		if slices.Contains(values, v) {
			return v, ""
		}
		return "", fmt.Sprintf("must be one of %s, got %q", strings.Join(values, ", "), v)
	}
}

// text accepts printable UTF-8 up to max runes (a bound of sluice's own),
// unchanged (the signature is made over exactly what is sent).
func text(max int) func(string) (string, string) {
	return func(v string) (string, string) {
		if !utf8.ValidString(v) {
			return "", "must be valid UTF-8"
		}
		if n := utf8.RuneCountInString(v); n > max {
			return "", fmt.Sprintf("is %d characters long; at most %d are accepted%s", n, max, ownLimitNote)
		}
		if strings.IndexFunc(v, func(r rune) bool { return unicode.IsControl(r) }) >= 0 {
			return "", "must not contain control characters"
		}
		if strings.TrimSpace(v) == "" {
			return "", "must not be blank"
		}
		return v, ""
	}
}

func datetime(v string) (string, string) {
	if _, err := time.Parse(dateLayout, v); err != nil {
		return "", fmt.Sprintf("must be a date and time as YYYY-MM-DD HH:MM:SS (e.g. 2017-01-01 23:23:23), got %q", v)
	}
	return v, ""
}
