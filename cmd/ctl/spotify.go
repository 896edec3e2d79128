package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/core/api/client"
)

// This file is `sluicectl spotify`: the Spotify Web API catalogue through
// the daemon's spotify provider. Every request, page follow-ups included,
// goes to the daemon, which holds the credentials and the rate budget; the
// links in the answers already point back at the daemon.

func newSpotifyCmd(o *options) *cobra.Command {
	return group("spotify", "Spotify Web API catalogue: search, artists, albums, tracks; download via iNeo",
		newSpotifySearchCmd(o), newSpotifyArtistCmd(o), newSpotifyAlbumsCmd(o),
		newSpotifyAlbumCmd(o), newSpotifyTrackCmd(o), newSpotifyDownloadCmd(o))
}

// --- references: ids, URIs, URLs ---

var (
	spotifyIDRE  = regexp.MustCompile(`^[0-9A-Za-z]{22}$`)
	spotifyURIRE = regexp.MustCompile(`^spotify:([a-z]+):([0-9A-Za-z]{22})$`)
	// open.spotify.com/KIND/ID, optionally with a locale segment
	// (intl-de) and a query (?si=...).
	spotifyURLRE = regexp.MustCompile(`^(?:https?://)?open\.spotify\.com/(?:intl-[a-zA-Z-]+/)?([a-z]+)/([0-9A-Za-z]{22})(?:[/?#].*)?$`)
)

// spotifyRef turns a bare id, a spotify:KIND:ID URI or an open.spotify.com
// link into the bare id, checking that it names a kind (artist, album,
// track). A wrong value is a usage error: nothing is sent.
func spotifyRef(kind, s string) (string, error) {
	s = strings.TrimSpace(s)
	if spotifyIDRE.MatchString(s) {
		return s, nil
	}
	m := spotifyURIRE.FindStringSubmatch(s)
	if m == nil {
		m = spotifyURLRE.FindStringSubmatch(s)
	}
	if m == nil {
		return "", usageErrorf("%q is not a Spotify %s: want a 22-character base62 id, a spotify:%s:ID URI or an open.spotify.com/%s/ID link", s, kind, kind, kind)
	}
	if m[1] != kind {
		return "", usageErrorf("%q is a Spotify %s, not a %s", s, m[1], kind)
	}
	return m[2], nil
}

// --- requests ---

// spotifyGet sends GET /v1/spotify/{path}. A Spotify error answer (relayed
// with its own status) becomes an error carrying Spotify's message.
func (o *options) spotifyGet(ctx context.Context, path string, q url.Values) (*client.Response, error) {
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	resp, err := o.cl.Call(ctx, http.MethodGet, "/v1/spotify/"+strings.TrimPrefix(path, "/"), q, nil, nil)
	if err != nil {
		return nil, o.requestError(resp, err)
	}
	if resp.Status/100 != 2 {
		if o.json {
			// Spotify's own error document, as --json promises.
			if err := o.writeBody(resp.Body); err != nil {
				return nil, err
			}
		}
		return nil, spotifyStatusError(resp.Status, resp.Body)
	}
	return resp, nil
}

// spotifyStatusError renders {"error":{"status","message"}} as one line.
func spotifyStatusError(status int, body []byte) error {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return &httpStatusError{Status: status, Body: "Spotify: " + e.Error.Message}
	}
	return newHTTPStatusError(status, body)
}

// spPage is a Spotify paging object; items stay raw so --json can print
// them exactly.
type spPage struct {
	Href     string            `json:"href"`
	Items    []json.RawMessage `json:"items"`
	Limit    int               `json:"limit"`
	Next     *string           `json:"next"`
	Offset   int               `json:"offset"`
	Previous *string           `json:"previous"`
	Total    int               `json:"total"`
}

// spMaxPages bounds a walk through pages, in case an upstream's next links ever loop.
const spMaxPages = 2000

