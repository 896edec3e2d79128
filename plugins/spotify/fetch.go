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
	// max5xxRetries bounds how often one call retries a 500/502/503/504;
	// backoffBase and backoffCap shape the capped exponential backoff
	// before a retry when the answer named no Retry-After.
	max5xxRetries = 3
	backoffBase   = 250 * time.Millisecond
	backoffCap    = 4 * time.Second
	// maxStaleTokens bounds how often one call gives a grant up because its
	// token reached its refresh time during the wait for it.
	maxStaleTokens = 3
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
// may wait; 5xx with Retry-After → the same pause, and Spotify's answer is
// relayed when this caller cannot wait it out; other 5xx → retry with
// backoff. Each attempt is a separate grant.
func (p *spotify) fetch(ctx context.Context, cfg *config, up upstream, path string, params url.Values) (*result, error) {
	// Every wait for spotify.api, a queue or a pause after a 429 or a 5xx,
	// is bounded by max_retry_after as well as the caller's Sluice-Max-Wait:
	// past that the caller gets its answer at once instead of hanging.
	ctx = provider.LimitWait(ctx, cfg.maxRetryAfter)
	target := cfg.apiBase + path
	if q := params.Encode(); q != "" {
		target += "?" + q
	}
	refreshed := false
	throttled, failures, stale := 0, 0, 0
	var lastRetryAfter time.Duration
	// pausedBy is the 5xx answer whose Retry-After paused the bucket, kept
	// for a caller that turns out unable to wait the pause out.
	var pausedBy *result
	for {
		// The pause of spotify.api is waited out (or the call refused, as
		// Do would) before a token is fetched: a token request, one that
		// may be due, would otherwise be spent on a call answered locally,
		// or reach Spotify while its Retry-After still runs.
		var err error
		if ctx, err = up.AwaitPause(ctx, bucketAPI); err != nil {
			return refusal(err, pausedBy, lastRetryAfter)
		}
		tok, err := p.tokens.get(ctx, cfg, up)
		if err != nil {
			return nil, err
		}
		resp, err := up.Do(ctx, bucketAPI, func(ctx context.Context) (*http.Request, error) {
			// The grant may have come long after tok was fetched: a refresh
			// by another caller meanwhile is picked up, and a token that has
			// reached its refresh time is not sent at all.
			fresh, err := p.tokens.sendable(time.Now())
			if err != nil {
				return nil, err
			}
			tok = fresh
			r, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
			if err != nil {
				return nil, err
			}
			r.Header.Set("Authorization", "Bearer "+tok)
			r.Header.Set("Accept", "application/json")
			return r, nil
		})
		if errors.Is(err, errTokenStale) {
			// The wait outlasted what was left of the token, or another
			// caller's 401 dropped it meanwhile. Each round fetches a new
			// token, so repeats mean waits keep outlasting tokens, and more
			// rounds would only spend grants.
			if stale++; stale > maxStaleTokens {
				return nil, problem.New(http.StatusServiceUnavailable, "Spotify's access token kept reaching its refresh time while the request waited for its turn")
			}
			continue
		}
		if err != nil {
			return refusal(err, pausedBy, lastRetryAfter)
		}
		pausedBy = nil
		code := resp.StatusCode
		serverRA := time.Duration(0)
		if isServerError(code) {
			// Paused as soon as the head is in, before the body is read:
			// the spotify.api turn is free again from that moment (the SDK
			// pauses by itself only on a 429), and a caller sending in
			// between would arrive inside the Retry-After. Only an explicit
			// Retry-After counts; a bare 5xx is backed off below.
			if serverRA = provider.RetryAfter(resp.Header, 0); serverRA > 0 {
				p.pauseAPI(ctx, up, serverRA, fmt.Sprintf("Spotify answered %d with Retry-After %s", code, serverRA))
			}
		}
		body, err := provider.ReadBody(ctx, resp, maxAnswer)
		if err != nil {
			return nil, err
		}
		res := &result{status: code, contentType: resp.Header.Get("Content-Type"), body: body}
		if res.contentType == "" {
			res.contentType = "application/json; charset=utf-8"
		}
		switch {
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
			reason := fmt.Sprintf("Spotify answered 429 with Retry-After %s", ra)
			quota := isQuotaExceeded(body)
			if quota {
				reason = fmt.Sprintf("Spotify answered 429 QUOTA_EXCEEDED with Retry-After %s", ra)
			}
			until := p.pauseAPI(ctx, up, ra, reason, "quota_exceeded", quota)
			// A caller told to come back is told when the pause ends:
			// Spotify's Retry-After plus the jitter. Spotify's value alone
			// would bring it back while every request is still held.
			comeBack := max(ra, time.Until(until))
			if quota {
				// The app's quota is gone: retrying cannot help, so the
				// caller hears it now.
				return nil, problem.RateLimited(comeBack, "Spotify says the app's quota is exceeded (QUOTA_EXCEEDED); not retried")
			}
			throttled++
			if throttled > maxThrottleRetries {
				return nil, problem.RateLimited(comeBack, fmt.Sprintf("Spotify answered 429 %d times in a row", throttled))
			}
			// The next Do waits out the pause (it is in the scheduler now),
			// or is denied at once when the pause is longer than this
			// caller may wait.
		case isServerError(code):
			if failures >= max5xxRetries {
				return res, nil
			}
			failures++
			if serverRA > 0 {
				// Spotify said when to come back, for everyone: the next Do
				// waits out the pause like after a 429.
				pausedBy = res
				p.log.Warn("Spotify answered a server error with Retry-After; retrying after the pause", "status", code, "attempt", failures)
				continue
			}
			d := backoff(failures)
			p.log.Warn("Spotify answered a server error; retrying", "status", code, "attempt", failures, "backoff", d.String())
			if err := sleep(ctx, d); err != nil {
				return nil, err
			}
		default:
			return res, nil
		}
	}
}

