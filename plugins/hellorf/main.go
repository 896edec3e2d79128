// Command sluice-hellorf is sluice's provider plugin for the hellorf (zcool)
// music licensing API: the eight audio endpoints docs/upstreams.md describes
// (categories, search, detail, purchase,
// my-purchases, purchase-detail, download-warrant, purchase-download).
//
// What it adds on top of the upstream:
//
//   - Every parameter is validated locally, so a bad call costs no upstream
//     request.
//   - client_id, nonce_str and sign are added by the plugin, never by the
//     caller; the nonce and signature are made after the scheduler's grant,
//     so a request that waited in the queue never leaves with a stale nonce.
//   - Answers are passed back verbatim, with a cache verdict that bounds
//     every cached answer by the earliest expiry of the links inside it.
//   - Purchases spend money: they are off unless allowed in config, never
//     retried or coalesced, and an identical purchase within the guard window
//     is refused unless the caller confirms it.
//   - Licence certificates (download-warrant) are streamed in bounded chunks.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/proto"
	"github.com/sluice-dev/sluice/core/provider"
)

func main() {
	provider.Serve(func(l *slog.Logger) provider.Provider { return newHellorf(l) })
}

// bucketAPI is the one bucket for every endpoint. The vendor states no rate
// limit; 10 per second is a polite default that [providers.hellorf.limits.api]
// overrides.
const bucketAPI = "hellorf.api"

// linkLife is the documented lifetime of the links in search (and detail)
// answers: README §2 FAQ, original FAQ 6 "搜索图片返回的链接过期时间是多久? 10分钟".
// Those links need not carry an Expires= of their own, so this rule bounds
// the cache even when the body names no expiry.
const linkLife = 10 * time.Minute

// maxJSON bounds a JSON answer read into memory; the gateway refuses to cache
// more than 8 MiB anyway.
const maxJSON = 8 << 20

// settings is the [providers.hellorf] section as the daemon sends it: TOML
// key names, secrets resolved, durations as Go duration strings.
type settings struct {
	BaseURL       string `json:"base_url"`
	ClientID      string `json:"client_id"`
	ClientSecret  string `json:"client_secret"`
	AllowPurchase bool   `json:"allow_purchase"`
	PurchaseGuard string `json:"purchase_guard"`
	CategoriesTTL string `json:"categories_ttl"`
	SearchTTL     string `json:"search_ttl"`
	Timeout       string `json:"timeout"`

	base          *url.URL
	purchaseGuard time.Duration
	categoriesTTL time.Duration
	searchTTL     time.Duration
	timeout       time.Duration
}

// String keeps the secrets out of any accidental rendering.
func (s *settings) String() string {
	return fmt.Sprintf("hellorf{base_url=%s allow_purchase=%v}", s.BaseURL, s.AllowPurchase)
}

// endpoint is base_url plus an upstream path; base_url may carry a path
// prefix ("https://host/api/v2").
func (s *settings) endpoint(path string) *url.URL {
	u := *s.base
	u.Path = strings.TrimRight(u.Path, "/") + "/" + path
	u.RawPath = ""
	return &u
}

// hellorf is the provider. Its only state besides the settings is the
// purchase guard, which lives as long as the plugin process.
type hellorf struct {
	log       *slog.Logger
	cfg       atomic.Pointer[settings]
	guard     *purchaseGuard
	guardOnce sync.Once
	// now is the clock for nonces and the guard (a test clock in tests).
	now func() time.Time
	// skewWarned rate-limits the clock-offset warning (Unix seconds of the
	// last one).
	skewWarned atomic.Int64
}

func newHellorf(l *slog.Logger) *hellorf {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &hellorf{log: l, guard: newPurchaseGuard(), now: time.Now}
}

