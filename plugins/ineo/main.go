// Command sluice-ineo is sluice's provider plugin for the iNeo web services:
// spotify.php (track download links) and tmanage-v2.php (Telegram developer
// accounts). It validates every call before spending a request, adds the
// access tokens from config, and turns iNeo's "stop now" status codes into a
// bucket pause for every caller.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/proto"
	"github.com/sluice-dev/sluice/core/provider"
)

func main() {
	provider.Serve(func(l *slog.Logger) provider.Provider { return newIneo(l) })
}

// Bucket names; limits are the vendor's: more than 6 in 7 s (10 in 11 s)
// bans the IP and then the token for good.
const (
	bucketSpotify = "ineo.spotify"
	bucketTmanage = "ineo.tmanage"
)

type settings struct {
	BaseURL            string `json:"base_url"`
	AccessKey          string `json:"access_key"`
	TmanageAuth        string `json:"tmanage_auth"`
	LinkTTL            string `json:"link_ttl"`
	AllowDeleteAccount bool   `json:"allow_delete_account"`
	Timeout            string `json:"timeout"`

	linkTTL time.Duration
	base    *url.URL
}

type ineo struct {
	log *slog.Logger
	mu  sync.RWMutex
	cfg *settings
}

func newIneo(l *slog.Logger) *ineo { return &ineo{log: l} }

func (p *ineo) Describe() *proto.Description {
	phone := &proto.Param{Name: "phone", Required: true, Summary: "Telegram number with country code, digits only (989012345678)"}
	tm := func(action, summary string, destructive bool, params ...*proto.Param) *proto.Operation {
		return &proto.Operation{Name: "tmanage." + action, Methods: []string{"GET"}, Path: "tmanage-v2.php",
			Match: map[string]string{"action": action}, Params: append([]*proto.Param{phone}, params...),
			Bucket: bucketTmanage, Destructive: destructive, Summary: summary, DropUnknownParams: true}
	}
	req := func(name, summary string) *proto.Param {
		return &proto.Param{Name: name, Required: true, Summary: summary}
	}
	return &proto.Description{
		Name:    "ineo",
		Version: "1",
		Operations: []*proto.Operation{
			{Name: "spotify.track", Methods: []string{"GET", "POST"}, Path: "spotify.php", Cacheable: true, Bucket: bucketSpotify,
				Params: []*proto.Param{{Name: "trackId", Required: true, Pattern: trackPattern,
					Summary: "a 22-character base62 Spotify track id, a spotify:track: URI or an open.spotify.com track URL"}},
				// Only trackId reaches iNeo: anything else a caller adds
				// must not make a second cache entry, and with it a
				// second request of the 6 per 7 s iNeo bans beyond.
				Summary: "direct download link for a Spotify track", DropUnknownParams: true},
			tm("sendcode", "step 1: Telegram sends a login code; answer carries random_hash", false),
			tm("login", "step 2: log in with the code", false, req("random_hash", "from sendcode"), req("password", "the code Telegram sent")),
			tm("createapplication", "register as a developer", false, req("title", ""), req("shortname", ""), req("url", ""),
				req("platform", strings.Join(platforms, ", ")), &proto.Param{Name: "description"}),
			tm("information", "account info incl. api_id and api_hash", false),
			tm("deleteaccount", "DELETES the Telegram account permanently", true, req("access", "must be yes")),
			tm("logout", "close the session", false),
		},
		Buckets: []*proto.Bucket{
			{Name: bucketSpotify, Requests: 6, WindowMs: 7000},
			{Name: bucketTmanage, Requests: 10, WindowMs: 11000},
		},
		CredentialParams: []string{"accessKey", "auth"},
	}
}

func (p *ineo) Configure(_ context.Context, raw []byte) error {
	var s settings
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("ineo config: %w", err)
	}
	base, err := url.Parse(strings.TrimRight(s.BaseURL, "/"))
	if err != nil || base.Scheme == "" || base.Host == "" {
		return fmt.Errorf("ineo config: base_url must be an absolute URL")
	}
	s.base = base
	s.linkTTL = 10 * time.Minute
	if d, err := time.ParseDuration(s.LinkTTL); err == nil && d > 0 {
		s.linkTTL = d
	}
	p.mu.Lock()
	p.cfg = &s
	p.mu.Unlock()
	return nil
}