// isServerError reports the statuses Spotify documents as temporary.
func isServerError(code int) bool {
	switch code {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// refusal is the answer to a call that cannot send to spotify.api: err,
// with Spotify's last Retry-After added to a 429 (denied), or, when the
// pause that stops it was asked for by a 5xx (pausedBy), that answer.
func refusal(err error, pausedBy *result, upstreamRA time.Duration) (*result, error) {
	var pr *problem.Problem
	if pausedBy != nil && errors.As(err, &pr) && pr.Status == http.StatusTooManyRequests {
		// The pause a 5xx asked for is longer than this caller may
		// wait: Spotify's own answer says more than a 429 would.
		return pausedBy, nil
	}
	return nil, denied(err, upstreamRA)
}

// pauseAPI pauses spotify.api for every caller for ra plus jitter and
// returns when the pause ends. The pause must outlive the caller that met
// the answer: the others still have to honour it.
func (p *spotify) pauseAPI(ctx context.Context, up upstream, ra time.Duration, reason string, attrs ...any) time.Time {
	until := time.Now().Add(ra + jitter(ra))
	p.log.Warn("Spotify asked to wait: pausing the buckets for every caller", append([]any{"buckets", bucketAPI + " " + bucketAccounts,
		"reason", reason, "until", until.Format(time.RFC3339Nano)}, attrs...)...)
	// The accounts bucket too: Spotify counts any request during its
	// Retry-After, and a token request made while the pause runs would
	// be one. The host keeps both pauses (across a restart, fleet-wide),
	// so a plugin that has not seen the 429 itself waits as well.
	for _, b := range []string{bucketAPI, bucketAccounts} {
		why := reason
		if b == bucketAccounts {
			why = "held with " + bucketAPI + ": " + reason
		}
		if err := up.Pause(context.WithoutCancel(ctx), b, until, why); err != nil {
			p.log.Error("could not pause bucket", "bucket", b, "err", err)
		}
	}
	return until
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

// backoff is capped exponential with full jitter on its upper half. It
// only applies to a server error without Retry-After: one with it pauses
// the bucket instead.
func backoff(attempt int) time.Duration {
	d := min(backoffBase<<(attempt-1), backoffCap)
	return d/2 + rand.N(d/2+1)
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
