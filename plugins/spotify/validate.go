package main

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/provider"
)

// The documented value lists (testdata/spotify-web-api.openapi.yml:
// /search type, QueryIncludeGroups).
var (
	searchTypes = []string{"album", "artist", "playlist", "track", "show", "episode", "audiobook"}
	albumGroups = []string{"album", "single", "appears_on", "compilation"}
)

var idRE = regexp.MustCompile(`^[0-9A-Za-z]{22}$`)

// opRule is what one operation accepts: the parameters forwarded upstream
// (others are dropped, as Spotify ignores unknown ones; forwarding them
// would only split the cache), whether it takes a market, and the
// documented limit, offset and ids bounds.
type opRule struct {
	params   []string
	market   bool
	maxLimit int // 0: no limit parameter
	// defLimit is Spotify's documented default page size, sent upstream
	// when the caller gives no limit (see validate).
	defLimit int
	// maxOffset < 0 means no documented maximum.
	maxOffset int
	// maxIDs > 0 marks a several-ids operation: its ids come in the ids
	// parameter, not the path, and at most maxIDs of them.
	maxIDs int
}

var rules = map[string]opRule{
	"search":        {params: []string{"q", "type", "market", "limit", "offset", "include_external"}, market: true, maxLimit: -1, defLimit: 5, maxOffset: 1000},
	"artist":        {maxOffset: -1},
	"artist.albums": {params: []string{"include_groups", "market", "limit", "offset"}, market: true, maxLimit: 10, defLimit: 5, maxOffset: -1},
	"album":         {params: []string{"market"}, market: true, maxOffset: -1},
	"album.tracks":  {params: []string{"market", "limit", "offset"}, market: true, maxLimit: 50, defLimit: 20, maxOffset: -1},
	"track":         {params: []string{"market"}, market: true, maxOffset: -1},
	// QueryAlbumIds and the ids parameters of /tracks and /artists: up to
	// 20 albums, 50 tracks or artists; Get Several Artists takes no market.
	"tracks":  {params: []string{"ids", "market"}, market: true, maxOffset: -1, maxIDs: 50},
	"albums":  {params: []string{"ids", "market"}, market: true, maxOffset: -1, maxIDs: 20},
	"artists": {params: []string{"ids"}, maxOffset: -1, maxIDs: 50},
}

