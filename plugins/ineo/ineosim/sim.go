// Package ineosim is an in-process HTTP simulator of the two iNeo web
// services sluice fronts: spotify.php (track download links) and
// tmanage-v2.php (Telegram developer-account management).
//
// It follows the vendor's documentation (summed up in docs/upstreams.md,
// "iNeo") strictly, bans included:
// tests and sandbox mode run against it, so a lenient simulator would hide
// exactly the bugs that get a real token blocked. In particular:
//
//   - Every JSON answer is HTTP 200 with the envelope
//     {"ok", "status", "status_code", "result"}; the outcome is status_code.
//     (The vendor says "usually" 200: a test can opt in to other HTTP
//     statuses with InjectHTTPFault.)
//   - spotify.php accepts GET and POST (form body, query also honoured);
//     tmanage-v2.php accepts GET only. Any other method answers 405
//     method_error. Unknown paths answer HTTP 404.
//   - Spam control counts every arrival per service and client IP in a
//     sliding window (default 6 per 7 s for spotify, 10 per 11 s for
//     tmanage). An arrival is a violation when the closed interval
//     [t-Window, t] holds more than Requests arrivals, itself included. A
//     violation bans the IP and blocks the presented token for that service
//     for BanDuration (default 24 h); each further violation restarts the
//     ban. While banned every request answers 10 ip_blocked, and still counts
//     as an arrival (and as a violation when it breaks the window again).
//
// Processing order for each API request: count the arrival (rate limit,
// request log) → ban check (10) → method (405) → body parse (400) → required
// base parameters (4001) → token (401) → FailNext override → the service.
package ineosim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Service names accepted by the observability methods.
const (
	ServiceSpotify = "spotify"
	ServiceTmanage = "tmanage"
)

// Default tokens are the sample tokens printed in the vendor's documents, so
// a zero Options works out of the box.
const (
	DefaultAccessKey   = "750394:b5d1ada54acf4185c1a114a526d0bf18"
	DefaultTmanageAuth = "926644:ad27e02513bee0ff57137a0618c6839e"
	DefaultLoginCode   = "12345"
)

// Limit is a spam-control window: more than Requests arrivals within Window
// is a violation.
type Limit struct {
	Requests int
	Window   time.Duration
}

// Options configures a Sim. Zero fields take the documented defaults.
type Options struct {
	// AccessKey is the token spotify.php accepts as accessKey.
	AccessKey string
	// TmanageAuth is the token tmanage-v2.php accepts as auth.
	TmanageAuth string
	// SpotifyLimit defaults to {6, 7s}; TmanageLimit to {10, 11s}. Each
	// zero field is defaulted on its own.
	SpotifyLimit Limit
	TmanageLimit Limit
	// BanDuration is how long a violation bans the IP and token (24h).
	BanDuration time.Duration
	// LoginCode is the code "Telegram sends" on sendcode; login must
	// present it as password. Default "12345".
	LoginCode string
	// Prefix is an optional path prefix (e.g. "/api") under which
	// spotify.php, tmanage-v2.php and the /dl/ download links are served.
	Prefix string
	// Logger receives debug lines per request and warnings per violation.
	// Default: discard.
	Logger *slog.Logger
	// Now is the clock; tests set it to drive windows and bans without
	// sleeping. Default time.Now.
	Now func() time.Time
}

// Arrival is one request as the simulator saw it.
type Arrival struct {
	At time.Time
	// Query holds all request parameters (URL query, plus the form body of
	// a POST) with the secrets removed: accessKey, auth and password,
	// matched case-insensitively so a misspelt secret does not leak either.
	Query  url.Values
	Method string
}

// Sim simulates both iNeo services. It is an http.Handler; all methods are
// safe for concurrent use.
type Sim struct {
	opts   Options
	prefix string
	log    *slog.Logger
	now    func() time.Time

	// done is closed by Close so delayed answers stop waiting.
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
	srv       *http.Server  // set by Start only
	served    chan struct{} // closed when srv.Serve returns

	mu        sync.Mutex
	services  map[string]*service
	accounts  map[string]*account // tmanage state, by phone
	deletions []string
	notFound  map[string]bool
	dlTokens  map[string]string // download token -> track id
	delay     time.Duration
}

// service is the per-service spam-control and observability state.
type service struct {
	name       string
	tokenParam string
	limit      Limit
	arrivals   map[string][]time.Time // by client IP, oldest first
	ipBans     map[string]time.Time   // IP -> ban end (exclusive)
	tokenBans  map[string]time.Time   // token -> block end (exclusive)
	requests   int
	violations int
	log        []Arrival
	failNext   []int
	faults     []fault
}

// reply is what a handler decided; ServeHTTP renders it.
type reply struct {
	code   int
	status string // empty: statusName(code)
	result any
}

// New returns a simulator configured by opts. Serve it with any
// http.Server (or use Start).
func New(opts Options) *Sim {
	if opts.AccessKey == "" {
		opts.AccessKey = DefaultAccessKey
	}
	if opts.TmanageAuth == "" {
		opts.TmanageAuth = DefaultTmanageAuth
	}
	opts.SpotifyLimit = defaultLimit(opts.SpotifyLimit, Limit{6, 7 * time.Second})
	opts.TmanageLimit = defaultLimit(opts.TmanageLimit, Limit{10, 11 * time.Second})
	if opts.BanDuration <= 0 {
		opts.BanDuration = 24 * time.Hour
	}
	if opts.LoginCode == "" {
		opts.LoginCode = DefaultLoginCode
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sim{
		opts:   opts,
		prefix: cleanPrefix(opts.Prefix),
		log:    log,
		now:    opts.Now,
		done:   make(chan struct{}),
	}
	s.resetLocked()
	return s
}

func defaultLimit(l, def Limit) Limit {
	if l.Requests <= 0 {
		l.Requests = def.Requests
	}
	if l.Window <= 0 {
		l.Window = def.Window
	}
	return l
}

// cleanPrefix turns "api/", "/api" and "/api/" into "/api", and "" or "/"
// into "", so paths can be built by concatenation.
func cleanPrefix(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return ""
	}
	return "/" + p
}

