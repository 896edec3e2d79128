// Package api is sluice's local socket API: one table of routes served over
// HTTP/1.1 on a Unix socket, JSON answers, RFC 9457 problems for every error.
// Its client subpackage is the typed Go client that sluicectl and the tests
// use; nothing else talks to the daemon.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/core/access"
	"github.com/sluice-dev/sluice/core/problem"
)

// Backend is what the daemon provides to the API.
type Backend interface {
	Health() Health
	Status() Status
	// Reload reloads config now; a *problem.Problem error (422) is rendered
	// as is.
	Reload(ctx context.Context) (ReloadResult, error)
	CacheStats() CacheStats
	// PurgeCache purges one provider's answers, or all for "".
	PurgeCache(provider string) (PurgeResult, error)
	ServeProvider(w http.ResponseWriter, r *http.Request, provider, rest string)
	// Metrics serves the Prometheus registry.
	Metrics() http.Handler
	// Level maps a peer to its permission tier under the current config.
	Level(access.Peer) access.Level
	// Hit returns the fresh cached answer a plain GET of
	// /v1/{provider}/{rest}?{query} with that Host would be served, when
	// the full path would serve exactly that; false otherwise (nothing is
	// recorded then: the request goes the full way).
	Hit(provider, rest, query, host string) (Hit, bool)
	// Request says where the call with that request id stands while it
	// is in flight; false once it is answered (or never was).
	Request(id string) (RequestStatus, bool)
}

// Observer receives one record per provider call (metrics).
type Observer interface {
	ObserveRequest(provider, operation, outcome string, took, upstream time.Duration)
	Denied(needed string)
	// FastLane counts a hit answered by the fast lane (see Front).
	FastLane()
}

// Server is the socket API's http.Handler.
type Server struct {
	b      Backend
	log    *slog.Logger
	obs    Observer
	routes []route
	// accessWriter, if set, writes access lines instead of log.
	accessWriter AccessWriter
	// accessMode is which requests get an access line (accessAll...).
	accessMode atomic.Int32
	// tcp is the TCP listener's policy (see tcp.go).
	tcp atomic.Pointer[TCPPolicy]
}

// Access-log modes; see SetAccessLog.
const (
	accessAll int32 = iota
	accessMisses
	accessOff
)

// SetAccessLog chooses which requests get an access-log line: "all",
// "misses" (all but cache hits, whose counts stay in the metrics) or
// "off". It may change while serving (a reload).
func (s *Server) SetAccessLog(mode string) {
	m := accessAll
	switch mode {
	case "misses":
		m = accessMisses
	case "off":
		m = accessOff
	}
	s.accessMode.Store(m)
}

type route struct {
	method string
	// path is exact, or ends in "/{provider}" for one trailing segment.
	path string
	// level is the permission the route needs.
	level   access.Level
	handler func(w http.ResponseWriter, r *http.Request, arg string)
}

// NewServer builds the route table. obs may be nil.
func NewServer(b Backend, log *slog.Logger, obs Observer) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{b: b, log: log, obs: obs}
	s.routes = []route{
		{http.MethodGet, "/v1/health", access.Read, s.health},
		{http.MethodGet, "/v1/status", access.Read, s.status},
		{http.MethodPost, "/v1/reload", access.Admin, s.reload},
		{http.MethodGet, "/v1/cache", access.Read, s.cacheStats},
		{http.MethodDelete, "/v1/cache", access.Admin, s.purge},
		{http.MethodDelete, "/v1/cache/{provider}", access.Admin, s.purge},
		{http.MethodGet, "/v1/requests/{id}", access.Read, s.request},
		{http.MethodGet, "/metrics", access.Read, s.metrics},
	}
	return s
}

// ConnContext identifies each connection's peer with SO_PEERCRED; use it as
// http.Server.ConnContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if hc, ok := c.(*handedConn); ok {
		if hc.peerErr == nil {
			return context.WithValue(ctx, peerKey{}, hc.peer)
		}
		return ctx
	}
	if p, err := access.PeerOf(c); err == nil {
		return context.WithValue(ctx, peerKey{}, p)
	}
	return ctx
}

type peerKey struct{}

