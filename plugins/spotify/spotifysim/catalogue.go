package spotifysim

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// The catalogue is generated deterministically from a fixed seed list, so
// every run (and every test) sees the same ids, names and counts. Artists
// have dozens of albums so paging is exercised; BTS has exactly 95
// (Artist95ID), and one album has more than 50 tracks so an album's embedded
// track page has a next link.

// Well-known ids of the generated catalogue, for tests and examples.
const (
	// Artist95ID is BTS (the id from the Korean tutorial), with exactly 95
	// albums across all album groups.
	Artist95ID = "3Nrfpe0tUJi4K4DXYWgMUX"
	// Artist95Albums is how many albums Artist95ID has.
	Artist95Albums = 95
	// MilesDavisID is an artist whose "Complete Sessions" box has more than
	// 50 tracks.
	MilesDavisID = "0kbYTNQb4Pb1rPbbaF0pT4"
	// MilesDavisCompleteSessions is Miles Davis's 63-track album.
	MilesDavisCompleteSessions = "NEk5XjBrMMO5I6rY8Wi2Ys"
	// TaniaBowraID is the small artist of Spotify's own examples (3 albums).
	TaniaBowraID = "08td7MxkoHQkXnWAYD8d6Q"
	// SampleAlbumID is BTS's newest album, SampleTrackID its first track.
	SampleAlbumID = "Q1l4dkyOeaU9mJ8I7kxNHr"
	SampleTrackID = "2RzoBbbGTK7OgBSHci53be"

	// The ids that sluice's documentation and sluicectl's help use, so
	// every documented command works in the sandbox. The album and the
	// Cut To The Feeling track are the examples of Spotify's own reference;
	// DocTrackID is the track of iNeo's examples (and sluice's README).
	DocAlbumID  = "4aawyAB9vmqN3uQ7FjRGTy" // Pitbull, Global Warming
	DocTrackID  = "6fx5VOjqYNBHcDf5GIF5g5" // Global Warming's first track
	DocTrack2ID = "11dFghVXANMlKmJXsNCbNl" // Carly Rae Jepsen, Cut To The Feeling
)

// Markets is where the simulated catalogue is sold: the markets accepted by
// the market parameter. Most content is available in all of them; some is
// restricted to one, so market filtering is observable.
var Markets = []string{
	"AD", "AE", "AR", "AT", "AU", "BE", "BG", "BO", "BR", "CA", "CH", "CL", "CO", "CR", "CY", "CZ",
	"DE", "DK", "DO", "EC", "EE", "EG", "ES", "FI", "FR", "GB", "GR", "GT", "HK", "HN", "HU", "ID",
	"IE", "IL", "IN", "IS", "IT", "JP", "KR", "LT", "LU", "LV", "MA", "MT", "MX", "MY", "NI", "NL",
	"NO", "NZ", "PA", "PE", "PH", "PL", "PT", "PY", "RO", "SA", "SE", "SG", "SK", "SV", "TH", "TR",
	"TW", "US", "UY", "VN", "ZA",
}

type artist struct {
	ID         string
	Name       string
	Genres     []string
	Popularity int
	Followers  int
	Albums     []*album // the artist's discography, newest first
}

type album struct {
	ID        string
	Name      string
	Type      string // album, single, compilation
	Artists   []*artist
	Released  string
	Precision string // year, month, day
	Markets   []string
	Tracks    []*track
	Label     string
	UPC       string
	Pop       int
	// group is the relation to the artist whose discography lists it;
	// appears_on albums belong to another main artist.
	group map[string]string // artist id -> album_group
}

type track struct {
	ID       string
	Name     string
	Album    *album
	Artists  []*artist
	Number   int
	Duration int
	Explicit bool
	ISRC     string
	Pop      int
}

type catalogue struct {
	artists []*artist
	byID    map[string]*artist
	albums  map[string]*album
	tracks  map[string]*track
	// albumOrder and trackOrder keep search results in a stable order.
	albumOrder []*album
	trackOrder []*track
}

// artistSeed is one generated artist: name, fixed id (or "" for a derived
// one), genres, popularity and how many albums it has.
type artistSeed struct {
	name, id   string
	genres     []string
	popularity int
	albums     int
}

