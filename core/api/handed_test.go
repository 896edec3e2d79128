package api

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// TestHandedConnDropsLaneBuffer: a connection the lane handed to net/http
// stops holding the lane's read buffer once net/http has read what it
// held, so an idle net/http connection does not keep two.
func TestHandedConnDropsLaneBuffer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// holding reports, as each request starts (on net/http's connection
	// goroutine, the one that reads), whether the lane's buffer is
	// still referenced.
	holding := make(chan bool, 16)
	srv := &http.Server{Handler: NewServer(&testBackend{}, nil, nil), ReadHeaderTimeout: headerTimeout,
		ConnContext: ConnContext, IdleTimeout: time.Minute,
		ConnState: func(c net.Conn, s http.ConnState) {
			if hc, ok := c.(*handedConn); ok && s == http.StateActive {
				holding <- hc.r != nil
			}
		}}
	f := NewServer(&testBackend{}, nil, nil).NewFront(srv, 0)
	done := make(chan error, 1)
	go func() { done <- f.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.Shutdown(ctx)
		<-done
	})
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(headerTimeout / 2))
	br := bufio.NewReader(c)
	for i := range 3 {
		// /v1/status is not the lane's: the first one hands the
		// connection over with its head in the lane's buffer.
		io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: sluice\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if h := <-holding; i > 0 && h {
			t.Errorf("request %d: the handed-over connection still holds the lane's buffer", i+1)
		}
	}
}
