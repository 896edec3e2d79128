package spotifysim

import (
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// apiError is the Web API's ErrorObject wrapper. Reason is only set on
// quota answers.
type apiError struct {
	Error errorObject `json:"error"`
}

type errorObject struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
	Reason  string `json:"reason,omitempty"`
}

// answer is what a request was decided to get.
type answer struct {
	status     int
	body       any
	retryAfter int // seconds; <0 none
	// raw, if not nil, is sent verbatim instead of body as JSON, labelled
	// contentType (Fault.Body).
	raw         []byte
	contentType string
}

func fail(status int, msg string) answer {
	return answer{status: status, body: apiError{errorObject{Status: status, Message: msg}}, retryAfter: -1}
}

func ok(body any) answer { return answer{status: http.StatusOK, body: body, retryAfter: -1} }

// serveAPI runs one Web API request through the processing order of the
// package comment.
func (s *Sim) serveAPI(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	path := strings.TrimPrefix(r.URL.Path, s.apiPfx)
	if s.apiPfx != "" && !strings.HasPrefix(r.URL.Path, s.apiPfx+"/") {
		path = "" // outside the prefix: no such service
	}
	s.mu.Lock()
	s.inFlight++
	s.counts.MaxInFlight = max(s.counts.MaxInFlight, s.inFlight)
	s.mu.Unlock()
	// Before the head is written: the client cannot see its answer, and
	// send again, before this request stops counting.
	headOut := sync.OnceFunc(func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	})
	defer headOut()
	s.mu.Lock()
	a := s.gateLocked(r, now)
	s.mu.Unlock()
	if a == nil {
		base := "http://" + r.Host + s.apiPfx
		if s.opts.CanonicalLinks {
			base = strings.TrimSuffix(CanonicalBase, "/v1")
		}
		ans := s.route(r, path, base)
		a = &ans
	}
	s.mu.Lock()
	switch a.status {
	case http.StatusUnauthorized:
		s.counts.Unauthorized++
	case http.StatusTooManyRequests:
		s.counts.Throttled++
	}
	s.requestLog = append(s.requestLog, Arrival{At: now, Path: path, Query: r.URL.Query(), Status: a.status})
	s.mu.Unlock()
	s.log.Debug("spotifysim: request", "path", path, "status", a.status)
	s.wait(r.Context(), false)
	headOut()
	if a.retryAfter >= 0 {
		name := "Retry-After"
		if s.opts.LowerCaseRetryAfter {
			name = "retry-after"
		}
		// Set the map directly so the case chosen is the case sent.
		w.Header()[name] = []string{strconv.Itoa(a.retryAfter)}
	}
	if a.raw != nil {
		ct := a.contentType
		if ct == "" {
			ct = "application/json; charset=utf-8"
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(a.status)
		_, _ = w.Write(a.raw)
		return
	}
	writeJSON(w, a.status, a.body)
}

// gateLocked counts the arrival and applies the checks before routing: a
// running Retry-After, the token, injected faults and the rolling window.
// It returns nil when the request may proceed.
func (s *Sim) gateLocked(r *http.Request, now time.Time) *answer {
	s.counts.APIRequests++
	// The rolling window counts every arrival, refused ones included.
	cutoff := now.Add(-s.limit.Window)
	i := 0
	for i < len(s.arrivals) && !s.arrivals[i].After(cutoff) {
		i++
	}
	s.arrivals = append(s.arrivals[i:], now)

	if now.Before(s.retryUntil) {
		s.counts.DuringRetryAfter++
		a := fail(http.StatusTooManyRequests, "API rate limit exceeded")
		if s.retryStatus != http.StatusTooManyRequests {
			a = fail(s.retryStatus, http.StatusText(s.retryStatus))
		}
		a.retryAfter = ceilSeconds(s.retryUntil.Sub(now))
		return &a
	}
	if status, msg := s.tokenStatusLocked(r.Header.Get("Authorization"), now); status != 0 {
		a := fail(status, msg)
		return &a
	}
	if len(s.faults) > 0 {
		f := s.faults[0]
		s.faults = s.faults[1:]
		a := fail(f.Status, http.StatusText(f.Status))
		if f.Status == http.StatusTooManyRequests {
			a = fail(f.Status, "API rate limit exceeded")
			a.retryAfter = f.RetryAfter
		} else if f.RetryAfter > 0 {
			a.retryAfter = f.RetryAfter
		}
		if f.RetryAfter > 0 {
			s.retryUntil, s.retryStatus = now.Add(time.Duration(f.RetryAfter)*time.Second), f.Status
		}
		if f.Reason != "" {
			a.body = apiError{errorObject{Status: f.Status, Message: "API quota exceeded", Reason: f.Reason}}
		}
		if f.Body != "" {
			a.raw, a.contentType = []byte(f.Body), f.ContentType
		}
		return &a
	}
	if len(s.arrivals) > s.limit.Requests {
		// Wait until the oldest arrival of the window leaves it.
		free := s.arrivals[len(s.arrivals)-1-s.limit.Requests].Add(s.limit.Window)
		secs := max(1, ceilSeconds(free.Sub(now)))
		s.retryUntil, s.retryStatus = now.Add(time.Duration(secs)*time.Second), http.StatusTooManyRequests
		a := fail(http.StatusTooManyRequests, "API rate limit exceeded")
		a.retryAfter = secs
		return &a
	}
	return nil
}

