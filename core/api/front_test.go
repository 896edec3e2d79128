package api

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/access"
	"github.com/sluice-dev/sluice/core/problem"
)

// testBackend is the smallest daemon the socket API can serve: one cached
// answer (/v1/p/cached) for the fast lane, and a provider route that
// counts the calls reaching it, as the gateway would before spending
// budget.
type testBackend struct {
	providerCalls atomic.Int64
	lookups       atomic.Int64
}

const cachedBody = `{"cached":true}`

func (b *testBackend) Health() Health                         { return Health{Status: "ok"} }
func (b *testBackend) Status() Status                         { return Status{} }
func (b *testBackend) CacheStats() CacheStats                 { return CacheStats{} }
func (b *testBackend) Metrics() http.Handler                  { return http.NotFoundHandler() }
func (b *testBackend) Level(access.Peer) access.Level         { return access.Read }
func (b *testBackend) PurgeCache(string) (PurgeResult, error) { return PurgeResult{}, nil }
func (b *testBackend) Reload(context.Context) (ReloadResult, error) {
	return ReloadResult{}, nil
}

func (b *testBackend) ServeProvider(w http.ResponseWriter, r *http.Request, provider, rest string) {
	b.providerCalls.Add(1)
	w.Header().Set("Content-Type", "application/json")
	if rest == "cached" {
		w.Write([]byte(cachedBody))
		return
	}
	w.Write([]byte(`{"fetched":true}`))
}

func (b *testBackend) Hit(provider, rest, query, host string) (Hit, bool) {
	b.lookups.Add(1)
	if provider != "p" || rest != "cached" {
		return Hit{}, false
	}
	now := time.Now()
	return Hit{Operation: "cached", Status: http.StatusOK, Head: []byte("Content-Type: application/json\r\n"),
		Body: []byte(cachedBody), StoredAt: now, ExpiresAt: now.Add(time.Hour)}, true
}

func (b *testBackend) Request(string) (RequestStatus, bool) { return RequestStatus{}, false }

// headerTimeout is the daemon's ReadHeaderTimeout; the tests' deadlines
// are well below it, so an answer that only comes when it runs out fails.
const headerTimeout = 10 * time.Second

// startFront serves a Front for b on a Unix socket, as the daemon does.
func startFront(t *testing.T, b Backend) string {
	t.Helper()
	sock, _ := startFrontCap(t, b, 0)
	return sock
}

// startFrontCap is startFront with a connection cap (0: none).
func startFrontCap(t *testing.T, b Backend, maxConns int) (string, *Front) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(b, nil, nil)
	srv := &http.Server{Handler: s, ReadHeaderTimeout: headerTimeout, ConnContext: ConnContext,
		ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	f := s.NewFront(srv, maxConns)
	done := make(chan error, 1)
	go func() { done <- f.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.Shutdown(ctx)
		<-done
	})
	return sock, f
}

// roundTrip sends raw on a new connection and reads one answer, which must
// come within 5 s (half the header timeout).
func roundTrip(t *testing.T, sock string, raw ...string) *http.Response {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(headerTimeout / 2))
	br := bufio.NewReader(c)
	var resp *http.Response
	for _, r := range raw {
		if _, err := io.WriteString(c, r); err != nil {
			t.Fatal(err)
		}
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no answer to %q before the deadline: %v", r, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
	}
	return resp
}

// TestBareLFIsAnswered: a head whose lines end in a bare LF, which
// net/http reads, gets net/http's answer at once rather than nothing until
// the header timeout; on a fresh connection and after a lane hit.
func TestBareLFIsAnswered(t *testing.T) {
	b := &testBackend{}
	sock := startFront(t, b)
	const hit = "GET /v1/p/cached HTTP/1.1\r\nHost: sluice\r\n\r\n"
	for _, tc := range []struct {
		name string
		raw  []string
		want string
	}{
		{"all bare", []string{"GET /v1/health HTTP/1.1\nHost: x\n\n"}, `"ok"`},
		{"blank line bare", []string{"GET /v1/health HTTP/1.1\r\nHost: x\r\n\n"}, `"ok"`},
		{"one header line bare", []string{"GET /v1/p/cached HTTP/1.1\r\nHost: x\nAccept: */*\r\n\r\n"}, cachedBody},
		{"provider call bare", []string{"GET /v1/p/cached HTTP/1.1\nHost: x\n\n"}, cachedBody},
		{"after a lane hit", []string{hit, "GET /v1/health HTTP/1.1\nHost: x\n\n"}, `"ok"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := roundTrip(t, sock, tc.raw...)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), tc.want) {
				t.Fatalf("answer %d %s, want 200 with %s", resp.StatusCode, body, tc.want)
			}
		})
	}
}

// TestBrowserRequestsRefused: whatever a browser marks as a page's request
// (Sec-Fetch-Site other than none, Origin even empty, Referer) is refused
// with one and the same problem, on a cached answer the fast lane would
// serve as on a miss, and never reaches the provider route. Sec-Fetch-Site
// none (the user typed the address) is served.
func TestBrowserRequestsRefused(t *testing.T) {
	b := &testBackend{}
	sock := startFront(t, b)
	var detail string
	for _, path := range []string{"/v1/p/cached", "/v1/p/miss"} {
		for _, h := range []string{
			"Sec-Fetch-Site: cross-site", "Sec-Fetch-Site: same-site", "Sec-Fetch-Site: same-origin",
			"sec-fetch-site: cross-site", "Sec-Fetch-Site: ", "Sec-Fetch-Site: none\r\nSec-Fetch-Site: cross-site",
			"Origin: ", "Origin:", "Origin: null", "origin: http://evil.example", "Referer: http://evil.example/",
			"Referer: \r\nReferer: http://evil.example/",
		} {
			t.Run(path+"/"+h, func(t *testing.T) {
				before := b.providerCalls.Load()
				resp := roundTrip(t, sock, "GET "+path+" HTTP/1.1\r\nHost: sluice\r\nSec-Fetch-Mode: no-cors\r\n"+h+"\r\n\r\n")
				var p problem.Problem
				if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != http.StatusForbidden {
					t.Fatalf("answer %d, %v; want a 403 problem", resp.StatusCode, err)
				}
				if detail == "" {
					detail = p.Detail
				} else if p.Detail != detail {
					t.Fatalf("problem %q, another request got %q: both paths must refuse alike", p.Detail, detail)
				}
				if got := b.providerCalls.Load() - before; got != 0 {
					t.Fatalf("%d provider calls, want 0", got)
				}
			})
		}
		t.Run(path+"/none", func(t *testing.T) {
			resp := roundTrip(t, sock, "GET "+path+" HTTP/1.1\r\nHost: sluice\r\nSec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\n\r\n")
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "true") {
				t.Fatalf("answer %d %s, want 200", resp.StatusCode, body)
			}
		})
	}
	if !strings.Contains(detail, "browser") {
		t.Fatalf("problem %q does not say why", detail)
	}
	// The lane still answers a plain request itself.
	before := b.providerCalls.Load()
	if resp := roundTrip(t, sock, "GET /v1/p/cached HTTP/1.1\r\nHost: sluice\r\n\r\n"); resp.StatusCode != http.StatusOK ||
		b.providerCalls.Load() != before {
		t.Fatalf("plain hit: %d, provider calls %d", resp.StatusCode, b.providerCalls.Load()-before)
	}
}