// spotifyNext turns a next link from an answer into a daemon path and
// query. Links always point back at the daemon; anything else is refused
// rather than followed, so sluicectl never talks to Spotify itself.
func spotifyNext(link string) (string, url.Values, error) {
	u, err := url.Parse(link)
	if err != nil || !strings.HasPrefix(u.Path, "/v1/spotify/") || (u.Host != "" && u.Host != "sluice") {
		return "", nil, &upstreamError{msg: fmt.Sprintf("refusing to follow %q: it does not lead back through sluiced", link)}
	}
	return strings.TrimPrefix(u.Path, "/v1/spotify/"), u.Query(), nil
}

// spotifyWalk follows next links from first until the last page and returns
// one page holding every item. Search stops at offset 1000, the documented
// maximum. On a terminal the page it is on shows on stderr, labelled kind.
func (o *options) spotifyWalk(ctx context.Context, kind string, first spPage, pick func([]byte) (spPage, error)) (spPage, error) {
	all := first
	all.Items = append([]json.RawMessage(nil), first.Items...)
	next := first.Next
	defer o.live.status("")
	for pages := 1; next != nil && *next != ""; pages++ {
		if pages >= spMaxPages {
			return spPage{}, &upstreamError{msg: fmt.Sprintf("gave up after %d pages", spMaxPages)}
		}
		path, q, err := spotifyNext(*next)
		if err != nil {
			return spPage{}, err
		}
		if off, _ := strconv.Atoi(q.Get("offset")); path == "v1/search" && off > 1000 {
			break
		}
		o.live.status(walkStatus(kind, pages+1, walkPages(first, path == "v1/search"), len(all.Items), walkTotal(first, path == "v1/search")))
		resp, err := o.spotifyGet(ctx, path, q)
		if err != nil {
			return spPage{}, err
		}
		p, err := pick(resp.Body)
		if err != nil {
			return spPage{}, err
		}
		all.Items = append(all.Items, p.Items...)
		next = p.Next
	}
	all.Next, all.Previous, all.Limit = nil, nil, len(all.Items)
	return all, nil
}

// walkTotal is how many items a walk from first will bring: the total,
// or for search as far as offset 1000 goes.
func walkTotal(first spPage, search bool) int {
	if search && first.Limit > 0 {
		return min(first.Total, 1000+first.Limit)
	}
	return first.Total
}

// walkPages is how many pages a walk from first will take; 0 if unknown.
func walkPages(first spPage, search bool) int {
	if first.Limit <= 0 {
		return 0
	}
	t := walkTotal(first, search)
	// The first page may start at an offset.
	return (t - first.Offset + first.Limit - 1) / first.Limit
}

func spDecodePage(b []byte) (spPage, error) {
	var p spPage
	if err := json.Unmarshal(b, &p); err != nil {
		return p, &upstreamError{msg: "Spotify's answer is not a paging object: " + err.Error()}
	}
	return p, nil
}

// --- item views ---

type spName struct {
	Name string `json:"name"`
}

// spItem is the union of the fields the tables show.
type spItem struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Type       string   `json:"type"`
	URI        string   `json:"uri"`
	Artists    []spName `json:"artists"`
	Album      *spName  `json:"album"`
	Popularity *int     `json:"popularity"`
	Genres     []string `json:"genres"`
	Followers  *struct {
		Total int `json:"total"`
	} `json:"followers"`
	ReleaseDate  string `json:"release_date"`
	AlbumType    string `json:"album_type"`
	AlbumGroup   string `json:"album_group"`
	TotalTracks  int    `json:"total_tracks"`
	Label        string `json:"label"`
	DurationMS   int    `json:"duration_ms"`
	Explicit     bool   `json:"explicit"`
	TrackNumber  int    `json:"track_number"`
	DiscNumber   int    `json:"disc_number"`
	IsPlayable   *bool  `json:"is_playable"`
	ExternalURLs struct {
		Spotify string `json:"spotify"`
	} `json:"external_urls"`
	Tracks *spPage `json:"tracks"`
}

// spotifyItem fetches one catalogue object. With --json it prints Spotify's
// answer as it came and reports printed; otherwise it decodes it.
func (o *options) spotifyItem(ctx context.Context, path string, q url.Values) (it spItem, printed bool, err error) {
	resp, err := o.spotifyGet(ctx, path, q)
	if err != nil {
		return spItem{}, false, err
	}
	if o.json {
		return spItem{}, true, o.writeBody(resp.Body)
	}
	it, err = spDecodeItem(resp.Body)
	return it, false, err
}

