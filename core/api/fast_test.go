package api

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

// FuzzLaneParse: whatever head the fast lane accepts, net/http reads the
// same request from it (method, path, query, host, no body), so the lane
// never answers something the full path would read differently.
func FuzzLaneParse(f *testing.F) {
	for _, s := range []string{
		"GET /v1/ineo/spotify.php?trackId=x HTTP/1.1\r\nHost: sluice\r\n\r\n",
		"GET /v1/ineo/spotify.php?trackId=x HTTP/1.1\r\nHost: sluice\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n",
		"GET /v1/spotify/v1/tracks/abc HTTP/1.1\r\nhost: a\r\nContent-Length: 0\r\nUser-Agent: x\r\n\r\n",
		"GET /v1/ineo/a%2Fb HTTP/1.1\r\nHost: sluice\r\n\r\n",
		"GET /v1/ineo/../status HTTP/1.1\r\nHost: sluice\r\n\r\n",
		"GET /v1/status HTTP/1.1\r\nHost: sluice\r\n\r\n",
		"GET /v1/ineo/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET /v1/ineo/x HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
		"GET /v1/ineo/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET /v1/ineo/x?a=1;b=2 HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://sluice/v1/ineo/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /v1/ineo/x HTTP/1.0\r\nHost: a\r\n\r\n",
		"GET /v1/ineo/x HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n",
		"GET /v1/ineo/x HTTP/1.1\r\nHost : a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		i := bytes.Index(head, []byte("\r\n\r\n"))
		if i < 0 {
			return
		}
		head = head[:i+4]
		var lr laneRequest
		if !lr.parse(head) {
			return
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("lane accepted %q, net/http refuses it: %v", head, err)
		}
		if r.Method != http.MethodGet || r.URL.Path != lr.path || r.URL.RawQuery != lr.query || r.Host != lr.host {
			t.Fatalf("lane read %q as %q ? %q host %q; net/http as %s %q ? %q host %q",
				head, lr.path, lr.query, lr.host, r.Method, r.URL.Path, r.URL.RawQuery, r.Host)
		}
		if r.ContentLength > 0 || len(r.TransferEncoding) > 0 || r.Close {
			t.Fatalf("lane accepted %q with a body or Connection: close", head)
		}
		if "/v1/"+lr.provider+"/"+lr.rest != lr.path {
			t.Fatalf("path split %q into %q + %q", lr.path, lr.provider, lr.rest)
		}
	})
}

// TestLaneHandsOver: requests whose headers change how a provider call is
// answered or refused (a browser's Origin, cache directives, a max wait, a
// body) are never answered by the lane; the same head without the header
// is.
func TestLaneHandsOver(t *testing.T) {
	const base = "GET /v1/ineo/spotify.php?trackId=x HTTP/1.1\r\nHost: sluice\r\n"
	var plain laneRequest
	if !plain.parse([]byte(base + "\r\n")) {
		t.Fatal("the lane refuses a plain GET")
	}
	for _, h := range []string{
		"Origin: http://evil.example", "Referer: http://evil.example/", "Cache-Control: no-cache", "Pragma: no-cache",
		"Sluice-Max-Wait: 1s", "sluice-max-wait: 1s", "Transfer-Encoding: chunked", "Content-Length: 5",
		"Content-Type: application/json", "Expect: 100-continue", "Upgrade: websocket", "Connection: close", "TE: trailers",
		"Origin:", "Origin: ", "origin: null", "Sec-Fetch-Site: cross-site", "Sec-Fetch-Site: same-origin", "sec-fetch-site: none",
	} {
		var lr laneRequest
		if lr.parse([]byte(base + h + "\r\n\r\n")) {
			t.Errorf("the lane accepted a request with %q", h)
		}
	}
	// A Host net/http refuses (400) is not the lane's to answer: it would
	// become the base of the answer's links, quotes and all.
	for _, host := range []string{`x","injected":"yes`, `x"y`, "a b", `a\b`, "a<b>", "evil.com/path?", "h{}|^`"} {
		var lr laneRequest
		if lr.parse([]byte("GET /v1/ineo/spotify.php?trackId=x HTTP/1.1\r\nHost: " + host + "\r\n\r\n")) {
			t.Errorf("the lane accepted Host %q", host)
		}
	}
	for _, head := range []string{
		"POST /v1/ineo/spotify.php HTTP/1.1\r\nHost: sluice\r\n\r\n",
		"GET /v1/status HTTP/1.1\r\nHost: sluice\r\n\r\n",
		"GET /v1/ineo/x HTTP/1.0\r\nHost: sluice\r\n\r\n",
	} {
		var lr laneRequest
		if lr.parse([]byte(head)) {
			t.Errorf("the lane accepted %q", head)
		}
	}
}

// TestHeadEnd: the lane finds the end of a CRLF head, waits while it is
// incomplete, and gives up on any line that ends in a bare LF (net/http
// reads those; the lane would wait for a CRLF CRLF that never comes).
func TestHeadEnd(t *testing.T) {
	for _, tc := range []struct {
		buf  string
		end  int
		bare bool
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27, false},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n", 27, false},
		{"\r\n\r\n", 4, false},
		{"GET / HTTP/1.1\r\nHost: a\r\n", 0, false},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r", 0, false},
		{"GET / HTTP/1.1\r", 0, false},
		{"", 0, false},
		{"GET / HTTP/1.1\n", 0, true},
		{"GET / HTTP/1.1\nHost: a\n\n", 0, true},
		{"GET / HTTP/1.1\r\nHost: a\n\r\n", 0, true},
		{"GET / HTTP/1.1\r\nHost: a\r\n\n", 0, true},
		{"\n", 0, true},
	} {
		end, bare := headEnd([]byte(tc.buf))
		if end != tc.end || bare != tc.bare {
			t.Errorf("headEnd(%q) = %d, %v; want %d, %v", tc.buf, end, bare, tc.end, tc.bare)
		}
	}
}
