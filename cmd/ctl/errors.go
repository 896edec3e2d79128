package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/core/problem"
)

// Exit statuses; rootLong documents them.
const (
	exitOK          = 0
	exitInternal    = 1
	exitCaller      = 2
	exitUpstream    = 3
	exitUnreachable = 4
	exitRateLimited = 5
	exitUnavailable = 6
)

// exitCoder is an error that knows its exit status. sluicectl's own error
// types implement it; daemon problems and client errors are mapped by
// exitCode instead.
type exitCoder interface {
	ExitCode() int
}

// exitCode maps an error to the documented exit status.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ec exitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	var ue *client.UnreachableError
	if errors.As(err, &ue) {
		return exitUnreachable
	}
	var p *problem.Problem
	if errors.As(err, &p) {
		return problemExit(p.Status)
	}
	return exitInternal
}

// problemExit maps the status of a problem sluiced produced. A 500 is the
// daemon's own fault, hence internal; every other 4xx blames the request.
func problemExit(status int) int {
	switch {
	case status == http.StatusTooManyRequests:
		return exitRateLimited
	case status == http.StatusServiceUnavailable:
		return exitUnavailable
	case status == http.StatusBadGateway || status == http.StatusGatewayTimeout:
		return exitUpstream
	case status >= 400 && status < 500:
		return exitCaller
	}
	return exitInternal
}

// ineoCallerError reports whether an iNeo status_code blames the request
// (wrong parameters, token, phone, code or order of steps) rather than the
// service. The plugin's code table is authoritative and arrives in the
// Sluice-Upstream-Class header; this list is the fallback for answers
// without it. Every other non-200 code, bans and pauses included, is an
// upstream error.
func ineoCallerError(code int) bool {
	switch code {
	case 400, 403, 405, 4001, 1, 3, 8, 22, 32, 36, 72, 101, 606, 903:
		return true
	}
	return false
}

// usageError is a mistake in how sluicectl was invoked.
type usageError struct {
	err error
	// quiet leaves out the "see --help" hint, for mistakes --help would not
	// explain (an aborted confirmation).
	quiet bool
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }
func (e *usageError) ExitCode() int { return exitCaller }

func usageErrorf(format string, a ...any) error {
	return &usageError{err: fmt.Errorf(format, a...)}
}

// ineoError is a non-200 status_code in iNeo's answer envelope: the daemon
// relays such answers as HTTP 200, so the outcome has to be read from the
// body.
type ineoError struct {
	Code int
	Name string // e.g. "ip_blocked"; may be empty
	// Class is the plugin's verdict from Sluice-Upstream-Class
	// ("caller-error", "stop", ...); may be empty.
	Class string
}

func (e *ineoError) Error() string {
	msg := "iNeo answered status_code " + strconv.Itoa(e.Code)
	if e.Name != "" {
		msg += " " + e.Name
	}
	if h := ineoHint(e.Code); h != "" {
		msg += " (" + h + ")"
	}
	return msg
}

func (e *ineoError) ExitCode() int {
	if e.Class == "caller-error" || (e.Class == "" && ineoCallerError(e.Code)) {
		return exitCaller
	}
	return exitUpstream
}

// ineoHint says what to do about the codes a user is likely to meet.
func ineoHint(code int) string {
	switch code {
	case 606:
		return "log in first: sluicectl ineo tg login PHONE"
	case 36:
		return "wrong phone number, or Telegram closed the session: log in again"
	case 2003:
		return "wrong or used code: run login again for a new one"
	case 32:
		return "this account already has an application: see sluicectl ineo tg info PHONE"
	case 903:
		return "platform not accepted"
	case 22:
		return "deletion was not confirmed"
	case 404:
		return "nothing found"
	case 602:
		return "no download link could be made; try again later"
	case 10, 12, 408, 6:
		return "sluiced now holds calls to this service for a while; a human should look"
	case 66, 2001:
		return "the service is off or being updated; try again later"
	case 429:
		return "too many requests; sluiced holds calls briefly"
	}
	return ""
}

// httpStatusError is a non-2xx answer that is not a problem document, i.e.
// an upstream's own status relayed by the daemon.
type httpStatusError struct {
	Status int
	Body   string // start of the body, for the message
}

