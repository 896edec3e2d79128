package provider

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/proto"
)

// Provider is what a plugin implements.
type Provider interface {
	// Describe returns the static self-description: operations, buckets and
	// credential parameter names.
	Describe() *proto.Description
	// Configure applies the provider's config section (JSON, secrets
	// resolved). It may be called again on reload; it must be safe to call
	// concurrently with Call.
	Configure(ctx context.Context, configJSON []byte) error
	// Call handles one request. It either writes an answer through w or
	// returns an error; a *problem.Problem error is rendered verbatim, other
	// errors become 502.
	Call(ctx context.Context, req *Request, w *ResponseWriter, up *Upstream) error
}

// Sender is the part of *Upstream a provider's call path uses. Providers
// take it, not *Upstream, so that their tests can run the whole call path
// against a simulator without a daemon.
type Sender interface {
	Do(ctx context.Context, bucket string, build Builder) (*http.Response, error)
	Pause(ctx context.Context, bucket string, until time.Time, reason string) error
	SetTimeout(d time.Duration)
}

// StreamSender is a Sender that also streams large answers (files).
type StreamSender interface {
	Sender
	DoStream(ctx context.Context, bucket string, build Builder) (*http.Response, error)
}

// AnswerWriter is the part of *ResponseWriter a provider's call path uses,
// for the same reason.
type AnswerWriter interface {
	WriteHead(status int, h http.Header, hint CacheHint) error
	Write(p []byte) (int, error)
}

// Request is one caller request, already matched to an operation by the host
// with credentials removed.
type Request struct {
	ID          string
	Operation   string
	Method      string
	Path        string
	Params      url.Values
	Body        []byte
	ContentType string
	Header      http.Header
	// PublicBase is the base to write links to sluice under in the answer
	// (…/v1/<provider>). For read-only lookups, whose answers are cached
	// once for every caller, it is a marker the host replaces with each
	// caller's own base when serving (cache.Entry.BodyFor); write it as is.
	PublicBase string
	MaxWait    time.Duration

	stats *callStats
	// pregrant is the grant the host obtained for this call, if any; shared
	// by copies of the Request (LimitWait).
	pregrant *pregrant
}

// callStats accumulates what Upstream measured during one call.
type callStats struct {
	waitNs, upstreamNs atomic.Int64
	attempts           atomic.Int32
	answers            answers
}

// CacheHint is the plugin's verdict on an answer: only it knows whether an
// HTTP 200 from its upstream is a success, and which links expire when.
type CacheHint struct {
	Cacheable bool
	// ExpiresAt is the earliest expiry of a link in the body; zero if none.
	ExpiresAt time.Time
	// Outcome is a short label for logs and status, e.g. "ineo:404".
	Outcome string
	// TTL is the provider's configured lifetime for this answer (e.g.
	// categories_ttl); zero means the cache's default_ttl.
	TTL time.Duration
}

// chunkSize bounds each streamed message so memory stays flat for large files.
const chunkSize = 128 << 10

// ResponseWriter streams an answer back to the host.
type ResponseWriter struct {
	stream      proto.Provider_CallServer
	stats       *callStats
	wroteHeader bool
	// pending is a written head not sent yet: it leaves with the first
	// body bytes, or when the call ends (finish).
	pending *proto.ResponseHead
}

// WriteHead sets status, headers and the cache verdict. It must come before
// any Write; the head leaves with the first body bytes, or when Call
// returns.
func (w *ResponseWriter) WriteHead(status int, h http.Header, hint CacheHint) error {
	if w.wroteHeader {
		return errors.New("provider: head already written")
	}
	w.wroteHeader = true
	head := &proto.ResponseHead{Status: int32(status), Cacheable: hint.Cacheable, Outcome: hint.Outcome, TtlMs: hint.TTL.Milliseconds()}
	if st := w.stats; st != nil {
		head.WaitUs = st.waitNs.Load() / 1e3
		head.UpstreamUs = st.upstreamNs.Load() / 1e3
		head.Attempts = st.attempts.Load()
	}
	if !hint.ExpiresAt.IsZero() {
		head.ExpiresAtUnixMs = hint.ExpiresAt.UnixMilli()
	}
	for k, vs := range h {
		for _, v := range vs {
			head.Headers = append(head.Headers, &proto.KV{Name: k, Value: v})
		}
	}
	w.pending = head
	return nil
}

// Write sends body bytes, split into bounded chunks; the first chunk
// travels with the head.
func (w *ResponseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		return 0, errors.New("provider: Write before WriteHead")
	}
	n := 0
	for len(p) > 0 {
		c := min(len(p), chunkSize)
		// Copy: gRPC may hold the slice after Send returns on some paths,
		// and callers reuse their buffers.
		buf := append([]byte(nil), p[:c]...)
		msg := &proto.CallChunk{Kind: &proto.CallChunk_Data{Data: buf}}
		if head := w.pending; head != nil {
			w.pending = nil
			head.Body = buf
			msg = &proto.CallChunk{Kind: &proto.CallChunk_Head{Head: head}}
		}
		if err := w.stream.Send(msg); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// finish sends a head that no body followed.
func (w *ResponseWriter) finish() error {
	head := w.pending
	if head == nil {
		return nil
	}
	w.pending = nil
	return w.stream.Send(&proto.CallChunk{Kind: &proto.CallChunk_Head{Head: head}})
}

// HeadWritten reports whether the answer has started.
func (w *ResponseWriter) HeadWritten() bool { return w.wroteHeader }

func (w *ResponseWriter) writeProblem(p *problem.Problem) error {
	w.wroteHeader = true
	return w.stream.Send(&proto.CallChunk{Kind: &proto.CallChunk_Problem{Problem: problem.ToProto(p)}})
}
