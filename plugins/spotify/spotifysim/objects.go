package spotifysim

import (
	"fmt"
	"net/url"
	"strconv"
)

// The JSON shapes below follow the OpenAPI description's schemas
// (components/schemas in testdata/spotify-web-api.openapi.yml); fields the
// schemas mark required are always present, optional ones only when they
// apply (is_playable and restrictions with a market).

type externalURLs struct {
	Spotify string `json:"spotify"`
}

type image struct {
	URL    string `json:"url"`
	Height int    `json:"height"`
	Width  int    `json:"width"`
}

type followers struct {
	Href  *string `json:"href"`
	Total int     `json:"total"`
}

type artistJSON struct {
	ExternalURLs externalURLs `json:"external_urls"`
	Followers    followers    `json:"followers"`
	Genres       []string     `json:"genres"`
	Href         string       `json:"href"`
	ID           string       `json:"id"`
	Images       []image      `json:"images"`
	Name         string       `json:"name"`
	Popularity   int          `json:"popularity"`
	Type         string       `json:"type"`
	URI          string       `json:"uri"`
}

type simpleArtistJSON struct {
	ExternalURLs externalURLs `json:"external_urls"`
	Href         string       `json:"href"`
	ID           string       `json:"id"`
	Name         string       `json:"name"`
	Type         string       `json:"type"`
	URI          string       `json:"uri"`
}

type restriction struct {
	Reason string `json:"reason"`
}

type simpleAlbumJSON struct {
	AlbumType            string             `json:"album_type"`
	TotalTracks          int                `json:"total_tracks"`
	AvailableMarkets     []string           `json:"available_markets"`
	ExternalURLs         externalURLs       `json:"external_urls"`
	Href                 string             `json:"href"`
	ID                   string             `json:"id"`
	Images               []image            `json:"images"`
	Name                 string             `json:"name"`
	ReleaseDate          string             `json:"release_date"`
	ReleaseDatePrecision string             `json:"release_date_precision"`
	Restrictions         *restriction       `json:"restrictions,omitempty"`
	Type                 string             `json:"type"`
	URI                  string             `json:"uri"`
	Artists              []simpleArtistJSON `json:"artists"`
	AlbumGroup           string             `json:"album_group,omitempty"`
}

type copyright struct {
	Text string `json:"text"`
	Type string `json:"type"`
}

type albumJSON struct {
	simpleAlbumJSON
	Tracks      page              `json:"tracks"`
	Copyrights  []copyright       `json:"copyrights"`
	ExternalIDs map[string]string `json:"external_ids"`
	Genres      []string          `json:"genres"`
	Label       string            `json:"label"`
	Popularity  int               `json:"popularity"`
}

type simpleTrackJSON struct {
	Artists          []simpleArtistJSON `json:"artists"`
	AvailableMarkets []string           `json:"available_markets"`
	DiscNumber       int                `json:"disc_number"`
	DurationMS       int                `json:"duration_ms"`
	Explicit         bool               `json:"explicit"`
	ExternalURLs     externalURLs       `json:"external_urls"`
	Href             string             `json:"href"`
	ID               string             `json:"id"`
	IsPlayable       *bool              `json:"is_playable,omitempty"`
	Restrictions     *restriction       `json:"restrictions,omitempty"`
	Name             string             `json:"name"`
	PreviewURL       *string            `json:"preview_url"`
	TrackNumber      int                `json:"track_number"`
	Type             string             `json:"type"`
	URI              string             `json:"uri"`
	IsLocal          bool               `json:"is_local"`
}

type trackJSON struct {
	Album *simpleAlbumJSON `json:"album"`
	simpleTrackJSON
	ExternalIDs map[string]string `json:"external_ids"`
	Popularity  int               `json:"popularity"`
}

// page is a PagingObject.
type page struct {
	Href     string  `json:"href"`
	Items    any     `json:"items"`
	Limit    int     `json:"limit"`
	Next     *string `json:"next"`
	Offset   int     `json:"offset"`
	Previous *string `json:"previous"`
	Total    int     `json:"total"`
}

// render builds the objects with links under base ("http://host/prefix").
type render struct {
	base   string
	market string
}

func (r render) href(kind, id string) string { return r.base + "/v1/" + kind + "s/" + id }

func images(kind, id string) []image {
	h := makeID("image:" + kind + ":" + id)
	out := make([]image, 0, 3)
	for _, s := range []int{640, 300, 64} {
		out = append(out, image{URL: fmt.Sprintf("https://i.scdn.co/image/ab67616d%08x%s", s, h), Height: s, Width: s})
	}
	return out
}

