package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
)

// TestSignVectors: the expected values were computed by hand, outside Go,
// with `printf '%s' '<string>' | md5sum` on the string the written steps
// produce (shown per case), so a change of sorting or encoding fails here.
func TestSignVectors(t *testing.T) {
	cases := []struct {
		name   string
		params url.Values
		secret string
		// str documents the signing string the vector was computed from.
		str  string
		want string
	}{
		{
			name:   "document example, written steps (云南 percent-encoded)",
			params: url.Values{"client_id": {"4fiodcz8xjl6p8nbzfex2"}, "keyword": {"云南"}, "nonce_str": {"1473820208"}},
			secret: "9b530aa85723c06a90879bee8f5096d7",
			str:    "client_id=4fiodcz8xjl6p8nbzfex2&keyword=%E4%BA%91%E5%8D%97&nonce_str=1473820208&client_secret=9b530aa85723c06a90879bee8f5096d7",
			want:   "130b4d24a9624498799c582ac1e94034",
		},
		{
			name:   "space, +, &, = and an empty value; sign and client_secret left out",
			params: url.Values{"nonce_str": {"1700000000"}, "keyword": {"a b+c&d=e"}, "empty": {""}, "client_id": {"abc"}, "sign": {"stale"}, "client_secret": {"leak"}},
			secret: "s3cr3t",
			str:    "client_id=abc&empty=&keyword=a+b%2Bc%26d%3De&nonce_str=1700000000&client_secret=s3cr3t",
			want:   "7f14c55ca9da90df5d0294f694136ca2",
		},
		{
			name:   "ASCII order: upper case before lower, _ before letters",
			params: url.Values{"b": {"6"}, "ab": {"5"}, "a_b": {"4"}, "a": {"3"}, "B": {"2"}, "A": {"1"}},
			secret: "x",
			str:    "A=1&B=2&a=3&a_b=4&ab=5&b=6&client_secret=x",
			want:   "1f56415ee27eac4caa60bb07889d8e1f",
		},
		{
			name:   "non-ASCII with a space, several keys",
			params: url.Values{"page": {"2"}, "keyword": {"云南 piano"}, "nonce_str": {"1473820208"}, "client_id": {"4fiodcz8xjl6p8nbzfex2"}},
			secret: "9b530aa85723c06a90879bee8f5096d7",
			str:    "client_id=4fiodcz8xjl6p8nbzfex2&keyword=%E4%BA%91%E5%8D%97+piano&nonce_str=1473820208&page=2&client_secret=9b530aa85723c06a90879bee8f5096d7",
			want:   "50dd9fa7b7e30f1be4bfdb7af662657a",
		},
		{
			name: "a purchase body",
			params: url.Values{"audio_id": {"505947"}, "permission_id": {"35"}, "warrant_name": {"测试 公司"}, "third_user_id": {"u/1"},
				"client_id": {"id"}, "nonce_str": {"1700000000"}},
			secret: "sec",
			str:    "audio_id=505947&client_id=id&nonce_str=1700000000&permission_id=35&third_user_id=u%2F1&warrant_name=%E6%B5%8B%E8%AF%95+%E5%85%AC%E5%8F%B8&client_secret=sec",
			want:   "0c5efd112a0ae5697aafeb51bfe27904",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Sign(tc.params, tc.secret); got != tc.want {
				t.Fatalf("Sign = %s, want %s (md5 of %s)", got, tc.want, tc.str)
			}
		})
	}
	// The document's own example value does not come out of its steps.
	doc := url.Values{"client_id": {"4fiodcz8xjl6p8nbzfex2"}, "keyword": {"云南"}, "nonce_str": {"1473820208"}}
	if Sign(doc, "9b530aa85723c06a90879bee8f5096d7") == "00ba2da066957662f43b668cf208e827" {
		t.Fatal("the document's worked example reproduces after all: update docs/hellorf.md")
	}
}

func TestSignedAddsBaseParameters(t *testing.T) {
	in := url.Values{"keyword": {"piano"}}
	q := signed(in, "cid", "sec", time.Unix(1700000000, 900e6))
	if q.Get("client_id") != "cid" || q.Get("nonce_str") != "1700000000" || len(q.Get("sign")) != 32 {
		t.Fatalf("signed: %v", q)
	}
	if q.Get("sign") != Sign(q, "sec") || q.Get("client_secret") != "" {
		t.Fatalf("sign does not cover the sent parameters, or the secret is sent: %v", q)
	}
	if in.Get("client_id") != "" {
		t.Fatal("signed modified its input")
	}
}