var artistSeeds = []artistSeed{
	{"BTS", Artist95ID, []string{"k-pop", "k-pop boy group"}, 90, Artist95Albums},
	{"IU", "3HqSLMAZ3g3d5poNaI7GOU", []string{"k-pop", "k-ballad"}, 78, 48},
	{"BLACKPINK", "41MozSoPIsD1dJM0CLPjZF", []string{"k-pop", "k-pop girl group"}, 84, 24},
	{"TWICE", "7n2Ycct7Beij7Dj7meI4X0", []string{"k-pop", "k-pop girl group"}, 80, 60},
	{"SEVENTEEN", "7nqOGRxlXj7N2JYbgNEjYH", []string{"k-pop", "k-pop boy group"}, 77, 41},
	{"Stray Kids", "2dIgFjalVxs4ThymZ67YCE", []string{"k-pop", "k-pop boy group"}, 79, 37},
	{"NewJeans", "6HvZYsbFfjnjFrWF950C9d", []string{"k-pop", "k-pop girl group"}, 81, 12},
	{"Miles Davis", MilesDavisID, []string{"bebop", "cool jazz", "jazz"}, 70, 72},
	{"Radiohead", "4Z8W4fKeB5YxbusRsdQVPb", []string{"alternative rock", "art rock"}, 79, 30},
	{"Daft Punk", "4tZwfgrHOc3mvqYlEYSvVi", []string{"electro", "filter house"}, 80, 18},
	{"Tania Bowra", TaniaBowraID, []string{}, 4, 3},
	// Tribute acts: a search for "BTS" finds more artists than one page.
	{"BTS Piano Covers", "", []string{"piano cover"}, 31, 6},
	{"BTS Lullaby Ensemble", "", []string{"lullaby"}, 28, 5},
	{"BTS Tribute Orchestra", "", []string{"orchestral cover"}, 24, 4},
	{"BTS String Quartet", "", []string{"string quartet"}, 22, 4},
	{"BTS Karaoke Band", "", []string{"karaoke"}, 18, 3},
	{"Brass for BTS", "", []string{"brass band"}, 12, 2},
	{"Various Artists", "0LyfQWJT6nXafLPZqxe9Of", []string{}, 0, 0},
}

var (
	adjectives = []string{"Blue", "Golden", "Silent", "Electric", "Midnight", "Endless", "Wild", "Paper", "Velvet", "Neon",
		"Broken", "Burning", "Hidden", "Young", "Crystal", "Lonely", "Magic", "Summer", "Winter", "Spring",
		"Lost", "Secret", "Brave", "Gentle", "Savage", "Sweet", "Bitter", "Shining", "Fading", "Rising"}
	nouns = []string{"Dream", "Road", "Heart", "Sky", "Ocean", "Fire", "Garden", "Mirror", "Light", "Shadow",
		"City", "River", "Moon", "Star", "Wings", "Memory", "Letter", "Window", "Story", "Season",
		"Echo", "Horizon", "Storm", "Rain", "Bloom", "Butterfly", "Island", "Map", "Soul", "Youth"}
	labels = []string{"BIGHIT MUSIC", "EDAM Entertainment", "YG Entertainment", "JYP Entertainment", "PLEDIS Entertainment",
		"ADOR", "Columbia", "XL Recordings", "Parlophone", "Independent"}
)

// rng is a tiny deterministic generator (splitmix64) so the catalogue does
// not depend on math/rand's algorithm or on global state.
type rng struct{ s uint64 }

func newRNG(seed string) *rng {
	h := sha256.Sum256([]byte(seed))
	return &rng{s: binary.BigEndian.Uint64(h[:8])}
}

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn returns a value in [0, n).
func (r *rng) intn(n int) int { return int(r.next() % uint64(n)) }

const base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// makeID derives a 22-character base62 id from a seed.
func makeID(seed string) string {
	r := newRNG("id:" + seed)
	b := make([]byte, 22)
	for i := range b {
		b[i] = base62Alphabet[r.intn(62)]
	}
	return string(b)
}

func newCatalogue() *catalogue {
	c := &catalogue{byID: map[string]*artist{}, albums: map[string]*album{}, tracks: map[string]*track{}}
	for _, s := range artistSeeds {
		id := s.id
		if id == "" {
			id = makeID("artist:" + s.name)
		}
		r := newRNG("followers:" + s.name)
		a := &artist{ID: id, Name: s.name, Genres: s.genres, Popularity: s.popularity,
			Followers: s.popularity*s.popularity*1000 + r.intn(100000)}
		c.artists = append(c.artists, a)
		c.byID[id] = a
	}
	various := c.byID["0LyfQWJT6nXafLPZqxe9Of"]
	for i, s := range artistSeeds {
		a := c.artists[i]
		for n := range s.albums {
			c.addAlbum(a, various, n, s.albums)
		}
	}
	c.addDocumented()
	return c
}

