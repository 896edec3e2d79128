package main

import (
	"regexp"
	"strings"
)

// hellorf names its categories and writes its error messages in Chinese,
// and publishes no code list, so the English next to them in human output
// comes from this table, which sluice owns. It holds the category names of
// hellorf's document and of sluice's simulator, the licence and supplier
// words seen in answers, and the messages seen or documented. Unknown text
// is shown as it is, without a gloss: a guess would be worse than none.
// --json is never glossed.

// nameGloss translates category, supplier and licence names.
var nameGloss = map[string]string{
	// genres
	"现代交响": "modern symphonic", "中国民族": "Chinese folk", "流行": "pop", "电子": "electronic",
	"摇滚": "rock", "爵士": "jazz", "古典": "classical", "嘻哈": "hip hop", "氛围": "ambient",
	"民谣": "folk", "世界音乐": "world music", "电影配乐": "film score",
	// moods
	"宽广/磅礴": "broad/majestic", "戏剧的": "dramatic", "欢快": "cheerful", "悲伤": "sad",
	"浪漫": "romantic", "紧张": "tense", "平静": "calm", "神秘": "mysterious", "励志": "inspiring",
	"怀旧": "nostalgic",
	// instruments
	"弦乐组": "string section", "中国民族乐器": "Chinese folk instruments", "小提琴": "violin",
	"大提琴": "cello", "巴松管": "bassoon", "钢琴": "piano", "吉他": "guitar", "鼓": "drums",
	"合成器": "synthesizer", "长笛": "flute", "小号": "trumpet", "古筝": "guzheng",
	// tempo ranges, without their "(0-60 bpm)"
	"非常慢": "very slow", "缓慢": "slow", "适中": "moderate", "充满活力": "energetic",
	"快速": "fast", "非常快": "very fast",
	// supplier types and licence names
	"签约供应商": "contracted supplier", "独家": "exclusive", "优选": "select",
	"SSTK音乐-全媒体": "SSTK music, all media", "SSTK音乐-网络": "SSTK music, web",
	"SSTK音乐-企业宣传": "SSTK music, corporate promotion",
}

// messageGloss translates hellorf's error messages: exact ones, and
// patterns for those that name a parameter or a value.
var messageGloss = []struct {
	re      *regexp.Regexp
	english string
}{
	{regexp.MustCompile(`^音乐不存在$`), "audio not found"},
	{regexp.MustCompile(`^购买记录不存在$`), "purchase record not found"},
	{regexp.MustCompile(`^该音乐不支持此授权$`), "this track is not offered under that licence"},
	{regexp.MustCompile(`^服务器内部错误$`), "internal server error"},
	{regexp.MustCompile(`^参数格式错误$`), "malformed parameters"},
	{regexp.MustCompile(`^失败原因$`), "failure reason"},
	{regexp.MustCompile(`^稍后再试$`), "try again later"},
	{regexp.MustCompile(`^(?:sign ?)?签名错误$`), "wrong signature"},
	{regexp.MustCompile(`^缺少参数 ?(\S+)$`), "missing parameter $1"},
	{regexp.MustCompile(`^(\S+) ?必须是整数$`), "$1 must be an integer"},
	{regexp.MustCompile(`^(\S+) 和 (\S+) ?必须大于 ?0$`), "$1 and $2 must be greater than 0"},
	{regexp.MustCompile(`^(\S+) ?格式错误`), "$1 is malformed"},
	{regexp.MustCompile(`^(\S+) ?无效$`), "$1 is invalid"},
	{regexp.MustCompile(`^(\S+) ?只能是 ?(\S+) ?或 ?(\S+)$`), "$1 must be $2 or $3"},
	{regexp.MustCompile(`^接口不存在: ?(\S+)$`), "no such endpoint: $1"},
	{regexp.MustCompile(`^请求方法错误[,，]请使用 ?(\S+)$`), "wrong request method; use $1"},
	{regexp.MustCompile(`^(\S+) ?必须是当前时间戳\(秒\)$`), "$1 must be the current Unix time in seconds"},
	{regexp.MustCompile(`^(\S+) ?已过期\(有效期 ?([^)]*)\)$`), "$1 has expired (valid for $2)"},
	{regexp.MustCompile(`^(\S+) ?已过期$`), "$1 has expired"},
}

// hasHan reports whether s has Chinese characters, i.e. wants a gloss.
func hasHan(s string) bool {
	for _, r := range s {
		if r >= 0x4E00 && r <= 0x9FFF {
			return true
		}
	}
	return false
}

// englishName is the English for a category or licence name, or "".
func englishName(name string) string {
	name = strings.TrimSpace(name)
	if e, ok := nameGloss[name]; ok {
		return e
	}
	// A tempo range: "适中(100-120 bpm)" is "moderate"; the numbers are
	// in the name already.
	if word, _, ok := strings.Cut(name, "("); ok {
		if e, ok := nameGloss[strings.TrimSpace(word)]; ok {
			return e
		}
	}
	return ""
}

// glossName is "古典 (classical)" for a known name, else the name.
func glossName(name string) string {
	if e := englishName(name); e != "" && hasHan(name) {
		return name + " (" + e + ")"
	}
	return name
}

// glossMessage is "购买记录不存在 (purchase record not found)" for a known
// message, else the message.
func glossMessage(msg string) string {
	m := strings.TrimSpace(msg)
	if !hasHan(m) {
		return msg
	}
	for _, g := range messageGloss {
		if idx := g.re.FindStringSubmatchIndex(m); idx != nil {
			return msg + " (" + string(g.re.ExpandString(nil, g.english, m, idx)) + ")"
		}
	}
	return msg
}
