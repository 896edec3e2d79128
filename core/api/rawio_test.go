package api

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLaneIO: the lane's raw reads and writes (net.Conn itself in race
// builds and off Linux; make test runs this package without -race too)
// behave as net.Conn's do, over both transports the lane serves: a write larger than the socket's buffer
// arrives whole (the EAGAIN path parks in the poller and resumes), reads
// return what was sent and then io.EOF, and a read deadline ends a read
// with os.ErrDeadlineExceeded (Shutdown and the idle timeout rely on it).
func TestLaneIO(t *testing.T) {
	for _, tt := range []struct {
		name   string
		listen func(t *testing.T) net.Listener
	}{
		{"unix", func(t *testing.T) net.Listener {
			ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
			if err != nil {
				t.Fatal(err)
			}
			return ln
		}},
		{"tcp", func(t *testing.T) net.Listener {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			return ln
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln := tt.listen(t)
			defer ln.Close()
			peer, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rw := newLaneIO(c)
			if _, conn := rw.(net.Conn); conn == rawLaneIO {
				t.Fatalf("newLaneIO(%T) = %T; raw I/O in this build: %v", c, rw, rawLaneIO)
			}

			// 8 MiB is far past any default socket buffer.
			big := bytes.Repeat([]byte("0123456789abcdef"), 1<<19)
			wrote := make(chan error, 1)
			go func() {
				n, err := rw.Write(big)
				if err == nil && n != len(big) {
					err = errors.New("short write")
				}
				wrote <- err
			}()
			got := make([]byte, len(big))
			if _, err := io.ReadFull(peer, got); err != nil {
				t.Fatal(err)
			}
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, big) {
				t.Fatal("the bytes read differ from the bytes written")
			}

			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			buf := make([]byte, 64)
			if _, err := rw.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read past its deadline: %v, want os.ErrDeadlineExceeded", err)
			}
			c.SetReadDeadline(time.Time{})

			if _, err := peer.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			var in []byte
			for len(in) < 18 {
				n, err := rw.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				in = append(in, buf[:n]...)
			}
			if string(in) != "GET / HTTP/1.1\r\n\r\n" {
				t.Fatalf("read %q", in)
			}
			peer.Close()
			if n, err := rw.Read(buf); n != 0 || err != io.EOF {
				t.Fatalf("read after the peer closed: %d, %v; want 0, io.EOF", n, err)
			}
			// Writing to a closed peer fails rather than hanging.
			var werr error
			for range 100 {
				if _, werr = rw.Write([]byte("x")); werr != nil {
					break
				}
			}
			if werr == nil {
				t.Fatal("writes to a closed peer kept succeeding")
			}
		})
	}
}
