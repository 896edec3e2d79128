// Package hellorfsim is an in-process HTTP simulator of the hellorf (zcool)
// music licensing API, for sluice's tests and sandbox mode. It follows the
// vendor's documentation (summed up in docs/upstreams.md, "hellorf")
// strictly, since a lenient simulator would
// hide exactly the bugs that make the real service refuse sluice:
//
//   - Every API request must carry client_id, nonce_str and sign. nonce_str
//     is Unix seconds and must be within NonceWindow (default 10 min) of the
//     simulator's clock either way; sign is checked by the written steps
//     (parameters but sign and client_secret sorted by name in ASCII order,
//     form-encoded, "&client_secret=…" appended, lower-case hex MD5).
//     Failures answer {"result": false, "message", "code"}.
//   - audio/purchase is accepted only as POST (form body); every other
//     endpoint only as GET. Every purchase is recorded, duplicates included.
//   - Every URL handed out (preview mp3s, waveforms, purchase downloads)
//     points at the simulator's own object store, carries Expires= LinkLife
//     (default 10 min) ahead, and stops working at that instant. Object URLs
//     honour Range requests.
//   - download-warrant answers a real PDF (application/pdf), optionally
//     padded to any size and generated on the fly.
//
// Processing order for each API request: record the arrival → unknown path
// (404) → method (405) → parameters parse (400) → client_id (401) →
// nonce_str (401) → sign (401) → FailNext override → the endpoint → StallNext
// delay → answer.
//
// The vendor publishes no code list (its document shows only 1001); the
// codes used here are listed with the Code constants. HTTP statuses of
// failures are likewise the simulator's choice: the document does not say.
package hellorfsim

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Default credentials: the app id and secret of the original's worked
// signing example, so a zero Options works out of the box.
const (
	DefaultClientID     = "4fiodcz8xjl6p8nbzfex2"
	DefaultClientSecret = "9b530aa85723c06a90879bee8f5096d7"
)

// Failure codes the simulator answers. 1001 is the document's example code;
// the rest are the simulator's.
const (
	CodeInvalidParam       = 1001
	CodeInvalidClient      = 1002
	CodeNonceExpired       = 1003
	CodeBadSign            = 1004
	CodeAudioNotFound      = 1005
	CodePurchaseNotFound   = 1006
	CodePermissionNotFound = 1007
	CodeMethodNotAllowed   = 1008
	CodeInternal           = 5000
)

// API paths, as the observability methods name them.
const (
	PathCategories       = "audio/categories"
	PathSearch           = "audio/search"
	PathDetail           = "audio/detail"
	PathPurchase         = "audio/purchase"
	PathMyPurchases      = "audio/my-purchases"
	PathPurchaseDetail   = "audio/purchase-detail"
	PathDownloadWarrant  = "audio/download-warrant"
	PathPurchaseDownload = "audio/purchase-download"
)

// Options configures a Sim. Zero fields take the documented defaults.
type Options struct {
	ClientID     string
	ClientSecret string
	// NonceWindow is how far nonce_str may be from the simulator's clock,
	// either way (default 10 min; at least 1 s, as nonce_str has whole
	// seconds).
	NonceWindow time.Duration
	// LinkLife is how long every issued URL works (default 10 min).
	LinkLife time.Duration
	// Prefix is an optional path prefix for the API (e.g. "/api/v1").
	Prefix string
	// Tracks is the catalogue size (default 400).
	Tracks int
	// WarrantSize pads every licence certificate to about this many bytes
	// (generated on the fly); 0 serves the plain, ~1.5 KB PDF.
	WarrantSize int64
	// AudioSize is the size of purchased audio files (default 256 KiB).
	AudioSize int64
	// ClockSkew shifts the simulator's clock (its Date header, nonce check
	// and link expiries) from the real one, to test skew detection.
	ClockSkew time.Duration
	// Logger receives a debug line per request. Default: discard.
	Logger *slog.Logger
	// Now is the real clock (default time.Now); ClockSkew is added to it.
	Now func() time.Time
}

// Arrival is one API request as the simulator saw it.
type Arrival struct {
	At     time.Time
	Method string
	Path   string // e.g. "audio/search"
	// Params are the request's parameters (query, and the form body of a
	// POST), sign and nonce_str included. No secret is ever sent.
	Params url.Values
	// Code is the failure code answered, 0 for success.
	Code int
}

// Purchase is one recorded purchase.
type Purchase struct {
	ID             int
	AudioID        int
	PermissionID   int
	PermissionName string
	PermissionType string
	AssetType      string
	Price          string
	WarrantName    string
	ThirdUserID    string
	CreatedAt      time.Time
	// DownloadedAt is when its audio was first fetched from the object
	// store; zero if never.
	DownloadedAt time.Time
}

// ObjectArrival is one request to the object store.
type ObjectArrival struct {
	At     time.Time
	Method string
	Path   string
	// Range is the request's Range header, if any.
	Range string
}