func spDecodeItem(b []byte) (spItem, error) {
	var it spItem
	if err := json.Unmarshal(b, &it); err != nil {
		return it, &upstreamError{msg: "Spotify's answer is not the expected object: " + err.Error()}
	}
	return it, nil
}

func spJoinNames(ns []spName) string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Name
	}
	return strings.Join(out, ", ")
}

func spIntOr(p *int) string {
	if p == nil {
		return ""
	}
	return strconv.Itoa(*p)
}

func spDuration(ms int) string {
	if ms <= 0 {
		return ""
	}
	return clockDuration(time.Duration(ms) * time.Millisecond)
}

// spFormatItems renders one kind of item as a table with a header row.
func spFormatItems(kind string, items []json.RawMessage) (string, error) {
	t := newTable()
	switch kind {
	case "artists":
		t.row("NAME", "POPULARITY", "FOLLOWERS", "GENRES", "ID")
	case "albums":
		t.row("RELEASED", "TYPE", "TRACKS", "NAME", "ARTISTS", "ID")
	case "tracks":
		t.row("NAME", "ARTISTS", "ALBUM", "DURATION", "ID")
	default:
		t.row("NAME", "ID")
	}
	for _, raw := range items {
		if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			continue // Spotify returns null for removed items
		}
		it, err := spDecodeItem(raw)
		if err != nil {
			return "", err
		}
		switch kind {
		case "artists":
			followers := ""
			if it.Followers != nil {
				followers = strconv.Itoa(it.Followers.Total)
			}
			t.row(it.Name, spIntOr(it.Popularity), followers, strings.Join(it.Genres, ", "), it.ID)
		case "albums":
			typ := it.AlbumType
			if it.AlbumGroup != "" && it.AlbumGroup != it.AlbumType {
				typ += " (" + it.AlbumGroup + ")"
			}
			t.row(it.ReleaseDate, typ, strconv.Itoa(it.TotalTracks), it.Name, spJoinNames(it.Artists), it.ID)
		case "tracks":
			album := ""
			if it.Album != nil {
				album = it.Album.Name
			}
			t.row(it.Name, spJoinNames(it.Artists), album, spDuration(it.DurationMS), it.ID)
		default:
			t.row(it.Name, it.ID)
		}
	}
	return t.String(), nil
}

// spShown says "3 of 17" or "17" when everything is there.
func spShown(p spPage) string {
	if len(p.Items) >= p.Total {
		return strconv.Itoa(p.Total)
	}
	return fmt.Sprintf("%d of %d (offset %d)", len(p.Items), p.Total, p.Offset)
}

// --- commands ---

var spotifySearchTypes = []string{"album", "artist", "playlist", "track", "show", "episode", "audiobook"}

