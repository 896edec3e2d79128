package hellorfsim

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Named is an {id, name} pair, the shape of every category entry.
type Named struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

// bpmRange is a tempo category: [Lo, Hi) beats per minute.
type bpmRange struct {
	Named
	Lo, Hi int
}

// The categories. genres, moods and instruments start with the entries of
// the original's example answer (ids and names as printed there) and go on
// with plausible ones; bpms are exactly the document's six ranges.
var (
	genres = []Named{
		{1354, "现代交响"}, {1356, "中国民族"}, {1357, "流行"}, {1358, "电子"}, {1359, "摇滚"}, {1360, "爵士"},
		{1361, "古典"}, {1362, "嘻哈"}, {1363, "氛围"}, {1364, "民谣"}, {1365, "世界音乐"}, {1366, "电影配乐"},
	}
	moods = []Named{
		{1350, "宽广/磅礴"}, {1351, "戏剧的"}, {1370, "欢快"}, {1371, "悲伤"}, {1372, "浪漫"}, {1373, "紧张"},
		{1374, "平静"}, {1375, "神秘"}, {1376, "励志"}, {1377, "怀旧"},
	}
	instruments = []Named{
		{1353, "弦乐组"}, {1391, "中国民族乐器"}, {80, "小提琴"}, {81, "大提琴"}, {612, "巴松管"}, {82, "钢琴"},
		{83, "吉他"}, {84, "鼓"}, {85, "合成器"}, {86, "长笛"}, {87, "小号"}, {88, "古筝"},
	}
	bpms = []bpmRange{
		{Named{1, "非常慢(0-60 bpm)"}, 0, 60},
		{Named{2, "缓慢(60-100 bpm)"}, 60, 100},
		{Named{3, "适中(100-120 bpm)"}, 100, 120},
		{Named{4, "充满活力(120-140 bpm)"}, 120, 140},
		{Named{5, "快速(140-160 bpm)"}, 140, 160},
		{Named{6, "非常快(160-400 bpm)"}, 160, 400},
	}
)

// Permission is a licence a track can be bought under.
type Permission struct {
	ID    int
	Name  string
	Price string // as hellorf writes it: "21.00"
	Type  string
	// AssetType is what my-purchases and purchase-detail call the bought
	// file ("hd", ...).
	AssetType string
}

// permissions; 35 and 33 are the ids the original's examples show.
var permissions = []Permission{
	{35, "SSTK音乐-全媒体", "21.00", "all", "all"},
	{33, "HD", "9.90", "hd", "hd"},
	{36, "SSTK音乐-网络", "12.00", "web", "web"},
	{37, "SSTK音乐-企业宣传", "49.00", "corporate", "corporate"},
}

// Catalogue identifiers tests can rely on.
const (
	// SampleAudioID is the original's example track ("Beginner's Luck");
	// it can be bought under every permission.
	SampleAudioID = 505947
	// SamplePermissionID is the original's example permission (全媒体, 21.00).
	SamplePermissionID = 35
	// UnpurchasableAudioID is a track with no permissions (can_purchase 0).
	UnpurchasableAudioID = 505947 + 13
	// SeededPurchaseID is a purchase the account made long ago (the
	// original's my-purchases example id).
	SeededPurchaseID = 178
	// FirstPurchaseID is the id of the first purchase made through the
	// simulator (the original's purchase example id); later ones count up.
	FirstPurchaseID = 442
)

// track is one piece of music.
type track struct {
	ID          int
	Title       string
	Artist      string
	Type        string
	BPM         int
	Duration    int // seconds
	Description string
	Genres      []Named
	Moods       []Named
	Instruments []Named
	LevelType   int
	Vhifun      bool
	Permissions []Permission
	// tags are the lower-case words keyword search matches: hellorf's
	// search is tag-based, not by title (README §2 FAQ).
	tags map[string]bool
}

func (t *track) canPurchase() bool { return len(t.Permissions) > 0 }