// documentedSeeds are hand-made records whose ids the documentation uses.
// They are added after the generated catalogue, so every generated id,
// name and count (BTS's 95 albums) stays as it was.
var documentedSeeds = []struct {
	artistName, artistID string
	genres               []string
	popularity           int
	albumName, albumID   string
	albumType, released  string
	label, upc           string
	trackIDs             []string // fixed ids of the first tracks
	trackNames           []string
}{
	{"Pitbull", "0TnOYISbd1XYRBk9myaseg", []string{"dance pop", "miami hip hop", "pop"}, 82,
		"Global Warming", DocAlbumID, "album", "2012-11-16", "Mr.305/Polo Grounds Music/RCA Records", "886443671584",
		[]string{DocTrackID},
		[]string{"Global Warming", "Don't Stop the Party", "Feel This Moment", "Back in Time", "Hope We Meet Again",
			"Party Ain't Over", "Drinks for You", "Have Some Fun", "Outta Nowhere", "Tchu Tchu Tcha",
			"Last Night", "I'm Off That", "Echa Pa'lla", "Everybody Dance", "Timber", "11:59"}},
	{"Carly Rae Jepsen", "6sFIWsNpZYqfjUpaCgueju", []string{"canadian pop", "dance pop", "pop"}, 74,
		"Cut To The Feeling", "0tGPJ0bkWOUmH7MEOR77qc", "single", "2017-05-26", "School Boy/Interscope Records", "602557660473",
		[]string{DocTrack2ID},
		[]string{"Cut To The Feeling"}},
}

func (c *catalogue) addDocumented() {
	for _, d := range documentedSeeds {
		a := &artist{ID: d.artistID, Name: d.artistName, Genres: d.genres, Popularity: d.popularity,
			Followers: d.popularity * d.popularity * 1000}
		c.artists = append(c.artists, a)
		c.byID[a.ID] = a
		al := &album{ID: d.albumID, Name: d.albumName, Type: d.albumType, Artists: []*artist{a},
			Released: d.released, Precision: "day", Markets: Markets, Label: d.label, UPC: d.upc,
			Pop: d.popularity - 10, group: map[string]string{a.ID: d.albumType}}
		r := newRNG("album:" + al.ID)
		for n, name := range d.trackNames {
			id := makeID(fmt.Sprintf("track:%s:%d", al.ID, n))
			if n < len(d.trackIDs) {
				id = d.trackIDs[n]
			}
			tr := &track{ID: id, Name: name, Album: al, Artists: al.Artists, Number: n + 1,
				Duration: 150000 + r.intn(90000), Explicit: r.intn(5) == 0,
				ISRC: fmt.Sprintf("USRC1%07d", r.intn(10_000_000)), Pop: max(0, al.Pop-r.intn(20))}
			al.Tracks = append(al.Tracks, tr)
			c.tracks[tr.ID] = tr
			c.trackOrder = append(c.trackOrder, tr)
		}
		a.Albums = append(a.Albums, al)
		c.albums[al.ID] = al
		c.albumOrder = append(c.albumOrder, al)
	}
}

