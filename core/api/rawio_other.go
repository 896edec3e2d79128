//go:build !linux

package api

import (
	"io"
	"net"
)

// newLaneIO is the connection itself off Linux; see rawio_linux.go.
func newLaneIO(c net.Conn) io.ReadWriter { return c }
