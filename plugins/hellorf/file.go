package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/core/provider"
)

// copyChunk is the size of each read from the upstream and write to the
// host: the plugin holds one such buffer per download, whatever the file's
// size.
const copyChunk = 128 << 10

// fileHeaders are the upstream headers that describe a file and are passed
// on.
var fileHeaders = []string{"Content-Type", "Content-Length", "Content-Disposition", "Last-Modified", "ETag"}

// file streams a FILE answer (download-warrant) to the caller in bounded
// chunks: never read whole, never cached. An answer that is JSON instead
// (hellorf's failure object) is relayed like any other.
func (p *hellorf) file(ctx context.Context, w answerWriter, up upstream, s *settings, op *operation, params url.Values) error {
	var ex exchange
	resp, err := up.DoStream(ctx, bucketAPI, ex.builder(s, op, params, p.now))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 || isJSON(resp.Header.Get("Content-Type")) {
		body, err := provider.ReadBody(ctx, resp, maxJSON)
		if err != nil {
			return err
		}
		return p.relayJSON(ctx, w, up, s, op, &ex, resp, body)
	}
	p.inspect(ctx, up, op, &ex, resp, nil)
	h := http.Header{}
	for _, k := range fileHeaders {
		if v := resp.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	if resp.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/octet-stream")
	}
	if err := w.WriteHead(resp.StatusCode, h, provider.CacheHint{Outcome: "hellorf:file"}); err != nil {
		return err
	}
	// DoStream bounds only the wait for the head; a body that stops
	// flowing for a whole timeout is cut off here instead of hanging the
	// caller.
	body := newIdleReader(resp.Body, s.timeout)
	defer body.stop()
	n, err := io.CopyBuffer(writerOnly{w}, readerOnly{body}, make([]byte, copyChunk))
	if err != nil {
		if body.timedOut() {
			return fmt.Errorf("hellorf stopped sending the file after %d bytes for %s", n, s.timeout)
		}
		// After the head the host can only abort the stream, so the
		// caller sees a truncated answer, never a short success.
		return fmt.Errorf("streaming the file broke off after %d bytes: %w", n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return fmt.Errorf("hellorf sent %d of the %d bytes it announced", n, resp.ContentLength)
	}
	return nil
}

func isJSON(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "application/json" || mt == "text/json"
}

// writerOnly and readerOnly hide optional interfaces so io.CopyBuffer uses
// the bounded buffer it is given.
type writerOnly struct{ io.Writer }
type readerOnly struct{ io.Reader }

// idleReader closes its source when one Read waits longer than idle for
// data. Only the time spent waiting on the upstream counts: a caller that
// reads slowly holds up the writes, not the reads, and must not cut the
// download off.
type idleReader struct {
	src   io.ReadCloser
	idle  time.Duration
	timer *time.Timer

	mu    sync.Mutex
	fired bool
}

func newIdleReader(src io.ReadCloser, idle time.Duration) *idleReader {
	r := &idleReader{src: src, idle: idle}
	r.timer = time.AfterFunc(time.Hour, func() {
		r.mu.Lock()
		r.fired = true
		r.mu.Unlock()
		src.Close()
	})
	r.timer.Stop() // armed by each Read
	return r
}

func (r *idleReader) Read(p []byte) (int, error) {
	r.timer.Reset(r.idle)
	n, err := r.src.Read(p)
	r.timer.Stop()
	if err != nil && !errors.Is(err, io.EOF) && r.timedOut() {
		return n, fmt.Errorf("idle for %s: %w", r.idle, err)
	}
	return n, err
}

func (r *idleReader) stop() { r.timer.Stop() }

func (r *idleReader) timedOut() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fired
}
