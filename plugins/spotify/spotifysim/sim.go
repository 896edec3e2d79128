// Package spotifysim is an in-process HTTP simulator of the parts of the
// Spotify Web API sluice fronts: the Client Credentials token endpoint of
// the accounts service and the catalogue endpoints (search, artist, artist
// albums, album, album tracks, track, and several tracks, albums or
// artists by ids) of the Web API.
//
// It follows Spotify's documentation (summed up in docs/upstreams.md,
// "Spotify") and its OpenAPI description (a copy is in testdata/), strictly: tests and sandbox
// mode run against it, so a lenient simulator would hide exactly the bugs
// that break against the real service. In particular:
//
//   - Tokens: POST <accounts>/api/token with client credentials as HTTP
//     Basic auth (or client_id/client_secret in the form) and
//     grant_type=client_credentials, form-encoded. Wrong credentials answer
//     400 {"error":"invalid_client",...}. Tokens expire after TokenLifetime
//     (default 1 h, expires_in in whole seconds).
//   - Every API answer that is not a success is {"error":{"status","message"}}
//     with Spotify's messages: 401 "No token provided", "Invalid access
//     token", "The access token expired"; 400 "Only valid bearer
//     authentication supported" for another scheme; 400s for bad parameters;
//     404 for unknown ids and paths.
//   - Rate limit: a rolling window (default 50 per 30 s) over all API
//     arrivals. An arrival that makes more than Requests within the window
//     answers 429 with Retry-After (whole seconds). Every arrival while a
//     Retry-After is still running is counted (DuringRetryAfter) and answered
//     429 too: that count is what tests assert is zero. A 5xx fault may carry
//     a Retry-After as well ("503: temporary, retry later"); arrivals before
//     it ends are counted the same way and answered that 5xx again.
//   - Test faults, off unless a test injects them: ForceBody answers a
//     body that is not the Web API's (a captive portal's HTML page or a
//     JSON body cut short under 200), as something between Spotify and the
//     caller may.
//   - Paging objects carry absolute href/next/previous links built from the
//     Host the request arrived on (plus the path prefix), like Spotify's;
//     with CanonicalLinks they are https://api.spotify.com/v1/... instead.
//
// Processing order for each API request: count the arrival → running
// Retry-After (429, counted) → Bearer token (401/400) → injected faults →
// rolling window (429) → route (404/405) → parameters (400) → catalogue.
package spotifysim

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

// CanonicalBase is the Web API's own base URL, the servers entry of the
// OpenAPI description; links carry it with Options.CanonicalLinks.
const CanonicalBase = "https://api.spotify.com/v1"

// Default credentials of the simulated app, accepted by a zero Options.
const (
	DefaultClientID     = "5f573c9620494bae87890c0f08a60293"
	DefaultClientSecret = "212476d9b0f3472eaa762d90b19b0ba8"
)

// Limit is the rolling window: more than Requests arrivals within Window
// are answered 429.
type Limit struct {
	Requests int
	Window   time.Duration
}

// Options configures a Sim. Zero fields take the defaults.
type Options struct {
	ClientID, ClientSecret string
	// TokenLifetime is how long an issued token is valid (default 1 h).
	TokenLifetime time.Duration
	// Limit is the rolling window (default 50 per 30 s).
	Limit Limit
	// SearchMaxLimit is the largest search limit accepted: 10 in
	// Development Mode (default), up to 50 for Extended Quota apps.
	SearchMaxLimit int
	// APIPrefix and AccountsPrefix are optional path prefixes under which
	// the Web API (<prefix>/v1/...) and the token endpoint
	// (<prefix>/api/token) are served.
	APIPrefix, AccountsPrefix string
	// LowerCaseRetryAfter sends the header as "retry-after", as Spotify's
	// HTTP/2 front ends do.
	LowerCaseRetryAfter bool
	// CanonicalLinks writes href/next/previous under CanonicalBase
	// (https://api.spotify.com/v1, the OpenAPI's server URL) whatever host
	// and prefix the request came on, as a fake that copies Spotify's
	// answers does.
	CanonicalLinks bool
	// Logger receives a debug line per request. Default: discard.
	Logger *slog.Logger
}