func (p *hellorf) Describe() *proto.Description {
	d := &proto.Description{
		Name:    "hellorf",
		Version: "1",
		Buckets: []*proto.Bucket{{Name: bucketAPI, Requests: 10, WindowMs: 1000}},
		// The plugin adds these itself; a caller's are dropped by the host
		// (in any case), so a caller can neither sign nor impersonate.
		CredentialParams: []string{"client_id", "client_secret", "nonce_str", "sign"},
	}
	for _, op := range operations {
		o := &proto.Operation{
			Name: op.name, Methods: []string{op.method}, Path: op.path, Bucket: bucketAPI,
			Cacheable: op.cacheable, Destructive: op.destructive, Summary: op.summary,
		}
		for _, ps := range op.params {
			// The rewrites validate makes, described so the host keys the
			// cache on what is sent: one entry and one request for
			// page=01, page=1, page= and no page.
			pp := &proto.Param{Name: ps.name, Required: ps.required, Summary: ps.summary,
				EmptyIsAbsent: !ps.required, DefaultValue: ps.def}
			if ps.whole {
				pp.Pattern = wholePattern
			}
			o.Params = append(o.Params, pp)
		}
		d.Operations = append(d.Operations, o)
	}
	return d
}

func (p *hellorf) Configure(ctx context.Context, raw []byte) error {
	return p.configure(provider.StateDir(ctx), raw)
}

// guardFile is the purchase guard's file inside the plugin's state
// directory.
const guardFile = "purchase-guard.json"

// configure applies the settings; stateDir keeps the purchase guard, which
// is opened on the first call only (the guard outlives config changes).
func (p *hellorf) configure(stateDir string, raw []byte) error {
	p.guardOnce.Do(func() {
		if stateDir == "" {
			// The daemon always passes one; without it purchases are
			// refused rather than guarded in memory alone.
			p.log.Error("no state directory for the purchase guard; purchases are refused")
			return
		}
		if err := p.guard.open(filepath.Join(stateDir, guardFile)); err != nil {
			p.log.Error("purchase guard could not be read; purchases are refused until the file is repaired or removed (check my-purchases first)", "err", err)
		}
	})
	var s settings
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("hellorf config: %w", err)
	}
	base, err := url.Parse(strings.TrimRight(s.BaseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("hellorf config: base_url must be an absolute http(s) URL")
	}
	if base.RawQuery != "" || base.Fragment != "" {
		return fmt.Errorf("hellorf config: base_url must not carry a query or fragment")
	}
	// Without both, every request would be refused by hellorf: fail the
	// plugin at start with a clear reason instead.
	if s.ClientID == "" || s.ClientSecret == "" {
		return fmt.Errorf("hellorf config: client_id and client_secret must be set")
	}
	s.base = base
	s.purchaseGuard = parseDuration(s.PurchaseGuard, 10*time.Minute)
	s.categoriesTTL = parseDuration(s.CategoriesTTL, 24*time.Hour)
	s.searchTTL = parseDuration(s.SearchTTL, 10*time.Minute)
	s.timeout = parseDuration(s.Timeout, 30*time.Second)
	p.cfg.Store(&s)
	return nil
}

func parseDuration(s string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d
	}
	return def
}

// Tests substitute a recorder and a fake that reaches the simulator
// directly.
type (
	answerWriter = provider.AnswerWriter
	upstream     interface {
		provider.StreamSender
		provider.Guarder
	}
)

func (p *hellorf) Call(ctx context.Context, req *provider.Request, w *provider.ResponseWriter, up *provider.Upstream) error {
	return p.call(ctx, req, w, up)
}

func (p *hellorf) call(ctx context.Context, req *provider.Request, w answerWriter, up upstream) error {
	s := p.cfg.Load()
	if s == nil {
		return problem.New(http.StatusServiceUnavailable, "hellorf provider not configured")
	}
	op, ok := opsByName[req.Operation]
	if !ok {
		return problem.New(http.StatusNotFound, fmt.Sprintf("unknown hellorf operation %q", req.Operation))
	}
	params, err := validate(op, req.Params)
	if err != nil {
		return err
	}
	up.SetTimeout(s.timeout)
	switch op.kind {
	case kindPurchase:
		return p.purchase(ctx, req, w, up, s, op, params)
	case kindFile:
		return p.file(ctx, w, up, s, op, params)
	}
	return p.lookup(ctx, w, up, s, op, params)
}

// lookup runs one JSON endpoint and passes the answer back.
func (p *hellorf) lookup(ctx context.Context, w answerWriter, up upstream, s *settings, op *operation, params url.Values) error {
	var ex exchange
	resp, err := up.Do(ctx, bucketAPI, ex.builder(s, op, params, p.now))
	if err != nil {
		return err
	}
	body, err := provider.ReadBody(ctx, resp, maxJSON)
	if err != nil {
		return err
	}
	return p.relayJSON(ctx, w, up, s, op, &ex, resp, body)
}