// Failure is an answer FailNext forces.
type Failure struct {
	Status  int // HTTP status; default 500
	Code    int // default CodeInternal
	Message string
	// ContentType, if set, replaces application/json on the failure
	// object: e.g. "text/html; charset=UTF-8", PHP's default, which a PHP
	// server sends when the code does not set one. Opt-in: the simulator
	// otherwise labels its JSON as JSON.
	ContentType string
	// RetryAfter, if set, is sent as the failure's Retry-After header
	// (e.g. a 503 from a proxy in front of hellorf). Opt-in.
	RetryAfter string
}

// Sim simulates hellorf. It is an http.Handler; all methods are safe for
// concurrent use.
type Sim struct {
	opts   Options
	prefix string
	log    *slog.Logger

	tracks []*track
	byID   map[int]*track
	block  []byte

	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
	srv       *http.Server
	served    chan struct{}

	mu           sync.Mutex
	arrivals     []Arrival
	purchases    []*Purchase // made through the API
	seeded       []*Purchase // the account's history before the simulator
	nextPurchase int
	objects      []ObjectArrival
	failNext     map[string][]Failure
	bodyNext     map[string][]string
	stallNext    map[string][]time.Duration
}

// cst is hellorf's time zone (UTC+8) for the timestamps it writes; a fixed
// zone, so no tz database is needed.
var cst = time.FixedZone("CST", 8*3600)

// stamp is the timestamp layout hellorf writes and accepts.
const stamp = "2006-01-02 15:04:05"

// New returns a simulator; serve it with any http.Server (or use Start).
func New(opts Options) *Sim {
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = DefaultClientSecret
	}
	if opts.NonceWindow <= 0 {
		opts.NonceWindow = 10 * time.Minute
	}
	opts.NonceWindow = max(opts.NonceWindow, time.Second)
	if opts.LinkLife <= 0 {
		opts.LinkLife = 10 * time.Minute
	}
	if opts.Tracks <= 0 {
		opts.Tracks = 400
	}
	if opts.AudioSize <= 0 {
		opts.AudioSize = 256 << 10
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sim{opts: opts, prefix: cleanPrefix(opts.Prefix), log: log, done: make(chan struct{}), block: newBlock()}
	s.tracks, s.byID = newCatalog(opts.Tracks)
	s.resetLocked()
	return s
}

func cleanPrefix(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return ""
	}
	return "/" + p
}

// Start listens on 127.0.0.1:0 and serves a new Sim. The base URL is
// "http://127.0.0.1:PORT" plus the prefix: configure it as base_url.
func Start(opts Options) (*Sim, string, error) {
	s := New(opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("hellorfsim: listen: %w", err)
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		s.srv.Serve(ln)
	}()
	return s, "http://" + ln.Addr().String() + s.prefix, nil
}

// Close stops a started simulator and releases stalled answers.
func (s *Sim) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		if s.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.srv.Shutdown(ctx); err != nil {
				s.closeErr = s.srv.Close()
			}
			<-s.served
		}
	})
	return s.closeErr
}

func (s *Sim) now() time.Time { return s.opts.Now().Add(s.opts.ClockSkew) }

// reply is what an endpoint decided.
type reply struct {
	status int
	code   int    // failure code; 0 = success
	msg    string // failure message
	// contentType overrides the JSON answer's Content-Type (FailNext).
	contentType string
	// retryAfter, if set, is sent as Retry-After (FailNext).
	retryAfter string
	data       any // success data
	// file, if set, is written instead of JSON.
	file func(w http.ResponseWriter)
}

func fail(status, code int, msg string) *reply { return &reply{status: status, code: code, msg: msg} }

func ok(data any) *reply { return &reply{status: http.StatusOK, data: data} }

// rawJSON is BodyNext's answer: body verbatim under HTTP 200, labelled JSON.
func rawJSON(body string) *reply {
	return &reply{status: http.StatusOK, file: func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(body))
	}}
}

// ServeHTTP serves the API under the prefix and the object store.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/media/") || strings.HasPrefix(p, "/oss/"):
		s.serveObject(w, r)
	case strings.HasPrefix(p, s.prefix+"/"):
		s.serveAPI(w, r, strings.TrimPrefix(p, s.prefix+"/"))
	default:
		http.NotFound(w, r)
	}
}

type endpoint struct {
	method string
	handle func(s *Sim, host string, q url.Values, now time.Time) *reply
}

var endpoints = map[string]endpoint{
	PathCategories:       {http.MethodGet, (*Sim).categories},
	PathSearch:           {http.MethodGet, (*Sim).search},
	PathDetail:           {http.MethodGet, (*Sim).detail},
	PathPurchase:         {http.MethodPost, (*Sim).purchase},
	PathMyPurchases:      {http.MethodGet, (*Sim).myPurchases},
	PathPurchaseDetail:   {http.MethodGet, (*Sim).purchaseDetail},
	PathDownloadWarrant:  {http.MethodGet, (*Sim).downloadWarrant},
	PathPurchaseDownload: {http.MethodGet, (*Sim).purchaseDownload},
}

