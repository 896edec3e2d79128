//go:build !linux || race

package api

import (
	"io"
	"net"
)

// newLaneIO is the connection itself off Linux and in race builds; see
// rawio_linux.go.
func newLaneIO(c net.Conn) io.ReadWriter { return c }

// rawLaneIO: this build's lane uses net.Conn's I/O.
const rawLaneIO = false
