package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/scheduler"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 0},
		{"plain", errors.New("boom"), 1},
		{"usage", usageErrorf("bad"), 2},
		{"unreachable", &client.UnreachableError{Socket: "/s", Err: errors.New("no such file")}, 4},
		{"wrapped unreachable", fmt.Errorf("status: %w", &client.UnreachableError{Socket: "/s"}), 4},
		{"400", problem.BadParam("trackId", "bad"), 2},
		{"403", problem.Forbidden("off"), 2},
		{"404", problem.New(404, ""), 2},
		{"405", problem.New(405, ""), 2},
		{"409", problem.New(409, ""), 2},
		{"413", problem.New(413, ""), 2},
		{"422", problem.New(422, ""), 2},
		{"429", problem.RateLimited(time.Second, ""), 5},
		{"500", problem.New(500, ""), 1},
		{"502", problem.New(502, ""), 3},
		{"503", problem.New(503, ""), 6},
		{"504", problem.New(504, ""), 3},
		{"wrapped problem", fmt.Errorf("sendcode: %w", problem.New(503, "")), 6},
		{"ineo parameter_error", &ineoError{Code: 4001}, 2},
		{"ineo ip_blocked", &ineoError{Code: 10, Name: "ip_blocked"}, 3},
		{"ineo not_found", &ineoError{Code: 404}, 3},
		{"ineo login_error", fmt.Errorf("information: %w", &ineoError{Code: 606}), 2},
		{"ineo download_error", &ineoError{Code: 602}, 3},
		{"ineo unknown code", &ineoError{Code: 12345}, 3},
		{"upstream 404", &httpStatusError{Status: 404}, 2},
		{"upstream 429", &httpStatusError{Status: 429}, 5},
		{"upstream 500", &httpStatusError{Status: 500}, 3},
		{"garbled", &upstreamError{msg: "x"}, 3},
		{"timeout", &timeoutError{after: time.Second, err: context.DeadlineExceeded}, 3},
		{"silent", &exitError{code: 6}, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.err); got != tt.want {
				t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

func TestIneoCallerCodes(t *testing.T) {
	for _, c := range []int{4001, 403, 405, 1, 3, 8, 72, 101, 36, 606, 22, 32, 903, 400} {
		if !ineoCallerError(c) {
			t.Errorf("code %d should be a caller error", c)
		}
	}
	// 2 and 401 blame the daemon's IP and configured token, not the caller.
	for _, c := range []int{200, 2, 401, 10, 12, 404, 402, 408, 602, 66, 2001, 2003, 0, 13, 429, 500, 502} {
		if ineoCallerError(c) {
			t.Errorf("code %d should not be a caller error", c)
		}
	}
}

func TestRender(t *testing.T) {
	cfg := &problem.Problem{Status: 422, Title: "Invalid config; the previous config keeps serving",
		Detail: "/etc/sluice.toml:12: providers.ineo.timeout: not a duration",
		Extra:  map[string]any{"file": "/etc/sluice.toml", "line": float64(12), "key": "providers.ineo.timeout"}}
	cfgNoPos := &problem.Problem{Status: 422, Title: "Invalid config", Detail: "not a duration",
		Extra: map[string]any{"file": "/etc/sluice.toml", "line": float64(12), "key": "a.b"}}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"param", problem.BadParam("trackId", "trackId must be a Spotify track id"),
			"Invalid parameter: trackId must be a Spotify track id (parameter trackId)"},
		{"wrapped keeps context", fmt.Errorf("sendcode: %w", problem.BadParam("phone", "digits only")),
			"sendcode: Invalid parameter: digits only (parameter phone)"},
		{"retry after", problem.RateLimited(11500*time.Millisecond, "budget spent"),
			"Rate budget exceeded: budget spent; retry after 12s"},
		{"retry unknown", &problem.Problem{Status: 429, Title: "Too Many Requests"}, "Too Many Requests; retry later"},
		{"no title", &problem.Problem{Status: 503, Detail: "plugin down"}, "Service Unavailable: plugin down"},
		{"config position in detail", fmt.Errorf("reload: %w", cfg),
			"reload: Invalid config; the previous config keeps serving: /etc/sluice.toml:12: providers.ineo.timeout: not a duration"},
		{"config position added", cfgNoPos, "Invalid config: not a duration (at /etc/sluice.toml:12, key a.b)"},
		{"multi-line", problem.New(422, "a.toml:1: x: bad\na.toml:2: y: bad\n"), "Unprocessable Entity: a.toml:1: x: bad; a.toml:2: y: bad"},
		{"ineo", fmt.Errorf("login: %w", &ineoError{Code: 2003, Name: "login_fail"}),
			"login: iNeo answered status_code 2003 login_fail (wrong or used code: run login again for a new one)"},
		{"canceled", &url.Error{Op: "Get", URL: "http://sluice/v1/status", Err: context.Canceled}, "interrupted"},
		{"silent", &exitError{code: 6}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := render(tt.err); got != tt.want {
				t.Errorf("render:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestRequestErrorAddsRetryAfterFromHeader(t *testing.T) {
	o := &options{timeout: time.Second}
	p := &problem.Problem{Status: 429, Title: "Rate budget exceeded"}
	resp := &client.Response{Status: 429, Header: map[string][]string{"Retry-After": {"7"}}}
	err := o.requestError(resp, p)
	if got := render(err); !strings.HasSuffix(got, "retry after 7s") {
		t.Errorf("render = %q, want retry after 7s", got)
	}
	if exitCode(err) != 5 {
		t.Errorf("exit = %d, want 5", exitCode(err))
	}

	err = o.requestError(nil, &url.Error{Op: "Get", URL: "x", Err: context.DeadlineExceeded})
	if exitCode(err) != 3 || !strings.Contains(render(err), "within --timeout 1s") {
		t.Errorf("timeout: exit %d, %q", exitCode(err), render(err))
	}
}

// TestRenderBudgetOnce: a scheduler refusal says when the next slot comes
// once, not in the title, the detail and Retry-After; and the daemon's UTC
// timestamps come out in the local zone like sluicectl's own times.
func TestRenderBudgetOnce(t *testing.T) {
	defer func(l *time.Location) { time.Local = l }(time.Local)
	time.Local = time.FixedZone("UTC+8", 8*3600)
	budget := (&scheduler.BudgetError{Bucket: "ineo.spotify", RetryAfter: 6872 * time.Millisecond,
		Reason: "limit 6 per 7s plus 250ms margin, 0 waiting ahead"}).Error()
	paused := (&scheduler.BudgetError{Bucket: "hellorf", RetryAfter: time.Minute,
		Reason: "paused until 2026-11-27T22:00:00.5Z: hellorf answered 429"}).Error()
	for _, tc := range []struct {
		name string
		p    *problem.Problem
		want string
	}{
		{"budget", problem.RateLimited(7*time.Second, budget),
			"ineo.spotify budget used: next slot in 6.9 s (limit 6 per 7s plus 250ms margin, 0 waiting ahead)"},
		{"paused", problem.RateLimited(time.Minute, paused), "hellorf is paused until 2026-11-28 06:00:00: hellorf answered 429"},
		{"upstream pause", problem.RateLimited(time.Minute, "the upstream asked to wait; paused until 2026-11-27T22:01:00Z"),
			"Rate budget exceeded: the upstream asked to wait; paused until 2026-11-28 06:01:00"},
	} {
		got := render(tc.p)
		if got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
		if strings.Count(strings.ToLower(got), "retry") > 0 {
			t.Errorf("%s: says when to retry twice: %q", tc.name, got)
		}
	}
	// Status tables too: a pause reason's UTC time is shown local.
	if got := cell("paused until 2026-11-27T22:00:00Z by hand"); got != "paused until 2026-11-28 06:00:00 by hand" {
		t.Errorf("cell: %q", got)
	}
}
