package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
)

func hellorfOK(w http.ResponseWriter, data any) {
	writeJSON(w, 200, map[string]any{"result": true, "data": data})
}

func hellorfFail(w http.ResponseWriter, status, code int, name, class, msg string) {
	w.Header().Set("Sluice-Upstream-Status", fmt.Sprintf("%d %s", code, name))
	w.Header().Set("Sluice-Upstream-Class", class)
	writeJSON(w, status, map[string]any{"result": false, "message": msg, "code": code})
}

var testCategories = map[string]any{
	"genres":      []map[string]any{{"id": 1354, "name": "现代交响"}, {"id": 1357, "name": "流行"}, {"id": 1358, "name": "电子"}},
	"moods":       []map[string]any{{"id": 1370, "name": "欢快"}, {"id": 1371, "name": "悲伤"}},
	"instruments": []map[string]any{{"id": 80, "name": "小提琴"}, {"id": 81, "name": "大提琴"}, {"id": 82, "name": "钢琴"}},
	"bpms":        []map[string]any{{"id": 2, "name": "缓慢(60-100 bpm)"}, {"id": 3, "name": "适中(100-120 bpm)"}},
}

var testDetail = map[string]any{
	"audio": map[string]any{"id": 505947, "title": "Beginner's Luck", "artist": "Z01803360", "type": "签约供应商", "bpm": 95, "duration": 28,
		"genres": []any{}, "moods": []any{}, "instruments": []map[string]any{{"id": 80, "name": "小提琴"}}, "preview_mp3_url": "http://x/p.mp3?Expires=1"},
	"permissions": []map[string]any{
		{"id": 35, "name": "SSTK音乐-全媒体", "price": "21.00", "type": "all", "duration": "00:02:00", "bpm": 120},
		{"id": 33, "name": "HD", "price": "9.90", "type": "hd", "duration": "00:00:28", "bpm": 95},
	},
}

// hellorfDaemon fakes the daemon's hellorf answers.
func hellorfDaemon(t *testing.T) *fakeDaemon {
	return newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/hellorf/audio/categories":
			hellorfOK(w, testCategories)
		case "/v1/hellorf/audio/search":
			hellorfOK(w, map[string]any{"current_page": 1, "per_page": 30, "total": 31, "list": []any{testDetail["audio"]}})
		case "/v1/hellorf/audio/detail":
			if r.URL.Query().Get("audio_id") != "505947" {
				hellorfFail(w, 404, 1005, "audio_not_found", "caller-error", "音乐不存在")
				return
			}
			hellorfOK(w, testDetail)
		case "/v1/hellorf/audio/purchase":
			hellorfOK(w, map[string]any{"id": 442, "url": "http://oss/a.mp3?Expires=1649324720&Signature=x"})
		case "/v1/hellorf/audio/my-purchases":
			hellorfOK(w, map[string]any{"current_page": 1, "per_page": "10", "total": 1, "list": []map[string]any{{
				"id": 178, "third_user_id": "", "plus_permission": map[string]any{"id": 33, "name": "HD"}, "able_id": 505947,
				"asset_type": "hd", "warrant_name": "广州汽车", "download_at": nil, "created_at": "2016-08-29 16:41:47"}}})
		default:
			http.NotFound(w, r)
		}
	})
}