func newSpotifySearchCmd(o *options) *cobra.Command {
	var types, market string
	var limit, offset int
	var all bool
	cmd := &cobra.Command{
		Use:   "search QUERY",
		Short: "Search the catalogue (artists, albums, tracks, ...)",
		Long: `Search the Spotify catalogue. QUERY may use Spotify's field filters
(artist:, album:, track:, year:1990-1999, genre:, isrc:, upc:).

--all walks every page of every type, each page through the daemon and its
rate budget; Spotify serves search results up to offset 1000.`,
		Example: `  sluicectl spotify search BTS --type artist --limit 5
  sluicectl spotify search 'artist:"Miles Davis" year:1959' --type album,track --market US
  sluicectl --json spotify search BTS --type artist --all`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = o.action(func(ctx context.Context, args []string) error {
		q := url.Values{"q": {args[0]}, "type": {types}}
		for _, t := range strings.Split(types, ",") {
			if !slices.Contains(spotifySearchTypes, t) {
				return usageErrorf("--type %q: want a comma-separated list of %s", t, strings.Join(spotifySearchTypes, ", "))
			}
		}
		if market != "" {
			q.Set("market", market)
		}
		switch {
		case cmd.Flags().Changed("limit"):
			q.Set("limit", strconv.Itoa(limit))
		case all:
			// Fewer, larger pages: 10 is the largest every app may ask.
			q.Set("limit", "10")
		}
		if cmd.Flags().Changed("offset") {
			q.Set("offset", strconv.Itoa(offset))
		}
		resp, err := o.spotifyGet(ctx, "v1/search", q)
		if err != nil {
			return err
		}
		if o.json && !all {
			return o.writeBody(resp.Body)
		}
		var pages map[string]spPage
		if err := json.Unmarshal(resp.Body, &pages); err != nil {
			return &upstreamError{msg: "Spotify's search answer is not an object of pages: " + err.Error()}
		}
		order := []string{}
		for _, t := range strings.Split(types, ",") {
			if _, ok := pages[t+"s"]; ok && !slices.Contains(order, t+"s") {
				order = append(order, t+"s")
			}
		}
		for _, kind := range order {
			if !all {
				break
			}
			p, err := o.spotifyWalk(ctx, kind, pages[kind], func(b []byte) (spPage, error) {
				var m map[string]spPage
				if err := json.Unmarshal(b, &m); err != nil {
					return spPage{}, &upstreamError{msg: "Spotify's search answer is not an object of pages: " + err.Error()}
				}
				return m[kind], nil
			})
			if err != nil {
				return err
			}
			pages[kind] = p
		}
		if o.json {
			b, err := json.Marshal(pages)
			if err != nil {
				return err
			}
			return o.writeBody(append(b, '\n'))
		}
		var out strings.Builder
		for i, kind := range order {
			if i > 0 {
				out.WriteString("\n")
			}
			p := pages[kind]
			fmt.Fprintf(&out, "%s: %s\n", strings.ToUpper(kind), spShown(p))
			s, err := spFormatItems(kind, p.Items)
			if err != nil {
				return err
			}
			out.WriteString(s)
		}
		return o.print(out.String())
	})
	f := cmd.Flags()
	f.StringVar(&types, "type", "artist,album,track", "comma-separated item types: "+strings.Join(spotifySearchTypes, ", "))
	_ = cmd.RegisterFlagCompletionFunc("type", fixedValues(spotifySearchTypes...))
	f.StringVar(&market, "market", "", "ISO 3166-1 alpha-2 country (e.g. KR); the daemon's default_market if empty")
	f.IntVar(&limit, "limit", 5, "results per type per page (1-10 in Development Mode)")
	f.IntVar(&offset, "offset", 0, "index of the first result (0-1000)")
	f.BoolVar(&all, "all", false, "walk every page")
	return cmd
}

func newSpotifyArtistCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:     "artist ID|URI|URL",
		Short:   "Show an artist",
		Example: "  sluicectl spotify artist 3Nrfpe0tUJi4K4DXYWgMUX\n  sluicectl spotify artist spotify:artist:3Nrfpe0tUJi4K4DXYWgMUX",
		Args:    cobra.ExactArgs(1),
		RunE: o.action(func(ctx context.Context, args []string) error {
			id, err := spotifyRef("artist", args[0])
			if err != nil {
				return err
			}
			it, printed, err := o.spotifyItem(ctx, "v1/artists/"+id, nil)
			if err != nil || printed {
				return err
			}
			t := newTable()
			t.row("name", it.Name)
			t.row("genres", strings.Join(it.Genres, ", "))
			t.row("popularity", spIntOr(it.Popularity))
			if it.Followers != nil {
				t.row("followers", strconv.Itoa(it.Followers.Total))
			}
			t.row("id", it.ID)
			t.row("uri", it.URI)
			t.row("url", it.ExternalURLs.Spotify)
			return o.print(t.String())
		}),
	}
}

var spotifyAlbumGroups = []string{"album", "single", "appears_on", "compilation"}