func TestValidate(t *testing.T) {
	search, purchase, mine, detail := opsByName["audio.search"], opsByName["audio.purchase"], opsByName["audio.my-purchases"], opsByName["audio.detail"]
	cat := opsByName["audio.categories"]
	long := strings.Repeat("长", maxNameRunes+1)
	cases := []struct {
		name   string
		op     *operation
		in     url.Values
		param  string // "" = valid
		expect url.Values
	}{
		{"search empty", search, url.Values{}, "", url.Values{}},
		{"search full", search, url.Values{"keyword": {"云南 piano"}, "bpm_id": {"3"}, "genre_id": {"007"}, "duration_from": {"20"}, "duration_to": {"60"},
			"level_type": {"100"}, "is_vhifun": {"1"}, "can_purchase": {"1"}, "page": {"2"}, "per_page": {"100"}}, "",
			url.Values{"keyword": {"云南 piano"}, "bpm_id": {"3"}, "genre_id": {"7"}, "duration_from": {"20"}, "duration_to": {"60"},
				"level_type": {"100"}, "is_vhifun": {"1"}, "can_purchase": {"1"}, "page": {"2"}, "per_page": {"100"}}},
		{"empty optional dropped", search, url.Values{"keyword": {""}, "page": {""}}, "", url.Values{}},
		{"bpm not a number", search, url.Values{"bpm_id": {"fast"}}, "bpm_id", nil},
		{"bpm zero", search, url.Values{"bpm_id": {"0"}}, "bpm_id", nil},
		{"bpm negative", search, url.Values{"bpm_id": {"-3"}}, "bpm_id", nil},
		{"bpm with sign", search, url.Values{"bpm_id": {"+3"}}, "bpm_id", nil},
		{"level_type 4", search, url.Values{"level_type": {"4"}}, "level_type", nil},
		{"is_vhifun 0", search, url.Values{"is_vhifun": {"0"}}, "is_vhifun", nil},
		{"can_purchase 2", search, url.Values{"can_purchase": {"2"}}, "can_purchase", nil},
		{"per_page 0", search, url.Values{"per_page": {"0"}}, "per_page", nil},
		{"per_page 101", search, url.Values{"per_page": {"101"}}, "per_page", nil},
		{"page 0", search, url.Values{"page": {"0"}}, "page", nil},
		{"duration range reversed", search, url.Values{"duration_from": {"60"}, "duration_to": {"20"}}, "duration_to", nil},
		{"duration 0 ok", search, url.Values{"duration_from": {"0"}}, "", url.Values{"duration_from": {"0"}}},
		{"keyword too long", search, url.Values{"keyword": {strings.Repeat("a", maxKeywordRunes+1)}}, "keyword", nil},
		{"keyword control char", search, url.Values{"keyword": {"a\nb"}}, "keyword", nil},
		{"keyword bad UTF-8", search, url.Values{"keyword": {"\xff"}}, "keyword", nil},
		{"unknown parameter", search, url.Values{"genre": {"3"}}, "genre", nil},
		{"repeated parameter", search, url.Values{"page": {"1", "2"}}, "page", nil},
		{"categories takes nothing", cat, url.Values{"x": {"1"}}, "x", nil},
		{"detail ok", detail, url.Values{"audio_id": {"505947"}}, "", url.Values{"audio_id": {"505947"}}},
		{"detail missing", detail, url.Values{}, "audio_id", nil},
		{"detail not int", detail, url.Values{"audio_id": {"5e5"}}, "audio_id", nil},
		{"purchase ok", purchase, url.Values{"audio_id": {"505947"}, "permission_id": {"35"}, "warrant_name": {"测试"}}, "",
			url.Values{"audio_id": {"505947"}, "permission_id": {"35"}, "warrant_name": {"测试"}}},
		{"purchase no warrant", purchase, url.Values{"audio_id": {"505947"}, "permission_id": {"35"}}, "warrant_name", nil},
		{"purchase blank warrant", purchase, url.Values{"audio_id": {"505947"}, "permission_id": {"35"}, "warrant_name": {"  "}}, "warrant_name", nil},
		{"purchase long warrant", purchase, url.Values{"audio_id": {"505947"}, "permission_id": {"35"}, "warrant_name": {long}}, "warrant_name", nil},
		{"purchase no permission", purchase, url.Values{"audio_id": {"505947"}, "warrant_name": {"x"}}, "permission_id", nil},
		{"purchase bad permission", purchase, url.Values{"audio_id": {"505947"}, "permission_id": {"all"}, "warrant_name": {"x"}}, "permission_id", nil},
		{"my-purchases ok", mine, url.Values{"begin_at": {"2017-01-01 23:23:23"}, "end_at": {"2017-02-01 00:00:00"}, "is_download": {"2"}}, "",
			url.Values{"begin_at": {"2017-01-01 23:23:23"}, "end_at": {"2017-02-01 00:00:00"}, "is_download": {"2"}}},
		{"begin_at date only", mine, url.Values{"begin_at": {"2017-01-01"}}, "begin_at", nil},
		{"begin_at T separator", mine, url.Values{"begin_at": {"2017-01-01T23:23:23"}}, "begin_at", nil},
		{"end_at one-digit month", mine, url.Values{"end_at": {"2017-1-01 23:23:23"}}, "end_at", nil},
		{"end_at Feb 30", mine, url.Values{"end_at": {"2017-02-30 00:00:00"}}, "end_at", nil},
		{"end_at before begin_at", mine, url.Values{"begin_at": {"2017-02-01 00:00:00"}, "end_at": {"2017-01-01 00:00:00"}}, "end_at", nil},
		{"is_download 3", mine, url.Values{"is_download": {"3"}}, "is_download", nil},
	}
	// Bounds the document does not state are refused as sluice's own.
	for _, tc := range []struct {
		op    *operation
		in    url.Values
		param string
	}{
		{search, url.Values{"per_page": {"101"}}, "per_page"},
		{mine, url.Values{"per_page": {"101"}}, "per_page"},
		{search, url.Values{"page": {"10001"}}, "page"},
		{search, url.Values{"duration_to": {"86401"}}, "duration_to"},
		{search, url.Values{"keyword": {strings.Repeat("a", maxKeywordRunes+1)}}, "keyword"},
		{purchase, url.Values{"audio_id": {"1"}, "permission_id": {"2"}, "warrant_name": {long}}, "warrant_name"},
		{purchase, url.Values{"audio_id": {"1"}, "permission_id": {"2"}, "warrant_name": {"x"}, "third_user_id": {long}}, "third_user_id"},
	} {
		_, err := validate(tc.op, tc.in)
		var p *problem.Problem
		if !errors.As(err, &p) || p.Param != tc.param || !strings.Contains(p.Detail, "sluice's own, not hellorf's") {
			t.Errorf("%s %v: %v, want a 400 on %s saying the bound is sluice's", tc.op.name, tc.in, err, tc.param)
		}
	}
	if _, err := validate(detail, url.Values{"audio_id": {"x"}}); err == nil || strings.Contains(err.Error(), "sluice's own") {
		t.Errorf("a malformed id is not about sluice's bounds: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := validate(tc.op, tc.in)
			if tc.param == "" {
				if err != nil {
					t.Fatalf("unexpected %v", err)
				}
				if out.Encode() != tc.expect.Encode() {
					t.Fatalf("sends %s, want %s", out.Encode(), tc.expect.Encode())
				}
				return
			}
			var p *problem.Problem
			if !errors.As(err, &p) || p.Status != 400 || p.Param != tc.param {
				t.Fatalf("got %v, want 400 naming %q", err, tc.param)
			}
		})
	}
}