// Fault is an answer forced on the next API request that passes the token
// check (test hook).
type Fault struct {
	// Status is the HTTP status (429, 500, 502, 503, 504, ...).
	Status int
	// RetryAfter is sent as Retry-After in whole seconds. For a 429,
	// negative leaves the header out. For any other status only a positive
	// value sends it (opt-in: a bare 5xx stays bare), and it starts a
	// Retry-After like a 429's: arrivals before it ends are counted in
	// DuringRetryAfter and answered the same status.
	RetryAfter int
	// Reason, if set, goes into the error object ("QUOTA_EXCEEDED").
	Reason string
	// Body, if set, is sent verbatim instead of the error object, labelled
	// ContentType (default application/json; charset=utf-8), and Status
	// may then be 200. A test fault, off unless a test injects it: Spotify
	// itself answers its documented JSON, but something between it and
	// the caller may answer 200 with anything (a captive portal's HTML
	// page, a body cut short). See ForceBody, TruncatedJSON and
	// CaptivePortalHTML.
	Body, ContentType string
}

// Arrival is one API request as the simulator saw it.
type Arrival struct {
	At     time.Time
	Path   string // without the prefix, e.g. /v1/search
	Query  url.Values
	Status int
}

// Counts are the simulator's observations.
type Counts struct {
	// TokenRequests counts every arrival at the token endpoint.
	TokenRequests int
	// APIRequests counts every arrival at the Web API.
	APIRequests int
	// DuringRetryAfter counts API arrivals while a Retry-After announced
	// by this simulator was still running.
	DuringRetryAfter int
	// TokensDuringRetryAfter counts token requests that arrived while
	// such a Retry-After was still running: a client that waits out
	// Retry-After asks for its next token after it too.
	TokensDuringRetryAfter int
	// Unauthorized counts 401 answers; Throttled 429 answers.
	Unauthorized, Throttled int
	// MaxInFlight is the most API requests the simulator had on hand at
	// once: arrived, their answer's head not written yet. A client that
	// sends one request at a time keeps it at 1.
	MaxInFlight int
}

// Sim simulates the accounts service and the Web API. APIHandler and
// AccountsHandler serve them; all methods are safe for concurrent use.
type Sim struct {
	opts     Options
	apiPfx   string
	accPfx   string
	log      *slog.Logger
	cat      *catalogue
	done     chan struct{}
	stopOnce sync.Once
	closeErr error
	servers  []*http.Server
	served   sync.WaitGroup

	mu             sync.Mutex
	lifetime       time.Duration
	limit          Limit
	tokens         map[string]time.Time // token -> expiry
	arrivals       []time.Time          // API arrivals inside the window, oldest first
	retryUntil     time.Time
	retryStatus    int // what arrivals during retryUntil are answered
	faults         []Fault
	accountsFaults []int // statuses for the next token requests (InjectAccountsFaults)
	delay          time.Duration
	tokenDelay     time.Duration
	counts         Counts
	requestLog     []Arrival
	tokenSerial    int
	inFlight       int // API requests arrived, head not written yet
}

// New returns a simulator; serve APIHandler and AccountsHandler yourself, or
// use Start.
func New(opts Options) *Sim {
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = DefaultClientSecret
	}
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = time.Hour
	}
	if opts.Limit.Requests <= 0 {
		opts.Limit.Requests = 50
	}
	if opts.Limit.Window <= 0 {
		opts.Limit.Window = 30 * time.Second
	}
	if opts.SearchMaxLimit <= 0 {
		opts.SearchMaxLimit = 10
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sim{opts: opts, apiPfx: cleanPrefix(opts.APIPrefix), accPfx: cleanPrefix(opts.AccountsPrefix), log: log,
		cat: newCatalogue(), done: make(chan struct{}), lifetime: opts.TokenLifetime, limit: opts.Limit,
		tokens: map[string]time.Time{}}
}

// cleanPrefix turns "api/", "/api" and "/api/" into "/api", and "" or "/"
// into "".
func cleanPrefix(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return ""
	}
	return "/" + p
}

// Start serves a new Sim on two loopback listeners, one per service, as
// Spotify has two hosts. apiURL is the Web API base without /v1
// (api_url), accountsURL the accounts base (accounts_url); both include
// their prefix.
func Start(opts Options) (sim *Sim, apiURL, accountsURL string, err error) {
	s := New(opts)
	apiURL, err = s.listen(http.HandlerFunc(s.serveAPI), s.apiPfx)
	if err != nil {
		return nil, "", "", err
	}
	accountsURL, err = s.listen(http.HandlerFunc(s.serveAccounts), s.accPfx)
	if err != nil {
		s.Close()
		return nil, "", "", err
	}
	return s, apiURL, accountsURL, nil
}