// validate checks a call against the documented bounds and returns the
// upstream path (below api_url, e.g. "/v1/artists/ID/albums") and the
// parameters to send.
func validate(req *provider.Request, cfg *config) (string, url.Values, error) {
	rule, ok := rules[req.Operation]
	if !ok {
		return "", nil, problem.New(http.StatusNotFound, fmt.Sprintf("unknown operation %q", req.Operation))
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return "", nil, problem.New(http.StatusMethodNotAllowed, "the Spotify catalogue is read with GET")
	}
	in := req.Params
	if req.Operation == "search" && len(in["q"]) == 0 && len(in["query"]) > 0 {
		// Spotify's own search next links spell q as "query".
		in = cloneValues(in)
		in["q"], in["query"] = in["query"], nil
	}
	out := url.Values{}
	for _, name := range rule.params {
		vs := in[name]
		if len(vs) > 1 {
			return "", nil, problem.BadParam(name, fmt.Sprintf("%s given %d times; give it once", name, len(vs)))
		}
		if len(vs) == 1 {
			out.Set(name, strings.TrimSpace(vs[0]))
		}
	}

	segs := strings.Split(strings.Trim(req.Path, "/"), "/")
	path := "/" + strings.Join(segs, "/")
	if rule.maxIDs > 0 {
		if err := checkIDs(req.Operation, out, rule.maxIDs); err != nil {
			return "", nil, err
		}
	} else if req.Operation != "search" {
		// v1/{kind}/{id}[/sub]: the host matched the shape, the id is ours
		// to check.
		if len(segs) < 3 || !idRE.MatchString(segs[2]) {
			kind := strings.TrimSuffix(segs[min(1, len(segs)-1)], "s")
			got := ""
			if len(segs) >= 3 {
				got = segs[2]
			}
			return "", nil, problem.BadParam("id", fmt.Sprintf("%q is not a valid %s id: want %s (sluicectl also accepts spotify:%s:ID URIs and open.spotify.com links)", got, kind, idSummary, kind))
		}
	}

	if req.Operation == "search" {
		if out.Get("q") == "" {
			return "", nil, problem.BadParam("q", "missing required parameter \"q\": the search query")
		}
		types := strings.Split(out.Get("type"), ",")
		for _, t := range types {
			if !slices.Contains(searchTypes, t) {
				return "", nil, problem.BadParam("type", fmt.Sprintf("type %q is not one of %s", t, strings.Join(searchTypes, ", ")))
			}
		}
		if v := out.Get("include_external"); v != "" && v != "audio" {
			return "", nil, problem.BadParam("include_external", "include_external must be audio")
		}
	}
	if v, given := out["include_groups"]; given {
		for _, g := range strings.Split(v[0], ",") {
			if !slices.Contains(albumGroups, g) {
				return "", nil, problem.BadParam("include_groups", fmt.Sprintf("include_groups %q is not one of %s", g, strings.Join(albumGroups, ", ")))
			}
		}
	}
	if v, given := out["market"]; given {
		m := strings.ToUpper(v[0])
		if !marketRE.MatchString(m) {
			return "", nil, problem.BadParam("market", fmt.Sprintf("market %q is not an ISO 3166-1 alpha-2 country code (two letters, e.g. KR)", v[0]))
		}
		out.Set("market", m)
	} else if rule.market && cfg.market != "" {
		// A client-credentials token has no user country: without a
		// market, Spotify considers content unavailable.
		out.Set("market", cfg.market)
	}
	maxLimit := rule.maxLimit
	if maxLimit < 0 {
		maxLimit = cfg.searchMax
	}
	if v, given := out["limit"]; given {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 1 || n > maxLimit {
			detail := fmt.Sprintf("limit must be a whole number from 1 to %d", maxLimit)
			if req.Operation == "search" {
				detail += " (search_max_limit; Spotify allows 10 in Development Mode)"
			}
			return "", nil, problem.BadParam("limit", detail)
		}
		out.Set("limit", strconv.Itoa(n))
	} else if rule.maxLimit != 0 {
		// No limit given: sluice names the page size itself rather than
		// leave it to Spotify. Spotify writes the limit it used into next
		// and previous, and those links come back here; its default (5
		// for search, above a search_max_limit of 1 to 4, or whatever an
		// app in another quota mode gets) would make sluice refuse its own
		// links, and a caller who never chose a limit could not walk past
		// the first page. Sent explicitly, every link carries a limit this
		// check accepts, and the cap holds for every page.
		out.Set("limit", strconv.Itoa(min(rule.defLimit, maxLimit)))
	}
	if v, given := out["offset"]; given {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 0 || (rule.maxOffset >= 0 && n > rule.maxOffset) {
			detail := "offset must be a whole number, 0 or more"
			if rule.maxOffset >= 0 {
				detail = fmt.Sprintf("offset must be a whole number from 0 to %d", rule.maxOffset)
			}
			return "", nil, problem.BadParam("offset", detail)
		}
		out.Set("offset", strconv.Itoa(n))
	}
	return path, out, nil
}

// checkIDs checks a several-ids call's ids: Spotify answers 400 for the
// whole call if one of them is malformed, so one bad element would waste
// the request for all the others.
func checkIDs(op string, out url.Values, maxIDs int) error {
	kind := strings.TrimSuffix(op, "s")
	v, given := out["ids"]
	if !given || v[0] == "" {
		return problem.BadParam("ids", fmt.Sprintf("missing required parameter \"ids\": 1 to %d comma-separated %s ids", maxIDs, kind))
	}
	ids := strings.Split(v[0], ",")
	if len(ids) > maxIDs {
		return problem.BadParam("ids", fmt.Sprintf("%d ids given; Spotify takes at most %d %ss per call", len(ids), maxIDs, kind))
	}
	for i, id := range ids {
		if id == "" {
			return problem.BadParam("ids", fmt.Sprintf("ids element %d is empty (a stray comma?)", i+1))
		}
		if !idRE.MatchString(id) {
			return problem.BadParam("ids", fmt.Sprintf("ids element %d, %q, is not a valid %s id: want %s", i+1, id, kind, idSummary))
		}
	}
	return nil
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}
