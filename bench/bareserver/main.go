// Command bareserver is the bench's reference point for cache hits: a bare
// net/http server on a Unix socket (or loopback TCP) that answers every request with one fixed
// answer (the exact bytes and headers sluiced sends for a cache hit). It is
// what "serving a cached answer over the socket" costs with nothing but Go's
// HTTP stack, so sluiced's hit path is judged against it.
//
// It runs as its own process, like sluiced, so it does not share the load
// generator's Go runtime (scheduler, GC) and the comparison is like for like.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Answer is the file format the bench writes: the status, headers and body
// to send.
type Answer struct {
	Status int                 `json:"status"`
	Header map[string][]string `json:"header"`
	Body   []byte              `json:"body"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bareserver:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("bareserver", flag.ContinueOnError)
	socket := fs.String("socket", "", "Unix socket to listen on")
	listen := fs.String("listen", "", "TCP address to listen on instead (row 1's TCP variant)")
	answerPath := fs.String("answer", "", "JSON file holding the answer to send")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	b, err := os.ReadFile(*answerPath)
	if err != nil {
		return err
	}
	var a Answer
	if err := json.Unmarshal(b, &a); err != nil {
		return fmt.Errorf("%s: %w", *answerPath, err)
	}
	// Date and Content-Length are produced by net/http itself, as they are
	// for sluiced.
	delete(a.Header, "Date")
	delete(a.Header, "Content-Length")

	var ln net.Listener
	if *listen != "" {
		ln, err = net.Listen("tcp", *listen)
	} else {
		_ = os.Remove(*socket)
		ln, err = net.Listen("unix", *socket)
	}
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			for k, v := range a.Header {
				h[k] = v
			}
			w.WriteHeader(a.Status)
			_, _ = w.Write(a.Body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