func TestHellorfSearchResolvesNames(t *testing.T) {
	d := hellorfDaemon(t)
	r := runCtl(t, d.socket, "", "hellorf", "search", "piano", "and", "rain", "--genre", "流行", "--bpm", "110bpm", "--mood", "1371",
		"--instrument", "提琴组", "--duration", "20-60", "--per-page", "50")
	if r.code != 2 || !strings.Contains(r.stderr, `--instrument "提琴组" is not a known instrument`) {
		t.Fatalf("unknown instrument: %+v", r)
	}
	r = runCtl(t, d.socket, "", "hellorf", "search", "piano", "and", "rain", "--genre", "流行", "--bpm", "110bpm", "--mood", "1371",
		"--instrument", "钢", "--duration", "20-60", "--per-page", "50", "--purchasable")
	if r.code != 0 || !strings.Contains(r.stdout, "505947  Beginner's Luck  Z01803360  0:28    95") || !strings.Contains(r.stdout, "page 1 of 2, 31 tracks") {
		t.Fatalf("search: %+v", r)
	}
	var search *seenRequest
	for _, s := range d.requests() {
		if s.Path == "/v1/hellorf/audio/search" {
			search = &s
		}
	}
	want := url.Values{"keyword": {"piano and rain"}, "genre_id": {"1357"}, "bpm_id": {"3"}, "mood_id": {"1371"}, "instrument_id": {"82"},
		"duration_from": {"20"}, "duration_to": {"60"}, "per_page": {"50"}, "can_purchase": {"1"}}
	if search == nil || search.Query.Encode() != want.Encode() {
		t.Fatalf("search query %v, want %v", search, want)
	}
	// Ids need no lookup.
	d2 := hellorfDaemon(t)
	if r := runCtl(t, d2.socket, "", "hellorf", "search", "--genre", "1357"); r.code != 0 || len(d2.requests()) != 1 {
		t.Fatalf("search by id: %+v, %d requests", r, len(d2.requests()))
	}
}

func TestResolveCategory(t *testing.T) {
	list := []named{{"1", "非常慢(0-60 bpm)"}, {"2", "缓慢(60-100 bpm)"}, {"3", "Pop"}, {"4", "Pop Rock"}, {"5", "Jazz"}}
	cases := []struct {
		flag, in, want string
		bad            bool
	}{
		{"genre", "3", "3", false},
		{"genre", "pop", "3", false}, // exact beats partial
		{"genre", "jaz", "5", false},
		{"genre", "rock", "4", false},
		{"genre", "po", "", true}, // ambiguous
		{"genre", "metal", "", true},
		{"bpm", "60bpm", "2", false},
		{"bpm", "59BPM", "1", false},
		{"bpm", "500bpm", "", true},
	}
	for _, tc := range cases {
		got, err := resolveCategory(tc.flag, tc.in, list)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("resolveCategory(%s, %q) = %q, %v", tc.flag, tc.in, got, err)
		}
	}
}

func TestParseDurationRange(t *testing.T) {
	for _, tc := range []struct{ in, from, to string }{
		{"20-60", "20", "60"}, {"20-", "20", ""}, {"-60", "", "60"}, {"45", "45", "45"},
		{"60-20", "!", ""}, {"a-b", "!", ""}, {"-", "!", ""}, {"", "!", ""},
	} {
		from, to, err := parseDurationRange(tc.in)
		if tc.from == "!" {
			if err == nil {
				t.Errorf("%q accepted", tc.in)
			}
			continue
		}
		if err != nil || from != tc.from || to != tc.to {
			t.Errorf("%q: %q %q %v", tc.in, from, to, err)
		}
	}
}

