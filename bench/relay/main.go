// Command relay is the bench's floor for cache misses: the same three
// process hops a miss through sluiced takes, with nothing else in them.
//
//	client --HTTP/1.1 over a Unix socket--> relay -role front
//	       --gRPC (sluice's Provider.Call) over a Unix socket--> relay -role back
//	       --HTTP/1.1 over TCP--> the upstream simulator
//
// The front turns each request into a CallRequest and writes back the head
// and body of the answer; the back sends the request upstream with a
// keep-alive client, adds the credential and answers in one CallChunk, as
// sluice's plugins do. No scheduler, cache, validation, access log or
// go-plugin: what is left is what the architecture's hops cost on this
// machine, which no implementation of it can go below.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-dev/sluice/core/proto"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	role := fs.String("role", "", "front or back")
	socket := fs.String("socket", "", "Unix socket to listen on")
	back := fs.String("back", "", "front: the back's Unix socket")
	upstream := fs.String("upstream", "", "back: upstream base URL")
	param := fs.String("credential", "", "back: name=value added to every upstream query")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	_ = os.Remove(*socket)
	ln, err := net.Listen("unix", *socket)
	if err != nil {
		return err
	}
	defer ln.Close()
	switch *role {
	case "back":
		name, value, _ := strings.Cut(*param, "=")
		srv := grpc.NewServer()
		proto.RegisterProviderServer(srv, &backend{base: strings.TrimRight(*upstream, "/"), name: name, value: value, client: &http.Client{}})
		go func() { <-ctx.Done(); srv.Stop() }()
		return srv.Serve(ln)
	case "front":
		conn, err := grpc.NewClient("unix://"+*back, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		srv := &http.Server{Handler: &frontend{p: proto.NewProviderClient(conn)}}
		go func() { <-ctx.Done(); srv.Close() }()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	return fmt.Errorf("unknown -role %q", *role)
}

type frontend struct{ p proto.ProviderClient }

func (f *frontend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := &proto.CallRequest{Method: r.Method, Path: strings.TrimPrefix(r.URL.Path, "/")}
	for k, vs := range r.URL.Query() {
		for _, v := range vs {
			req.Params = append(req.Params, &proto.KV{Name: k, Value: v})
		}
	}
	stream, err := f.p.Call(r.Context(), req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	first, err := stream.Recv()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	head := first.GetHead()
	body := head.GetBody()
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		body = append(body, c.GetData()...)
	}
	for _, kv := range head.GetHeaders() {
		w.Header().Add(kv.GetName(), kv.GetValue())
	}
	w.WriteHeader(int(head.GetStatus()))
	w.Write(body)
}

type backend struct {
	proto.UnimplementedProviderServer
	base, name, value string
	client            *http.Client
}

func (b *backend) Call(m *proto.CallRequest, stream proto.Provider_CallServer) error {
	q := url.Values{}
	for _, kv := range m.GetParams() {
		q.Add(kv.GetName(), kv.GetValue())
	}
	q.Set(b.name, b.value)
	req, err := http.NewRequestWithContext(stream.Context(), m.GetMethod(), b.base+"/"+m.GetPath()+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	head := &proto.ResponseHead{Status: int32(resp.StatusCode), Body: body}
	for _, k := range []string{"Content-Type"} {
		if v := resp.Header.Get(k); v != "" {
			head.Headers = append(head.Headers, &proto.KV{Name: k, Value: v})
		}
	}
	return stream.Send(&proto.CallChunk{Kind: &proto.CallChunk_Head{Head: head}})
}