// reserved first path segments under /v1/ that are not providers.
var reserved = map[string]bool{"health": true, "status": true, "reload": true, "cache": true, "requests": true}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ctx, info := withInfo(r.Context())
	peer, ok := r.Context().Value(peerKey{}).(access.Peer)
	if _, tcp := localTCP(r); tcp {
		ctx = s.tcpGrant(ctx, r, peer, ok)
	} else if ok {
		ctx = access.WithGrant(ctx, access.Grant{Peer: peer, Level: s.b.Level(peer), Known: true})
	}
	r = r.WithContext(ctx)
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	s.route(rec, r)
	s.accessLog(r, rec, info, time.Since(start))
}

// Require answers 403 and returns false unless the request's peer has at
// least level; the gateway uses it for destructive operations.
func (s *Server) require(w http.ResponseWriter, r *http.Request, level access.Level, what string) bool {
	g := access.FromContext(r.Context())
	if g.Level >= level {
		return true
	}
	s.log.Warn("permission denied", "peer_uid", g.Peer.UID, "peer_pid", g.Peer.PID, "needed", level.String(), "what", what)
	if s.obs != nil {
		s.obs.Denied(level.String())
	}
	who := fmt.Sprintf("uid %d", g.Peer.UID)
	if !g.Known {
		who = "a caller whose uid is unknown"
	}
	p := problem.Forbidden(fmt.Sprintf("%s needs the %s permission; %s has %s (see [access] in the config)", what, level, who, g.Level))
	p.Title = "Permission denied"
	problem.Write(w, p)
	return false
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	if s.misdirected(w, r) {
		return
	}
	if fromBrowser(r.Header) {
		problem.Write(w, problem.Forbidden("requests from a browser (an Origin header, a Referer, or Sec-Fetch-Site other than none) are refused: the socket is for local programs"))
		return
	}
	path := r.URL.Path
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok && path != "/metrics" {
		problem.Write(w, problem.New(http.StatusNotFound, fmt.Sprintf("no route %s; the API lives under /v1/", path)))
		return
	}
	first, tail, _ := strings.Cut(rest, "/")
	if ok && !reserved[first] {
		if first == "" || tail == "" {
			problem.Write(w, problem.New(http.StatusNotFound, fmt.Sprintf("no route %s; provider calls are /v1/{provider}/{upstream path}", path)))
			return
		}
		if !s.require(w, r, access.Read, "calling providers") {
			return
		}
		s.b.ServeProvider(w, r, first, tail)
		return
	}
	var allow []string
	for _, rt := range s.routes {
		arg, ok := matchRoute(rt.path, path)
		if !ok {
			continue
		}
		if rt.method == r.Method || (rt.method == http.MethodGet && r.Method == http.MethodHead) {
			if s.require(w, r, rt.level, rt.method+" "+rt.path) {
				rt.handler(w, r, arg)
			}
			return
		}
		allow = append(allow, rt.method)
		if rt.method == http.MethodGet {
			allow = append(allow, http.MethodHead) // served as GET without the body
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		problem.Write(w, problem.New(http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.Method, path, strings.Join(allow, ", "))))
		return
	}
	problem.Write(w, problem.New(http.StatusNotFound, "no route "+path))
}

// fromBrowser reports a request a browser sent on a web page's behalf. The
// socket is for local programs; a page reaching it through some local
// forwarder must not spend budget or trigger side effects (a Telegram
// code, a purchase). Browsers mark such requests in ways a page cannot
// remove:
//   - Origin, on every cross-origin and every non-GET request. Its
//     presence is what counts: an empty or "null" value is still a page.
//   - Sec-Fetch-Site, on every request of current browsers, no-cors ones
//     too (an <img> or a plain <form>, which carry no Origin on GET). Only
//     "none", a request the user started (typing the address, a
//     bookmark), is no page's doing.
//   - Referer, when a page's policy lets it be sent (empty is ignored: it
//     names no page).
//
// The fast lane hands every request carrying Origin, Referer or
// Sec-Fetch-Site over to this path, so both refuse alike.
func fromBrowser(h http.Header) bool {
	if _, ok := h["Origin"]; ok {
		return true
	}
	for _, v := range h["Sec-Fetch-Site"] {
		if v != "none" {
			return true
		}
	}
	// Every Referer, not the first: an empty one first must not hide a
	// second that names a page.
	for _, v := range h["Referer"] {
		if v != "" {
			return true
		}
	}
	return false
}