func TestHellorfDetailShowsPrices(t *testing.T) {
	d := hellorfDaemon(t)
	r := runCtl(t, d.socket, "", "hellorf", "detail", "505947")
	for _, want := range []string{"title        Beginner's Luck", "PERMISSION  NAME", "35          SSTK音乐-全媒体 (SSTK music, all media)  21.00  all", "33          HD"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("detail lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runCtl(t, d.socket, "", "hellorf", "detail", "1")
	if r.code != 2 || !strings.Contains(r.stderr, "hellorf answered code 1005 audio_not_found: 音乐不存在") {
		t.Fatalf("missing track: %+v", r)
	}
	r = runCtl(t, d.socket, "", "--json", "hellorf", "detail", "1")
	if r.code != 2 || r.stdout != `{"code":1005,"message":"音乐不存在","result":false}`+"\n" {
		t.Fatalf("--json failure is not verbatim: %+v", r)
	}
}

func TestHellorfPurchaseAsksFirst(t *testing.T) {
	posts := func(d *fakeDaemon) []seenRequest {
		var out []seenRequest
		for _, s := range d.requests() {
			if s.Method == "POST" {
				out = append(out, s)
			}
		}
		return out
	}
	cases := []struct {
		name  string
		stdin string
		args  []string
		code  int
		posts int
	}{
		{"no answer", "", nil, 2, 0},
		{"answer no", "n\n", nil, 2, 0},
		{"answer yes", "y\n", nil, 0, 1},
		{"--yes", "", []string{"--yes"}, 0, 1},
		{"permission not offered", "y\n", []string{"--permission", "99"}, 2, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := hellorfDaemon(t)
			args := append([]string{"hellorf", "purchase", "505947", "--permission", "35", "--warrant", "ACME Ltd"}, tc.args...)
			r := runCtl(t, d.socket, tc.stdin, args...)
			if r.code != tc.code || len(posts(d)) != tc.posts {
				t.Fatalf("exit %d, %d POSTs: %+v", r.code, len(posts(d)), r)
			}
			if tc.posts == 0 {
				return
			}
			p := posts(d)[0]
			if p.Path != "/v1/hellorf/audio/purchase" || p.Form.Get("audio_id") != "505947" || p.Form.Get("permission_id") != "35" ||
				p.Form.Get("warrant_name") != "ACME Ltd" || p.Header.Get("Sluice-Confirm") != "" {
				t.Fatalf("POST %+v", p)
			}
			if !strings.Contains(r.stdout, "purchase      442") || !strings.Contains(r.stdout, "sluicectl hellorf download 442") {
				t.Fatalf("output: %s", r.stdout)
			}
			if tc.stdin != "" && (!strings.Contains(r.stderr, "price:   21.00") || !strings.Contains(r.stderr, "This spends money")) {
				t.Fatalf("prompt: %s", r.stderr)
			}
		})
	}
	d := hellorfDaemon(t)
	if r := runCtl(t, d.socket, "", "hellorf", "purchase", "505947", "--permission", "33", "--warrant", "x", "--yes", "--repeat"); r.code != 0 {
		t.Fatalf("--repeat: %+v", r)
	}
	if p := posts(d); len(p) != 1 || p[0].Header.Get("Sluice-Confirm") != "repeat-purchase" {
		t.Fatalf("--repeat did not confirm: %+v", p)
	}
}

func TestHellorfErrorExitCodes(t *testing.T) {
	var mu sync.Mutex
	mode := ""
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		m := mode
		mu.Unlock()
		switch m {
		case "sign":
			hellorfFail(w, 401, 1004, "bad_sign", "server-error", "sign 签名错误")
		case "dup":
			p := problem.New(409, "an identical purchase was made 3s ago as purchase 442")
			p.Title = "Probable duplicate purchase"
			problem.Write(w, p)
		case "ok200fail":
			hellorfFail(w, 200, 7777, "code_7777", "unknown", "稍后再试")
		case "html":
			w.WriteHeader(502)
			io.WriteString(w, "<html>bad gateway</html>")
		}
	})
	cases := []struct {
		mode string
		code int
		msg  string
	}{
		{"sign", 3, "hellorf answered code 1004 bad_sign: sign 签名错误 (wrong signature) (sluiced's hellorf credentials or this host's clock are wrong"},
		{"dup", 2, "Probable duplicate purchase: an identical purchase was made 3s ago as purchase 442"},
		{"ok200fail", 3, "hellorf answered code 7777: 稍后再试"},
		{"html", 3, "upstream answered HTTP 502"},
	}
	for _, tc := range cases {
		mu.Lock()
		mode = tc.mode
		mu.Unlock()
		r := runCtl(t, d.socket, "", "hellorf", "categories")
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%s: exit %d, stderr %q", tc.mode, r.code, r.stderr)
		}
	}
}