func newSpotifyAlbumsCmd(o *options) *cobra.Command {
	var groups, market string
	var limit, offset int
	var all bool
	cmd := &cobra.Command{
		Use:   "albums ARTIST",
		Short: "List an artist's albums",
		Long: `List an artist's albums (ARTIST is an id, a spotify:artist: URI or an
open.spotify.com link). --all walks every page, each through the daemon.`,
		Example: "  sluicectl spotify albums 3Nrfpe0tUJi4K4DXYWgMUX --groups album,single --all",
		Args:    cobra.ExactArgs(1),
	}
	cmd.RunE = o.action(func(ctx context.Context, args []string) error {
		id, err := spotifyRef("artist", args[0])
		if err != nil {
			return err
		}
		q := url.Values{}
		if groups != "" {
			for _, g := range strings.Split(groups, ",") {
				if !slices.Contains(spotifyAlbumGroups, g) {
					return usageErrorf("--groups %q: want a comma-separated list of %s", g, strings.Join(spotifyAlbumGroups, ", "))
				}
			}
			q.Set("include_groups", groups)
		}
		if market != "" {
			q.Set("market", market)
		}
		switch {
		case cmd.Flags().Changed("limit"):
			q.Set("limit", strconv.Itoa(limit))
		case all:
			q.Set("limit", "10") // the documented maximum
		}
		if cmd.Flags().Changed("offset") {
			q.Set("offset", strconv.Itoa(offset))
		}
		resp, err := o.spotifyGet(ctx, "v1/artists/"+id+"/albums", q)
		if err != nil {
			return err
		}
		if o.json && !all {
			return o.writeBody(resp.Body)
		}
		p, err := spDecodePage(resp.Body)
		if err != nil {
			return err
		}
		if all {
			if p, err = o.spotifyWalk(ctx, "albums", p, spDecodePage); err != nil {
				return err
			}
		}
		if o.json {
			b, err := json.Marshal(p)
			if err != nil {
				return err
			}
			return o.writeBody(append(b, '\n'))
		}
		s, err := spFormatItems("albums", p.Items)
		if err != nil {
			return err
		}
		return o.print(fmt.Sprintf("ALBUMS: %s\n%s", spShown(p), s))
	})
	f := cmd.Flags()
	f.StringVar(&groups, "groups", "", "comma-separated album groups: "+strings.Join(spotifyAlbumGroups, ", ")+" (default all)")
	f.StringVar(&market, "market", "", "ISO 3166-1 alpha-2 country (e.g. KR); the daemon's default_market if empty")
	f.IntVar(&limit, "limit", 5, "albums per page (1-10)")
	f.IntVar(&offset, "offset", 0, "index of the first album")
	f.BoolVar(&all, "all", false, "walk every page")
	return cmd
}

func newSpotifyAlbumCmd(o *options) *cobra.Command {
	var market string
	cmd := &cobra.Command{
		Use:   "album ID|URI|URL",
		Short: "Show an album and all its tracks",
		Long: `Show an album and all its tracks. Spotify sends the first 50 tracks
with the album; for longer albums the rest are fetched page by page through
the daemon (--json prints the album as Spotify sent it).`,
		Example: "  sluicectl spotify album https://open.spotify.com/album/4aawyAB9vmqN3uQ7FjRGTy",
		Args:    cobra.ExactArgs(1),
		RunE: o.action(func(ctx context.Context, args []string) error {
			id, err := spotifyRef("album", args[0])
			if err != nil {
				return err
			}
			q := url.Values{}
			if market != "" {
				q.Set("market", market)
			}
			it, printed, err := o.spotifyItem(ctx, "v1/albums/"+id, q)
			if err != nil || printed {
				return err
			}
			var tracks spPage
			if it.Tracks != nil {
				if tracks, err = o.spotifyWalk(ctx, "album tracks", *it.Tracks, spDecodePage); err != nil {
					return err
				}
			}
			head := newTable()
			head.row("name", it.Name)
			head.row("artists", spJoinNames(it.Artists))
			head.row("released", it.ReleaseDate)
			head.row("type", it.AlbumType)
			head.row("label", it.Label)
			head.row("tracks", strconv.Itoa(it.TotalTracks))
			head.row("id", it.ID)
			head.row("uri", it.URI)
			t := newTable()
			t.row("#", "NAME", "ARTISTS", "DURATION", "ID")
			for _, raw := range tracks.Items {
				tr, err := spDecodeItem(raw)
				if err != nil {
					return err
				}
				t.row(strconv.Itoa(tr.TrackNumber), tr.Name, spJoinNames(tr.Artists), spDuration(tr.DurationMS), tr.ID)
			}
			return o.print(head.String() + "\n" + t.String())
		}),
	}
	cmd.Flags().StringVar(&market, "market", "", "ISO 3166-1 alpha-2 country (e.g. KR); the daemon's default_market if empty")
	return cmd
}