func (r render) artist(a *artist) artistJSON {
	return artistJSON{
		ExternalURLs: externalURLs{"https://open.spotify.com/artist/" + a.ID}, Followers: followers{Total: a.Followers},
		Genres: a.Genres, Href: r.href("artist", a.ID), ID: a.ID, Images: images("artist", a.ID), Name: a.Name,
		Popularity: a.Popularity, Type: "artist", URI: "spotify:artist:" + a.ID,
	}
}

func (r render) simpleArtists(as []*artist) []simpleArtistJSON {
	out := make([]simpleArtistJSON, len(as))
	for i, a := range as {
		out[i] = simpleArtistJSON{ExternalURLs: externalURLs{"https://open.spotify.com/artist/" + a.ID},
			Href: r.href("artist", a.ID), ID: a.ID, Name: a.Name, Type: "artist", URI: "spotify:artist:" + a.ID}
	}
	return out
}

// simpleAlbum renders an album; group is its album_group when listed in an
// artist's discography ("" elsewhere).
func (r render) simpleAlbum(al *album, group string) simpleAlbumJSON {
	out := simpleAlbumJSON{
		AlbumType: al.Type, TotalTracks: len(al.Tracks), AvailableMarkets: al.Markets,
		ExternalURLs: externalURLs{"https://open.spotify.com/album/" + al.ID}, Href: r.href("album", al.ID), ID: al.ID,
		Images: images("album", al.ID), Name: al.Name, ReleaseDate: al.Released, ReleaseDatePrecision: al.Precision,
		Type: "album", URI: "spotify:album:" + al.ID, Artists: r.simpleArtists(al.Artists), AlbumGroup: group,
	}
	if r.market != "" && !al.availableIn(r.market) {
		out.Restrictions = &restriction{Reason: "market"}
	}
	return out
}

func (r render) album(al *album, tracks page) albumJSON {
	year := al.Released[:4]
	return albumJSON{
		simpleAlbumJSON: r.simpleAlbum(al, ""), Tracks: tracks,
		Copyrights:  []copyright{{Text: "(C) " + year + " " + al.Label, Type: "C"}, {Text: "(P) " + year + " " + al.Label, Type: "P"}},
		ExternalIDs: map[string]string{"upc": al.UPC}, Genres: []string{}, Label: al.Label, Popularity: al.Pop,
	}
}

// fullAlbum is an album as Get Album answers it: with the first page (50)
// of its tracks.
func (r render) fullAlbum(al *album) albumJSON {
	params := url.Values{}
	if r.market != "" {
		params.Set("market", r.market)
	}
	return r.album(al, pageOf(r, "/v1/albums/"+al.ID+"/tracks", params, al.Tracks, 0, 50, func(t *track) any { return r.simpleTrack(t) }))
}

func (r render) simpleTrack(t *track) simpleTrackJSON {
	out := simpleTrackJSON{
		Artists: r.simpleArtists(t.Artists), AvailableMarkets: t.Album.Markets, DiscNumber: 1, DurationMS: t.Duration,
		Explicit: t.Explicit, ExternalURLs: externalURLs{"https://open.spotify.com/track/" + t.ID}, Href: r.href("track", t.ID),
		ID: t.ID, Name: t.Name, TrackNumber: t.Number, Type: "track", URI: "spotify:track:" + t.ID,
	}
	// Track relinking: with a market, Spotify says whether the track plays
	// there, and why not.
	if r.market != "" {
		ok := t.Album.availableIn(r.market)
		out.IsPlayable = &ok
		if !ok {
			out.Restrictions = &restriction{Reason: "market"}
		}
	}
	return out
}

func (r render) track(t *track) trackJSON {
	al := r.simpleAlbum(t.Album, "")
	return trackJSON{Album: &al, simpleTrackJSON: r.simpleTrack(t), ExternalIDs: map[string]string{"isrc": t.ISRC}, Popularity: t.Pop}
}

// pageOf slices items and builds the absolute href/next/previous links from
// path and the parameters that select the list (offset and limit are
// added).
func pageOf[T any](r render, path string, params url.Values, all []T, offset, limit int, item func(T) any) page {
	link := func(off int) *string {
		q := url.Values{}
		for k, v := range params {
			q[k] = v
		}
		q.Set("offset", strconv.Itoa(off))
		q.Set("limit", strconv.Itoa(limit))
		s := r.base + path + "?" + q.Encode()
		return &s
	}
	items := make([]any, 0, limit)
	for i := offset; i < len(all) && i < offset+limit; i++ {
		items = append(items, item(all[i]))
	}
	p := page{Href: *link(offset), Items: items, Limit: limit, Offset: offset, Total: len(all)}
	if offset+limit < len(all) {
		p.Next = link(offset + limit)
	}
	if offset > 0 {
		p.Previous = link(max(0, offset-limit))
	}
	return p
}