func (p *ineo) settings() *settings {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.cfg
}

var platforms = []string{"android", "ios", "ubuntu_mobile", "desktop", "black_berry", "windows_phone", "web", "other"}

// trackPattern is declared to the host, which normalises every accepted
// spelling of a track to its bare id before caching and coalescing.
const trackPattern = `([0-9A-Za-z]{22})|spotify:track:([0-9A-Za-z]{22})|(?:https?://)?open\.spotify\.com/(?:intl-[a-zA-Z-]+/)?track/([0-9A-Za-z]{22})(?:[/?#].*)?`

var (
	base62  = regexp.MustCompile(`^[0-9A-Za-z]{22}$`)
	phoneRE = regexp.MustCompile(`^[1-9][0-9]{7,14}$`)
	// open.spotify.com/track/ID, optionally with a locale segment
	// (open.spotify.com/intl-de/track/ID) and a query (?si=...).
	trackURL = regexp.MustCompile(`^(?:https?://)?open\.spotify\.com/(?:intl-[a-zA-Z-]+/)?track/([0-9A-Za-z]{22})(?:[/?#].*)?$`)
)

// normaliseTrackID accepts a bare id, a spotify:track: URI or an
// open.spotify.com track URL and returns the bare id.
func normaliseTrackID(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if base62.MatchString(v) {
		return v, true
	}
	if id, ok := strings.CutPrefix(v, "spotify:track:"); ok && base62.MatchString(id) {
		return id, true
	}
	if m := trackURL.FindStringSubmatch(v); m != nil {
		return m[1], true
	}
	return "", false
}

