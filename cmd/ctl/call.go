package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/core/problem"
)

// rawRequest is a parsed `sluicectl call`.
type rawRequest struct {
	method string
	path   string // absolute, under /v1/
	query  url.Values
	body   string // form-encoded, for methods with a body
	header http.Header
}

// bodyMethods send their key=value pairs as a form body; the rest put them
// in the query.
func bodyMethod(m string) bool {
	return m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch
}

// buildRequest turns the command line of `call` into a request. It checks
// only syntax; what the daemon accepts is the daemon's business.
func buildRequest(method, path string, pairs, headers []string) (*rawRequest, error) {
	r := &rawRequest{method: strings.ToUpper(method), header: http.Header{}}
	if r.method == "" || strings.IndexFunc(r.method, func(c rune) bool { return c < 'A' || c > 'Z' }) >= 0 {
		return nil, usageErrorf("method %q: want an HTTP method such as GET or POST", method)
	}
	p, q, err := apiPath(path)
	if err != nil {
		return nil, err
	}
	r.path, r.query = p, q
	kv, err := parsePairs(pairs)
	if err != nil {
		return nil, err
	}
	for _, h := range headers {
		name, value, err := parseHeader(h)
		if err != nil {
			return nil, err
		}
		r.header.Add(name, value)
	}
	if bodyMethod(r.method) {
		if len(kv) > 0 {
			r.body = kv.Encode()
			if r.header.Get("Content-Type") == "" {
				r.header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
		}
	} else {
		for k, vs := range kv {
			r.query[k] = append(r.query[k], vs...)
		}
	}
	return r, nil
}

// apiPath accepts "/v1/ineo/spotify.php", "ineo/spotify.php" or
// "/ineo/spotify.php", with or without a "?query", and returns the absolute
// path under /v1/ and the query.
func apiPath(s string) (string, url.Values, error) {
	p, rawQuery, _ := strings.Cut(s, "?")
	p = strings.TrimLeft(p, "/")
	if p == "" {
		return "", nil, usageErrorf("path %q: want a path such as ineo/spotify.php or /v1/status", s)
	}
	if p != "v1" && !strings.HasPrefix(p, "v1/") {
		p = "v1/" + p
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", nil, usageErrorf("path %q: bad query: %w", s, err)
	}
	return "/" + p, q, nil
}

// parsePairs reads key=value arguments; a key may repeat, and the value may
// be empty or contain "=".
func parsePairs(args []string) (url.Values, error) {
	v := url.Values{}
	for _, a := range args {
		k, val, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usageErrorf("argument %q: want key=value", a)
		}
		v.Add(k, val)
	}
	return v, nil
}