// TestDescribeMatchesTable: the host enforces what Describe declares, so it
// must agree with validate's table.
func TestDescribeMatchesTable(t *testing.T) {
	d := newHellorf(nil).Describe()
	if len(d.GetOperations()) != 8 {
		t.Fatalf("%d operations, want 8", len(d.GetOperations()))
	}
	for _, o := range d.GetOperations() {
		op := opsByName[o.GetName()]
		if op == nil || o.GetPath() != op.path || o.GetBucket() != bucketAPI {
			t.Fatalf("operation %s does not match the table", o.GetName())
		}
		if o.GetName() == "audio.purchase" {
			if !o.GetDestructive() || o.GetCacheable() || o.GetMethods()[0] != "POST" || len(o.GetMethods()) != 1 {
				t.Fatalf("purchase must be POST-only, destructive and not cacheable: %v", o)
			}
		}
		if o.GetName() == "audio.download-warrant" || o.GetName() == "audio.my-purchases" {
			if o.GetCacheable() {
				t.Fatalf("%s must not be cacheable", o.GetName())
			}
		}
	}
	if b := d.GetBuckets(); len(b) != 1 || b[0].GetName() != "hellorf.api" || b[0].GetRequests() != 10 || b[0].GetWindowMs() != 1000 {
		t.Fatalf("buckets: %v", b)
	}
	creds := strings.Join(d.GetCredentialParams(), ",")
	for _, c := range []string{"client_id", "client_secret", "nonce_str", "sign"} {
		if !strings.Contains(creds, c) {
			t.Fatalf("credential params %q lack %s", creds, c)
		}
	}
}