// validate checks everything that can be checked locally, so a bad call
// costs no upstream request, and returns the parameters to send.
func (p *ineo) validate(req *provider.Request, s *settings) (url.Values, string, error) {
	out := url.Values{}
	if req.Operation == "spotify.track" {
		id, ok := normaliseTrackID(req.Params.Get("trackId"))
		if !ok {
			return nil, "", problem.BadParam("trackId", "trackId must be a 22-character base62 Spotify track id, a spotify:track: URI or an open.spotify.com track URL")
		}
		out.Set("trackId", id)
		return out, bucketSpotify, nil
	}
	action := strings.TrimPrefix(req.Operation, "tmanage.")
	out.Set("action", action)
	phone := req.Params.Get("phone")
	if !phoneRE.MatchString(phone) {
		return nil, "", problem.BadParam("phone", "phone must be the country code and number, digits only, no + (e.g. 989012345678)")
	}
	out.Set("phone", phone)
	switch action {
	case "login":
		out.Set("random_hash", req.Params.Get("random_hash"))
		out.Set("password", req.Params.Get("password"))
	case "createapplication":
		plat := req.Params.Get("platform")
		if !contains(platforms, plat) {
			return nil, "", problem.BadParam("platform", "platform must be one of "+strings.Join(platforms, ", "))
		}
		if u, err := url.Parse(req.Params.Get("url")); err != nil || u.Host == "" {
			return nil, "", problem.BadParam("url", "url must be an absolute URL of the project's site")
		}
		for _, k := range []string{"title", "shortname", "url", "platform", "description"} {
			if v := req.Params.Get(k); v != "" {
				out.Set(k, v)
			}
		}
	case "deleteaccount":
		if !s.AllowDeleteAccount {
			return nil, "", problem.Forbidden("deleteaccount permanently deletes a Telegram account; it is disabled unless allow_delete_account = true in [providers.ineo]")
		}
		if req.Params.Get("access") != "yes" {
			return nil, "", problem.BadParam("access", "deleteaccount requires access=yes")
		}
		out.Set("access", "yes")
	}
	return out, bucketTmanage, nil
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// envelope is the part of iNeo's answer sluice reads.
type envelope struct {
	StatusCode *int   `json:"status_code"`
	Status     string `json:"status"`
}

func (p *ineo) Call(ctx context.Context, req *provider.Request, w *provider.ResponseWriter, up *provider.Upstream) error {
	return p.serve(ctx, req, w, up)
}

// Tests substitute fakes that reach the simulator directly.
type (
	upstream     = provider.Sender
	answerWriter = provider.AnswerWriter
)

func (p *ineo) serve(ctx context.Context, req *provider.Request, w answerWriter, up upstream) error {
	s := p.settings()
	if s == nil {
		return problem.New(http.StatusServiceUnavailable, "ineo provider not configured")
	}
	params, bucket, err := p.validate(req, s)
	if err != nil {
		return err
	}
	script, credName, cred := "spotify.php", "accessKey", s.AccessKey
	if bucket == bucketTmanage {
		script, credName, cred = "tmanage-v2.php", "auth", s.TmanageAuth
	}
	if cred == "" {
		return problem.New(http.StatusServiceUnavailable, fmt.Sprintf("no credential configured for %s (set [providers.ineo] %s)", script, map[string]string{"accessKey": "access_key", "auth": "tmanage_auth"}[credName]))
	}
	up.SetTimeout(parseDuration(s.Timeout, 30*time.Second))
	endpoint := *s.base
	endpoint.Path = strings.TrimRight(endpoint.Path, "/") + "/" + script
	// sent is when the request left: iNeo issues a link while answering
	// it, so the link's lifetime counts from no later than this. The
	// builder runs after the grant, right before the send, and once more
	// for every grant given up unsent; the last run is the request sent.
	var sent time.Time
	resp, err := up.Do(ctx, bucket, func(ctx context.Context) (*http.Request, error) {
		q := url.Values{credName: {cred}}
		for k, vs := range params {
			q[k] = vs
		}
		sent = time.Now()
		return newRequest(ctx, req.Method, endpoint, q)
	})
	if err != nil {
		return err
	}
	body, err := provider.ReadBody(ctx, resp, 4<<20)
	if err != nil {
		return err
	}
	var env envelope
	if json.Unmarshal(bytes.TrimSpace(body), &env) != nil {
		// A body that fails to decode (even after filling status_code, as a
		// type error later on does) is not the envelope.
		env.StatusCode = nil
	}
	v := judge(resp.StatusCode, resp.Header, env, time.Now())
	if !v.pauseUntil.IsZero() {
		p.log.Error("iNeo says stop: pausing bucket for every caller", "bucket", bucket, "http_status", resp.StatusCode,
			"reason", v.reason, "until", v.pauseUntil.Format(time.RFC3339))
		// WithoutCancel: a caller that hung up must not stop the pause
		// that protects every other caller's token.
		if err := up.Pause(context.WithoutCancel(ctx), bucket, v.pauseUntil, v.reason); err != nil {
			p.log.Error("could not pause bucket", "bucket", bucket, "err", err)
		}
	}
	if v.problem != nil {
		return v.problem
	}
	if v.cacheable && req.Operation == "spotify.track" {
		// A success is only iNeo's answer when it carries the link the
		// service exists to return: one without it would be cached for
		// the whole link_ttl. Not relayed, so not cached, and not retried:
		// the next caller's request goes upstream again.
		if err := checkShape(req.Operation, bytes.TrimSpace(body)); err != nil {
			p.log.Warn("iNeo's success is not the documented answer; not relayed or cached",
				"operation", req.Operation, "content_type", resp.Header.Get("Content-Type"), "bytes", len(body), "why", err.Error())
			return problem.New(http.StatusBadGateway, fmt.Sprintf(
				"iNeo answered status_code %d with a body that is not the answer its documents give for %s (%v); not cached", *env.StatusCode, req.Operation, err))
		}
	}
	code := v.code
	hint := provider.CacheHint{Outcome: fmt.Sprintf("ineo:%d", *env.StatusCode)}
	if v.cacheable && req.Operation == "spotify.track" {
		// iNeo's links carry no expiry of their own: link_ttl is the bound,
		// counted from the send, not from the answer's arrival, which may
		// be up to the whole timeout later: a cache entry must not outlive
		// its link by the length of the exchange.
		hint.Cacheable, hint.ExpiresAt = true, sent.Add(s.linkTTL)
	}
	h := http.Header{"Content-Type": {resp.Header.Get("Content-Type")}}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	h.Set("Sluice-Upstream-Status", fmt.Sprintf("%d %s", *env.StatusCode, code.Name))
	// The class from the code table, so clients need not keep their own.
	h.Set("Sluice-Upstream-Class", code.Class.String())
	// HTTP 200 even when iNeo's was not (an enveloped 403, say): callers
	// read the outcome from status_code and the headers above, as for
	// every iNeo answer.
	if err := w.WriteHead(http.StatusOK, h, hint); err != nil {
		return err
	}
	_, err = w.Write(body)
	return err
}

// errBadURL replaces net/http's error, which quotes the whole URL, the
// accessKey or auth query parameter included, and would reach the caller
// in a 502's detail.
var errBadURL = errors.New("cannot build the iNeo URL from base_url")

// newRequest builds the request for endpoint with the parameters q, the
// credential among them: as a form body for POST, as the query otherwise.
func newRequest(ctx context.Context, method string, endpoint url.URL, q url.Values) (*http.Request, error) {
	if method == http.MethodPost {
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint.String(), strings.NewReader(q.Encode()))
		if err != nil {
			return nil, errBadURL
		}
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return r, nil
	}
	endpoint.RawQuery = q.Encode()
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint.String(), nil)
	if err != nil {
		return nil, errBadURL
	}
	return r, nil
}

