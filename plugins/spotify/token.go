package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/provider"
)

// tokenSource holds the one Client Credentials token all callers share.
//
// A token is fetched once however many callers need it at the same moment
// (singleflight), refreshed when a call finds it within the refresh margin
// of its expiry, and dropped when the API answers 401 for it. A rejection of
// the credentials themselves (400 invalid_client, or any other refusal of
// the token request) is remembered until the credentials change: sending the
// same wrong secret again cannot succeed, and a retry loop would only hammer
// the accounts service.
type tokenSource struct {
	log *slog.Logger
	sf  singleflight.Group

	mu sync.Mutex
	// gen counts credential changes; a fetch started under an older
	// generation must not install its result.
	gen       uint64
	token     string
	refreshAt time.Time
	rejected  *problem.Problem
}

func newTokenSource(l *slog.Logger) *tokenSource { return &tokenSource{log: l} }

// reset forgets the token and any rejection (new credentials).
func (t *tokenSource) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
	t.token, t.refreshAt, t.rejected = "", time.Time{}, nil
}

// current returns the token if it is still fresh.
func (t *tokenSource) current(now time.Time) (string, uint64, *problem.Problem) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rejected != nil {
		return "", t.gen, t.rejected
	}
	if t.token != "" && now.Before(t.refreshAt) {
		return t.token, t.gen, nil
	}
	return "", t.gen, nil
}

// errTokenStale is returned by a request builder whose grant came after the
// token's refresh time: the wait for the grant (a queue, or a pause after a
// 429 or a 5xx) can outlast what was left of the token, and a request sent
// with it would cost a request and come back 401. The grant is given up
// unsent and the call asks for a token again.
var errTokenStale = errors.New("the Spotify token reached its refresh time while the request waited for its turn")

// sendable returns the token to put on a request leaving now: the one
// installed, if it is before its refresh time. A refresh by another caller
// during the wait is picked up here; a token invalidated after a 401, or
// one past its refresh time, is not sent at all (errTokenStale).
func (t *tokenSource) sendable(now time.Time) (string, error) {
	tok, _, rej := t.current(now)
	if rej != nil {
		return "", rej
	}
	if tok == "" {
		return "", errTokenStale
	}
	return tok, nil
}

// invalidate drops tok after the API refused it, unless it has been
// replaced already (by a caller that saw the same 401 first).
func (t *tokenSource) invalidate(tok string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token == tok {
		t.token = ""
	}
}

// get returns a fresh token, fetching one if needed. Callers that arrive
// while a fetch runs wait for it (or for their own context).
func (t *tokenSource) get(ctx context.Context, cfg *config, up upstream) (string, error) {
	tok, gen, rej := t.current(time.Now())
	if rej != nil {
		return "", rej
	}
	if tok != "" {
		return tok, nil
	}
	// The fetch outlives the caller that started it: the others waiting on
	// it must not fail because the first one gave up. Its values (the
	// caller's max wait, request id) stay.
	for joined := 0; ; joined++ {
		led := false
		ch := t.sf.DoChan(strconv.FormatUint(gen, 10), func() (any, error) {
			led = true
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.timeout+cfg.maxRetryAfter)
			defer cancel()
			return t.fetch(fctx, cfg, up, gen)
		})
		select {
		case r := <-ch:
			var p *problem.Problem
			if r.Err != nil && !led && joined < maxJoins && errors.As(r.Err, &p) && p.Reason == problem.ReasonNoBudget {
				// Refused for want of budget (a pause: spotify.accounts
				// is paused with spotify.api after a 429) within the max
				// wait of the caller who started the fetch, which may
				// be shorter than this one's: ask again, under its own.
				continue
			}
			if r.Err != nil {
				return "", r.Err
			}
			return r.Val.(string), nil
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for a Spotify token: %w", ctx.Err())
		}
	}
}

// maxJoins bounds how often a caller asks again after a token fetch it
// joined was refused under another caller's max wait; past it, it takes
// that refusal.
const maxJoins = 4

// tokenAnswer is the accounts service's answer; errors use RFC 6749's
// error/error_description.
type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// tokenAttempts bounds the token requests of one fetch. The accounts
// service's 5xx is "temporary: retry later" like the API's; each attempt is
// a grant of its own from spotify.accounts, and a 503's Retry-After pauses
// that bucket before the next.
const tokenAttempts = 3