func TestConfigure(t *testing.T) {
	cases := []struct {
		name string
		json string
		ok   bool
	}{
		{"ok", `{"base_url":"https://h.example/api/","client_id":"a","client_secret":"b","timeout":"5s"}`, true},
		{"no secret", `{"base_url":"https://h.example","client_id":"a"}`, false},
		{"relative", `{"base_url":"/api","client_id":"a","client_secret":"b"}`, false},
		{"ftp", `{"base_url":"ftp://h.example","client_id":"a","client_secret":"b"}`, false},
		{"query", `{"base_url":"https://h.example/?x=1","client_id":"a","client_secret":"b"}`, false},
		{"not json", `{`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newHellorf(nil)
			err := p.Configure(t.Context(), []byte(tc.json))
			if (err == nil) != tc.ok {
				t.Fatalf("Configure: %v", err)
			}
			if err != nil && strings.Contains(err.Error(), `"b"`) {
				t.Fatalf("error quotes a secret: %v", err)
			}
		})
	}
	p := newHellorf(nil)
	if err := p.Configure(t.Context(), []byte(`{"base_url":"https://h.example/api/v2/","client_id":"a","client_secret":"b"}`)); err != nil {
		t.Fatal(err)
	}
	s := p.cfg.Load()
	if got := s.endpoint("audio/search").String(); got != "https://h.example/api/v2/audio/search" {
		t.Fatalf("endpoint with a prefix: %s", got)
	}
	if s.timeout != 30*time.Second || s.purchaseGuard != 10*time.Minute || s.categoriesTTL != 24*time.Hour || s.searchTTL != 10*time.Minute {
		t.Fatalf("defaults: %+v", s)
	}
	if strings.Contains(s.String(), "b}") || strings.Contains(s.String(), "client_secret") {
		t.Fatalf("settings render secrets: %s", s)
	}
}

func TestLinkExpiry(t *testing.T) {
	cases := []struct {
		name string
		body string
		want int64 // 0 = none
	}{
		{"none", `{"result":true,"data":{"url":"https://x/a.mp3"}}`, 0},
		{"one", `{"data":{"url":"https://x/a.mp3?OSSAccessKeyId=k&Expires=1649324720&Signature=s%3D"}}`, 1649324720},
		{"earliest of nested", `{"data":{"list":[{"a":"https://x/1?Expires=300"},{"b":"https://x/2?expires=200&z=1"}],"c":"https://x/3?EXPIRES=250"}}`, 200},
		{"escaped slashes", `{"u":"https:\/\/x\/a?Expires=123\u0026b=1"}`, 123},
		{"not a URL parameter", `{"expires":"999","cache_expires":"https://x/?cache_expires=5"}`, 0},
		{"non-integer", `{"u":"https://x/?Expires=soon"}`, 0},
		{"not JSON", `Expires=5`, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := linkExpiry([]byte(tc.body))
			if ok != (tc.want != 0) || (ok && got.Unix() != tc.want) {
				t.Fatalf("linkExpiry = %v %v, want %d", got, ok, tc.want)
			}
		})
	}
}