// addAlbum generates the n-th (of total) album of a's discography. Groups
// cycle so that every include_groups filter has something to find; one in
// nine is sold in a single market only.
func (c *catalogue) addAlbum(a, various *artist, n, total int) {
	r := newRNG(fmt.Sprintf("album:%s:%d", a.ID, n))
	groups := []string{"album", "single", "single", "appears_on", "album", "single", "compilation", "single", "appears_on", "album"}
	group := groups[n%len(groups)]
	al := &album{ID: makeID(fmt.Sprintf("album:%s:%d", a.ID, n)), Label: labels[r.intn(len(labels))], Pop: max(0, a.Popularity-10-r.intn(30)), group: map[string]string{a.ID: group}}
	al.Name = adjectives[r.intn(len(adjectives))] + " " + nouns[r.intn(len(nouns))]
	switch group {
	case "album":
		al.Type, al.Artists = "album", []*artist{a}
	case "single":
		al.Type, al.Artists = "single", []*artist{a}
	case "compilation":
		al.Type, al.Artists = "compilation", []*artist{a}
		al.Name = "The Best of " + a.Name + ": " + al.Name
	case "appears_on":
		// Someone else's record featuring a: listed in a's discography,
		// but its main artist is another one.
		al.Type, al.Artists = "compilation", []*artist{various, a}
		al.Name = al.Name + " (Soundtrack)"
	}
	// Newest first: release years count down from 2025.
	year := 2025 - n*(40/max(total, 1)) - n/12
	if a.ID == MilesDavisID {
		// Two a year from 1991 back to 1956, so the documented search
		// artist:"Miles Davis" year:1959 finds something, as it would.
		year = 1991 - n/2
	}
	switch {
	case n%11 == 5:
		al.Released, al.Precision = fmt.Sprintf("%d", year), "year"
	case n%7 == 3:
		al.Released, al.Precision = fmt.Sprintf("%d-%02d", year, 1+r.intn(12)), "month"
	default:
		al.Released, al.Precision = fmt.Sprintf("%d-%02d-%02d", year, 1+r.intn(12), 1+r.intn(28)), "day"
	}
	al.Markets = Markets
	if n%9 == 4 {
		al.Markets = []string{"JP"}
	}
	al.UPC = fmt.Sprintf("%012d", r.next()%1_000_000_000_000)
	tracks := 0
	switch al.Type {
	case "single":
		tracks = 1 + r.intn(3)
	case "album":
		tracks = 8 + r.intn(7)
	case "compilation":
		tracks = 12 + r.intn(9)
	}
	if a.ID == MilesDavisID && n == 0 {
		al.Name, al.Type, tracks = "The Complete Sessions", "compilation", 63
		al.group[a.ID] = "compilation"
	}
	for t := range tracks {
		tr := &track{ID: makeID(fmt.Sprintf("track:%s:%d", al.ID, t)), Album: al, Artists: al.Artists, Number: t + 1,
			Duration: 120000 + r.intn(180000), Explicit: r.intn(5) == 0,
			ISRC: fmt.Sprintf("KRA%02d%07d", (year % 100), r.intn(10_000_000)), Pop: max(0, al.Pop-r.intn(20))}
		if al.group[a.ID] == "appears_on" {
			tr.Artists = []*artist{a}
		}
		tr.Name = nouns[r.intn(len(nouns))] + " " + []string{"Song", "Waltz", "Blues", "Dance", "Ballad", "Interlude", "Anthem", "Lullaby"}[r.intn(8)]
		if t == 0 && tracks > 1 {
			tr.Name = al.Name
		}
		al.Tracks = append(al.Tracks, tr)
		c.tracks[tr.ID] = tr
		c.trackOrder = append(c.trackOrder, tr)
	}
	a.Albums = append(a.Albums, al)
	c.albums[al.ID] = al
	c.albumOrder = append(c.albumOrder, al)
}

func (al *album) availableIn(market string) bool {
	return market == "" || slices.Contains(al.Markets, market)
}

// discography returns a's albums whose group is in groups (all if empty)
// and that are sold in market (all if empty).
func (a *artist) discography(groups []string, market string) []*album {
	var out []*album
	for _, al := range a.Albums {
		if len(groups) > 0 && !slices.Contains(groups, al.group[a.ID]) {
			continue
		}
		if !al.availableIn(market) {
			continue
		}
		out = append(out, al)
	}
	return out
}

// query is a parsed search q: free words plus field filters.
type query struct {
	words   []string
	filters map[string]string
}

