package hellorfsim

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func start(t *testing.T, opts Options) (*Sim, string) {
	t.Helper()
	s, base, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, base
}

// signWith builds the signing string from pairs in the order given, with the
// given escaper, so tests can sign wrongly on purpose.
func signWith(pairs [][2]string, escape func(string) string, secret string) string {
	var parts []string
	for _, p := range pairs {
		parts = append(parts, escape(p[0])+"="+escape(p[1]))
	}
	sum := md5.Sum([]byte(strings.Join(parts, "&") + "&client_secret=" + secret))
	return hex.EncodeToString(sum[:])
}

// sortedPairs is q in ASCII key order, as the document requires.
func sortedPairs(q url.Values) [][2]string {
	var out [][2]string
	for _, k := range sortedKeys(q) {
		for _, v := range q[k] {
			out = append(out, [2]string{k, v})
		}
	}
	return out
}

func sortedKeys(q url.Values) []string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	// insertion sort keeps the test free of the sort package the
	// simulator uses
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

// signed adds client_id, nonce_str and a correct sign.
func signed(q url.Values, nonce time.Time) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = v
	}
	out.Set("client_id", DefaultClientID)
	out.Set("nonce_str", strconv.FormatInt(nonce.Unix(), 10))
	out.Set("sign", signWith(sortedPairs(out), url.QueryEscape, DefaultClientSecret))
	return out
}

type answer struct {
	status int
	header http.Header
	body   []byte
	env    struct {
		Result  bool            `json:"result"`
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	}
}

func do(t *testing.T, method, u string, q url.Values) *answer {
	t.Helper()
	var req *http.Request
	var err error
	if method == http.MethodPost {
		req, err = http.NewRequest(method, u, strings.NewReader(q.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		req, err = http.NewRequest(method, u+"?"+q.Encode(), nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := &answer{status: resp.StatusCode, header: resp.Header, body: b}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &a.env); err != nil {
			t.Fatalf("answer is not JSON: %v\n%s", err, b)
		}
	}
	return a
}

func TestSignatureChecks(t *testing.T) {
	t.Parallel()
	s, base := start(t, Options{})
	now := time.Now()
	q := url.Values{"keyword": {"云南 piano+rain&x=y"}, "bpm_id": {"3"}, "page": {"1"}}
	good := signed(q, now)

	badOrder := signed(q, now)
	var unsorted [][2]string
	for _, k := range []string{"page", "keyword", "client_id", "bpm_id", "nonce_str"} {
		unsorted = append(unsorted, [2]string{k, badOrder.Get(k)})
	}
	badOrder.Set("sign", signWith(unsorted, url.QueryEscape, DefaultClientSecret))

	rawUTF8 := signed(q, now)
	rawUTF8.Set("sign", signWith(sortedPairs(rawUTF8), func(s string) string { return s }, DefaultClientSecret))

	pathEsc := signed(q, now) // %20 for space instead of +
	pathEsc.Set("sign", signWith(sortedPairs(pathEsc), url.PathEscape, DefaultClientSecret))

	wrongSecret := signed(q, now)
	wrongSecret.Set("sign", signWith(sortedPairs(wrongSecret), url.QueryEscape, "not-the-secret"))

	upper := signed(q, now)
	upper.Set("sign", strings.ToUpper(upper.Get("sign")))

	badClient := signed(q, now)
	badClient.Set("client_id", "someone-else")
	badClient.Set("sign", signWith(sortedPairs(badClient), url.QueryEscape, DefaultClientSecret))

	stale := signed(q, now.Add(-11*time.Minute))
	future := signed(q, now.Add(11*time.Minute))
	edge := signed(q, now.Add(-9*time.Minute))
	junkNonce := signed(q, now)
	junkNonce.Set("nonce_str", "yesterday")
	junkNonce.Set("sign", signWith(sortedPairs(junkNonce), url.QueryEscape, DefaultClientSecret))
	noSign := signed(q, now)
	noSign.Del("sign")

	cases := []struct {
		name   string
		q      url.Values
		status int
		code   int
	}{
		{"correct", good, 200, 0},
		{"unsorted", badOrder, 401, CodeBadSign},
		{"unencoded UTF-8", rawUTF8, 401, CodeBadSign},
		{"%20 for space", pathEsc, 401, CodeBadSign},
		{"wrong secret", wrongSecret, 401, CodeBadSign},
		{"upper-case hex", upper, 401, CodeBadSign},
		{"missing sign", noSign, 401, CodeBadSign},
		{"wrong client_id", badClient, 401, CodeInvalidClient},
		{"nonce 11 min old", stale, 401, CodeNonceExpired},
		{"nonce 11 min ahead", future, 401, CodeNonceExpired},
		{"nonce 9 min old", edge, 200, 0},
		{"nonce not a number", junkNonce, 401, CodeNonceExpired},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, http.MethodGet, base+"/audio/search", tc.q)
			if a.status != tc.status || a.env.Code != tc.code || a.env.Result != (tc.code == 0) {
				t.Fatalf("got HTTP %d %s, want %d code %d", a.status, a.body, tc.status, tc.code)
			}
		})
	}
	if n := s.Requests(PathSearch); n != len(cases) {
		t.Fatalf("Requests = %d, want %d", n, len(cases))
	}
	log := s.RequestLog()
	if log[0].Code != 0 || log[1].Code != CodeBadSign {
		t.Fatalf("log codes: %+v", log[:2])
	}
}