func TestCacheHint(t *testing.T) {
	s := &settings{categoriesTTL: 24 * time.Hour, searchTTL: 10 * time.Minute}
	sent := time.Unix(1700000000, 0)
	now := sent.Add(time.Second)
	link := func(exp time.Time) string {
		return `{"result":true,"data":{"url":"https://x/a?Expires=` + itoa(exp.Unix()) + `"}}`
	}
	cases := []struct {
		name      string
		op        string
		body      string
		ahead     time.Duration // how far hellorf's clock may be ahead of ours
		cacheable bool
		ttl       time.Duration
		expires   time.Time
	}{
		{"categories: long TTL, no links", "audio.categories", `{"result":true,"data":{}}`, 0, true, 24 * time.Hour, time.Time{}},
		{"search without Expires: the 10-minute rule", "audio.search", `{"result":true,"data":{"list":[]}}`, 0, true, 10 * time.Minute, sent.Add(linkLife)},
		{"search with an earlier Expires", "audio.search", link(sent.Add(3 * time.Minute)), 0, true, 10 * time.Minute, sent.Add(3 * time.Minute)},
		{"search with a later Expires: the rule wins", "audio.search", link(sent.Add(time.Hour)), 0, true, 10 * time.Minute, sent.Add(linkLife)},
		{"search, hellorf 2m ahead: Expires read on our clock", "audio.search", link(sent.Add(5 * time.Minute)), 2 * time.Minute, true, 10 * time.Minute, sent.Add(3 * time.Minute)},
		{"search, hellorf behind: Expires as stated", "audio.search", link(sent.Add(5 * time.Minute)), 0, true, 10 * time.Minute, sent.Add(5 * time.Minute)},
		{"purchase-download: until Expires", "audio.purchase-download", link(sent.Add(10 * time.Minute)), 0, true, 10*time.Minute - time.Second, sent.Add(10 * time.Minute)},
		{"purchase-download with a later Expires: the rule wins", "audio.purchase-download", link(sent.Add(15 * time.Minute)), 0, true, 10*time.Minute - time.Second, sent.Add(linkLife)},
		{"purchase-download, hellorf 5m ahead, 4-minute link", "audio.purchase-download", link(sent.Add(9 * time.Minute)), 5 * time.Minute, true, 4*time.Minute - time.Second, sent.Add(4 * time.Minute)},
		{"purchase-download, hellorf far ahead: dead on our clock", "audio.purchase-download", link(sent.Add(9 * time.Minute)), 9 * time.Minute, false, 0, time.Time{}},
		{"purchase-download without Expires: not cached", "audio.purchase-download", `{"result":true,"data":{"url":"https://x/a"}}`, 0, false, 0, time.Time{}},
		{"purchase-download already expired", "audio.purchase-download", link(sent.Add(-time.Second)), 0, false, 0, time.Time{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := cacheHint(s, opsByName[tc.op], sent, now, tc.ahead, []byte(tc.body), provHint())
			if h.Cacheable != tc.cacheable || h.TTL != tc.ttl || !h.ExpiresAt.Equal(tc.expires) {
				t.Fatalf("hint %+v; want cacheable %v ttl %s expires %v", h, tc.cacheable, tc.ttl, tc.expires)
			}
		})
	}
}

func TestClockOffsetAndRetryAfter(t *testing.T) {
	sent := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	recv := sent.Add(200 * time.Millisecond)
	date := func(d time.Duration) string { return sent.Add(d).Format(http.TimeFormat) }
	for _, tc := range []struct {
		date string
		want time.Duration
		ok   bool
	}{
		{date(0), 400 * time.Millisecond, true},
		{date(20 * time.Minute), 20*time.Minute + 400*time.Millisecond, true},
		{date(-15 * time.Minute), -15*time.Minute + 400*time.Millisecond, true},
		{"", 0, false},
		{"yesterday", 0, false},
	} {
		got, ok := clockOffset(tc.date, sent, recv)
		if ok != tc.ok || got != tc.want {
			t.Errorf("clockOffset(%q) = %s %v, want %s %v", tc.date, got, ok, tc.want, tc.ok)
		}
	}
	// clockAhead bounds the true offset from above: estimate + 0.5 s +
	// half the exchange; never negative.
	for _, tc := range []struct {
		date string
		want time.Duration
	}{
		{date(5 * time.Minute), 5*time.Minute + time.Second},
		{date(0), time.Second},
		{date(-time.Minute), 0},
		{"", 0},
	} {
		if got := clockAhead(tc.date, sent, recv); got != tc.want {
			t.Errorf("clockAhead(%q) = %s, want %s", tc.date, got, tc.want)
		}
	}
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{{"", 30 * time.Second}, {"7", 7 * time.Second}, {"99999", time.Hour}, {"soon", 30 * time.Second}} {
		if got := retryAfter(http.Header{"Retry-After": {tc.v}}); got != tc.want {
			t.Errorf("retryAfter(%q) = %s", tc.v, got)
		}
	}
}

