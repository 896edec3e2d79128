package main

import (
	"bufio"
	"bytes"
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

// envelopePeek is how much of a FILE answer is looked at for hellorf's JSON
// envelope. A failure object is a few hundred bytes; a body that starts
// like JSON but is longer than this is taken for the file it claims to be.
const envelopePeek = 64 << 10

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
	// DoStream bounds only the wait for the head; a body that stops
	// flowing for a whole timeout is cut off here (also while peeking)
	// instead of hanging the caller.
	idle := newIdleReader(resp.Body, s.timeout)
	defer idle.stop()
	body := bufio.NewReaderSize(readerOnly{idle}, envelopePeek)
	// A PHP server answers its failure object with PHP's default
	// Content-Type (text/html) and often HTTP 200, so neither tells it
	// from the certificate: the body's first bytes do.
	if env, raw, err := peekEnvelope(body); err != nil {
		if idle.timedOut() {
			return fmt.Errorf("hellorf stopped sending the answer for %s: %w", s.timeout, err)
		}
		return fmt.Errorf("reading the start of hellorf's answer: %w", err)
	} else if env != nil {
		// The body is JSON whatever the header said; saying so lets a
		// client (sluicectl hellorf warrant) treat it as an answer rather
		// than save it as the certificate.
		resp.Header.Set("Content-Type", "application/json")
		return p.relayJSON(ctx, w, up, s, op, &ex, resp, raw)
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
	n, err := io.CopyBuffer(writerOnly{w}, readerOnly{body}, make([]byte, copyChunk))
	if err != nil {
		if idle.timedOut() {
			return fmt.Errorf("hellorf stopped sending the file after %d bytes for %s: %w", n, s.timeout, err)
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

// peekEnvelope looks at the start of a FILE answer without consuming it.
// When the whole body is hellorf's JSON envelope (it starts with '{' after
// any white space, ends within envelopePeek and parses), it returns the
// envelope and the body; otherwise nil, and the reader still holds every
// byte for streaming. An empty body is an empty file. err is a failed read.
func peekEnvelope(r *bufio.Reader) (*envelope, []byte, error) {
	for i := 1; ; i++ {
		b, err := r.Peek(i)
		if len(b) < i {
			// The body ended (or broke) before a non-space byte.
			if err == nil || errors.Is(err, io.EOF) {
				return nil, nil, nil
			}
			return nil, nil, err
		}
		c := b[i-1]
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			if i < envelopePeek {
				continue
			}
			return nil, nil, nil
		}
		if c != '{' {
			return nil, nil, nil
		}
		break
	}
	b, err := r.Peek(envelopePeek)
	switch {
	case err == nil:
		return nil, nil, nil // longer than any failure object: a file
	case !errors.Is(err, io.EOF):
		return nil, nil, err
	}
	env, ok := parseEnvelope(b)
	if !ok {
		return nil, nil, nil
	}
	return env, bytes.Clone(b), nil // Peek's slice is only valid until the next read
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