func TestMethodsAndPaths(t *testing.T) {
	t.Parallel()
	_, base := start(t, Options{Prefix: "/api/v2"})
	now := time.Now()
	cases := []struct {
		method, path string
		q            url.Values
		status, code int
	}{
		{"GET", "/audio/purchase", url.Values{"audio_id": {"505947"}, "permission_id": {"35"}, "warrant_name": {"x"}}, 405, CodeMethodNotAllowed},
		{"POST", "/audio/search", url.Values{}, 405, CodeMethodNotAllowed},
		{"GET", "/audio/nothing", url.Values{}, 404, CodeInvalidParam},
		{"GET", "/audio/categories", url.Values{}, 200, 0},
		{"GET", "/audio/detail", url.Values{}, 400, CodeInvalidParam},
		{"GET", "/audio/detail", url.Values{"audio_id": {"1"}}, 404, CodeAudioNotFound},
		{"GET", "/audio/search", url.Values{"bpm_id": {"fast"}}, 400, CodeInvalidParam},
		{"GET", "/audio/search", url.Values{"keyword": {"(piano"}}, 400, CodeInvalidParam},
		{"GET", "/audio/purchase-detail", url.Values{"purchase_id": {"99999"}}, 404, CodePurchaseNotFound},
		{"GET", "/audio/my-purchases", url.Values{"begin_at": {"2017-01-01"}}, 400, CodeInvalidParam},
		{"POST", "/audio/purchase", url.Values{"audio_id": {strconv.Itoa(UnpurchasableAudioID)}, "permission_id": {"35"}, "warrant_name": {"x"}}, 400, CodePermissionNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			a := do(t, tc.method, base+tc.path, signed(tc.q, now))
			if a.status != tc.status || a.env.Code != tc.code {
				t.Fatalf("got HTTP %d %s, want %d code %d", a.status, a.body, tc.status, tc.code)
			}
		})
	}
	// Without the prefix nothing is served.
	resp, err := http.Get(strings.TrimSuffix(base, "/api/v2") + "/audio/categories")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unprefixed path: %d", resp.StatusCode)
	}
}

var expiresRE = regexp.MustCompile(`Expires=(\d+)`)

func TestLinksExpire(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Unix(1700000000, 0)}
	s, base := start(t, Options{Now: c.now, LinkLife: 2 * time.Minute})
	a := do(t, "GET", base+"/audio/search", signed(url.Values{"keyword": {"piano"}, "per_page": {"3"}}, c.now()))
	var data struct {
		Total int              `json:"total"`
		List  []map[string]any `json:"list"`
	}
	if err := json.Unmarshal(a.env.Data, &data); err != nil || len(data.List) != 3 || data.Total < 3 {
		t.Fatalf("search: %v %s", err, a.body)
	}
	var urls []string
	for _, item := range data.List {
		for _, k := range []string{"preview_mp3_url", "waveform_url", "origin_waveform_url"} {
			u, _ := item[k].(string)
			m := expiresRE.FindStringSubmatch(u)
			if m == nil {
				t.Fatalf("%s has no Expires=: %q", k, u)
			}
			if exp, _ := strconv.ParseInt(m[1], 10, 64); exp != c.now().Add(2*time.Minute).Unix() {
				t.Fatalf("%s expires at %s, want 2 min ahead", k, m[1])
			}
			urls = append(urls, u)
		}
	}
	get := func(u string) int {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, u := range urls {
		if st := get(u); st != 200 {
			t.Fatalf("fresh link %s: %d", u, st)
		}
	}
	if st := get(strings.Replace(urls[0], "Signature=", "Signature=x", 1)); st != 403 {
		t.Fatalf("tampered link: %d", st)
	}
	c.add(2*time.Minute - time.Second)
	if st := get(urls[0]); st != 200 {
		t.Fatalf("link 1 s before expiry: %d", st)
	}
	c.add(time.Second)
	for _, u := range urls {
		if st := get(u); st != 403 {
			t.Fatalf("expired link %s: %d", u, st)
		}
	}
	if n := s.ObjectRequests(); n != len(urls)+2+len(urls) {
		t.Fatalf("ObjectRequests = %d", n)
	}
}