// matchRoute matches path against pattern, whose last segment may be one
// argument ({provider}, {id}): a single non-empty path segment.
func matchRoute(pattern, path string) (string, bool) {
	if i := strings.LastIndexByte(pattern, '{'); i >= 0 && strings.HasSuffix(pattern, "}") {
		arg, ok := strings.CutPrefix(path, pattern[:i])
		return arg, ok && arg != "" && !strings.Contains(arg, "/")
	}
	return "", pattern == path
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request, _ string) {
	h := s.b.Health()
	code := http.StatusOK
	if h.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request, _ string) {
	writeJSON(w, http.StatusOK, s.b.Status())
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request, _ string) {
	res, err := s.b.Reload(r.Context())
	if err != nil {
		problem.Write(w, problem.From(err))
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) request(w http.ResponseWriter, _ *http.Request, id string) {
	st, ok := s.b.Request(id)
	if !ok {
		p := problem.New(http.StatusNotFound, "no call in flight with request id "+id+" (answered already, or never made)")
		problem.Write(w, p)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) cacheStats(w http.ResponseWriter, _ *http.Request, _ string) {
	writeJSON(w, http.StatusOK, s.b.CacheStats())
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request, _ string) {
	s.b.Metrics().ServeHTTP(w, r)
}

func (s *Server) purge(w http.ResponseWriter, _ *http.Request, provider string) {
	res, err := s.b.PurgeCache(provider)
	if err != nil {
		problem.Write(w, problem.From(err))
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// recorder captures the status for the access log.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// Flush keeps streaming answers streaming through the recorder.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// accessLog writes one line per request. It names the provider and
// operation, never the query: callers sometimes put credentials there.
func (s *Server) accessLog(r *http.Request, rec *recorder, in *Info, took time.Duration) {
	s.logRequest(r.Context(), access.FromContext(r.Context()), r.Method, r.URL.Path, rec.status, in, took)
}

// logRequest is the access-log line and the metrics of one request, for
// both the full path and the fast lane.
func (s *Server) logRequest(ctx context.Context, g access.Grant, method, path string, status int, in *Info, took time.Duration) {
	if in.Provider != "" && in.Outcome == "" {
		switch {
		case status >= 500:
			in.Outcome = "failed"
		case status >= 400 && in.Upstream == "":
			in.Outcome = "rejected"
		}
	}
	if in.Provider != "" && s.obs != nil {
		s.obs.ObserveRequest(in.Provider, in.Operation, in.Outcome, took, in.Upstreamed)
	}
	switch s.accessMode.Load() {
	case accessOff:
		return
	case accessMisses:
		if in.Outcome == "hit" {
			return
		}
	}
	if !s.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	rec := &AccessRecord{PeerUID: g.Peer.UID, PeerPID: g.Peer.PID, Method: method, Status: status, Took: took, Path: path, Info: in}
	if aw := s.accessWriter; aw != nil {
		aw.WriteAccess(rec)
		return
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "request", rec.Attrs()...)
}

// AccessRecord is one access-log line: provider calls carry Info (with a
// Provider), other routes the path.
type AccessRecord struct {
	PeerUID uint32
	PeerPID int32
	Method  string
	Status  int
	Took    time.Duration
	Path    string
	Info    *Info
}

// Attrs are the record's fields as the logger writes them, in order; an
// AccessWriter must write the same.
func (r *AccessRecord) Attrs() []slog.Attr {
	attrs := []slog.Attr{slog.Int("peer_uid", int(r.PeerUID)), slog.Int("peer_pid", int(r.PeerPID)),
		slog.String("method", r.Method), slog.Int("status", r.Status), slog.Duration("took", r.Took)}
	if in := r.Info; in != nil && in.Provider != "" {
		return append(attrs, slog.String("provider", in.Provider), slog.String("operation", in.Operation),
			slog.String("outcome", in.Outcome), slog.String("cache", in.Cache), slog.Duration("wait", in.Wait),
			slog.String("upstream", in.Upstream), slog.Duration("upstream_took", in.Upstreamed))
	}
	return append(attrs, slog.String("path", r.Path))
}

// AccessWriter writes access-log lines without going through slog, whose
// per-record work was a quarter of the daemon's CPU on cache hits. The
// lines must read like the logger's own (AccessRecord.Attrs); the
// logger's level still decides whether they are written.
type AccessWriter interface {
	WriteAccess(*AccessRecord)
}

// SetAccessWriter routes access lines to w instead of the logger; call it
// before serving.
func (s *Server) SetAccessWriter(w AccessWriter) { s.accessWriter = w }

// NewRequestID is the Sluice-Request-Id of one provider call.
func NewRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
