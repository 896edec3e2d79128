package ineosim

import (
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

// InjectFault makes the next request to service (after it is counted as an
// arrival) fail with f instead of its answer. Calls queue.
func (s *Sim) InjectFault(service string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.serviceLocked(service)
	svc.faults = append(svc.faults, f)
}

func (s *Sim) popFaultLocked(svc *service) Fault {
	if len(svc.faults) == 0 {
		return 0
	}
	f := svc.faults[0]
	svc.faults = svc.faults[1:]
	return f
}

// writeFault renders f; it reports false for no fault.
func writeFault(w http.ResponseWriter, f Fault) bool {
	switch f {
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