func TestHellorfPurchasesTable(t *testing.T) {
	d := hellorfDaemon(t)
	r := runCtl(t, d.socket, "", "hellorf", "purchases", "--audio", "505947", "--downloaded", "no", "--from", "2016-01-01 00:00:00")
	if r.code != 0 || !strings.Contains(r.stdout, "178       505947  33 HD    广州汽车") || !strings.Contains(r.stdout, "page 1, 1 purchases") {
		t.Fatalf("purchases: %+v", r)
	}
	q := d.requests()[0].Query
	if q.Get("is_download") != "2" || q.Get("audio_id") != "505947" || q.Get("begin_at") != "2016-01-01 00:00:00" {
		t.Fatalf("query %v", q)
	}
	if r := runCtl(t, d.socket, "", "hellorf", "purchases", "--downloaded", "maybe"); r.code != 2 || len(d.requests()) != 1 {
		t.Fatalf("bad --downloaded: %+v", r)
	}
}

func TestHellorfWarrantSaves(t *testing.T) {
	pdf := []byte("%PDF-1.4\n...\n%%EOF\n")
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("purchase_id") != "442" {
			hellorfFail(w, 404, 1006, "purchase_not_found", "caller-error", "购买记录不存在")
			return
		}
		w.Header().Set("Content-Type", "application/pdf")
		w.Header().Set("Content-Disposition", `attachment; filename="../warrant-442.pdf"`)
		w.Write(pdf)
	})
	dir := t.TempDir()
	out := filepath.Join(dir, "cert.pdf")
	r := runCtl(t, d.socket, "", "hellorf", "warrant", "442", "-o", out)
	if b, err := os.ReadFile(out); r.code != 0 || err != nil || !bytes.Equal(b, pdf) {
		t.Fatalf("warrant -o: %+v %v", r, err)
	}
	if _, err := os.Stat(out + ".part"); !os.IsNotExist(err) {
		t.Fatal(".part left behind")
	}
	t.Chdir(dir)
	if r := runCtl(t, d.socket, "", "hellorf", "warrant", "442"); r.code != 0 || !strings.Contains(r.stdout, "saved warrant-442.pdf") {
		t.Fatalf("warrant: %+v", r)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "warrant-442.pdf")); err != nil || !bytes.Equal(b, pdf) {
		t.Fatalf("warrant saved under the suggested name: %v", err)
	}
	if r := runCtl(t, d.socket, "", "hellorf", "warrant", "1"); r.code != 2 || !strings.Contains(r.stderr, "purchase_not_found") {
		t.Fatalf("missing purchase: %+v", r)
	}
}

// objectStore serves one object with Range support, and can be told to
// refuse links or cut a transfer off.
type objectStore struct {
	mu      sync.Mutex
	data    []byte
	ranges  []string
	expired map[string]bool // link tag → 403
	cutAt   int             // > 0: the next full answer stops after this many bytes
}

func (s *objectStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.ranges = append(s.ranges, r.Header.Get("Range")+"|"+r.Header.Get("If-Range"))
	expired := s.expired[r.URL.Query().Get("tag")]
	cut := 0
	if !expired {
		cut, s.cutAt = s.cutAt, 0
	}
	s.mu.Unlock()
	if expired {
		w.WriteHeader(403)
		io.WriteString(w, "<Error><Code>AccessDenied</Code><Message>Request has expired.</Message></Error>")
		return
	}
	w.Header().Set("ETag", `"v1"`)
	if cut > 0 {
		w.Header().Set("Content-Length", fmt.Sprint(len(s.data)))
		w.Write(s.data[:cut])
		if hj, ok := w.(http.Hijacker); ok {
			w.(http.Flusher).Flush()
			c, _, _ := hj.Hijack()
			c.Close()
		}
		return
	}
	http.ServeContent(w, r, "a.mp3", time.Unix(1600000000, 0), bytes.NewReader(s.data))
}