// httpStopPause is how long an HTTP 429 or 503 without a usable
// Retry-After pauses the bucket: as long as iNeo's own 429
// too_many_requests code does. iNeo bans for good past its limit, so a
// refusal whose length is unknown is waited out generously.
const httpStopPause = 30 * time.Second

// verdict is what one iNeo answer means for the bucket and for the caller.
type verdict struct {
	// code is status_code's table entry; meaningful only without problem.
	code provider.Code
	// pauseUntil, if not zero, is when the bucket may send again: every
	// caller waits until then. reason says why, for status and logs.
	pauseUntil time.Time
	reason     string
	// cacheable: a success under HTTP 200, the only answer worth keeping.
	cacheable bool
	// problem, if not nil, is the answer instead of relaying the body.
	problem *problem.Problem
}

// judge reads one answer. The status_code in the body is the outcome
// whatever the HTTP status: iNeo answers HTTP 200 only "usually", and a
// ban (10 ip_blocked) under HTTP 403 is still a ban, so ignoring the body
// of a non-200 answer would send the next request into it and cost the
// token. An HTTP 429 or 503 asks for a pause by itself too, envelope or
// not, since a proxy or rate limiter in front of iNeo sends them bare.
func judge(httpStatus int, h http.Header, env envelope, now time.Time) verdict {
	var v verdict
	var why []string
	if httpStatus == http.StatusTooManyRequests || httpStatus == http.StatusServiceUnavailable {
		v.pauseUntil = now.Add(provider.RetryAfter(h, httpStopPause))
		why = append(why, fmt.Sprintf("iNeo answered HTTP %d", httpStatus))
	}
	if env.StatusCode == nil {
		p := problem.New(http.StatusBadGateway, fmt.Sprintf("iNeo answered HTTP %d with a body that is not its JSON envelope", httpStatus))
		if !v.pauseUntil.IsZero() {
			p.Detail += "; the bucket is paused for every caller until " + v.pauseUntil.UTC().Format(time.RFC3339)
			p.RetryAfter = v.pauseUntil.Sub(now)
		}
		v.reason, v.problem = strings.Join(why, "; "), p
		return v
	}
	sc := *env.StatusCode
	v.code = codes.Lookup(sc)
	if v.code.Class == provider.Stop {
		if until := now.Add(v.code.Pause); until.After(v.pauseUntil) {
			v.pauseUntil = until
		}
		why = append([]string{fmt.Sprintf("iNeo status_code %d %s", sc, v.code.Name)}, why...)
	}
	v.reason = strings.Join(why, "; ")
	if httpStatus != http.StatusOK && v.code.Class == provider.Success {
		// A success under an error status contradicts itself; its link
		// cannot be trusted, so it is neither relayed nor cached.
		v.problem = problem.New(http.StatusBadGateway, fmt.Sprintf("iNeo answered HTTP %d with status_code %d %s", httpStatus, sc, v.code.Name))
		if !v.pauseUntil.IsZero() {
			v.problem.RetryAfter = v.pauseUntil.Sub(now)
		}
		return v
	}
	v.cacheable = httpStatus == http.StatusOK && v.code.Class == provider.Success
	return v
}

func parseDuration(s string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d
	}
	return def
}