func (s *Sim) serveAPI(w http.ResponseWriter, r *http.Request, path string) {
	now := s.now()
	params, perr := requestParams(r)
	s.mu.Lock()
	s.arrivals = append(s.arrivals, Arrival{At: time.Now(), Method: r.Method, Path: path, Params: cloneValues(params)})
	idx := len(s.arrivals) - 1
	rep := s.check(r, path, params, perr, now)
	var stall time.Duration
	if rep == nil {
		if f := s.failNext[path]; len(f) > 0 {
			s.failNext[path] = f[1:]
			rep = fail(f[0].Status, f[0].Code, f[0].Message)
			rep.contentType, rep.retryAfter = f[0].ContentType, f[0].RetryAfter
		} else if b := s.bodyNext[path]; len(b) > 0 {
			s.bodyNext[path] = b[1:]
			rep = rawJSON(b[0])
		} else {
			rep = endpoints[path].handle(s, r.Host, params, now)
		}
	}
	if st := s.stallNext[path]; len(st) > 0 {
		s.stallNext[path] = st[1:]
		stall = st[0]
	}
	s.arrivals[idx].Code = rep.code
	s.mu.Unlock()
	s.log.Debug("hellorfsim request", "method", r.Method, "path", path, "code", rep.code)

	if stall > 0 {
		t := time.NewTimer(stall)
		select {
		case <-t.C:
		case <-r.Context().Done():
		case <-s.done:
		}
		t.Stop()
	}
	w.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))
	if rep.file != nil {
		rep.file(w)
		return
	}
	writeJSON(w, rep)
}

// check runs the common checks; nil means the request may proceed. Called
// with s.mu held.
func (s *Sim) check(r *http.Request, path string, q url.Values, perr error, now time.Time) *reply {
	ep, found := endpoints[path]
	if !found {
		return fail(http.StatusNotFound, CodeInvalidParam, "接口不存在: "+path)
	}
	if r.Method != ep.method {
		return fail(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "请求方法错误,请使用 "+ep.method)
	}
	if perr != nil {
		return fail(http.StatusBadRequest, CodeInvalidParam, "参数格式错误")
	}
	if q.Get("client_id") != s.opts.ClientID {
		return fail(http.StatusUnauthorized, CodeInvalidClient, "client_id 无效")
	}
	n, err := strconv.ParseInt(q.Get("nonce_str"), 10, 64)
	if err != nil {
		return fail(http.StatusUnauthorized, CodeNonceExpired, "nonce_str 必须是当前时间戳(秒)")
	}
	if d := now.Unix() - n; d > int64(s.opts.NonceWindow/time.Second) || -d > int64(s.opts.NonceWindow/time.Second) {
		return fail(http.StatusUnauthorized, CodeNonceExpired, "nonce_str 已过期(有效期 "+s.opts.NonceWindow.String()+")")
	}
	if q.Get("sign") != expectedSign(q, s.opts.ClientSecret) {
		return fail(http.StatusUnauthorized, CodeBadSign, "sign 签名错误")
	}
	return nil
}

// expectedSign follows the written steps one by one (deliberately not via
// url.Values.Encode, so the plugin's use of it is checked against an
// independent spelling of the rule).
func expectedSign(q url.Values, secret string) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		if k != "sign" && k != "client_secret" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys) // byte-wise: ASCII order
	var parts []string
	for _, k := range keys {
		for _, v := range q[k] {
			parts = append(parts, url.QueryEscape(k)+"="+url.QueryEscape(v))
		}
	}
	sum := md5.Sum([]byte(strings.Join(parts, "&") + "&client_secret=" + secret))
	return hex.EncodeToString(sum[:])
}

// requestParams merges the query and, for a form POST, the body.
func requestParams(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return url.Values{}, err
	}
	if r.Method == http.MethodPost {
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if mt == "application/x-www-form-urlencoded" {
			b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
			if err != nil || len(b) > 1<<20 {
				return q, errors.New("unreadable or too large body")
			}
			form, err := url.ParseQuery(string(b))
			if err != nil {
				return q, err
			}
			for k, vs := range form {
				q[k] = append(q[k], vs...)
			}
		}
	}
	return q, nil
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// writeJSON renders a reply in hellorf's envelope. Slashes and & are not
// escaped, as in the document's examples.
func writeJSON(w http.ResponseWriter, rep *reply) {
	var body any
	if rep.code != 0 {
		body = struct {
			Result  bool   `json:"result"`
			Message string `json:"message"`
			Code    int    `json:"code"`
		}{false, rep.msg, rep.code}
	} else {
		body = struct {
			Result bool `json:"result"`
			Data   any  `json:"data"`
		}{true, rep.data}
	}
	ct := "application/json; charset=utf-8"
	if rep.contentType != "" {
		ct = rep.contentType
	}
	w.Header().Set("Content-Type", ct)
	if rep.retryAfter != "" {
		w.Header().Set("Retry-After", rep.retryAfter)
	}
	w.WriteHeader(rep.status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(body) // a write error means the client went away
}
