// Package problem is the one representation of errors that sluice itself
// produces: RFC 9457 problem details. Plugins build them, the host carries
// them over RPC, and the socket API renders them; keeping a single type means
// a 400 from a plugin's validator and a 429 from the scheduler look alike to
// callers.
package problem

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/core/proto"
)

// ContentType is the media type of a rendered problem.
const ContentType = "application/problem+json"

// Type URIs. They are stable: callers may switch on them.
const (
	TypeInvalidParam = "urn:sluice:problem:invalid-parameter"
	TypeForbidden    = "urn:sluice:problem:forbidden"
	TypeNotFound     = "urn:sluice:problem:not-found"
	TypeMethod       = "urn:sluice:problem:method-not-allowed"
	TypeTooLarge     = "urn:sluice:problem:body-too-large"
	TypeConflict     = "urn:sluice:problem:conflict"
	TypeRateLimited  = "urn:sluice:problem:rate-limited"
	TypeUpstream     = "urn:sluice:problem:upstream-error"
	TypeUpstreamStop = "urn:sluice:problem:upstream-stop"
	TypeUnavailable  = "urn:sluice:problem:provider-unavailable"
	TypeTimeout      = "urn:sluice:problem:upstream-timeout"
	TypeNotCached    = "urn:sluice:problem:not-cached"
	TypeConfig       = "urn:sluice:problem:invalid-config"
	TypeInternal     = "urn:sluice:problem:internal"
	TypeUnwritable   = "urn:sluice:problem:state-unwritable"
)

// ReasonStateUnwritable is the reason of a 503 given because the scheduler
// cannot record grants (a full or read-only state_dir): sluice fails closed.
const ReasonStateUnwritable = "state_unwritable"

// ReasonFleetUnreachable is the reason of a 503 given because a fleet's
// shared rate-limit store (Redis) does not answer: sluice fails closed.
const ReasonFleetUnreachable = "fleet_unreachable"

// ReasonFleetLimitMismatch is the reason of a 503 given because this
// daemon's limit for the bucket differs from the one its fleet keeps: the
// daemon sends nothing for that bucket until the configs agree.
const ReasonFleetLimitMismatch = "fleet_limit_mismatch"

// ReasonNoBudget is the reason of a 429 sluice decides itself, with
// nothing sent: the bucket is full past the caller's max wait, or paused
// by an upstream's Retry-After for longer. An upstream's own 429 relayed
// has none.
const ReasonNoBudget = "no_budget"

// Local reports whether p is a refusal sluice decided without sending
// anything upstream for lack of budget or of a record of it (no_budget,
// state_unwritable, fleet_unreachable, fleet_limit_mismatch).
func (p *Problem) Local() bool {
	switch p.Reason {
	case ReasonNoBudget, ReasonStateUnwritable, ReasonFleetUnreachable, ReasonFleetLimitMismatch:
		return true
	}
	return false
}

// Problem is an RFC 9457 problem detail. It is also an error, so code deep in
// a call can return one and the edge renders it unchanged.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Provider  string `json:"provider,omitempty"`
	Operation string `json:"operation,omitempty"`
	Param     string `json:"param,omitempty"`
	// Reason is a machine-readable cause callers may switch on.
	Reason     string        `json:"reason,omitempty"`
	RetryAfter time.Duration `json:"-"`
	// Allow, on a 405, is sent as the Allow header (RFC 9110 15.5.6: the
	// methods the target accepts).
	Allow []string `json:"-"`
	// Extra members (e.g. known operations, config error position).
	Extra map[string]any `json:"-"`
}

func (p *Problem) Error() string {
	if p.Detail != "" {
		return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail)
	}
	return fmt.Sprintf("%d %s", p.Status, p.Title)
}

// MarshalJSON flattens Extra into the top-level object, as RFC 9457 extension
// members are, and adds retry_after in seconds when set.
func (p *Problem) MarshalJSON() ([]byte, error) {
	m := map[string]any{"type": p.Type, "title": p.Title, "status": p.Status}
	for k, v := range p.Extra {
		m[k] = v
	}
	if p.Detail != "" {
		m["detail"] = p.Detail
	}
	if p.Provider != "" {
		m["provider"] = p.Provider
	}
	if p.Operation != "" {
		m["operation"] = p.Operation
	}
	if p.Param != "" {
		m["param"] = p.Param
	}
	if p.Reason != "" {
		m["reason"] = p.Reason
	}
	if p.RetryAfter > 0 {
		m["retry_after"] = RetryAfterSeconds(p.RetryAfter)
	}
	return json.Marshal(m)
}

// UnmarshalJSON is the inverse of MarshalJSON, used by the client package.
func (p *Problem) UnmarshalJSON(b []byte) error {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	str := func(k string) string {
		s, _ := m[k].(string)
		delete(m, k)
		return s
	}
	p.Type, p.Title, p.Detail = str("type"), str("title"), str("detail")
	p.Provider, p.Operation, p.Param = str("provider"), str("operation"), str("param")
	p.Reason = str("reason")
	if s, ok := m["status"].(float64); ok {
		p.Status = int(s)
	}
	delete(m, "status")
	if s, ok := m["retry_after"].(float64); ok {
		p.RetryAfter = time.Duration(s * float64(time.Second))
	}
	delete(m, "retry_after")
	if len(m) > 0 {
		p.Extra = m
	}
	return nil
}

