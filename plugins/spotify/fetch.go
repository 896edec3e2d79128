package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/provider"
)

// Retry policy.
const (
	// defaultRetryAfter applies when a 429 carries no usable Retry-After
	// (missing, 0, or unparsable): Spotify has been seen to omit it.
	defaultRetryAfter = 5 * time.Second
	// maxThrottleRetries bounds how often one call waits out a 429 and
	// tries again; each wait is a pause every caller honours.
	maxThrottleRetries = 3
	// max5xxRetries, backoffBase and backoffCap shape the capped
	// exponential backoff for 500/502/503/504.
	max5xxRetries = 3
	backoffBase   = 250 * time.Millisecond
	backoffCap    = 4 * time.Second
	// maxAnswer bounds an answer read into memory (the gateway buffers at
	// most 8 MiB for the cache anyway).
	maxAnswer = 8 << 20
)

// result is an upstream answer to relay.
type result struct {
	status      int
	contentType string
	body        []byte
}

// fetch sends one catalogue request and handles what Spotify's answers
// mean: 401 → refresh the token once and retry; 429 → pause spotify.api for
// everyone and retry after the pause, unless it is longer than this caller
// may wait; 5xx → retry with backoff. Each attempt is a separate grant.
func (p *spotify) fetch(ctx context.Context, cfg *config, up upstream, path string, params url.Values) (*result, error) {
	// Every wait for spotify.api, a queue or a pause after a 429, is bounded
	// by max_retry_after as well as the caller's Sluice-Max-Wait: past that
	// the caller gets a 429 problem at once instead of hanging.
	ctx = provider.LimitWait(ctx, cfg.maxRetryAfter)
	target := cfg.apiBase + path
	if q := params.Encode(); q != "" {
		target += "?" + q
	}
	refreshed := false
	throttled, failures := 0, 0
	var lastRetryAfter time.Duration
	for {
		tok, err := p.tokens.get(ctx, cfg, up)
		if err != nil {
			return nil, err
		}
		resp, err := up.Do(ctx, bucketAPI, func(ctx context.Context) (*http.Request, error) {
			// The grant may have taken a while: a token installed meanwhile
			// (by a refresh) is fresher than the one fetched before.
			tok = p.tokens.latest(tok)
			r, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
			if err != nil {
				return nil, err
			}
			r.Header.Set("Authorization", "Bearer "+tok)
			r.Header.Set("Accept", "application/json")
			return r, nil
		})
		if err != nil {
			return nil, denied(err, lastRetryAfter)
		}
		body, err := provider.ReadBody(ctx, resp, maxAnswer)
		if err != nil {
			return nil, err
		}
		res := &result{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: body}
		if res.contentType == "" {
			res.contentType = "application/json; charset=utf-8"
		}
		switch code := resp.StatusCode; {
		case code == http.StatusUnauthorized:
			if refreshed {
				p.log.Error("Spotify refused a freshly issued token", "path", path)
				return nil, problem.New(http.StatusBadGateway, "Spotify answered 401 even with a freshly issued token: "+errorMessage(body))
			}
			// Expired early or revoked: fetch a new one (once, for every
			// caller that saw this token fail) and try again.
			refreshed = true
			p.tokens.invalidate(tok)
			p.log.Info("Spotify answered 401; refreshing the token", "message", errorMessage(body))
		case code == http.StatusTooManyRequests:
			ra := retryAfter(resp.Header)
			lastRetryAfter = ra
			until := time.Now().Add(ra + jitter(ra))
			reason := fmt.Sprintf("Spotify answered 429 with Retry-After %s", ra)
			quota := isQuotaExceeded(body)
			if quota {
				reason = fmt.Sprintf("Spotify answered 429 QUOTA_EXCEEDED with Retry-After %s", ra)
			}
			p.log.Warn("Spotify is rate limiting: pausing the bucket for every caller", "bucket", bucketAPI,
				"retry_after", ra.String(), "until", until.Format(time.RFC3339Nano), "quota_exceeded", quota)
			if err := up.Pause(context.WithoutCancel(ctx), bucketAPI, until, reason); err != nil {
				p.log.Error("could not pause bucket", "bucket", bucketAPI, "err", err)
			}
			if quota {
				// The app's quota is gone: retrying cannot help, so the
				// caller hears it now.
				return nil, problem.RateLimited(ra, "Spotify says the app's quota is exceeded (QUOTA_EXCEEDED); not retried")
			}
			throttled++
			if throttled > maxThrottleRetries {
				return nil, problem.RateLimited(ra, fmt.Sprintf("Spotify answered 429 %d times in a row", throttled))
			}
			// The next Do waits out the pause (it is in the scheduler now),
			// or is denied at once when the pause is longer than this
			// caller may wait.
		case code == http.StatusInternalServerError || code == http.StatusBadGateway ||
			code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
			if failures >= max5xxRetries {
				return res, nil
			}
			failures++
			d := backoff(failures, resp.Header)
			p.log.Warn("Spotify answered a server error; retrying", "status", code, "attempt", failures, "backoff", d.String())
			if err := sleep(ctx, d); err != nil {
				return nil, err
			}
		default:
			return res, nil
		}
	}
}