func newSpotifyTrackCmd(o *options) *cobra.Command {
	var market string
	cmd := &cobra.Command{
		Use:     "track ID|URI|URL",
		Short:   "Show a track",
		Example: "  sluicectl spotify track spotify:track:11dFghVXANMlKmJXsNCbNl",
		Args:    cobra.ExactArgs(1),
		RunE: o.action(func(ctx context.Context, args []string) error {
			id, err := spotifyRef("track", args[0])
			if err != nil {
				return err
			}
			resp, it, err := o.spotifyTrack(ctx, id, market)
			if err != nil || o.json {
				if err == nil {
					err = o.writeBody(resp.Body)
				}
				return err
			}
			return o.print(formatSpotifyTrack(it).String())
		}),
	}
	cmd.Flags().StringVar(&market, "market", "", "ISO 3166-1 alpha-2 country (e.g. KR); the daemon's default_market if empty")
	return cmd
}

func (o *options) spotifyTrack(ctx context.Context, id, market string) (*client.Response, spItem, error) {
	q := url.Values{}
	if market != "" {
		q.Set("market", market)
	}
	resp, err := o.spotifyGet(ctx, "v1/tracks/"+id, q)
	if err != nil {
		return nil, spItem{}, err
	}
	it, err := spDecodeItem(resp.Body)
	return resp, it, err
}

func formatSpotifyTrack(it spItem) *table {
	t := newTable()
	t.row("name", it.Name)
	t.row("artists", spJoinNames(it.Artists))
	if it.Album != nil {
		t.row("album", it.Album.Name)
	}
	t.row("duration", spDuration(it.DurationMS))
	t.row("explicit", strconv.FormatBool(it.Explicit))
	if it.Popularity != nil {
		t.row("popularity", spIntOr(it.Popularity))
	}
	if it.IsPlayable != nil {
		t.row("playable", strconv.FormatBool(*it.IsPlayable))
	}
	t.row("id", it.ID)
	t.row("uri", it.URI)
	t.row("url", it.ExternalURLs.Spotify)
	return t
}

func newSpotifyDownloadCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "download TRACK",
		Short: "Resolve a track on Spotify, then get its download link from iNeo",
		Long: `Resolve a track on Spotify (TRACK is an id, a spotify:track: URI or an
open.spotify.com link), then ask the iNeo provider for its download link
(GET /v1/ineo/spotify.php?trackId=ID): the two providers working together.
A track Spotify does not know is reported without asking iNeo.

With --json the output is {"track": <Spotify's track>, "ineo": <iNeo's
answer>}.`,
		Example: "  sluicectl spotify download https://open.spotify.com/track/6fx5VOjqYNBHcDf5GIF5g5",
		Args:    cobra.ExactArgs(1),
		RunE: o.action(func(ctx context.Context, args []string) error {
			id, err := spotifyRef("track", args[0])
			if err != nil {
				return err
			}
			sresp, it, err := o.spotifyTrack(ctx, id, "")
			if err != nil {
				return err
			}
			iresp, env, err := o.ineoCall(ctx, "spotify.php", url.Values{"trackId": {id}}, nil)
			if o.json && env != nil {
				b, jerr := json.Marshal(struct {
					Track json.RawMessage `json:"track"`
					Ineo  json.RawMessage `json:"ineo"`
				}{json.RawMessage(bytes.TrimSpace(sresp.Body)), json.RawMessage(bytes.TrimSpace(iresp.Body))})
				if jerr != nil {
					return jerr
				}
				if werr := o.writeBody(append(b, '\n')); werr != nil {
					return werr
				}
			}
			if err != nil {
				return fmt.Errorf("download link: %w", err)
			}
			if o.json {
				return nil
			}
			t := formatSpotifyTrack(it)
			t.row("download", parseTrack(env.Result).Link)
			t.row("cache", cacheSummary(iresp.Header.Get("Cache-Status")))
			return o.print(t.String())
		}),
	}
}