// RetryAfterSeconds rounds up, so a caller that waits the advertised time is
// never early.
func RetryAfterSeconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}

// Write renders p as the HTTP answer.
func Write(w http.ResponseWriter, p *Problem) {
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	if p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(RetryAfterSeconds(p.RetryAfter)))
	}
	if len(p.Allow) > 0 {
		h.Set("Allow", strings.Join(p.Allow, ", "))
	}
	w.WriteHeader(p.Status)
	b, _ := json.Marshal(p)
	w.Write(append(b, '\n'))
}

// From returns the Problem inside err, or a 500 one wrapping it. Only errors
// that are deliberately Problems reach callers verbatim; anything else is
// summarised, because raw errors may carry internal detail.
func From(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	return &Problem{Type: TypeInternal, Title: "Internal error", Status: http.StatusInternalServerError, Detail: err.Error()}
}

// New builds a problem with a type chosen from the status.
func New(status int, detail string) *Problem {
	return &Problem{Type: typeFor(status), Title: http.StatusText(status), Status: status, Detail: detail}
}

func typeFor(status int) string {
	switch status {
	case 400:
		return TypeInvalidParam
	case 403:
		return TypeForbidden
	case 404:
		return TypeNotFound
	case 405:
		return TypeMethod
	case 409:
		return TypeConflict
	case 413:
		return TypeTooLarge
	case 429:
		return TypeRateLimited
	case 502:
		return TypeUpstream
	case 503:
		return TypeUnavailable
	case 504:
		return TypeTimeout
	}
	return TypeInternal
}

// BadParam is the 400 for a missing or invalid parameter, naming it.
func BadParam(name, detail string) *Problem {
	p := New(http.StatusBadRequest, detail)
	p.Title = "Invalid parameter"
	p.Param = name
	return p
}

// Forbidden is the 403 for an operation disabled by policy.
func Forbidden(detail string) *Problem {
	p := New(http.StatusForbidden, detail)
	p.Title = "Operation disabled by policy"
	return p
}

// RateLimited is the 429 when the rate budget cannot serve within the
// caller's maximum wait.
func RateLimited(retryAfter time.Duration, detail string) *Problem {
	p := New(http.StatusTooManyRequests, detail)
	p.Title = "Rate budget exceeded"
	p.RetryAfter = retryAfter
	return p
}

// NoBudget is RateLimited for a refusal sluice decided itself
// (ReasonNoBudget).
func NoBudget(retryAfter time.Duration, detail string) *Problem {
	p := RateLimited(retryAfter, detail)
	p.Reason = ReasonNoBudget
	return p
}

// StateUnwritable is the 503 while the scheduler holds every bucket because
// it cannot record grants: nothing was sent upstream.
func StateUnwritable(retryAfter time.Duration, detail string) *Problem {
	p := New(http.StatusServiceUnavailable, detail)
	p.Type = TypeUnwritable
	p.Title = "Rate-limit state cannot be written"
	p.Reason = ReasonStateUnwritable
	p.RetryAfter = retryAfter
	return p
}

// FleetUnreachable is the 503 while the fleet's shared store cannot be
// reached: nothing was sent upstream.
func FleetUnreachable(retryAfter time.Duration, detail string) *Problem {
	p := New(http.StatusServiceUnavailable, detail)
	p.Title = "Fleet rate-limit state unreachable"
	p.Reason = ReasonFleetUnreachable
	p.RetryAfter = retryAfter
	return p
}

// FleetLimitMismatch is the 503 while this daemon's limit for a bucket
// differs from its fleet's: nothing was sent upstream.
func FleetLimitMismatch(retryAfter time.Duration, detail string) *Problem {
	p := New(http.StatusServiceUnavailable, detail)
	p.Title = "Rate limit differs from the fleet's"
	p.Reason = ReasonFleetLimitMismatch
	p.RetryAfter = retryAfter
	return p
}

// ToProto converts for the plugin RPC.
func ToProto(p *Problem) *proto.Problem {
	return &proto.Problem{Status: int32(p.Status), Type: p.Type, Title: p.Title, Detail: p.Detail,
		RetryAfterMs: p.RetryAfter.Milliseconds(), Param: p.Param, Reason: p.Reason}
}

// FromProto converts from the plugin RPC.
func FromProto(m *proto.Problem) *Problem {
	p := &Problem{Status: int(m.GetStatus()), Type: m.GetType(), Title: m.GetTitle(), Detail: m.GetDetail(),
		RetryAfter: time.Duration(m.GetRetryAfterMs()) * time.Millisecond, Param: m.GetParam(), Reason: m.GetReason()}
	if p.Status == 0 {
		p.Status = http.StatusBadGateway
	}
	if p.Type == "" {
		p.Type = typeFor(p.Status)
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	return p
}
