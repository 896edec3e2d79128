package ineosim

import (
	"fmt"
	"net"
	"net/http"
)

// Fault is a transport-level failure a test can inject, beyond the
// documented status codes FailNext covers.
type Fault int

const (
	// FaultReset sends part of an answer, then resets the connection.
	FaultReset Fault = iota + 1
	// FaultTruncated promises a longer body than it sends, then closes.
	FaultTruncated
	// FaultHTML500 answers an HTML error page with HTTP 500, as a broken
	// PHP host or proxy in front of the service would.
	FaultHTML500
	// FaultNotJSON answers HTTP 200 with a body that is not JSON.
	FaultNotJSON
)

// HTTPFault is an answer with an HTTP status other than 200. The vendor
// says the HTTP status is "usually" 200 even on failure, not always, and
// its code table lists HTTP-like codes (429, 500, 502, 503, 504): a PHP
// host that sets the status to match status_code, or a proxy or rate
// limiter in front of the service, can answer this way. Opt-in only: the
// default answers stay HTTP 200 as the originals show them.
type HTTPFault struct {
	// Status is the HTTP status, e.g. 403, 429 or 503; anything but 200.
	Status int
	// Envelope sends iNeo's JSON envelope with StatusCode as status_code
	// (0 is a documented code, unknown_error, hence the separate flag).
	// Without it the body is a short HTML error page, as a proxy would
	// send.
	Envelope   bool
	StatusCode int
	// RetryAfter, if not empty, is sent verbatim as Retry-After.
	RetryAfter string
}

// faultBody is InjectBody's kind: not exported, since it needs a body.
const faultBody Fault = -1

// fault is one queued failure: a transport-level Fault, an injected body
// (faultBody), or an HTTPFault when kind is zero.
type fault struct {
	kind Fault
	http HTTPFault
	body string
}

// InjectFault makes the next request to service (after it is counted as an
// arrival) fail with f instead of its answer. Calls queue, together with
// InjectHTTPFault's, in call order.
func (s *Sim) InjectFault(service string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.serviceLocked(service)
	svc.faults = append(svc.faults, fault{kind: f})
}

// InjectHTTPFault makes the next request to service (after it is counted
// as an arrival) answer f instead of its answer. Calls queue, together
// with InjectFault's, in call order. A Status of 200 or one outside
// 100..999 panics: it is a bug in the calling test (FailNext covers a
// status_code under HTTP 200).
func (s *Sim) InjectHTTPFault(service string, f HTTPFault) {
	if f.Status == http.StatusOK || f.Status < 100 || f.Status > 999 {
		panic(fmt.Sprintf("ineosim: InjectHTTPFault with HTTP status %d; want a non-200 status (use FailNext for a status_code under 200)", f.Status))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.serviceLocked(service)
	svc.faults = append(svc.faults, fault{http: f})
}

// InjectBody makes the next request to service (after it is counted as an
// arrival) answer HTTP 200, Content-Type application/json, with body
// verbatim instead of its answer: a reply the service would never give
// (a success without its result, say), as a broken deployment or a proxy
// rewriting answers could. Calls queue, with InjectFault's and
// InjectHTTPFault's, in call order. Off unless a test calls it.
func (s *Sim) InjectBody(service, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.serviceLocked(service)
	svc.faults = append(svc.faults, fault{kind: faultBody, body: body})
}

func (s *Sim) popFaultLocked(svc *service) (fault, bool) {
	if len(svc.faults) == 0 {
		return fault{}, false
	}
	f := svc.faults[0]
	svc.faults = svc.faults[1:]
	return f, true
}

// writeFault renders a queued fault; it reports false when nothing was
// written (a Hijack the ResponseWriter does not support).
func writeFault(w http.ResponseWriter, qf fault) bool {
	if qf.kind == 0 {
		writeHTTPFault(w, qf.http)
		return true
	}
	switch f := qf.kind; f {
	case faultBody:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(qf.body))
	case FaultHTML500:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte("<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1></body></html>"))
	case FaultNotJSON:
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("Warning: mysqli_connect(): (HY000/2002) in /var/www/api/spotify.php on line 12"))
	case FaultReset, FaultTruncated:
		hj, ok := w.(http.Hijacker)
		if !ok {
			return false
		}
		conn, buf, err := hj.Hijack()
		if err != nil {
			return false
		}
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"ok\":true,\"status\":\"succ")
		buf.Flush()
		if tc, ok := conn.(*net.TCPConn); ok && f == FaultReset {
			tc.SetLinger(0) // RST instead of FIN
		}
		conn.Close()
	default:
		return false
	}
	return true
}

func writeHTTPFault(w http.ResponseWriter, f HTTPFault) {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if f.Envelope {
		writeEnvelopeStatus(w, f.Status, reply{code: f.StatusCode})
		return
	}
	text := fmt.Sprintf("%d %s", f.Status, http.StatusText(f.Status))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(f.Status)
	fmt.Fprintf(w, "<html><head><title>%s</title></head><body><center><h1>%s</h1></center><hr><center>nginx</center></body></html>\n", text, text)
}