func TestHellorfDownloadResumes(t *testing.T) {
	store := &objectStore{data: make([]byte, 300_000), expired: map[string]bool{"old": true}}
	rand.Read(store.data)
	srv := httptest.NewServer(store)
	t.Cleanup(srv.Close)
	var mu sync.Mutex
	var noCache []string
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		tag := "old"
		mu.Lock()
		noCache = append(noCache, r.Header.Get("Cache-Control"))
		if r.Header.Get("Cache-Control") == "no-cache" {
			tag = "new"
		}
		mu.Unlock()
		hellorfOK(w, map[string]any{"url": srv.URL + "/oss/audios/442/505947.mp3?response-content-disposition=attachment%3Bfilename%3D505947.mp3&tag=" + tag + "&Expires=1"})
	})
	dir := t.TempDir()
	t.Chdir(dir)

	// The cached link has expired: a fresh one is fetched. The transfer
	// is cut off half-way: .part keeps it.
	store.cutAt = 100_000
	r := runCtl(t, d.socket, "", "hellorf", "download", "442")
	if r.code != 3 || !strings.Contains(r.stderr, "run the same command again to resume") {
		t.Fatalf("cut-off download: %+v", r)
	}
	if len(noCache) != 2 || noCache[0] != "" || noCache[1] != "no-cache" {
		t.Fatalf("link requests %q: want a cached then a fresh one", noCache)
	}
	part, err := os.ReadFile("505947.mp3.part")
	if err != nil || len(part) != 100_000 || !bytes.Equal(part, store.data[:100_000]) {
		t.Fatalf(".part: %d bytes, %v", len(part), err)
	}
	// Run again: it resumes with a Range request for the rest.
	store.mu.Lock()
	store.expired["old"] = false
	store.mu.Unlock()
	r = runCtl(t, d.socket, "", "hellorf", "download", "442")
	if r.code != 0 || !strings.Contains(r.stdout, "saved 505947.mp3") {
		t.Fatalf("resume: %+v", r)
	}
	got, err := os.ReadFile("505947.mp3")
	if err != nil || !bytes.Equal(got, store.data) {
		t.Fatalf("resumed file differs (%d bytes, %v)", len(got), err)
	}
	if last := store.ranges[len(store.ranges)-1]; last != `bytes=100000-|"v1"` {
		t.Fatalf("resume request Range|If-Range = %q", last)
	}
	for _, f := range []string{"505947.mp3.part", "505947.mp3.part.json"} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Fatalf("%s left behind", f)
		}
	}
	// -o - writes to stdout.
	r = runCtl(t, d.socket, "", "hellorf", "download", "442", "-o", "-")
	if r.code != 0 || r.stdout != string(store.data) {
		t.Fatalf("-o -: exit %d, %d bytes", r.code, len(r.stdout))
	}
}

func TestProgressBar(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b, 50, 150)
	p.Write(make([]byte, 150))
	p.done()
	if s := b.String(); !strings.Contains(s, "100%") || !strings.Contains(s, "200 B / 200 B") || !strings.HasPrefix(s, "\r[") {
		t.Fatalf("progress: %q", s)
	}
	// Unknown length: no percentage.
	b.Reset()
	p = newProgress(&b, 0, -1)
	p.Write(make([]byte, 2048))
	p.done()
	if s := b.String(); strings.Contains(s, "%") || !strings.Contains(s, "2.0 KiB") {
		t.Fatalf("progress without length: %q", s)
	}
}

func TestHellorfJSONIsVerbatim(t *testing.T) {
	d := hellorfDaemon(t)
	r := runCtl(t, d.socket, "", "--json", "hellorf", "categories")
	var env map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &env) != nil || env["result"] != true {
		t.Fatalf("--json categories: %+v", r)
	}
}

