package daemon

import (
	"io"
	"sync"
	"time"
)

// bufferedWriter batches the access log: one write syscall per request was
// a fifth of the daemon's CPU on cache hits. Lines are flushed every
// interval, when the buffer fills, and on Close; a daemon killed outright
// may lose the last interval of access lines, never anything else (other
// records do not go through it).
type bufferedWriter struct {
	mu   sync.Mutex
	w    io.Writer
	buf  []byte
	stop chan struct{}
	done chan struct{}
}

const bufferedLimit = 64 << 10

func newBufferedWriter(w io.Writer, every time.Duration) *bufferedWriter {
	b := &bufferedWriter{w: w, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				b.flush()
				return
			case <-t.C:
				b.flush()
			}
		}
	}()
	return b
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) >= bufferedLimit {
		b.flushLocked()
	}
	return len(p), nil
}

func (b *bufferedWriter) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
}

func (b *bufferedWriter) flushLocked() {
	if len(b.buf) > 0 {
		b.w.Write(b.buf)
		b.buf = b.buf[:0]
	}
}

// Close flushes what is left and stops the flusher.
func (b *bufferedWriter) Close() error {
	close(b.stop)
	<-b.done
	return nil
}