// parseQuery reads the documented q syntax: words, and field filters
// artist:, album:, track:, year:, genre:, isrc:, upc:, tag:new, tag:hipster,
// with double quotes grouping words.
func parseQuery(q string) query {
	out := query{filters: map[string]string{}}
	var tokens []string
	var cur strings.Builder
	quoted := false
	for _, r := range q {
		switch {
		case r == '"':
			quoted = !quoted
		case (r == ' ' || r == '\t') && !quoted:
			if cur.Len() > 0 {
				tokens = append(tokens, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		tokens = append(tokens, cur.String())
	}
	for _, t := range tokens {
		if k, v, ok := strings.Cut(t, ":"); ok {
			switch strings.ToLower(k) {
			case "artist", "album", "track", "year", "genre", "isrc", "upc", "tag":
				out.filters[strings.ToLower(k)] = strings.ToLower(v)
				continue
			}
		}
		out.words = append(out.words, strings.ToLower(t))
	}
	return out
}

func containsAll(hay string, words []string) bool {
	hay = strings.ToLower(hay)
	for _, w := range words {
		if !strings.Contains(hay, w) {
			return false
		}
	}
	return true
}

func artistNames(as []*artist) string {
	names := make([]string, len(as))
	for i, a := range as {
		names[i] = a.Name
	}
	return strings.Join(names, " ")
}

// yearMatches reads year:1959 or year:1955-1960.
func yearMatches(filter, released string) bool {
	y := released[:4]
	if lo, hi, ok := strings.Cut(filter, "-"); ok {
		return y >= lo && y <= hi
	}
	return y == filter
}

func (c *catalogue) searchArtists(q query) []*artist {
	if q.filters["album"] != "" || q.filters["track"] != "" || q.filters["isrc"] != "" || q.filters["upc"] != "" || q.filters["tag"] != "" {
		return nil
	}
	var out []*artist
	for _, a := range c.artists {
		if a.Name == "Various Artists" {
			continue
		}
		if f := q.filters["artist"]; f != "" && !strings.Contains(strings.ToLower(a.Name), f) {
			continue
		}
		if f := q.filters["genre"]; f != "" && !slices.ContainsFunc(a.Genres, func(g string) bool { return strings.Contains(g, f) }) {
			continue
		}
		if f := q.filters["year"]; f != "" && !slices.ContainsFunc(a.Albums, func(al *album) bool { return yearMatches(f, al.Released) }) {
			continue
		}
		if containsAll(a.Name, q.words) {
			out = append(out, a)
		}
	}
	// Most popular first, as Spotify ranks.
	slices.SortStableFunc(out, func(x, y *artist) int { return y.Popularity - x.Popularity })
	return out
}

func (c *catalogue) searchAlbums(q query, market string) []*album {
	if q.filters["track"] != "" || q.filters["isrc"] != "" || q.filters["genre"] != "" {
		return nil
	}
	var out []*album
	for _, al := range c.albumOrder {
		if !al.availableIn(market) {
			continue
		}
		if f := q.filters["artist"]; f != "" && !strings.Contains(strings.ToLower(artistNames(al.Artists)), f) {
			continue
		}
		if f := q.filters["album"]; f != "" && !strings.Contains(strings.ToLower(al.Name), f) {
			continue
		}
		if f := q.filters["year"]; f != "" && !yearMatches(f, al.Released) {
			continue
		}
		if f := q.filters["upc"]; f != "" && al.UPC != f {
			continue
		}
		if f := q.filters["tag"]; f != "" && !(f == "hipster" && al.Pop < 10) {
			// tag:new would be albums of the last two weeks: none here.
			continue
		}
		if containsAll(al.Name+" "+artistNames(al.Artists), q.words) {
			out = append(out, al)
		}
	}
	return out
}

func (c *catalogue) searchTracks(q query, market string) []*track {
	if q.filters["upc"] != "" || q.filters["tag"] != "" {
		return nil
	}
	var out []*track
	for _, t := range c.trackOrder {
		if !t.Album.availableIn(market) {
			continue
		}
		if f := q.filters["artist"]; f != "" && !strings.Contains(strings.ToLower(artistNames(t.Artists)), f) {
			continue
		}
		if f := q.filters["album"]; f != "" && !strings.Contains(strings.ToLower(t.Album.Name), f) {
			continue
		}
		if f := q.filters["track"]; f != "" && !strings.Contains(strings.ToLower(t.Name), f) {
			continue
		}
		if f := q.filters["year"]; f != "" && !yearMatches(f, t.Album.Released) {
			continue
		}
		if f := q.filters["isrc"]; f != "" && strings.ToLower(t.ISRC) != f {
			continue
		}
		if f := q.filters["genre"]; f != "" && !slices.ContainsFunc(t.Artists, func(a *artist) bool {
			return slices.ContainsFunc(a.Genres, func(g string) bool { return strings.Contains(g, f) })
		}) {
			continue
		}
		if containsAll(t.Name+" "+artistNames(t.Artists)+" "+t.Album.Name, q.words) {
			out = append(out, t)
		}
	}
	return out
}