func ceilSeconds(d time.Duration) int { return int(math.Ceil(d.Seconds())) }

var (
	idRE     = regexp.MustCompile(`^[0-9A-Za-z]{22}$`)
	routeRE  = regexp.MustCompile(`^/v1/(artists|albums|tracks)/([^/]+)(/albums|/tracks)?$`)
	searchTy = []string{"album", "artist", "playlist", "track", "show", "episode", "audiobook"}
	groupsOK = []string{"album", "single", "appears_on", "compilation"}
)

// route answers an authorised request from the catalogue.
func (s *Sim) route(r *http.Request, path, base string) answer {
	var kind, id, sub string
	switch path {
	case "/v1/search":
		kind = "search"
	case "/v1/tracks", "/v1/albums", "/v1/artists":
		kind, sub = strings.TrimPrefix(path, "/v1/"), "?ids"
	default:
		m := routeRE.FindStringSubmatch(path)
		if m == nil || (m[1] == "artists" && m[3] == "/tracks") || (m[1] == "albums" && m[3] == "/albums") || (m[1] == "tracks" && m[3] != "") {
			return fail(http.StatusNotFound, "Service not found")
		}
		kind, id, sub = m[1], m[2], m[3]
	}
	if r.Method != http.MethodGet {
		return fail(http.StatusMethodNotAllowed, "Method not allowed")
	}
	q := r.URL.Query()
	for k, v := range q {
		if len(v) > 1 {
			return fail(http.StatusBadRequest, "Duplicate parameter "+k)
		}
	}
	market := q.Get("market")
	// Get Artist takes no market; the others do.
	if _, given := q["market"]; given && kind+sub != "artists" && !slices.Contains(Markets, market) {
		return fail(http.StatusBadRequest, "Invalid market code")
	}
	rd := render{base: base, market: market}
	if kind == "search" {
		return s.search(rd, q)
	}
	if sub == "?ids" {
		return s.several(rd, kind, q)
	}
	if !idRE.MatchString(id) {
		return fail(http.StatusBadRequest, "Invalid base62 id")
	}
	switch kind + sub {
	case "artists":
		a, found := s.cat.byID[id]
		if !found {
			return fail(http.StatusNotFound, "Resource not found")
		}
		return ok(rd.artist(a))
	case "artists/albums":
		a, found := s.cat.byID[id]
		if !found {
			return fail(http.StatusNotFound, "Resource not found")
		}
		limit, offset, bad := paging(q, 5, 10, -1)
		if bad != "" {
			return fail(http.StatusBadRequest, bad)
		}
		var groups []string
		if v, given := q["include_groups"]; given {
			for _, g := range strings.Split(v[0], ",") {
				if !slices.Contains(groupsOK, g) {
					return fail(http.StatusBadRequest, "Invalid include_groups value: "+g)
				}
				groups = append(groups, g)
			}
		}
		params := url.Values{}
		for _, k := range []string{"include_groups", "market"} {
			if v := q.Get(k); v != "" {
				params.Set(k, v)
			}
		}
		return ok(pageOf(rd, "/v1/artists/"+id+"/albums", params, a.discography(groups, market), offset, limit,
			func(al *album) any { return rd.simpleAlbum(al, al.group[a.ID]) }))
	case "albums", "albums/tracks":
		al, found := s.cat.albums[id]
		if !found {
			return fail(http.StatusNotFound, "Resource not found")
		}
		if sub == "" {
			return ok(rd.fullAlbum(al))
		}
		limit, offset, bad := paging(q, 20, 50, -1)
		if bad != "" {
			return fail(http.StatusBadRequest, bad)
		}
		params := url.Values{}
		if market != "" {
			params.Set("market", market)
		}
		return ok(pageOf(rd, "/v1/albums/"+id+"/tracks", params, al.Tracks, offset, limit, func(t *track) any { return rd.simpleTrack(t) }))
	case "tracks":
		t, found := s.cat.tracks[id]
		if !found {
			return fail(http.StatusNotFound, "Resource not found")
		}
		return ok(rd.track(t))
	}
	return fail(http.StatusNotFound, "Service not found")
}

