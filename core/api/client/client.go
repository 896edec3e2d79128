// Package client is the typed Go client of sluice's socket API. sluicectl and
// the tests talk to the daemon only through it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/core/problem"
)

// Client talks HTTP/1.1 to sluiced over its Unix socket.
type Client struct {
	socket    string
	hc        *http.Client
	onWaiting func(*Waiting)
}

// New returns a client for the socket at path.
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// Socket is the path this client dials.
func (c *Client) Socket() string { return c.socket }

// HTTPClient returns an *http.Client whose requests go to the daemon whatever
// their host, for code (e.g. third-party API clients) that wants a plain
// http.Client; use base URL "http://sluice".
func (c *Client) HTTPClient() *http.Client { return c.hc }

// UnreachableError means the daemon could not be reached at all.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach sluiced at %s (is sluiced running? start it, or set --socket / SLUICE_SOCKET): %v", e.Socket, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Response is a provider answer, buffered.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends a raw request to the daemon. Path is absolute ("/v1/status").
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body io.Reader, header http.Header) (*http.Response, error) {
	u := "http://sluice" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req, over := c.withWaiting(req)
	resp, err := c.hc.Do(req)
	over()
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return nil, &UnreachableError{Socket: c.socket, Err: ne.Err}
		}
		return nil, err
	}
	return resp, nil
}

// Call sends a provider call and returns the buffered answer. A problem
// answered by the daemon is returned as a *problem.Problem error alongside
// the response.
func (c *Client) Call(ctx context.Context, method, path string, query url.Values, body io.Reader, header http.Header) (*Response, error) {
	resp, err := c.Do(ctx, method, path, query, body, header)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading answer: %w", err)
	}
	r := &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if p := asProblem(resp, b); p != nil {
		return r, p
	}
	return r, nil
}

// Provider calls GET /v1/{provider}/{path}?query.
func (c *Client) Provider(ctx context.Context, provider, path string, query url.Values) (*Response, error) {
	return c.Call(ctx, http.MethodGet, "/v1/"+provider+"/"+strings.TrimPrefix(path, "/"), query, nil, nil)
}

func asProblem(resp *http.Response, b []byte) *problem.Problem {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != problem.ContentType {
		return nil
	}
	var p problem.Problem
	if json.Unmarshal(b, &p) != nil {
		return &problem.Problem{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode), Detail: string(b)}
	}
	if p.Status == 0 {
		p.Status = resp.StatusCode
	}
	return &p
}

// getJSON sends a request and decodes a JSON answer into out, or returns the
// problem.
func (c *Client) getJSON(ctx context.Context, method, path string, out any) error {
	resp, err := c.Call(ctx, method, path, nil, nil, nil)
	if err != nil {
		return err
	}
	if resp.Status/100 != 2 && resp.Status != http.StatusServiceUnavailable {
		return &problem.Problem{Status: resp.Status, Title: http.StatusText(resp.Status), Detail: string(bytes.TrimSpace(resp.Body))}
	}
	if err := json.Unmarshal(resp.Body, out); err != nil {
		return fmt.Errorf("decoding %s: %w", path, err)
	}
	return nil
}

// Health returns the daemon's health; Status "ok" when every enabled
// provider is ready.
func (c *Client) Health(ctx context.Context) (*api.Health, error) {
	var h api.Health
	return &h, c.getJSON(ctx, http.MethodGet, "/v1/health", &h)
}

// Status returns the daemon's status document.
func (c *Client) Status(ctx context.Context) (*api.Status, error) {
	var s api.Status
	return &s, c.getJSON(ctx, http.MethodGet, "/v1/status", &s)
}

// Reload asks the daemon to reload its config; an invalid config comes back
// as a 422 *problem.Problem naming file, line and key.
func (c *Client) Reload(ctx context.Context) (*api.ReloadResult, error) {
	var r api.ReloadResult
	return &r, c.getJSON(ctx, http.MethodPost, "/v1/reload", &r)
}

// CacheStats returns cache statistics.
func (c *Client) CacheStats(ctx context.Context) (*api.CacheStats, error) {
	var s api.CacheStats
	return &s, c.getJSON(ctx, http.MethodGet, "/v1/cache", &s)
}

// PurgeCache purges one provider's cached answers, or all for "".
func (c *Client) PurgeCache(ctx context.Context, provider string) (*api.PurgeResult, error) {
	path := "/v1/cache"
	if provider != "" {
		path += "/" + url.PathEscape(provider)
	}
	var r api.PurgeResult
	return &r, c.getJSON(ctx, http.MethodDelete, path, &r)
}

// WaitHealthy polls /v1/health until it is ok or ctx ends.
func (c *Client) WaitHealthy(ctx context.Context) error {
	var last error
	for {
		h, err := c.Health(ctx)
		if err == nil && h.Status == "ok" {
			return nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("health: %s %s", h.Status, h.Detail)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("daemon not healthy: %w (last: %v)", ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
