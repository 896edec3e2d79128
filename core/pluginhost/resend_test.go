package pluginhost

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-dev/sluice/core/proto"
	"github.com/sluice-dev/sluice/core/provider"
	"github.com/sluice-dev/sluice/core/scheduler"
)

// TestCallNeverResendsDestructive: a Call that fails may still have reached
// the plugin. The supervisor waits for a restart and sends a read-only
// lookup again, but an operation with side effects (a purchase, a login
// code) goes out once at most.
func TestCallNeverResendsDestructive(t *testing.T) {
	cases := []struct {
		op       string
		attempts int64
	}{
		{"lookup", 2},
		{"purchase", 1},
		{"sendcode", 1},
		{"undeclared", 1}, // when in doubt, not re-sent
	}
	for _, tc := range cases {
		t.Run(tc.op, func(t *testing.T) {
			var attempts atomic.Int64
			count := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				attempts.Add(1)
				return streamer(ctx, desc, cc, method, opts...)
			}
			// Nothing listens on the socket: every Call fails as one to
			// a plugin that has just died.
			conn, err := grpc.NewClient("unix://"+filepath.Join(t.TempDir(), "gone.sock"),
				grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStreamInterceptor(count))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			sup := newSupervisor(&Host{log: slog.New(slog.DiscardHandler)}, Spec{Name: "hellorf"})
			inst := &instance{rpc: &provider.Client{ProviderClient: proto.NewProviderClient(conn)}, desc: &proto.Description{
				Name: "hellorf",
				Operations: []*proto.Operation{
					{Name: "lookup", Methods: []string{"GET"}, Path: "audio/detail", Cacheable: true},
					{Name: "sendcode", Methods: []string{"GET"}, Path: "tmanage"},
					{Name: "purchase", Methods: []string{"POST"}, Path: "audio/purchase", Destructive: true},
				},
			}}
			sup.setState(StateReady, inst, "")
			// The restart the supervisor waits for after a failed Call.
			go func() {
				for attempts.Load() == 0 {
					time.Sleep(time.Millisecond)
				}
				sup.setState(StateReady, inst, "")
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _, err = sup.call(ctx, &proto.CallRequest{Operation: tc.op}, 300*time.Millisecond)
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("call: %v, want ErrUnavailable", err)
			}
			if n := attempts.Load(); n != tc.attempts {
				t.Fatalf("%d attempts, want %d", n, tc.attempts)
			}
		})
	}
}

// TestPlainStderrLogged: what a plugin writes to stderr outside its JSON
// log records (a panic and its stack) reaches the daemon's log at warn;
// the JSON records do not appear twice.
func TestPlainStderrLogged(t *testing.T) {
	var buf bytes.Buffer
	w := &plainStderr{l: slog.New(slog.NewJSONHandler(&buf, nil))}
	w.Write([]byte("{\"@level\":\"info\",\"@message\":\"configured\"}\npanic: boom\n\ngoroutine 1 [running]:\n"))
	out := buf.String()
	for _, want := range []string{`"level":"WARN"`, `"line":"panic: boom"`, `"line":"goroutine 1 [running]:"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "configured") {
		t.Errorf("a JSON record was logged again:\n%s", out)
	}
}

// TestRestartFailedKeepsLiveLimits: a forced reload that revives a failed
// provider must bring it back with the limits in force, which a reload
// that changed only limits applied live, not with those of its first spec:
// an iNeo bucket loosened behind the operator's back is a ban.
func TestRestartFailedKeepsLiveLimits(t *testing.T) {
	h, err := New(Options{Scheduler: &fakeScheduler{}, MaxBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	first := map[string]scheduler.Limit{"ineo.spotify": {Requests: 6, Window: 7 * time.Second}}
	tighter := map[string]scheduler.Limit{"ineo.spotify": {Requests: 3, Window: 7 * time.Second}}
	spec := Spec{Name: "ineo", Path: filepath.Join(t.TempDir(), "sluice-ineo"), Limits: first}
	h.Apply([]Spec{spec})
	spec.Limits = tighter
	h.Apply([]Spec{spec}) // limits only: applied live, same supervisor
	h.mu.Lock()
	sup := h.sups["ineo"]
	h.mu.Unlock()
	sup.setState(StateFailed, nil, "gave up")
	if names := h.RestartFailed(); len(names) != 1 || names[0] != "ineo" {
		t.Fatalf("RestartFailed = %v, want [ineo]", names)
	}
	h.mu.Lock()
	fresh := h.sups["ineo"]
	h.mu.Unlock()
	fresh.mu.Lock()
	got := fresh.limits["ineo.spotify"]
	fresh.mu.Unlock()
	if fresh == sup || got != tighter["ineo.spotify"] {
		t.Fatalf("revived with limits %+v, want %+v", got, tighter["ineo.spotify"])
	}
}
