package pluginhost

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-plugin"
	gproto "google.golang.org/protobuf/proto"

	"github.com/sluice-dev/sluice/core/proto"
	"github.com/sluice-dev/sluice/core/provider"
	"github.com/sluice-dev/sluice/core/scheduler"
)

// Provider states, as shown in status.
const (
	StateStarting   = "starting"
	StateReady      = "ready"
	StateRestarting = "restarting"
	StateFailed     = "failed"
	StateStopped    = "stopped"
)

// Status describes one provider for /v1/status.
type Status struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`
	PID       int       `json:"pid"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since"`
	Version   string    `json:"version,omitempty"`
}

// instance is one plugin process; a go-plugin Client cannot be restarted, so
// every start builds a fresh exec.Cmd and Client.
type instance struct {
	client   *plugin.Client
	rpc      *provider.Client
	desc     *proto.Description
	pid      int
	inflight atomic.Int64
}

type supervisor struct {
	host *Host
	spec Spec
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	state string
	inst  *instance
	// lastDesc is read on every cache hit, by every connection at
	// once: a load, not the mutex (which showed up as contention in
	// the hit benchmark). Written under mu with the state.
	lastDesc atomic.Pointer[proto.Description]
	restarts int
	lastErr  string
	since    time.Time
	limits   map[string]scheduler.Limit
	// changed is closed and replaced on every state change so waiters wake.
	changed chan struct{}
	// grace bounds how long stop waits for in-flight calls.
	grace time.Duration
}

func newSupervisor(h *Host, s Spec) *supervisor {
	ctx, cancel := context.WithCancel(context.Background())
	return &supervisor{host: h, spec: s, log: h.log.With("provider", s.Name), ctx: ctx, cancel: cancel,
		done: make(chan struct{}), state: StateStarting, since: time.Now(), limits: s.Limits,
		changed: make(chan struct{})}
}

func (s *supervisor) setState(state string, inst *instance, errMsg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.inst, s.since = state, inst, time.Now()
	if errMsg != "" {
		s.lastErr = errMsg
	}
	if inst != nil {
		s.lastDesc.Store(inst.desc)
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// errPermanent marks start failures a restart cannot fix (checksum mismatch,
// wrong plugin): the provider stays failed, loudly, until config changes.
var errPermanent = errors.New("permanent")

func (s *supervisor) run() {
	defer close(s.done)
	const minBackoff = 250 * time.Millisecond
	backoff := minBackoff
	for {
		inst, err := s.start()
		if err != nil {
			s.log.Error("plugin failed to start", "err", err)
			if errors.Is(err, errPermanent) {
				s.setState(StateFailed, nil, err.Error())
				<-s.ctx.Done()
				s.setState(StateStopped, nil, "")
				return
			}
			s.setState(StateRestarting, nil, err.Error())
		} else {
			started := time.Now()
			s.setState(StateReady, inst, "")
			s.log.Info("plugin ready", "pid", inst.pid)
			s.waitExit(inst)
			if s.ctx.Err() != nil {
				s.setState(StateStopped, nil, "")
				return
			}
			s.log.Error("plugin exited; restarting", "pid", inst.pid, "backoff", backoff)
			s.setState(StateRestarting, nil, "plugin process exited")
			// A plugin that ran a while before dying starts a new series.
			if time.Since(started) > time.Minute {
				backoff = minBackoff
			}
		}
		s.mu.Lock()
		s.restarts++
		s.mu.Unlock()
		select {
		case <-s.ctx.Done():
			s.setState(StateStopped, nil, "")
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, s.host.opts.MaxBackoff)
	}
}

// waitExit returns when the plugin process is gone, or after it was stopped
// (drained and killed) because the supervisor is stopping.
func (s *supervisor) waitExit(inst *instance) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			deadline := time.Now().Add(s.grace)
			for inst.inflight.Load() > 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			inst.client.Kill()
			return
		case <-t.C:
			if inst.client.Exited() {
				inst.client.Kill() // reap go-plugin's goroutines and sockets
				return
			}
		}
	}
}