func (t *tokenSource) fetch(ctx context.Context, cfg *config, up upstream, gen uint64) (string, error) {
	for attempt := 1; ; attempt++ {
		tok, again, err := t.fetchOnce(ctx, cfg, up, gen)
		if !again || attempt == tokenAttempts {
			return tok, err
		}
		d := backoff(attempt)
		t.log.Warn("Spotify's accounts service answered a server error; retrying", "attempt", attempt, "backoff", d.String())
		if err := sleep(ctx, d); err != nil {
			return "", err
		}
	}
}

// fetchOnce makes one token request; again reports a server error worth
// another try.
func (t *tokenSource) fetchOnce(ctx context.Context, cfg *config, up upstream, gen uint64) (_ string, again bool, _ error) {
	// A caller whose check raced with the end of the previous fetch would
	// start a second one: look again first.
	if tok, _, rej := t.current(time.Now()); rej != nil {
		return "", false, rej
	} else if tok != "" {
		return tok, false, nil
	}
	var sent time.Time
	resp, err := up.Do(ctx, bucketAccounts, func(ctx context.Context) (*http.Request, error) {
		form := url.Values{"grant_type": {"client_credentials"}}
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.accountsBase+"/api/token", strings.NewReader(form.Encode()))
		if err != nil {
			return nil, err
		}
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(cfg.clientID+":"+cfg.secret)))
		sent = time.Now()
		return r, nil
	})
	if err != nil {
		return "", false, err
	}
	body, err := provider.ReadBody(ctx, resp, 1<<16)
	if err != nil {
		return "", false, err
	}
	var ans tokenAnswer
	jsonErr := json.Unmarshal(body, &ans)
	switch {
	case resp.StatusCode == http.StatusOK:
		if jsonErr != nil || ans.AccessToken == "" || (ans.TokenType != "" && !strings.EqualFold(ans.TokenType, "bearer")) {
			return "", false, problem.New(http.StatusBadGateway, "Spotify's accounts service answered 200 without a bearer access_token")
		}
		return t.install(ans, sent, cfg, gen), false, nil
	case resp.StatusCode == http.StatusTooManyRequests:
		ra := retryAfter(resp.Header)
		if err := up.Pause(context.WithoutCancel(ctx), bucketAccounts, time.Now().Add(ra), "Spotify accounts service answered 429"); err != nil {
			t.log.Error("could not pause bucket", "bucket", bucketAccounts, "err", err)
		}
		return "", false, problem.RateLimited(ra, "Spotify's accounts service is rate limiting token requests")
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout:
		return "", false, t.reject(resp.StatusCode, ans, gen)
	default:
		return "", resp.StatusCode >= 500, problem.New(http.StatusBadGateway, fmt.Sprintf("Spotify's accounts service answered HTTP %d to the token request", resp.StatusCode))
	}
}

// install stores a new token. The lifetime counts from when the request was
// sent, so the local expiry is never later than Spotify's. The refresh
// margin is capped at half the lifetime, or a short-lived token would be
// refreshed on every call.
func (t *tokenSource) install(ans tokenAnswer, sent time.Time, cfg *config, gen uint64) string {
	life := time.Duration(ans.ExpiresIn) * time.Second
	if life <= 0 {
		life = time.Hour // the documented lifetime
	}
	margin := min(cfg.refreshMargin, life/2)
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen == t.gen {
		t.token, t.refreshAt = ans.AccessToken, sent.Add(life-margin)
	}
	t.log.Info("fetched a Spotify access token", "expires_in_s", ans.ExpiresIn, "refresh_in", (life - margin).Round(time.Second).String())
	return ans.AccessToken
}

// reject remembers a refusal of the credentials. The log line is loud
// because nothing works until a human fixes the config; it names the
// upstream's error, never the secret.
func (t *tokenSource) reject(status int, ans tokenAnswer, gen uint64) *problem.Problem {
	code := ans.Error
	if code == "" {
		code = "HTTP " + strconv.Itoa(status)
	}
	what := code
	if ans.Description != "" {
		what += ": " + ans.Description
	}
	p := problem.New(http.StatusServiceUnavailable, fmt.Sprintf(
		"Spotify refused sluice's client credentials (%s); no token is requested again until client_id/client_secret in [providers.spotify] change and the config is reloaded", what))
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen == t.gen {
		t.rejected = p
	}
	t.log.Error("SPOTIFY CREDENTIALS REJECTED: the accounts service refused the token request; every Spotify call fails until the config is fixed",
		"status", status, "error", code, "error_description", ans.Description)
	return p
}