// parseHeader reads a -H "Name: value" argument.
func parseHeader(h string) (string, string, error) {
	name, value, ok := strings.Cut(h, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.ContainsAny(name, " \t\r\n") {
		return "", "", usageErrorf("header %q: want 'Name: value'", h)
	}
	return name, strings.TrimSpace(value), nil
}

func newCallCmd(o *options) *cobra.Command {
	var headers []string
	var include bool
	cmd := &cobra.Command{
		Use:   "call METHOD PATH [key=value ...]",
		Short: "Send a raw request to the daemon and print the answer verbatim",
		Long: `Send a raw request to the daemon and print the answer's body verbatim.

PATH is under /v1/ (added if missing): ineo/spotify.php and
/v1/ineo/spotify.php are the same. key=value pairs go into the query for
GET, HEAD, DELETE and other methods, and into a form body for POST, PUT and
PATCH. A problem answered by the daemon is printed too, and sets the exit
status; so does a non-2xx upstream status, and for iNeo a non-200
status_code in Sluice-Upstream-Status.`,
		Example: `  sluicectl call GET ineo/spotify.php trackId=6fx5VOjqYNBHcDf5GIF5g5
  sluicectl call GET /v1/ineo/spotify.php trackId=6fx5VOjqYNBHcDf5GIF5g5 -H 'Cache-Control: no-cache' -i
  sluicectl call POST ineo/spotify.php trackId=6fx5VOjqYNBHcDf5GIF5g5 -H 'Sluice-Max-Wait: 20s'`,
		Args: cobra.MinimumNArgs(2),
		RunE: o.action(func(ctx context.Context, args []string) error {
			req, err := buildRequest(args[0], args[1], args[2:], headers)
			if err != nil {
				return err
			}
			return o.runCall(ctx, req, include)
		}),
	}
	cmd.Flags().StringArrayVarP(&headers, "header", "H", nil, "add a request header 'Name: value' (repeatable)")
	cmd.Flags().BoolVarP(&include, "include", "i", false, "print the status line and headers before the body")
	return cmd
}

// runCall streams the answer to stdout: provider answers may be files
// (audio), so it goes through client.Do rather than the buffering
// client.Call.
func (o *options) runCall(ctx context.Context, req *rawRequest, include bool) error {
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	var body io.Reader
	if req.body != "" {
		body = strings.NewReader(req.body)
	}
	resp, err := o.cl.Do(ctx, req.method, req.path, req.query, body, req.header)
	if err != nil {
		return o.requestError(nil, err)
	}
	defer resp.Body.Close()
	if include {
		if err := o.print(formatHead(resp)); err != nil {
			return err
		}
	}
	if isProblem(resp.Header) {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return o.requestError(nil, fmt.Errorf("reading answer: %w", err))
		}
		if err := o.writeBody(b); err != nil {
			return err
		}
		return parseProblem(resp.StatusCode, resp.Header, b)
	}
	w := &lastByteWriter{w: o.stdout}
	if _, err := io.Copy(w, resp.Body); err != nil {
		if w.err != nil {
			return fmt.Errorf("writing output: %w", w.err)
		}
		return o.requestError(nil, fmt.Errorf("reading answer: %w", err))
	}
	if o.tty && w.n > 0 && w.last != '\n' {
		if err := o.print("\n"); err != nil {
			return err
		}
	}
	if resp.StatusCode/100 != 2 {
		// Only the status is known here; the body is on stdout already.
		return &httpStatusError{Status: resp.StatusCode}
	}
	if provider(req.path) == "ineo" {
		if code, name, ok := upstreamStatus(resp.Header); ok && code != 200 {
			return &ineoError{Code: code, Name: name, Class: resp.Header.Get("Sluice-Upstream-Class")}
		}
	}
	return nil
}

// formatHead renders the status line and headers, sorted so the output is
// stable, like curl -i.
func formatHead(resp *http.Response) string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/%d.%d %s\n", resp.ProtoMajor, resp.ProtoMinor, resp.Status)
	names := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		for _, v := range resp.Header[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	b.WriteString("\n")
	return b.String()
}

func isProblem(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt == problem.ContentType
}

// parseProblem decodes a problem document as the client package does, for
// the streaming path that bypasses client.Call.
func parseProblem(status int, h http.Header, b []byte) *problem.Problem {
	var p problem.Problem
	if json.Unmarshal(b, &p) != nil {
		p = problem.Problem{Status: status, Title: http.StatusText(status), Detail: oneLine(string(b))}
	}
	if p.Status == 0 {
		p.Status = status
	}
	addRetryAfter(&p, h)
	return &p
}

// provider is the first segment after /v1/.
func provider(path string) string {
	rest := strings.TrimPrefix(path, "/v1/")
	name, _, _ := strings.Cut(rest, "/")
	return name
}

// upstreamStatus reads the Sluice-Upstream-Status header ("200
// successfully", "10 ip_blocked") that the iNeo plugin adds with the
// status_code from the body.
func upstreamStatus(h http.Header) (int, string, bool) {
	v := strings.TrimSpace(h.Get("Sluice-Upstream-Status"))
	if v == "" {
		return 0, "", false
	}
	num, name, _ := strings.Cut(v, " ")
	code, err := strconv.Atoi(num)
	if err != nil {
		return 0, "", false
	}
	return code, strings.TrimSpace(name), true
}

// lastByteWriter remembers the last byte written and a write error, so
// runCall can end terminal output with a newline and tell a broken stdout
// from a broken answer.
type lastByteWriter struct {
	w    io.Writer
	n    int64
	last byte
	err  error
}

func (l *lastByteWriter) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if n > 0 {
		l.n += int64(n)
		l.last = p[n-1]
	}
	if err != nil {
		l.err = err
	}
	return n, err
}