// Start listens on 127.0.0.1:0 and serves a new Sim. The returned base URL
// is "http://127.0.0.1:PORT" followed by the prefix; append "/spotify.php"
// or "/tmanage-v2.php". Close the Sim to stop the server.
func Start(opts Options) (*Sim, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("ineosim: listen: %w", err)
	}
	s := New(opts)
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("ineosim: serve", "err", err)
		}
	}()
	return s, "http://" + ln.Addr().String() + s.prefix, nil
}

// Close releases delayed answers and, for a Sim made by Start, shuts the
// server down and waits for it. It is safe to call more than once.
func (s *Sim) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		if s.srv == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.closeErr = errors.Join(err, s.srv.Close())
		}
		<-s.served
	})
	return s.closeErr
}

// ServeHTTP routes <prefix>/spotify.php, <prefix>/tmanage-v2.php and
// <prefix>/dl/…; everything else is HTTP 404.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == s.prefix+"/spotify.php":
		s.serveAPI(w, r, ServiceSpotify)
	case p == s.prefix+"/tmanage-v2.php":
		s.serveAPI(w, r, ServiceTmanage)
	case strings.HasPrefix(p, s.prefix+"/dl/"):
		s.serveDownload(w, r, strings.TrimPrefix(p, s.prefix+"/dl/"))
	default:
		s.wait(r.Context())
		http.NotFound(w, r)
	}
}

// serveAPI runs one request to an iNeo service through the documented
// processing order (see the package comment) and writes the envelope.
func (s *Sim) serveAPI(w http.ResponseWriter, r *http.Request, name string) {
	now := s.now()
	params, parseErr := readParams(w, r, name)

	s.mu.Lock()
	svc := s.services[name]
	token := params.Get(svc.tokenParam)
	blocked := s.arriveLocked(svc, clientIP(r), token, now, r.Method, params)
	rep := s.decideLocked(svc, r, params, parseErr, blocked)
	fault, faulty := s.popFaultLocked(svc)
	s.mu.Unlock()

	s.log.Debug("ineosim: request", "service", name, "method", r.Method, "status_code", rep.code)
	s.wait(r.Context())
	if faulty && writeFault(w, fault) {
		return
	}
	writeEnvelope(w, rep)
}

func (s *Sim) decideLocked(svc *service, r *http.Request, p url.Values, parseErr error, blocked bool) reply {
	switch {
	case blocked:
		return reply{code: codeIPBlocked}
	case !methodAllowed(svc.name, r.Method):
		return reply{code: codeMethodError}
	case parseErr != nil:
		return reply{code: codeBadRequest}
	}
	if svc.name == ServiceSpotify {
		if p.Get("accessKey") == "" || p.Get("trackId") == "" {
			return reply{code: codeParameterError}
		}
		if p.Get("accessKey") != s.opts.AccessKey {
			return reply{code: codeAuthError}
		}
		if rep, ok := popFail(svc); ok {
			return rep
		}
		return s.spotifyLocked(r, p.Get("trackId"))
	}
	if p.Get("auth") == "" || p.Get("action") == "" {
		return reply{code: codeParameterError}
	}
	if p.Get("auth") != s.opts.TmanageAuth {
		return reply{code: codeAuthError}
	}
	if rep, ok := popFail(svc); ok {
		return rep
	}
	return s.tmanageLocked(p)
}

// methodAllowed follows the originals: spotify.php says "GET or POST",
// tmanage-v2.php says requests "must be sent with GET".
func methodAllowed(service, method string) bool {
	if method == http.MethodGet {
		return true
	}
	return service == ServiceSpotify && method == http.MethodPost
}

func popFail(svc *service) (reply, bool) {
	if len(svc.failNext) == 0 {
		return reply{}, false
	}
	code := svc.failNext[0]
	svc.failNext = svc.failNext[1:]
	return reply{code: code}, true
}

// maxBody bounds a POST body; iNeo parameters are a few short strings.
const maxBody = 1 << 20

// readParams returns the request parameters: the URL query, plus for a POST
// to spotify.php the form body (url-encoded or multipart, as PHP's $_POST
// takes both). Other methods' bodies are ignored because the request is
// refused with 405 anyway.
func readParams(w http.ResponseWriter, r *http.Request, service string) (url.Values, error) {
	if service != ServiceSpotify || r.Method != http.MethodPost {
		return r.URL.Query(), nil
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var err error
	if strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "multipart/form-data") {
		err = r.ParseMultipartForm(maxBody)
	} else {
		err = r.ParseForm()
	}
	if err != nil {
		return r.URL.Query(), err
	}
	return r.Form, nil
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// wait applies the SetDelay fault. It gives up early when the client goes
// away or the Sim is closed, so a long delay never wedges Close.
func (s *Sim) wait(ctx context.Context) {
	s.mu.Lock()
	d := s.delay
	s.mu.Unlock()
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-s.done:
	}
}