func (s *supervisor) start() (*instance, error) {
	var checksum []byte
	if s.spec.SHA256 != "" {
		sum, err := hex.DecodeString(s.spec.SHA256)
		if err != nil {
			return nil, fmt.Errorf("plugin_sha256: %w (%w)", err, errPermanent)
		}
		checksum = sum
	}
	var run *pluginRunner
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: provider.Handshake,
		Plugins: plugin.PluginSet{provider.PluginName: &provider.GRPCPlugin{Host: &hostService{name: s.spec.Name, sched: s.host.opts.Scheduler, log: s.log, observe: s.host.opts.ObserveWait, progress: s.host.opts.Progress,
			guard: s.host.opts.Guard, leases: s.host.opts.Leases}}},
		// A runner of our own, not Cmd: only then does go-plugin put the
		// plugin's and the broker's sockets in a 0700 directory under
		// TempDir (see pluginRunner). It also checks the SHA256 pin.
		RunnerFunc:       runnerFunc(s.spec.Path, checksum, &run),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		// No AutoMTLS: the plugin sockets live in 0700 directories of the
		// daemon's own, so no other user can connect, and a process of the
		// daemon's own uid could read its memory anyway. TLS on every
		// message of every call was a tenth of the daemon's CPU on cache
		// misses and tens of microseconds per hop.
		AutoMTLS:         false,
		StartTimeout:     s.host.opts.StartTimeout,
		SkipHostEnv:      true,
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: s.host.sockDir.path},
		GRPCDialOptions:  provider.DialOptions(),
		Logger:           newHCLogger(s.log),
		Stderr:           &plainStderr{l: s.log},
	})
	fail := func(err error) (*instance, error) {
		client.Kill()
		return nil, err
	}
	rpcClient, err := client.Client()
	if err != nil {
		if errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
			return fail(fmt.Errorf("plugin binary %s does not match plugin_sha256: %w", s.spec.Path, errPermanent))
		}
		return fail(fmt.Errorf("starting %s: %w", s.spec.Path, err))
	}
	raw, err := rpcClient.Dispense(provider.PluginName)
	if err != nil {
		return fail(fmt.Errorf("dispensing: %w", err))
	}
	pc, ok := raw.(*provider.Client)
	if !ok {
		return fail(fmt.Errorf("unexpected plugin client %T: %w", raw, errPermanent))
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.host.opts.StartTimeout)
	defer cancel()
	desc, err := pc.Describe(ctx, &proto.DescribeRequest{})
	if err != nil {
		return fail(fmt.Errorf("describe: %w", err))
	}
	if desc.GetName() != s.spec.Name {
		return fail(fmt.Errorf("binary %s is provider %q, not %q: %w", s.spec.Path, desc.GetName(), s.spec.Name, errPermanent))
	}
	s.applyLimits(desc)
	if s.spec.StateDir != "" {
		if err := os.MkdirAll(s.spec.StateDir, 0o700); err != nil {
			s.log.Warn("plugin state directory unavailable; its state will not survive restarts", "dir", s.spec.StateDir, "err", err)
		}
	}
	if _, err := pc.Configure(ctx, &proto.ConfigureRequest{HostBrokerId: pc.HostBrokerID, ConfigJson: s.spec.ConfigJSON, StateDir: s.spec.StateDir,
		Fleet: s.host.opts.Leases != nil}); err != nil {
		return fail(fmt.Errorf("configure: %w (%w)", err, errPermanent))
	}
	// Described again now that the plugin has its config: parameter
	// defaults may depend on it (Spotify's page size under
	// search_max_limit, its default_market), and the host fills them in
	// before making cache keys. Its buckets are registered again (a
	// plugin may size them from its config too); its name must not change.
	if d, err := pc.Describe(ctx, &proto.DescribeRequest{}); err != nil {
		return fail(fmt.Errorf("describe after configure: %w", err))
	} else if d.GetName() != desc.GetName() {
		return fail(fmt.Errorf("plugin changed its name from %q to %q after configure: %w", desc.GetName(), d.GetName(), errPermanent))
	} else {
		desc = d
		s.applyLimits(desc)
	}
	return &instance{client: client, rpc: pc, desc: desc, pid: run.pid}, nil
}

