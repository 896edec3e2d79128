package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// LeanConfig is a closed-loop run with the lean client: one fixed GET per
// connection, written as prepared bytes, its answer read with no more
// parsing than framing needs (status, Content-Length) plus what Check
// looks at. It exists because net/http's client costs about 35 µs of CPU
// per request: on two cores shared with the server, that client, not the
// server, set the pace, and every server then served about the same rate.
// The lean client costs a few µs, so the servers' own costs decide, as
// with wrk or h2load.
type LeanConfig struct {
	// Dial opens one client connection.
	Dial        func(ctx context.Context) (net.Conn, error)
	Host, Path  string
	Concurrency int
	Warmup      time.Duration
	Duration    time.Duration
	// Check validates an answer from its status and header block (the
	// lines after the status line); nil accepts any 200.
	Check func(status int, head []byte) error
}

// Header returns the value of the first header line of head named name
// (case-insensitive), trimmed; "" when there is none.
func Header(head []byte, name string) string {
	for len(head) > 0 {
		var line []byte
		line, head, _ = bytes.Cut(head, []byte("\n"))
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte(name)) {
			return string(bytes.TrimSpace(v))
		}
	}
	return ""
}

var errFraming = errors.New("answer without Content-Length (chunked or close-delimited), which the lean client does not read")

// leanConn is one keep-alive connection of the lean client.
type leanConn struct {
	c    net.Conn
	br   *bufio.Reader
	req  []byte
	head []byte
}

// do sends the request and reads the whole answer.
func (l *leanConn) do(check func(int, []byte) error) error {
	if _, err := l.c.Write(l.req); err != nil {
		return err
	}
	line, err := l.br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return fmt.Errorf("status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return fmt.Errorf("status line %q", line)
	}
	l.head = l.head[:0]
	length := -1
	for {
		line, err := l.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		l.head = append(l.head, line...)
		if k, v, ok := bytes.Cut(line, []byte(":")); ok {
			switch {
			case bytes.EqualFold(k, []byte("Content-Length")):
				if length, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil {
					return fmt.Errorf("Content-Length %q", v)
				}
			case bytes.EqualFold(k, []byte("Transfer-Encoding")), bytes.EqualFold(k, []byte("Connection")) && bytes.Contains(bytes.ToLower(v), []byte("close")):
				return errFraming
			}
		}
	}
	if length < 0 {
		return errFraming
	}
	if _, err := l.br.Discard(length); err != nil {
		return err
	}
	if check != nil {
		return check(status, l.head)
	}
	if status != 200 {
		return fmt.Errorf("HTTP %d", status)
	}
	return nil
}

// RunLean is Run with the lean client; the same rules: warm-up unrecorded,
// no request sent after the deadline, requests in flight then waited for.
// A connection that fails is dialled again.
func RunLean(ctx context.Context, cfg LeanConfig) Result {
	req := []byte("GET " + cfg.Path + " HTTP/1.1\r\nHost: " + cfg.Host + "\r\nUser-Agent: sluice-bench\r\n\r\n")
	return drive(ctx, cfg.Concurrency, cfg.Warmup, cfg.Duration, func(int) (func(int) (time.Duration, error), func()) {
		var l *leanConn
		send := func(int) (time.Duration, error) {
			start := time.Now()
			if l == nil {
				nc, err := cfg.Dial(ctx)
				if err != nil {
					return time.Since(start), err
				}
				l = &leanConn{c: nc, br: bufio.NewReaderSize(nc, 16<<10), req: req}
			}
			err := l.do(cfg.Check)
			if err != nil {
				l.c.Close()
				l = nil
			}
			return time.Since(start), err
		}
		return send, func() {
			if l != nil {
				l.c.Close()
			}
		}
	})
}
