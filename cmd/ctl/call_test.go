package main

import (
	"net/http"
	"net/url"
	"reflect"
	"testing"
)

func TestParsePairs(t *testing.T) {
	got, err := parsePairs([]string{"a=1", "b=", "c=x=y", "a=2", "e=-5"})
	if err != nil {
		t.Fatal(err)
	}
	want := url.Values{"a": {"1", "2"}, "b": {""}, "c": {"x=y"}, "e": {"-5"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"novalue", "=v", ""} {
		_, err := parsePairs([]string{bad})
		if err == nil || exitCode(err) != exitCaller {
			t.Errorf("parsePairs(%q): err %v, want usage error", bad, err)
		}
	}
}

func TestParseHeader(t *testing.T) {
	tests := []struct {
		in, name, value string
		ok              bool
	}{
		{"Cache-Control: no-cache", "Cache-Control", "no-cache", true},
		{"Sluice-Max-Wait:20s", "Sluice-Max-Wait", "20s", true},
		{"X-Empty:", "X-Empty", "", true},
		{"X-Colon: a:b", "X-Colon", "a:b", true},
		{"no colon", "", "", false},
		{": v", "", "", false},
		{"Bad Name: v", "", "", false},
	}
	for _, tt := range tests {
		name, value, err := parseHeader(tt.in)
		if (err == nil) != tt.ok || name != tt.name || value != tt.value {
			t.Errorf("parseHeader(%q) = %q, %q, %v", tt.in, name, value, err)
		}
	}
}

func TestAPIPath(t *testing.T) {
	tests := []struct {
		in, path string
		query    url.Values
	}{
		{"/v1/ineo/spotify.php", "/v1/ineo/spotify.php", url.Values{}},
		{"ineo/spotify.php", "/v1/ineo/spotify.php", url.Values{}},
		{"/ineo/spotify.php", "/v1/ineo/spotify.php", url.Values{}},
		{"v1/status", "/v1/status", url.Values{}},
		{"ineo/spotify.php?trackId=abc&x=1", "/v1/ineo/spotify.php", url.Values{"trackId": {"abc"}, "x": {"1"}}},
	}
	for _, tt := range tests {
		p, q, err := apiPath(tt.in)
		if err != nil || p != tt.path || !reflect.DeepEqual(q, tt.query) {
			t.Errorf("apiPath(%q) = %q, %v, %v; want %q, %v", tt.in, p, q, err, tt.path, tt.query)
		}
	}
	for _, bad := range []string{"", "/", "x?%zz"} {
		if _, _, err := apiPath(bad); err == nil || exitCode(err) != exitCaller {
			t.Errorf("apiPath(%q): err %v, want usage error", bad, err)
		}
	}
}

func TestBuildRequest(t *testing.T) {
	r, err := buildRequest("get", "ineo/spotify.php?a=0", []string{"trackId=abc", "a=1"}, []string{"Cache-Control: no-cache"})
	if err != nil {
		t.Fatal(err)
	}
	if r.method != "GET" || r.path != "/v1/ineo/spotify.php" || r.body != "" {
		t.Errorf("GET: %+v", r)
	}
	if want := (url.Values{"trackId": {"abc"}, "a": {"0", "1"}}); !reflect.DeepEqual(r.query, want) {
		t.Errorf("GET query = %v, want %v", r.query, want)
	}
	if r.header.Get("Cache-Control") != "no-cache" || r.header.Get("Content-Type") != "" {
		t.Errorf("GET header = %v", r.header)
	}

	r, err = buildRequest("POST", "/v1/ineo/spotify.php", []string{"trackId=a b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.body != "trackId=a+b" || len(r.query) != 0 || r.header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("POST: %+v", r)
	}

	r, err = buildRequest("PUT", "x/y", []string{"k=v"}, []string{"Content-Type: text/plain"})
	if err != nil || r.header.Get("Content-Type") != "text/plain" {
		t.Errorf("explicit Content-Type overridden: %+v %v", r, err)
	}

	r, err = buildRequest("DELETE", "cache/ineo", []string{"k=v"}, nil)
	if err != nil || r.body != "" || r.query.Get("k") != "v" {
		t.Errorf("DELETE: %+v %v", r, err)
	}

	for _, bad := range [][]string{{"G3T", "x"}, {"", "x"}, {"GET", ""}} {
		if _, err := buildRequest(bad[0], bad[1], nil, nil); exitCode(err) != exitCaller {
			t.Errorf("buildRequest(%q): err %v, want usage error", bad, err)
		}
	}
	if _, err := buildRequest("GET", "x/y", nil, []string{"nocolon"}); exitCode(err) != exitCaller {
		t.Errorf("bad header: %v", err)
	}
}

func TestUpstreamStatus(t *testing.T) {
	h := http.Header{}
	if _, _, ok := upstreamStatus(h); ok {
		t.Error("empty header parsed")
	}
	h.Set("Sluice-Upstream-Status", "10 ip_blocked")
	if c, n, ok := upstreamStatus(h); !ok || c != 10 || n != "ip_blocked" {
		t.Errorf("got %d %q %v", c, n, ok)
	}
	h.Set("Sluice-Upstream-Status", "200")
	if c, n, ok := upstreamStatus(h); !ok || c != 200 || n != "" {
		t.Errorf("got %d %q %v", c, n, ok)
	}
	h.Set("Sluice-Upstream-Status", "junk")
	if _, _, ok := upstreamStatus(h); ok {
		t.Error("junk parsed")
	}
}

func TestProvider(t *testing.T) {
	for in, want := range map[string]string{"/v1/ineo/spotify.php": "ineo", "/v1/status": "status", "/v1/": ""} {
		if got := provider(in); got != want {
			t.Errorf("provider(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFormatHead(t *testing.T) {
	resp := &http.Response{Status: "200 OK", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Cache-Status": {"sluice; hit"}, "Age": {"3"}, "Content-Type": {"application/json"}}}
	want := "HTTP/1.1 200 OK\nAge: 3\nCache-Status: sluice; hit\nContent-Type: application/json\n\n"
	if got := formatHead(resp); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
