package provider

import (
	"fmt"
	"time"
)

// Class is what an upstream outcome means for sluice.
type Class int

const (
	// Success answers may be cached (if the operation is cacheable).
	Success Class = iota
	// CallerError is the caller's fault: never retried, never cached.
	CallerError
	// Stop means "stop sending now": the bucket pauses for every caller.
	Stop
	// ServerError is the upstream's fault: not cached; retried only where a
	// provider decides it is safe.
	ServerError
	// Unknown outcomes are passed through and never cached.
	Unknown
)

func (c Class) String() string {
	return [...]string{"success", "caller-error", "stop", "server-error", "unknown"}[c]
}

// Code describes one upstream status code.
type Code struct {
	Name  string
	Class Class
	// Pause is how long a Stop code halts the bucket.
	Pause time.Duration
}

// Codes is an upstream's status-code table.
type Codes map[int]Code

// Lookup returns the code's entry, or an Unknown one.
func (t Codes) Lookup(code int) Code {
	if c, ok := t[code]; ok {
		return c
	}
	return Code{Name: fmt.Sprintf("code_%d", code), Class: Unknown}
}