func (e *httpStatusError) Error() string {
	msg := fmt.Sprintf("upstream answered HTTP %d %s", e.Status, http.StatusText(e.Status))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

func (e *httpStatusError) ExitCode() int {
	switch {
	case e.Status == http.StatusTooManyRequests:
		return exitRateLimited
	case e.Status >= 400 && e.Status < 500:
		return exitCaller
	}
	return exitUpstream
}

// newHTTPStatusError keeps the message to one short line whatever the body.
func newHTTPStatusError(status int, body []byte) *httpStatusError {
	s := strings.Join(strings.Fields(string(body)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return &httpStatusError{Status: status, Body: s}
}

// upstreamError is an upstream answer sluicectl cannot make sense of.
type upstreamError struct{ msg string }

func (e *upstreamError) Error() string { return e.msg }
func (e *upstreamError) ExitCode() int { return exitUpstream }

// timeoutError is a request that got no (complete) answer within --timeout.
// It counts as an upstream error: the daemon waits on upstreams and rate
// budgets, which is what makes a request slow.
type timeoutError struct {
	after time.Duration
	err   error
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("no answer from sluiced within --timeout %s: %v", e.after, e.err)
}
func (e *timeoutError) Unwrap() error { return e.err }
func (e *timeoutError) ExitCode() int { return exitUpstream }

// exitError ends with a status and nothing on stderr, for outcomes the
// command has already printed (health not ok).
type exitError struct{ code int }

func (e *exitError) Error() string { return "" }
func (e *exitError) ExitCode() int { return e.code }

// requestError classifies an error from a request to the daemon. resp, when
// the client returned one alongside a problem, supplies Retry-After if the
// problem body lacks it.
//
// With --json the problem document is printed on stdout as it came, so a
// script always gets the daemon's JSON; the one-line message still goes to
// stderr.
func (o *options) requestError(resp *client.Response, err error) error {
	return o.classify(resp, err, o.json)
}

// classify is requestError with the --json printing under the caller's
// control: a command that swallows the error (version) prints nothing.
func (o *options) classify(resp *client.Response, err error, show bool) error {
	var p *problem.Problem
	if errors.As(err, &p) {
		if resp != nil {
			addRetryAfter(p, resp.Header)
			if show {
				if werr := o.writeBody(resp.Body); werr != nil {
					return werr
				}
			}
		}
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &timeoutError{after: o.timeout, err: err}
	}
	return err
}

// addRetryAfter fills a 429's RetryAfter from the header when the body
// carried no retry_after member.
func addRetryAfter(p *problem.Problem, h http.Header) {
	if p.RetryAfter > 0 || h == nil {
		return
	}
	if s, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After"))); err == nil && s > 0 {
		p.RetryAfter = time.Duration(s) * time.Second
	}
}

// render turns an error into the one line printed after "sluicectl: ".
// Problems from the daemon are spelled out (title, detail, parameter,
// config position, retry time) wherever they sit in the wrapped chain.
func render(err error) string {
	msg := err.Error()
	var p *problem.Problem
	if errors.As(err, &p) {
		msg = strings.Replace(msg, p.Error(), describeProblem(p), 1)
	}
	if errors.Is(err, context.Canceled) {
		msg = "interrupted"
	}
	return oneLine(msg)
}

// describeProblem renders a problem for people.
func describeProblem(p *problem.Problem) string {
	if p.Status == http.StatusTooManyRequests {
		if s, ok := budgetMessage(p.Detail); ok {
			return s
		}
	}
	title := p.Title
	if title == "" {
		title = http.StatusText(p.Status)
	}
	s := title
	detail := localTimes(p.Detail)
	if detail != "" {
		s += ": " + detail
	}
	if p.Param != "" {
		s += " (parameter " + p.Param + ")"
	}
	if loc := configPosition(p); loc != "" {
		s += " (at " + loc + ")"
	}
	if p.Status == http.StatusTooManyRequests && !strings.Contains(p.Detail, "paused until") {
		if p.RetryAfter > 0 {
			s += fmt.Sprintf("; retry after %ds", problem.RetryAfterSeconds(p.RetryAfter))
		} else {
			s += "; retry later"
		}
	}
	return s
}

// configPosition is "file:line, key k" from a 422's extension members, or ""
// when the detail already names the position (config errors render as
// "file:line: key: message") or nothing is known.
func configPosition(p *problem.Problem) string {
	file, _ := p.Extra["file"].(string)
	key, _ := p.Extra["key"].(string)
	line, _ := p.Extra["line"].(float64)
	at := file
	if line > 0 {
		if at != "" {
			at += ":"
		} else {
			at = "line "
		}
		at += strconv.Itoa(int(line))
	}
	if at != "" && strings.Contains(p.Detail, at) {
		return ""
	}
	if key != "" {
		if at != "" {
			at += ", "
		}
		at += "key " + key
	}
	return at
}

// oneLine folds a multi-line message (several config errors, say) into the
// single line sluicectl promises.
func oneLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	out := lines[:0]
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}

// budgetDetail is the scheduler's refusal as the daemon words it (see
// scheduler.BudgetError): bucket, when the next grant would come, and why.
var budgetDetail = regexp.MustCompile(`^scheduler: bucket "([^"]+)": rate budget exceeded: retry after (\S+) \((.*)\)$`)

// budgetMessage says a scheduler refusal once, in words: "ineo.spotify
// budget used: next slot in 6.9 s (limit 6 per 7s plus 250ms margin, 0
// waiting ahead)" rather than the title, the detail's "rate budget exceeded:
// retry after 6.872s" and the Retry-After seconds after it.
func budgetMessage(detail string) (string, bool) {
	m := budgetDetail.FindStringSubmatch(strings.TrimSpace(detail))
	if m == nil {
		return "", false
	}
	bucket, reason := m[1], m[3]
	if until, why, ok := strings.Cut(reason, ": "); ok && strings.HasPrefix(until, "paused until ") {
		return bucket + " is " + localTimes(until) + ": " + why, true
	}
	next := m[2]
	if d, err := time.ParseDuration(next); err == nil {
		next = strconv.FormatFloat(math.Ceil(d.Seconds()*10)/10, 'f', 1, 64) + " s"
	}
	return bucket + " budget used: next slot in " + next + " (" + reason + ")", true
}