// denied adds what Spotify said to a scheduler denial that follows a 429,
// so the caller sees the upstream's Retry-After, not only the pause's end.
func denied(err error, upstreamRA time.Duration) error {
	var pr *problem.Problem
	if upstreamRA <= 0 || !errors.As(err, &pr) || pr.Status != http.StatusTooManyRequests {
		return err
	}
	out := *pr
	out.RetryAfter = max(pr.RetryAfter, upstreamRA)
	out.Detail = fmt.Sprintf("Spotify answered 429 with Retry-After %s, longer than this call may wait (Sluice-Max-Wait and max_retry_after); %s", upstreamRA, pr.Detail)
	return &out
}

// retryAfter reads Retry-After (Go canonicalises the header name, so any
// case arrives here): whole seconds or an HTTP date. Missing, zero or
// unparsable means the default.
func retryAfter(h http.Header) time.Duration {
	return provider.RetryAfter(h, defaultRetryAfter)
}

// jitter spreads the end of a pause a little (up to 10% plus 100 ms), so
// that many sluice instances do not all return in the same millisecond. It
// only ever lengthens the pause.
func jitter(d time.Duration) time.Duration {
	return rand.N(d/10 + 100*time.Millisecond)
}

// backoff is capped exponential with full jitter on its upper half; a
// Retry-After on the server error raises it (up to the cap).
func backoff(attempt int, h http.Header) time.Duration {
	d := min(backoffBase<<(attempt-1), backoffCap)
	d = d/2 + rand.N(d/2+1)
	if h.Get("Retry-After") != "" {
		if ra := retryAfter(h); ra > d {
			d = min(ra, backoffCap)
		}
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) error {
	if err := provider.Sleep(ctx, d); err != nil {
		return fmt.Errorf("waiting to retry: %w", err)
	}
	return nil
}

// spotifyError is the Web API's error body. reason is read both inside
// the error object and at the top level, as it has been seen in both.
type spotifyError struct {
	Error struct {
		Status  int    `json:"status"`
		Message string `json:"message"`
		Reason  string `json:"reason"`
	} `json:"error"`
	Reason string `json:"reason"`
}

func isQuotaExceeded(body []byte) bool {
	var e spotifyError
	if json.Unmarshal(body, &e) != nil {
		return bytes.Contains(body, []byte("QUOTA_EXCEEDED"))
	}
	return e.Error.Reason == "QUOTA_EXCEEDED" || e.Reason == "QUOTA_EXCEEDED"
}

func errorMessage(body []byte) string {
	var e spotifyError
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	return "no error message"
}