func (s *Sim) listen(h http.Handler, prefix string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("spotifysim: listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.servers = append(s.servers, srv)
	s.served.Add(1)
	go func() {
		defer s.served.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("spotifysim: serve", "err", err)
		}
	}()
	return "http://" + ln.Addr().String() + prefix, nil
}

// Close releases delayed answers and stops servers made by Start. It is
// safe to call more than once.
func (s *Sim) Close() error {
	s.stopOnce.Do(func() {
		close(s.done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var errs []error
		for _, srv := range s.servers {
			if err := srv.Shutdown(ctx); err != nil {
				errs = append(errs, err, srv.Close())
			}
		}
		s.served.Wait()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// APIHandler serves the Web API (<prefix>/v1/...).
func (s *Sim) APIHandler() http.Handler { return http.HandlerFunc(s.serveAPI) }

// AccountsHandler serves the token endpoint (<prefix>/api/token).
func (s *Sim) AccountsHandler() http.Handler { return http.HandlerFunc(s.serveAccounts) }

// --- test hooks ---

// InjectFaults queues answers for the next API requests that pass the
// token check, one fault per request, in order.
func (s *Sim) InjectFaults(f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f...)
}

// InjectAccountsFaults makes the next token requests with valid
// credentials answer the given HTTP statuses (5xx: the accounts service's
// "temporary: retry later"), one per request, in order.
func (s *Sim) InjectAccountsFaults(status ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accountsFaults = append(s.accountsFaults, status...)
}

// Force429 makes the next n API requests answer 429 with Retry-After
// seconds (negative: no header).
func (s *Sim) Force429(retryAfter, n int) {
	for range n {
		s.InjectFaults(Fault{Status: http.StatusTooManyRequests, RetryAfter: retryAfter})
	}
}

// Force5xx makes the next n API requests answer status.
func (s *Sim) Force5xx(status, n int) {
	for range n {
		s.InjectFaults(Fault{Status: status})
	}
}

// ForceQuotaExceeded makes the next API request answer 429 with reason
// QUOTA_EXCEEDED and the given Retry-After.
func (s *Sim) ForceQuotaExceeded(retryAfter int) {
	s.InjectFaults(Fault{Status: http.StatusTooManyRequests, RetryAfter: retryAfter, Reason: "QUOTA_EXCEEDED"})
}

// ForceBody makes the next API request answer status with body, labelled
// contentType ("" for application/json; charset=utf-8), whatever it asked
// for: a test fault (see Fault.Body).
func (s *Sim) ForceBody(status int, contentType, body string) {
	s.InjectFaults(Fault{Status: status, Body: body, ContentType: contentType})
}

// Bodies for ForceBody that are not the Web API's answer.
const (
	// TruncatedJSON is the start of a search answer, cut short.
	TruncatedJSON = `{"tracks":{"href":"https://api.spotify.com/v1/search?query=a&type=track&offset=0&limit=1","items":[{"album":{"album_type":"alb`
	// CaptivePortalHTML is a hotel network's login page.
	CaptivePortalHTML = "<!DOCTYPE html>\n<html><head><title>Sign in to Wi-Fi</title></head><body><form action=\"/login\" method=\"post\"><input name=\"room\"><button>Connect</button></form></body></html>\n"
)

// SetTokenLifetime changes the lifetime of tokens issued from now on.
func (s *Sim) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime = d
}

// ExpireTokens makes every token issued so far expired, as if an hour had
// passed.
func (s *Sim) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	past := time.Now().Add(-time.Second)
	for t := range s.tokens {
		s.tokens[t] = past
	}
}

// SetLimit changes the rolling window.
func (s *Sim) SetLimit(l Limit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limit = l
}

// SetDelay delays every API answer (after it is decided), so concurrent
// requests overlap.
func (s *Sim) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetTokenDelay delays every token answer, so callers that need a token
// at the same time surely overlap.
func (s *Sim) SetTokenDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenDelay = d
}

// Counts returns the observations so far.
func (s *Sim) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

// RequestLog returns every API arrival so far, oldest first.
func (s *Sim) RequestLog() []Arrival {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Arrival(nil), s.requestLog...)
}

// RetryAfterRunning reports whether a Retry-After announced by the
// simulator is still running.
func (s *Sim) RetryAfterRunning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Before(s.retryUntil)
}

func (s *Sim) wait(ctx context.Context, token bool) {
	s.mu.Lock()
	d := s.delay
	if token {
		d = s.tokenDelay
	}
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