var (
	adjectives = []string{"Golden", "Quiet", "Electric", "Distant", "Broken", "Silver", "Endless", "Rising", "Hidden", "Gentle",
		"Wild", "Midnight", "Paper", "Crystal", "Lonely", "Bright", "Northern", "Secret", "Velvet", "Summer"}
	nouns = []string{"River", "Skyline", "Horizon", "Garden", "Echo", "Journey", "Harbor", "Lantern", "Memory", "Road",
		"Mountain", "Dream", "Festival", "Window", "Ocean", "Forest", "Signal", "Parade", "Valley", "Morning"}
	// extraTags are tag words beyond the category names; 云南 is the
	// document's own keyword example.
	extraTags = []string{"piano", "guitar", "云南", "corporate", "happy", "sad", "epic", "calm", "travel", "nature",
		"city", "night", "rain", "love", "drums", "strings", "wedding", "sport", "technology", "children"}
	types      = []string{"签约供应商", "独家", "Shutterstock"}
	levelTypes = []int{1, 2, 3, 99, 100}
)

// newCatalog generates n tracks deterministically: the same options always
// give the same catalogue, so tests and sandbox sessions are reproducible.
func newCatalog(n int) ([]*track, map[int]*track) {
	rng := rand.New(rand.NewPCG(20160829, 505947))
	list := make([]*track, 0, n)
	byID := make(map[int]*track, n)
	pick := func(from []Named, max int) []Named {
		k := rng.IntN(max + 1)
		out := []Named{}
		for _, i := range rng.Perm(len(from))[:k] {
			out = append(out, from[i])
		}
		return out
	}
	for i := range n {
		t := &track{
			ID:          SampleAudioID + 13*i,
			Title:       adjectives[rng.IntN(len(adjectives))] + " " + nouns[rng.IntN(len(nouns))],
			Artist:      fmt.Sprintf("Z%08d", 1803360+rng.IntN(90000)),
			Type:        types[rng.IntN(len(types))],
			BPM:         50 + rng.IntN(150),
			Duration:    8 + rng.IntN(233),
			Genres:      pick(genres, 2),
			Moods:       pick(moods, 2),
			Instruments: pick(instruments, 3),
			LevelType:   levelTypes[rng.IntN(len(levelTypes))],
			Vhifun:      rng.IntN(4) == 0,
		}
		// Most tracks can be bought under a few permissions; some under
		// none.
		if rng.IntN(8) != 0 {
			for _, p := range permissions {
				if rng.IntN(3) != 0 {
					t.Permissions = append(t.Permissions, p)
				}
			}
		}
		t.tags = map[string]bool{}
		for _, w := range strings.Fields(strings.ToLower(t.Title)) {
			t.tags[w] = true
		}
		for _, group := range [][]Named{t.Genres, t.Moods, t.Instruments} {
			for _, c := range group {
				t.tags[strings.ToLower(c.Name)] = true
			}
		}
		for range 1 + rng.IntN(3) {
			t.tags[extraTags[rng.IntN(len(extraTags))]] = true
		}
		list = append(list, t)
		byID[t.ID] = t
	}
	// The fixed points tests rely on, as the original's examples print
	// them.
	s := list[0]
	s.Title, s.Artist, s.Type, s.BPM, s.Duration = "Beginner's Luck", "Z01803360", "签约供应商", 95, 28
	s.Genres, s.Moods = []Named{}, []Named{}
	s.Instruments = []Named{{80, "小提琴"}, {81, "大提琴"}, {612, "巴松管"}}
	s.Permissions = append([]Permission(nil), permissions...)
	s.LevelType = 1
	s.tags = map[string]bool{"beginner's": true, "luck": true, "小提琴": true, "大提琴": true, "巴松管": true, "piano": true, "云南": true, "strings": true}
	if n > 1 {
		list[1].Permissions = nil
	}
	return list, byID
}

// bpmCategory returns the tempo range holding bpm.
func bpmCategory(id int) (bpmRange, bool) {
	for _, b := range bpms {
		if b.ID == id {
			return b, true
		}
	}
	return bpmRange{}, false
}

func hasNamed(list []Named, id int) bool {
	for _, n := range list {
		if n.ID == id {
			return true
		}
	}
	return false
}

func (t *track) permission(id int) (Permission, bool) {
	for _, p := range t.Permissions {
		if p.ID == id {
			return p, true
		}
	}
	return Permission{}, false
}
