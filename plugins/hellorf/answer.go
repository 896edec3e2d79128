package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/provider"
)

// envelope is the part of hellorf's JSON answer sluice reads:
// {"result": true, "data": …} or {"result": false, "message": …, "code": …}.
type envelope struct {
	Result  *bool           `json:"result"`
	Code    json.RawMessage `json:"code"`
	Message json.RawMessage `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// parseEnvelope reads an answer; ok is false when the body is not hellorf's
// JSON object with a boolean result.
func parseEnvelope(body []byte) (*envelope, bool) {
	var env envelope
	if json.Unmarshal(bytes.TrimSpace(body), &env) != nil || env.Result == nil {
		return nil, false
	}
	return &env, true
}

func (e *envelope) ok() bool { return e != nil && e.Result != nil && *e.Result }

// code is the failure code, a number (or a numeric string); 0 if absent.
func (e *envelope) code() int {
	var n json.Number
	if json.Unmarshal(e.Code, &n) == nil {
		if i, err := n.Int64(); err == nil {
			return int(i)
		}
	}
	var s string
	if json.Unmarshal(e.Code, &s) == nil {
		if i, err := strconv.Atoi(s); err == nil {
			return i
		}
	}
	return 0
}

func (e *envelope) message() string {
	var s string
	if json.Unmarshal(e.Message, &s) == nil {
		return s
	}
	return string(e.Message)
}

// hellorf publishes no code list: its document shows one failure example,
// code 1001, with neither a name nor a meaning. So sluice names no code: a
// failure is labelled from what the answer itself shows (failureLabel),
// never from a table of numbers that would only be guesses (the simulator's
// codes are its own choice and must not leak into what callers are told).

// authWords recognise a refused credential, nonce or signature by hellorf's
// message; with HTTP 401 they are the only evidence, since no code is known
// to mean it. ASCII words must stand alone (no ASCII letter or digit either
// side), so "assign" or "design" in an unrelated message does not raise a
// false configuration alarm; "_" and CJK characters do count as a boundary,
// because hellorf glues words to them ("nonce_str", "sign签名错误").
// Ordered by the name each one gives the failure (authName).
var authWords = []struct{ word, name string }{
	{"nonce", "nonce_expired"},
	{"时间戳", "nonce_expired"},
	{"client_id", "invalid_client_id"},
	{"客户应用", "invalid_client_id"},
	{"sign", "bad_sign"},
	{"signature", "bad_sign"},
	{"签名", "bad_sign"},
}

// authName is the name of the first auth word in msg, "" if none.
func authName(msg string) string {
	msg = strings.ToLower(msg)
	for _, w := range authWords {
		if containsWord(msg, w.word) {
			return w.name
		}
	}
	return ""
}

// containsWord reports whether w occurs in s with no ASCII letter or digit
// directly before or after it. A word that does not begin and end with an
// ASCII letter or digit (签名) matches anywhere.
func containsWord(s, w string) bool {
	for i := 0; i <= len(s)-len(w); {
		j := strings.Index(s[i:], w)
		if j < 0 {
			return false
		}
		j += i
		end := j + len(w)
		if (j == 0 || !asciiAlnum(s[j-1]) || !asciiAlnum(w[0])) && (end == len(s) || !asciiAlnum(s[end]) || !asciiAlnum(w[len(w)-1])) {
			return true
		}
		i = j + 1
	}
	return false
}

func asciiAlnum(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
}

// authFailure: hellorf refused sluice's credentials, nonce or signature (a
// configuration problem, not the caller's): HTTP 401, or a message that
// names one of them.
func authFailure(status int, env *envelope) bool {
	if env.ok() {
		return false
	}
	return status == http.StatusUnauthorized || authName(env.message()) != ""
}

// failureLabel names and classes a result:false answer for the
// Sluice-Upstream-Status and -Class headers. The name is code_N, except for
// a refused credential, nonce or signature, which is named by what its
// message mentions (bad_sign, nonce_expired, invalid_client_id;
// credentials_refused for a bare 401) so that sluicectl can point at the
// daemon's configuration. The class follows the HTTP status: 4xx blames
// the request, 5xx the server, 429 stops the bucket; a failure under any
// other status (hellorf may answer failures with 200) is unknown.
func failureLabel(status int, env *envelope) provider.Code {
	if authFailure(status, env) {
		name := authName(env.message())
		if name == "" {
			name = "credentials_refused"
		}
		return provider.Code{Name: name, Class: provider.ServerError}
	}
	c := provider.Code{Name: fmt.Sprintf("code_%d", env.code()), Class: provider.Unknown}
	switch {
	case status == http.StatusTooManyRequests:
		c.Class = provider.Stop
	case status/100 == 4:
		c.Class = provider.CallerError
	case status/100 == 5:
		c.Class = provider.ServerError
	}
	return c
}

// outcome labels an answer for logs and status: "hellorf:ok",
// "hellorf:1004" (the bare number: see failureLabel).
func outcome(status int, env *envelope) string {
	if env.ok() {
		if status/100 == 2 {
			return "hellorf:ok"
		}
		return fmt.Sprintf("hellorf:http_%d", status)
	}
	return fmt.Sprintf("hellorf:%d", env.code())
}

// relayHeader is the head of a relayed JSON answer: the upstream's content
// type, and for failures the code and its class (the same headers the iNeo
// provider sets), so clients need not parse the body to classify it.
func relayHeader(status int, up http.Header, env *envelope) http.Header {
	h := http.Header{"Content-Type": {up.Get("Content-Type")}}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	if env.ok() {
		h.Set("Sluice-Upstream-Class", provider.Success.String())
		return h
	}
	c := failureLabel(status, env)
	h.Set("Sluice-Upstream-Status", fmt.Sprintf("%d %s", env.code(), c.Name))
	h.Set("Sluice-Upstream-Class", c.Class.String())
	return h
}

// relayJSON passes a JSON answer back verbatim, with the upstream's status
// and content type, and the cache verdict.
func (p *hellorf) relayJSON(ctx context.Context, w answerWriter, up upstream, s *settings, op *operation, ex *exchange, resp *http.Response, body []byte) error {
	env, ok := parseEnvelope(body)
	p.inspect(ctx, up, op, ex, resp, env)
	if !ok {
		if resp.StatusCode == http.StatusTooManyRequests {
			return problem.RateLimited(retryAfter(resp.Header), "hellorf answered 429 Too Many Requests; sluice holds hellorf calls for every caller")
		}
		return problem.New(http.StatusBadGateway, fmt.Sprintf("hellorf answered HTTP %d with a body that is not its JSON answer", resp.StatusCode))
	}
	if env.ok() && resp.StatusCode/100 == 2 && op.cacheable {
		// A success is only hellorf's answer when its data is the one the
		// document shows: one without it would be cached for the whole
		// ttl. Not relayed, so not cached, and not retried: the next
		// caller's request goes upstream again.
		if err := checkShape(op.name, bytes.TrimSpace(body)); err != nil {
			p.log.Warn("hellorf's success is not the documented answer; not relayed or cached",
				"operation", op.name, "http_status", resp.StatusCode, "content_type", resp.Header.Get("Content-Type"), "bytes", len(body), "why", err.Error())
			return problem.New(http.StatusBadGateway, fmt.Sprintf(
				"hellorf answered HTTP %d, result true, with a body that is not the answer its document shows for %s (%v); not cached", resp.StatusCode, op.name, err))
		}
	}
	hint := provider.CacheHint{Outcome: outcome(resp.StatusCode, env)}
	if env.ok() && resp.StatusCode/100 == 2 && op.cacheable {
		now := p.now()
		hint = cacheHint(s, op, ex.sent(), now, clockAhead(resp.Header.Get("Date"), ex.sent(), now), body, hint)
	}
	if err := w.WriteHead(resp.StatusCode, relayHeader(resp.StatusCode, resp.Header, env), hint); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// cacheHint decides how long a successful answer may be cached: the
// configured TTL for its kind, bounded by the earliest link expiry in it —
// the Expires= of any URL, and for answers under the link rule the
// documented rule that their links die linkLife after the answer (counted
// from when the request left, which is earlier than the answer, so never
// late).
//
// Expires= is a time on hellorf's clock. When that clock is ahead of ours
// (by ahead, see clockAhead), a link dies earlier on our clock than its
// Expires= reads, so the expiry is moved earlier by that much; otherwise a
// link issued for 10 minutes by a clock 5 minutes fast would be cached for
// 15. A clock behind ours only makes Expires= err early, which is safe, so
// it is not corrected the other way.
func cacheHint(s *settings, op *operation, sent, now time.Time, ahead time.Duration, body []byte, hint provider.CacheHint) provider.CacheHint {
	exp, found := linkExpiry(body)
	stated := found
	if found && ahead > 0 {
		exp = exp.Add(-ahead)
	}
	if op.linkRule && !sent.IsZero() {
		if r := sent.Add(linkLife); !found || r.Before(exp) {
			exp, found = r, true
		}
	}
	switch op.ttl {
	case ttlCategories:
		hint.TTL = s.categoriesTTL
	case ttlSearch:
		hint.TTL = s.searchTTL
	case ttlLinkOnly:
		// A download URL is only worth caching while it works; one that
		// states no expiry has an unknown life and is not cached at all
		// (the link rule alone does not make it cacheable).
		if !stated || exp.Sub(now) <= 0 {
			return hint
		}
		hint.TTL = exp.Sub(now)
	}
	if found {
		hint.ExpiresAt = exp
	}
	hint.Cacheable = true
	return hint
}

// linkExpiry returns the earliest Expires= (Unix seconds) of any URL among
// the string values of a JSON document. The gateway scans the raw body for
// the same parameter; reading the decoded JSON here also catches URLs whose
// separators are escaped in ways a byte scan may miss.
func linkExpiry(body []byte) (time.Time, bool) {
	var doc any
	if json.Unmarshal(body, &doc) != nil {
		return time.Time{}, false
	}
	var earliest int64
	found := false
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		case string:
			if sec, ok := urlExpires(v); ok && (!found || sec < earliest) {
				earliest, found = sec, true
			}
		}
	}
	walk(doc)
	if !found {
		return time.Time{}, false
	}
	return time.Unix(earliest, 0), true
}

// urlExpires reads the Expires query parameter (any case) of a URL string.
func urlExpires(s string) (int64, bool) {
	if !strings.Contains(strings.ToLower(s), "expires=") {
		return 0, false
	}
	u, err := url.Parse(s)
	if err != nil {
		return 0, false
	}
	var best int64
	found := false
	for k, vs := range u.Query() {
		if !strings.EqualFold(k, "expires") {
			continue
		}
		for _, v := range vs {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 && (!found || n < best) {
				best, found = n, true
			}
		}
	}
	return best, found
}

// Clock-offset thresholds: an offset above skewNotable is named when
// hellorf refuses a signature; one above skewWarn (a fifth of the 10-minute
// nonce validity) is warned about even while requests still succeed.
const (
	skewNotable = 5 * time.Second
	skewWarn    = 2 * time.Minute
	// skewWarnEvery rate-limits that warning.
	skewWarnEvery = 10 * time.Minute
)

// inspect looks at an answer for what the operator must know: a refused
// signature or nonce (a configuration problem: wrong client_secret or clock
// skew, with the offset when hellorf's Date header shows one) and a 429,
// which pauses the bucket for every caller.
func (p *hellorf) inspect(ctx context.Context, up upstream, op *operation, ex *exchange, resp *http.Response, env *envelope) {
	offset, known := clockOffset(resp.Header.Get("Date"), ex.sent(), p.now())
	// The SDK has stopped this plugin's sends at the head; the host must
	// hold every caller.
	if provider.AsksToWait(resp) {
		until := time.Now().Add(retryAfter(resp.Header))
		p.log.Warn("hellorf asked to wait: pausing the bucket for every caller", "bucket", bucketAPI, "http_status", resp.StatusCode, "until", until.Format(time.RFC3339))
		if err := up.Pause(context.WithoutCancel(ctx), bucketAPI, until, fmt.Sprintf("hellorf answered %d %s with Retry-After", resp.StatusCode, http.StatusText(resp.StatusCode))); err != nil {
			p.log.Error("could not pause bucket", "bucket", bucketAPI, "err", err)
		}
	}
	if env != nil && authFailure(resp.StatusCode, env) {
		msg := "hellorf refused the request's credentials, nonce or signature: a configuration problem, not the caller's; check client_id and client_secret in [providers.hellorf] and this host's clock"
		attrs := []any{"operation", op.name, "http_status", resp.StatusCode, "code", env.code(), "upstream_message", env.message()}
		if known {
			attrs = append(attrs, "clock_offset", offset.Round(time.Second).String())
			if abs(offset) >= skewNotable {
				msg += fmt.Sprintf("; hellorf's clock is %s %s ours (nonce_str is valid for 10 minutes): fix the clock (NTP)",
					abs(offset).Round(time.Second), map[bool]string{true: "ahead of", false: "behind"}[offset > 0])
			}
		}
		p.log.Error(msg, attrs...)
		return
	}
	if known && abs(offset) >= skewWarn {
		now := p.now().Unix()
		last := p.skewWarned.Load()
		if now-last >= int64(skewWarnEvery/time.Second) && p.skewWarned.CompareAndSwap(last, now) {
			p.log.Warn("hellorf's clock differs from ours; signed requests fail once it exceeds 10 minutes", "clock_offset", offset.Round(time.Second).String())
		}
	}
}

// clockOffset estimates hellorf's clock minus ours from its Date header.
// Date is truncated to the second and was stamped somewhere between sending
// and receiving, so the estimate compares its middle second with the middle
// of the exchange; it is good to about a second.
func clockOffset(date string, sent, recv time.Time) (time.Duration, bool) {
	if date == "" || sent.IsZero() {
		return 0, false
	}
	t, err := http.ParseTime(date)
	if err != nil {
		return 0, false
	}
	mid := sent.Add(recv.Sub(sent) / 2)
	return t.Add(500 * time.Millisecond).Sub(mid), true
}

// clockAhead is the most hellorf's clock can be ahead of ours, judging by
// its Date header: clockOffset's estimate plus that estimate's error bound
// (half a second for Date's truncation, half the exchange for when in it
// Date was stamped). It is 0 when hellorf's clock is behind or Date is
// missing; cacheHint moves link expiries earlier by it.
func clockAhead(date string, sent, recv time.Time) time.Duration {
	off, ok := clockOffset(date, sent, recv)
	if !ok {
		return 0
	}
	return max(0, off+500*time.Millisecond+recv.Sub(sent)/2)
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// retryAfter reads Retry-After (seconds or an HTTP date); 30 s when absent,
// at most an hour.
func retryAfter(h http.Header) time.Duration {
	return min(provider.RetryAfter(h, 30*time.Second), time.Hour)
}