// applyLimits registers the plugin's buckets with the scheduler: its
// declared defaults unless config overrides them.
func (s *supervisor) applyLimits(desc *proto.Description) {
	s.mu.Lock()
	limits := s.limits
	s.mu.Unlock()
	for _, b := range desc.GetBuckets() {
		l, ok := limits[b.GetName()]
		if !ok {
			l = scheduler.Limit{Requests: int(b.GetRequests()), Window: time.Duration(b.GetWindowMs()) * time.Millisecond}
		}
		if err := s.host.opts.Scheduler.Configure(b.GetName(), l); err != nil {
			s.log.Error("bucket limit rejected", "bucket", b.GetName(), "err", err)
		}
	}
}

func (s *supervisor) setLimits(l map[string]scheduler.Limit) {
	s.mu.Lock()
	s.limits = l
	desc := s.lastDesc.Load()
	s.mu.Unlock()
	if desc != nil {
		s.applyLimits(desc)
	}
}

func (s *supervisor) stop(grace time.Duration) {
	s.mu.Lock()
	s.grace = grace
	s.mu.Unlock()
	s.cancel()
	<-s.done
}

func (s *supervisor) description() *proto.Description {
	return s.lastDesc.Load()
}

func (s *supervisor) waitDescription(ctx context.Context, wait time.Duration) *proto.Description {
	if d := s.description(); d != nil {
		return d // the common case: no timer on the hot path
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		desc, state, changed := s.lastDesc.Load(), s.state, s.changed
		s.mu.Unlock()
		if desc != nil || state == StateFailed || state == StateStopped {
			return desc
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		case <-timer.C:
			return nil
		}
	}
}

func (s *supervisor) status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Name: s.spec.Name, State: s.state, Restarts: s.restarts, LastError: s.lastErr, Since: s.since}
	if s.inst != nil {
		st.PID = s.inst.pid
		st.Version = s.inst.desc.GetVersion()
	}
	return st
}

// ready reports whether a call would go to a running plugin at once.
func (s *supervisor) ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == StateReady && s.inst != nil
}

func (s *supervisor) call(ctx context.Context, req *proto.CallRequest, readyWait time.Duration) (proto.Provider_CallClient, func(), error) {
	timer := time.NewTimer(readyWait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		inst, state, changed, lastErr := s.inst, s.state, s.changed, s.lastErr
		s.mu.Unlock()
		if state == StateReady && inst != nil {
			inst.inflight.Add(1)
			done := func() { inst.inflight.Add(-1) }
			stream, err := inst.rpc.Call(ctx, req)
			if err == nil {
				return stream, done, nil
			}
			done()
			// A failed Call may still have reached the plugin. Only a
			// read-only lookup may go out twice: a destructive operation
			// (a purchase, an account deletion) must not, nor one with
			// other side effects (a login code texted twice); its caller
			// hears the plugin was unavailable and decides.
			if !resendable(s.description(), req.GetOperation()) {
				return nil, nil, fmt.Errorf("%w: %v (not re-sent: the operation is not a read-only lookup)", ErrUnavailable, err)
			}
			// The plugin may have used the pre-grant: it is never offered
			// a second time.
			// The host releases it only on a plugin's report, and the
			// retry below carries none, so it keeps counting.
			if req.GetPregrant() != nil {
				req = gproto.CloneOf(req)
				req.Pregrant = nil
			}
			// The plugin may have just died and the supervisor not yet
			// noticed: wait for the state to change (a restart) rather than
			// failing a request that arrived after the crash.
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			case <-timer.C:
				return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
			}
		}
		if state == StateFailed || state == StateStopped {
			return nil, nil, fmt.Errorf("%w: %s %s", ErrUnavailable, state, lastErr)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-timer.C:
			return nil, nil, fmt.Errorf("%w: %s (%s)", ErrUnavailable, state, lastErr)
		}
	}
}

// resendable reports whether desc declares op a read-only lookup
// (cacheable, not destructive), the only kind a failed Call may be sent
// again for. Unknown operations are not: when in doubt, a call is not
// re-sent.
func resendable(desc *proto.Description, op string) bool {
	return desc.Operation(op).ReadOnly()
}
