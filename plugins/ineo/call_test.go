package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/provider"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// fakeUp stands in for *provider.Upstream: every grant is immediate, then
// the builder runs and the request goes straight to the simulator. A
// builder's error is wrapped as the SDK wraps it.
type fakeUp struct{ hc *http.Client }

func (f *fakeUp) Do(ctx context.Context, _ string, build provider.Builder) (*http.Response, error) {
	req, err := build(ctx)
	if err != nil {
		return nil, fmt.Errorf("building upstream request: %w", err)
	}
	return f.hc.Do(req)
}

func (f *fakeUp) Pause(context.Context, string, time.Time, string) error { return nil }

func (f *fakeUp) SetTimeout(time.Duration) {}

// recorder is an answerWriter that keeps the answer.
type recorder struct {
	status int
	hint   provider.CacheHint
	body   bytes.Buffer
}

func (r *recorder) WriteHead(status int, _ http.Header, hint provider.CacheHint) error {
	r.status, r.hint = status, hint
	return nil
}

func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

// newSimPlugin is a plugin configured against a simulator behind an
// httptest server.
func newSimPlugin(t *testing.T, linkTTL string) (*ineo, *ineosim.Sim) {
	t.Helper()
	sim := ineosim.New(ineosim.Options{})
	srv := httptest.NewServer(sim)
	t.Cleanup(func() { srv.Close(); _ = sim.Close() })
	p := newIneo(slog.New(slog.DiscardHandler))
	raw, _ := json.Marshal(map[string]any{"base_url": srv.URL, "access_key": ineosim.DefaultAccessKey,
		"tmanage_auth": ineosim.DefaultTmanageAuth, "link_ttl": linkTTL})
	if err := p.Configure(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	return p, sim
}

// TestLinkExpiryCountsFromSend: iNeo issues a link while it answers, so a
// slow answer must not push the cache's expiry past send + link_ttl.
func TestLinkExpiryCountsFromSend(t *testing.T) {
	const ttl = time.Minute
	p, sim := newSimPlugin(t, ttl.String())
	// The exchange's length is what the answer-time expiry got wrong.
	sim.SetDelay(200 * time.Millisecond)
	rec := &recorder{}
	req := &provider.Request{Operation: "spotify.track", Method: http.MethodGet,
		Params: url.Values{"trackId": {"6fx5VOjqYNBHcDf5GIF5g5"}}}
	if err := p.serve(context.Background(), req, rec, &fakeUp{hc: &http.Client{}}); err != nil {
		t.Fatal(err)
	}
	if rec.status != http.StatusOK || !rec.hint.Cacheable || rec.hint.ExpiresAt.IsZero() {
		t.Fatalf("status %d hint %+v: %s", rec.status, rec.hint, rec.body.String())
	}
	log := sim.RequestLog(ineosim.ServiceSpotify)
	if len(log) != 1 {
		t.Fatalf("%d requests, want 1", len(log))
	}
	// The arrival follows the send, so send + link_ttl is no later than
	// arrival + link_ttl; the answer came 200 ms after the arrival.
	if bound := log[0].At.Add(ttl); rec.hint.ExpiresAt.After(bound) {
		t.Fatalf("link expires %s after the request arrived; want at most link_ttl %s",
			rec.hint.ExpiresAt.Sub(log[0].At), ttl)
	}
}

// TestBadURLHidesCredential: net/http's error for a URL it cannot parse
// quotes the URL, access key included; it must never reach a 502's detail.
func TestBadURLHidesCredential(t *testing.T) {
	const key = "750394:secretsecretsecret"
	// A host that url.Parse would refuse: only reachable if base_url's
	// validation ever lets one through, which the builder must survive.
	bad := url.URL{Scheme: "http", Host: "ineo example", Path: "/spotify.php"}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		_, err := newRequest(context.Background(), method, bad, url.Values{"accessKey": {key}, "trackId": {"x"}})
		if err == nil {
			t.Fatalf("%s: built a request for a bad URL", method)
		}
		if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), url.QueryEscape(key)) {
			t.Fatalf("%s: error carries the access key: %v", method, err)
		}
	}

	// Through the whole call, with the endpoint broken after validation.
	p, sim := newSimPlugin(t, "")
	p.mu.Lock()
	p.cfg.AccessKey = key
	p.cfg.base = &bad
	p.mu.Unlock()
	req := &provider.Request{Operation: "spotify.track", Method: http.MethodGet,
		Params: url.Values{"trackId": {"6fx5VOjqYNBHcDf5GIF5g5"}}}
	err := p.serve(context.Background(), req, &recorder{}, &fakeUp{hc: &http.Client{}})
	if err == nil || strings.Contains(err.Error(), key) || strings.Contains(err.Error(), url.QueryEscape(key)) {
		t.Fatalf("call error %v: want one without the access key", err)
	}
	if n := sim.Requests(ineosim.ServiceSpotify); n != 0 {
		t.Fatalf("%d requests reached iNeo", n)
	}
}