func TestPurchaseRecordedAndDownloadRange(t *testing.T) {
	t.Parallel()
	s, base := start(t, Options{AudioSize: 100000})
	buy := url.Values{"audio_id": {strconv.Itoa(SampleAudioID)}, "permission_id": {strconv.Itoa(SamplePermissionID)}, "warrant_name": {"测试 公司"}}
	var ids []int
	for range 2 {
		a := do(t, "POST", base+"/audio/purchase", signed(buy, time.Now()))
		var d struct {
			ID  int    `json:"id"`
			URL string `json:"url"`
		}
		if a.status != 200 || json.Unmarshal(a.env.Data, &d) != nil || d.URL == "" || !expiresRE.MatchString(d.URL) {
			t.Fatalf("purchase: %d %s", a.status, a.body)
		}
		ids = append(ids, d.ID)
	}
	if ids[0] != FirstPurchaseID || ids[1] != FirstPurchaseID+1 {
		t.Fatalf("ids %v", ids)
	}
	ps := s.Purchases()
	if len(ps) != 2 || ps[0].WarrantName != "测试 公司" || ps[1].AudioID != SampleAudioID || ps[0].Price != "21.00" {
		t.Fatalf("purchases: %+v", ps)
	}

	a := do(t, "GET", base+"/audio/purchase-download", signed(url.Values{"purchase_id": {strconv.Itoa(ids[0])}}, time.Now()))
	var d struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(a.env.Data, &d); err != nil {
		t.Fatal(err)
	}
	want, size, err := s.AudioSHA256(ids[0])
	if err != nil || size != 100000 {
		t.Fatal(err, size)
	}
	resp, err := http.Get(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	full, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sum := sha256.Sum256(full)
	if hex.EncodeToString(sum[:]) != want || !bytes.HasPrefix(full, []byte("ID3")) {
		t.Fatalf("full download: %d bytes, checksum mismatch", len(full))
	}
	if cd := resp.Header.Get("Content-Disposition"); cd != fmt.Sprintf("attachment;filename=%d.mp3", SampleAudioID) {
		t.Fatalf("Content-Disposition %q", cd)
	}
	req, _ := http.NewRequest("GET", d.URL, nil)
	req.Header.Set("Range", "bytes=60000-")
	req.Header.Set("If-Range", resp.Header.Get("ETag"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || resp.Header.Get("Content-Range") != "bytes 60000-99999/100000" || !bytes.Equal(part, full[60000:]) {
		t.Fatalf("range: %d %q %d bytes", resp.StatusCode, resp.Header.Get("Content-Range"), len(part))
	}

	// my-purchases: newest first, download marked, filters.
	a = do(t, "GET", base+"/audio/my-purchases", signed(url.Values{"is_download": {"1"}}, time.Now()))
	var mp struct {
		PerPage string           `json:"per_page"`
		Total   int              `json:"total"`
		List    []map[string]any `json:"list"`
	}
	if err := json.Unmarshal(a.env.Data, &mp); err != nil {
		t.Fatal(err)
	}
	if mp.Total != 2 || mp.PerPage != "10" || mp.List[0]["id"].(float64) != float64(ids[0]) || mp.List[1]["id"].(float64) != SeededPurchaseID {
		t.Fatalf("my-purchases is_download=1: %s", a.body)
	}
	a = do(t, "GET", base+"/audio/my-purchases", signed(url.Values{"begin_at": {"2020-01-01 00:00:00"}, "is_download": {"2"}}, time.Now()))
	if err := json.Unmarshal(a.env.Data, &mp); err != nil || mp.Total != 1 || mp.List[0]["id"].(float64) != float64(ids[1]) {
		t.Fatalf("my-purchases not downloaded since 2020: %s", a.body)
	}
}

// pdfObjects checks a PDF's structure: header, trailer, and that every xref
// offset points at its object.
func checkPDF(t *testing.T, b []byte) {
	t.Helper()
	if !bytes.HasPrefix(b, []byte("%PDF-1.4\n")) || !bytes.HasSuffix(b, []byte("%%EOF\n")) {
		t.Fatalf("not a PDF: %q … %q", b[:min(20, len(b))], b[max(0, len(b)-20):])
	}
	m := regexp.MustCompile(`startxref\n(\d+)\n%%EOF\n$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no startxref")
	}
	at, _ := strconv.Atoi(string(m[1]))
	if !bytes.HasPrefix(b[at:], []byte("xref\n")) {
		t.Fatalf("startxref %d does not point at xref", at)
	}
	entries := regexp.MustCompile(`(\d{10}) 00000 n `).FindAllSubmatch(b[at:], -1)
	for i, e := range entries {
		off, _ := strconv.Atoi(string(e[1]))
		if want := fmt.Sprintf("%d 0 obj\n", i+1); !bytes.HasPrefix(b[off:], []byte(want)) {
			t.Fatalf("xref entry %d → %q", i+1, b[off:off+10])
		}
	}
	if len(entries) < 5 {
		t.Fatalf("only %d objects", len(entries))
	}
}

func TestWarrantIsAPDF(t *testing.T) {
	t.Parallel()
	for _, size := range []int64{0, 3 << 20} {
		t.Run(strconv.FormatInt(size, 10), func(t *testing.T) {
			s, base := start(t, Options{WarrantSize: size})
			a := do(t, "GET", base+"/audio/download-warrant", signed(url.Values{"purchase_id": {strconv.Itoa(SeededPurchaseID)}}, time.Now()))
			if a.status != 200 || a.header.Get("Content-Type") != "application/pdf" ||
				a.header.Get("Content-Length") != strconv.Itoa(len(a.body)) ||
				a.header.Get("Content-Disposition") != `attachment; filename="warrant-178.pdf"` {
				t.Fatalf("warrant: %d %v", a.status, a.header)
			}
			checkPDF(t, a.body)
			want, n, err := s.WarrantSHA256(SeededPurchaseID)
			sum := sha256.Sum256(a.body)
			if err != nil || n != int64(len(a.body)) || hex.EncodeToString(sum[:]) != want {
				t.Fatalf("WarrantSHA256 disagrees with the served file: %v", err)
			}
			if size > 0 && (n < size-64 || n > size+64) {
				t.Fatalf("padded to %d, asked %d", n, size)
			}
			if size == 0 && n > 4096 {
				t.Fatalf("plain warrant is %d bytes", n)
			}
		})
	}
}

func TestFailAndStallNext(t *testing.T) {
	t.Parallel()
	s, base := start(t, Options{})
	s.FailNext(PathCategories, Failure{Status: 503, Code: 5003, Message: "维护中"})
	a := do(t, "GET", base+"/audio/categories", signed(nil, time.Now()))
	if a.status != 503 || a.env.Code != 5003 || a.env.Message != "维护中" {
		t.Fatalf("FailNext: %d %s", a.status, a.body)
	}
	if a = do(t, "GET", base+"/audio/categories", signed(nil, time.Now())); a.status != 200 {
		t.Fatalf("after FailNext: %d", a.status)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Fatalf("JSON answer labelled %q", ct)
	}
	// Opt-in: a failure object under PHP's default Content-Type, as a FILE
	// endpoint may send it, with HTTP 200.
	s.FailNext(PathDownloadWarrant, Failure{Status: 200, Code: CodeBadSign, Message: "sign 签名错误", ContentType: "text/html; charset=UTF-8"})
	a = do(t, "GET", base+"/audio/download-warrant", signed(url.Values{"purchase_id": {strconv.Itoa(SeededPurchaseID)}}, time.Now()))
	if a.status != 200 || a.header.Get("Content-Type") != "text/html; charset=UTF-8" || json.Unmarshal(a.body, &a.env) != nil || a.env.Result || a.env.Code != CodeBadSign {
		t.Fatalf("FailNext with ContentType: %d %q %s", a.status, a.header.Get("Content-Type"), a.body)
	}
	if a = do(t, "GET", base+"/audio/download-warrant", signed(url.Values{"purchase_id": {strconv.Itoa(SeededPurchaseID)}}, time.Now())); a.header.Get("Content-Type") != "application/pdf" {
		t.Fatalf("after FailNext with ContentType: %q", a.header.Get("Content-Type"))
	}
	// A stalled purchase is recorded before its answer is held.
	s.StallNext(PathPurchase, time.Minute)
	buy := url.Values{"audio_id": {strconv.Itoa(SampleAudioID)}, "permission_id": {"33"}, "warrant_name": {"x"}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequest("POST", base+"/audio/purchase", strings.NewReader(signed(buy, time.Now()).Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(s.Purchases()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("stalled purchase not recorded")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("stalled answer came at once")
	default:
	}
	s.Close() // releases the stall
	<-done
}

func TestKeywordExpressions(t *testing.T) {
	tags := map[string]bool{"piano": true, "云南": true, "calm": true}
	cases := []struct {
		kw   string
		want bool
		bad  bool
	}{
		{"", true, false},
		{"piano", true, false},
		{"PIANO", true, false},
		{"piano guitar", false, false},
		{"piano and 云南", true, false},
		{"piano or guitar", true, false},
		{"not guitar", true, false},
		{"not piano", false, false},
		{"(guitar or calm) and not sad", true, false},
		{"guitar or calm and sad", false, false},
		{"(piano", false, true},
		{"piano or", false, true},
		{"and piano", false, true},
	}
	for _, tc := range cases {
		m, err := parseKeyword(tc.kw)
		if (err != nil) != tc.bad {
			t.Errorf("%q: err %v", tc.kw, err)
			continue
		}
		if err == nil && m(tags) != tc.want {
			t.Errorf("%q: %v, want %v", tc.kw, !tc.want, tc.want)
		}
	}
}

func TestCatalogueShapes(t *testing.T) {
	t.Parallel()
	_, base := start(t, Options{})
	a := do(t, "GET", base+"/audio/categories", signed(nil, time.Now()))
	var cats map[string][]Named
	if err := json.Unmarshal(a.env.Data, &cats); err != nil || len(cats["bpms"]) != 6 || len(cats["genres"]) < 10 || cats["genres"][0].Name != "现代交响" {
		t.Fatalf("categories: %v %s", err, a.body)
	}
	a = do(t, "GET", base+"/audio/detail", signed(url.Values{"audio_id": {strconv.Itoa(SampleAudioID)}}, time.Now()))
	var d struct {
		Audio       map[string]any   `json:"audio"`
		Permissions []map[string]any `json:"permissions"`
	}
	if err := json.Unmarshal(a.env.Data, &d); err != nil || d.Audio["title"] != "Beginner's Luck" || d.Audio["type"] != "签约供应商" ||
		len(d.Permissions) != 4 || d.Permissions[0]["price"] != "21.00" {
		t.Fatalf("detail: %v %s", err, a.body)
	}
	// Filters narrow, and every hit satisfies them.
	a = do(t, "GET", base+"/audio/search", signed(url.Values{"bpm_id": {"3"}, "duration_from": {"20"}, "duration_to": {"60"}, "per_page": {"100"}}, time.Now()))
	var res struct {
		Total int `json:"total"`
		List  []struct {
			BPM      int `json:"bpm"`
			Duration int `json:"duration"`
		} `json:"list"`
	}
	if err := json.Unmarshal(a.env.Data, &res); err != nil || res.Total == 0 || res.Total >= 400 {
		t.Fatalf("filtered search: %v total %d", err, res.Total)
	}
	for _, it := range res.List {
		if it.BPM < 100 || it.BPM >= 120 || it.Duration < 20 || it.Duration > 60 {
			t.Fatalf("hit outside filters: %+v", it)
		}
	}
}

// TestBodyNext: the opt-in body comes verbatim under HTTP 200 once, only to
// a request that passes the signature checks, and is an arrival.
func TestBodyNext(t *testing.T) {
	t.Parallel()
	s, base := start(t, Options{})
	const body = `{"result":true,"data":null}`
	s.BodyNext(PathCategories, body)
	// A bad signature is refused as ever, and does not use the body up.
	q := signed(nil, time.Now())
	q.Set("sign", strings.Repeat("0", 32))
	if a := do(t, "GET", base+"/audio/categories", q); a.status != http.StatusUnauthorized {
		t.Fatalf("bad sign: %d %s", a.status, a.body)
	}
	a := do(t, "GET", base+"/audio/categories", signed(nil, time.Now()))
	if a.status != 200 || string(a.body) != body || a.header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("BodyNext: %d %q %s", a.status, a.header.Get("Content-Type"), a.body)
	}
	if a = do(t, "GET", base+"/audio/categories", signed(nil, time.Now())); a.status != 200 || len(a.env.Data) < 10 {
		t.Fatalf("after BodyNext: %d %s", a.status, a.body)
	}
	if n := s.Requests(PathCategories); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
}