// maxIDs are the documented maxima of the several-ids endpoints
// (QueryAlbumIds, and the ids parameters of /tracks and /artists).
var maxIDs = map[string]int{"tracks": 50, "albums": 20, "artists": 50}

// several answers Get Several Tracks/Albums/Artists: the objects in the
// order of ids, null where an id names nothing (as Spotify does). One
// malformed id fails the whole call.
func (s *Sim) several(rd render, kind string, q url.Values) answer {
	v, given := q["ids"]
	if !given || v[0] == "" {
		return fail(http.StatusBadRequest, "Missing required parameter ids")
	}
	ids := strings.Split(v[0], ",")
	if len(ids) > maxIDs[kind] {
		return fail(http.StatusBadRequest, "Too many ids requested")
	}
	items := make([]any, len(ids))
	for i, id := range ids {
		if !idRE.MatchString(id) {
			return fail(http.StatusBadRequest, "Invalid base62 id")
		}
		switch kind {
		case "tracks":
			if t, found := s.cat.tracks[id]; found {
				items[i] = rd.track(t)
			}
		case "albums":
			if al, found := s.cat.albums[id]; found {
				items[i] = rd.fullAlbum(al)
			}
		case "artists":
			if a, found := s.cat.byID[id]; found {
				items[i] = rd.artist(a)
			}
		}
	}
	return ok(map[string][]any{kind: items})
}

// paging reads limit (default def, 1..maxLimit) and offset (0..maxOffset,
// or unbounded when maxOffset < 0); bad is Spotify's message otherwise.
func paging(q url.Values, def, maxLimit, maxOffset int) (limit, offset int, bad string) {
	limit = def
	if v, given := q["limit"]; given {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 1 || n > maxLimit {
			return 0, 0, "Invalid limit"
		}
		limit = n
	}
	if v, given := q["offset"]; given {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 0 || (maxOffset >= 0 && n > maxOffset) {
			return 0, 0, "Invalid offset"
		}
		offset = n
	}
	return limit, offset, ""
}

func (s *Sim) search(rd render, q url.Values) answer {
	text := q.Get("q")
	if strings.TrimSpace(text) == "" {
		return fail(http.StatusBadRequest, "No search query")
	}
	rawTypes, given := q["type"]
	if !given || rawTypes[0] == "" {
		return fail(http.StatusBadRequest, "Missing parameter type")
	}
	types := strings.Split(rawTypes[0], ",")
	for _, t := range types {
		if !slices.Contains(searchTy, t) {
			return fail(http.StatusBadRequest, "Bad search type field "+t)
		}
	}
	limit, offset, bad := paging(q, 5, s.opts.SearchMaxLimit, 1000)
	if bad != "" {
		return fail(http.StatusBadRequest, bad)
	}
	if v, given := q["include_external"]; given && v[0] != "audio" {
		return fail(http.StatusBadRequest, "Invalid include_external value")
	}
	parsed := parseQuery(text)
	market := q.Get("market")
	out := map[string]page{}
	// Each type's links select that type only, so following artists.next
	// pages through artists alone.
	params := func(t string) url.Values {
		p := url.Values{"q": {text}, "type": {t}}
		for _, k := range []string{"market", "include_external"} {
			if v := q.Get(k); v != "" {
				p.Set(k, v)
			}
		}
		return p
	}
	for _, t := range types {
		switch t {
		case "artist":
			out["artists"] = pageOf(rd, "/v1/search", params(t), s.cat.searchArtists(parsed), offset, limit, func(a *artist) any { return rd.artist(a) })
		case "album":
			out["albums"] = pageOf(rd, "/v1/search", params(t), s.cat.searchAlbums(parsed, market), offset, limit, func(al *album) any { return rd.simpleAlbum(al, "") })
		case "track":
			out["tracks"] = pageOf(rd, "/v1/search", params(t), s.cat.searchTracks(parsed, market), offset, limit, func(tr *track) any { return rd.track(tr) })
		default:
			// Playlists, shows, episodes and audiobooks are not simulated:
			// an empty page, which is still a valid answer.
			out[t+"s"] = pageOf(rd, "/v1/search", params(t), []int(nil), offset, limit, func(int) any { return nil })
		}
	}
	return ok(out)
}