func TestAuthFailureAndOutcome(t *testing.T) {
	env := func(s string) *envelope {
		e, ok := parseEnvelope([]byte(s))
		if !ok {
			t.Fatalf("not an envelope: %s", s)
		}
		return e
	}
	cases := []struct {
		status  int
		body    string
		auth    bool
		outcome string
		// label is the Sluice-Upstream-Status name and class.
		name, class string
	}{
		{200, `{"result":true,"data":{}}`, false, "hellorf:ok", "", ""},
		{401, `{"result":false,"message":"sign 签名错误","code":1004}`, true, "hellorf:1004", "bad_sign", "server-error"},
		{200, `{"result":false,"message":"sign签名错误","code":1004}`, true, "hellorf:1004", "bad_sign", "server-error"},
		{200, `{"result":false,"message":"Invalid Signature","code":9}`, true, "hellorf:9", "bad_sign", "server-error"},
		{200, `{"result":false,"message":"nonce_str 已过期","code":"1003"}`, true, "hellorf:1003", "nonce_expired", "server-error"},
		{200, `{"result":false,"message":"签名不正确","code":4242}`, true, "hellorf:4242", "bad_sign", "server-error"},
		{200, `{"result":false,"message":"client_id 无效","code":1002}`, true, "hellorf:1002", "invalid_client_id", "server-error"},
		{401, `{"result":false,"message":"denied","code":3}`, true, "hellorf:3", "credentials_refused", "server-error"},
		// Codes are never named: the document names none.
		{404, `{"result":false,"message":"音乐不存在","code":1005}`, false, "hellorf:1005", "code_1005", "caller-error"},
		{400, `{"result":false,"message":"参数错误","code":1001}`, false, "hellorf:1001", "code_1001", "caller-error"},
		{200, `{"result":false,"message":"音乐不存在","code":1005}`, false, "hellorf:1005", "code_1005", "unknown"},
		{500, `{"result":false,"message":"服务器内部错误","code":5000}`, false, "hellorf:5000", "code_5000", "server-error"},
		{429, `{"result":false,"message":"too many","code":429}`, false, "hellorf:429", "code_429", "stop"},
		{403, `{"result":false,"message":"no","code":77}`, false, "hellorf:77", "code_77", "caller-error"},
		// "sign" only as a word: these are not configuration problems.
		{400, `{"result":false,"message":"cannot assign this permission","code":1007}`, false, "hellorf:1007", "code_1007", "caller-error"},
		{400, `{"result":false,"message":"Design licence unavailable","code":1007}`, false, "hellorf:1007", "code_1007", "caller-error"},
		{400, `{"result":false,"message":"signal lost; resign and retry","code":8}`, false, "hellorf:8", "code_8", "caller-error"},
	}
	for _, tc := range cases {
		e := env(tc.body)
		if got := authFailure(tc.status, e); got != tc.auth {
			t.Errorf("%d %s: authFailure %v", tc.status, tc.body, got)
		}
		if got := outcome(tc.status, e); got != tc.outcome {
			t.Errorf("%d %s: outcome %s", tc.status, tc.body, got)
		}
		h := relayHeader(tc.status, http.Header{}, e)
		if tc.name == "" {
			if h.Get("Sluice-Upstream-Status") != "" || h.Get("Sluice-Upstream-Class") != "success" {
				t.Errorf("%s: headers %v", tc.body, h)
			}
			continue
		}
		if want := fmt.Sprintf("%d %s", e.code(), tc.name); h.Get("Sluice-Upstream-Status") != want || h.Get("Sluice-Upstream-Class") != tc.class {
			t.Errorf("%d %s: %q %q, want %q %q", tc.status, tc.body, h.Get("Sluice-Upstream-Status"), h.Get("Sluice-Upstream-Class"), want, tc.class)
		}
	}
	for _, bad := range []string{`[]`, `{"data":{}}`, `<html>`, `{"result":"yes"}`} {
		if _, ok := parseEnvelope([]byte(bad)); ok {
			t.Errorf("%s parsed as an envelope", bad)
		}
	}
}

