// Package api is sluice's local socket API: one table of routes served over
// HTTP/1.1 on a Unix socket, JSON answers, RFC 9457 problems for every error.
// Its client subpackage is the typed Go client that sluicectl and the tests
// use; nothing else talks to the daemon.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

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
}

// Server is the socket API's http.Handler.
type Server struct {
	b      Backend
	log    *slog.Logger
	routes []route
}

type route struct {
	method string
	// path is exact, or ends in "/{provider}" for one trailing segment.
	path    string
	handler func(w http.ResponseWriter, r *http.Request, arg string)
}

// NewServer builds the route table.
func NewServer(b Backend, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{b: b, log: log}
	s.routes = []route{
		{http.MethodGet, "/v1/health", s.health},
		{http.MethodGet, "/v1/status", s.status},
		{http.MethodPost, "/v1/reload", s.reload},
		{http.MethodGet, "/v1/cache", s.cacheStats},
		{http.MethodDelete, "/v1/cache", s.purge},
		{http.MethodDelete, "/v1/cache/{provider}", s.purge},
	}
	return s
}

// reserved first path segments under /v1/ that are not providers.
var reserved = map[string]bool{"health": true, "status": true, "reload": true, "cache": true}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The socket is for local programs; a browser reaching it through some
	// local forwarder would arrive with Origin or Referer.
	if r.Header.Get("Origin") != "" || r.Header.Get("Referer") != "" {
		problem.Write(w, problem.Forbidden("requests carrying Origin or Referer are refused: the socket is not for browsers"))
		return
	}
	path := r.URL.Path
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		problem.Write(w, problem.New(http.StatusNotFound, fmt.Sprintf("no route %s; the API lives under /v1/", path)))
		return
	}
	first, tail, _ := strings.Cut(rest, "/")
	if !reserved[first] {
		if first == "" || tail == "" {
			problem.Write(w, problem.New(http.StatusNotFound, fmt.Sprintf("no route %s; provider calls are /v1/{provider}/{upstream path}", path)))
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
			rt.handler(w, r, arg)
			return
		}
		allow = append(allow, rt.method)
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		problem.Write(w, problem.New(http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.Method, path, strings.Join(allow, ", "))))
		return
	}
	problem.Write(w, problem.New(http.StatusNotFound, "no route "+path))
}

func matchRoute(pattern, path string) (string, bool) {
	if prefix, ok := strings.CutSuffix(pattern, "{provider}"); ok {
		arg, ok := strings.CutPrefix(path, prefix)
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

func (s *Server) cacheStats(w http.ResponseWriter, _ *http.Request, _ string) {
	writeJSON(w, http.StatusOK, s.b.CacheStats())
}

func (s *Server) purge(w http.ResponseWriter, _ *http.Request, provider string) {
	res, err := s.b.PurgeCache(provider)
	if err != nil {
		problem.Write(w, problem.From(err))
		return
	}
	writeJSON(w, http.StatusOK, res)
}
