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

// codes is hellorf's failure-code table. The vendor publishes no list: its
// document shows only the example 1001. The entries are the codes sluice's
// simulator uses (plugins/hellorf/hellorfsim), chosen to cover the failures
// the document describes; a real code outside the table is relayed as
// code_N, class unknown. Signature problems are also recognised by their
// message (authFailure), which does not depend on these numbers.
var codes = provider.Codes{
	1001: {Name: "invalid_parameter", Class: provider.CallerError},
	1002: {Name: "invalid_client_id", Class: provider.ServerError},
	1003: {Name: "nonce_expired", Class: provider.ServerError},
	1004: {Name: "bad_sign", Class: provider.ServerError},
	1005: {Name: "audio_not_found", Class: provider.CallerError},
	1006: {Name: "purchase_not_found", Class: provider.CallerError},
	1007: {Name: "permission_unavailable", Class: provider.CallerError},
	1008: {Name: "method_not_allowed", Class: provider.CallerError},
	5000: {Name: "internal_error", Class: provider.ServerError},
}

// authCodes mean "your credentials, signature or clock are wrong": a
// configuration problem, not the caller's.
var authCodes = map[int]bool{1002: true, 1003: true, 1004: true}

// authWords recognise the same failures by their message, for codes outside
// the table.
var authWords = []string{"sign", "签名", "nonce", "client_id", "时间戳", "客户应用"}

func authFailure(status int, env *envelope) bool {
	if env.ok() {
		return false
	}
	if status == http.StatusUnauthorized || authCodes[env.code()] {
		return true
	}
	msg := strings.ToLower(env.message())
	for _, w := range authWords {
		if strings.Contains(msg, w) {
			return true
		}
	}
	return false
}

// outcome labels an answer for logs and status: "hellorf:ok",
// "hellorf:1004".
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
func relayHeader(up http.Header, env *envelope) http.Header {
	h := http.Header{"Content-Type": {up.Get("Content-Type")}}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	if env.ok() {
		h.Set("Sluice-Upstream-Class", provider.Success.String())
		return h
	}
	c := codes.Lookup(env.code())
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
	hint := provider.CacheHint{Outcome: outcome(resp.StatusCode, env)}
	if env.ok() && resp.StatusCode/100 == 2 && op.cacheable {
		hint = cacheHint(s, op, ex.sent(), p.now(), body, hint)
	}
	if err := w.WriteHead(resp.StatusCode, relayHeader(resp.Header, env), hint); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// cacheHint decides how long a successful answer may be cached: the
// configured TTL for its kind, bounded by the earliest link expiry in it —
// the Expires= of any URL, and for search-style answers the documented rule
// that their links die linkLife after the answer (counted from when the
// request left, which is earlier than the answer, so never late).
func cacheHint(s *settings, op *operation, sent, now time.Time, body []byte, hint provider.CacheHint) provider.CacheHint {
	exp, found := linkExpiry(body)
	switch op.ttl {
	case ttlCategories:
		hint.TTL = s.categoriesTTL
	case ttlSearch:
		hint.TTL = s.searchTTL
	case ttlLinkOnly:
		// A download URL is only worth caching while it works; one that
		// states no expiry has an unknown life and is not cached at all.
		if !found {
			return hint
		}
		if exp.Sub(now) <= 0 {
			return hint
		}
		hint.TTL = exp.Sub(now)
	}
	if op.linkRule && !sent.IsZero() {
		if r := sent.Add(linkLife); !found || r.Before(exp) {
			exp, found = r, true
		}
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
	if resp.StatusCode == http.StatusTooManyRequests {
		until := time.Now().Add(retryAfter(resp.Header))
		p.log.Warn("hellorf answered 429: pausing the bucket for every caller", "bucket", bucketAPI, "until", until.Format(time.RFC3339))
		if err := up.Pause(context.WithoutCancel(ctx), bucketAPI, until, "hellorf answered 429 Too Many Requests"); err != nil {
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