func TestConfirmedHeader(t *testing.T) {
	for _, tc := range []struct {
		h    http.Header
		want bool
	}{
		{http.Header{}, false},
		{http.Header{"Sluice-Confirm": {"repeat-purchase"}}, true},
		{http.Header{"Sluice-Confirm": {"delete, Repeat-Purchase"}}, true},
		{http.Header{"Sluice-Confirm": {"repeat"}}, false},
	} {
		if got := confirmed(tc.h); got != tc.want {
			t.Errorf("confirmed(%v) = %v", tc.h, got)
		}
	}
}

func TestGuard(t *testing.T) {
	g := newPurchaseGuard()
	if err := g.open(filepath.Join(t.TempDir(), guardFile)); err != nil {
		t.Fatal(err)
	}
	reserve := func(key string, now time.Time, window time.Duration, confirm bool) (uint64, *guardEntry) {
		t.Helper()
		tk, prev, err := g.reserve(key, now, window, confirm)
		if err != nil {
			t.Fatal(err)
		}
		return tk, prev
	}
	t0 := time.Unix(1700000000, 0)
	w := 10 * time.Minute
	a, b := guardKey(url.Values{"audio_id": {"1"}, "permission_id": {"2"}, "warrant_name": {"x"}}),
		guardKey(url.Values{"audio_id": {"1"}, "permission_id": {"2"}, "warrant_name": {"x"}, "third_user_id": {"u"}})
	if a == b {
		t.Fatal("third_user_id not in the key")
	}
	t1, prev := reserve(a, t0, w, false)
	if prev != nil {
		t.Fatal("first purchase blocked")
	}
	if _, prev = reserve(a, t0, w, true); prev == nil || prev.state != guardInFlight {
		t.Fatal("confirm must not override a purchase in flight")
	}
	if _, prev = reserve(b, t0, w, false); prev != nil {
		t.Fatal("a different purchase was blocked")
	}
	g.settle(a, t1, guardDone, "442", false)
	if _, prev = reserve(a, t0.Add(w-time.Second), w, false); prev == nil || prev.purchaseID != "442" {
		t.Fatalf("duplicate within the window: %+v", prev)
	}
	t2, prev := reserve(a, t0.Add(time.Minute), w, true)
	if prev != nil {
		t.Fatal("confirmed repeat refused")
	}
	g.settle(a, t2, 0, "", true) // refused upstream: the key is free
	if _, prev = reserve(a, t0.Add(2*time.Minute), w, false); prev != nil {
		t.Fatal("released key still blocks")
	}
	g.settle(a, t1, guardDone, "1", false) // a stale ticket changes nothing
	g2 := newPurchaseGuard()
	if err := g2.open(filepath.Join(t.TempDir(), guardFile)); err != nil {
		t.Fatal(err)
	}
	tk, _, _ := g2.reserve(a, t0, w, false)
	g2.settle(a, tk, guardDone, "1", false)
	if _, prev, _ = g2.reserve(a, t0.Add(w), w, false); prev != nil {
		t.Fatal("the window did not end")
	}
}

// TestIdleReader: a body that stops sending is cut off after the idle time.
func TestIdleReader(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	r := newIdleReader(pr, 50*time.Millisecond)
	defer r.stop()
	go pw.Write([]byte("abc"))
	buf := make([]byte, 8)
	if n, err := r.Read(buf); n != 3 || err != nil {
		t.Fatalf("first read: %d %v", n, err)
	}
	start := time.Now()
	_, err := r.Read(buf)
	if err == nil || !r.timedOut() {
		t.Fatalf("stalled read: %v, timedOut %v", err, r.timedOut())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cut off after %s", d)
	}
}