// TestHellorfDuplicateTellsAboutRepeat: the daemon tells HTTP callers to
// send Sluice-Confirm; a sluicectl user is told about --repeat instead, and
// --json still gets the daemon's document unchanged.
func TestHellorfDuplicateTellsAboutRepeat(t *testing.T) {
	const header = "To buy it again on purpose, repeat the request with the header Sluice-Confirm: repeat-purchase"
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		p := problem.New(409, "an identical purchase (audio_id=505947) was made 3s ago as purchase 442; a duplicate within purchase_guard (10m0s) is refused. "+header)
		p.Title = "Probable duplicate purchase"
		problem.Write(w, p)
	})
	args := []string{"hellorf", "purchase", "505947", "--permission", "35", "--warrant", "ACME", "--yes"}
	r := runCtl(t, d.socket, "", args...)
	if r.code != exitCaller || !strings.Contains(r.stderr, "To buy it again on purpose, run the same command with --repeat") ||
		strings.Contains(r.stderr, "Sluice-Confirm") {
		t.Fatalf("duplicate: %+v", r)
	}
	r = runCtl(t, d.socket, "", append([]string{"--json"}, args...)...)
	if r.code != exitCaller || !strings.Contains(r.stdout, header) {
		t.Fatalf("duplicate --json: %+v", r)
	}
}

// TestHellorfGlosses: Chinese category names and messages get an English
// gloss from sluice's table in human output, and categories can be named in
// English; --json stays verbatim.
func TestHellorfGlosses(t *testing.T) {
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/hellorf/audio/categories":
			hellorfOK(w, map[string]any{
				"genres": []map[string]any{{"id": 1361, "name": "古典"}, {"id": 1357, "name": "流行"}},
				"moods":  []map[string]any{{"id": 1374, "name": "平静"}, {"id": 1370, "name": "欢快"}},
				"bpms":   []map[string]any{{"id": 1, "name": "非常慢(0-60 bpm)"}, {"id": 2, "name": "缓慢(60-100 bpm)"}},
			})
		case "/v1/hellorf/audio/search":
			hellorfOK(w, map[string]any{"current_page": 1, "per_page": 30, "total": 0, "list": []any{}})
		case "/v1/hellorf/audio/purchase-detail":
			hellorfFail(w, 404, 1006, "code_1006", "caller-error", "购买记录不存在")
		default:
			hellorfFail(w, 400, 1001, "code_1001", "caller-error", "缺少参数 audio_id")
		}
	})
	r := runCtl(t, d.socket, "", "hellorf", "categories")
	for _, want := range []string{"1361  古典 (classical)", "1374  平静 (calm)", "2   缓慢(60-100 bpm) (slow)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("categories lack %q:\n%s", want, r.stdout)
		}
	}
	r = runCtl(t, d.socket, "", "hellorf", "search", "piano", "--mood", "calm", "--genre", "Classical", "--bpm", "slow")
	if r.code != 0 {
		t.Fatalf("search by English names: %+v", r)
	}
	var q url.Values
	for _, s := range d.requests() {
		if s.Path == "/v1/hellorf/audio/search" {
			q = s.Query
		}
	}
	if q.Get("mood_id") != "1374" || q.Get("genre_id") != "1361" || q.Get("bpm_id") != "2" {
		t.Fatalf("search query %v", q)
	}
	r = runCtl(t, d.socket, "", "hellorf", "purchase-detail", "9")
	if r.code != 2 || !strings.Contains(r.stderr, "code 1006: 购买记录不存在 (purchase record not found)") {
		t.Fatalf("1006: %+v", r)
	}
	r = runCtl(t, d.socket, "", "--json", "hellorf", "purchase-detail", "9")
	if strings.Contains(r.stdout, "purchase record not found") {
		t.Fatalf("--json glossed: %+v", r)
	}
	for msg, want := range map[string]string{
		"缺少参数 audio_id":                        "missing parameter audio_id",
		"begin_at 格式错误,例如 2017-01-01 23:23:23": "begin_at is malformed",
		"nonce_str 已过期(有效期 10m0s)":             "nonce_str has expired (valid for 10m0s)",
		"is_download 只能是 1 或 2":                "is_download must be 1 or 2",
		"未知的消息":                                "",
	} {
		got := glossMessage(msg)
		if (want == "" && got != msg) || !strings.Contains(got, want) {
			t.Errorf("glossMessage(%q) = %q, want %q", msg, got, want)
		}
	}
}
