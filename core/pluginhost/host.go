// Package pluginhost runs sluice's provider plugins: one supervisor per
// plugin that starts it as a subprocess (hashicorp/go-plugin over gRPC),
// serves it the scheduler, restarts it with capped exponential backoff when it
// dies, and makes sure no plugin outlives the daemon.
package pluginhost

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/core/progress"
	"github.com/sluice-dev/sluice/core/proto"
	"github.com/sluice-dev/sluice/core/scheduler"
)

// Scheduler is the part of the core scheduler plugins are served.
type Scheduler interface {
	Acquire(ctx context.Context, bucket string, maxWait time.Duration) (scheduler.Grant, error)
	// AcquireSpeculative grants at once only while half the bucket's
	// limit stays free (see scheduler.Scheduler.AcquireSpeculative).
	AcquireSpeculative(ctx context.Context, bucket string) (scheduler.Grant, error)
	Pause(bucket string, until time.Time, reason string)
	Configure(bucket string, l scheduler.Limit) error
	// Release forgets a grant that provably was never used to send (an
	// unused pre-grant); a grant that may have been used must never be
	// released.
	Release(g scheduler.Grant)
	// Answered counts a grant at its answer's arrival, or from now while
	// it is still out (see scheduler.Scheduler.Answered).
	Answered(bucket string, at, answeredAt time.Time) time.Time
	// Outstanding counts a grant whose exchange is still unanswered from
	// now (see scheduler.Scheduler.Outstanding).
	Outstanding(bucket string, at time.Time) time.Time
	// Span is how long a grant of bucket counts.
	Span(bucket string) time.Duration
	// Predict is how many wait in bucket and when a newcomer would go.
	Predict(bucket string) (ahead int, at time.Time, ok bool)
}

// Spec is everything the host needs to run one provider.
type Spec struct {
	Name string
	// Path of the plugin binary.
	Path string
	// SHA256 pins the binary (hex); empty means unpinned.
	SHA256 string
	// ConfigJSON is the provider's config section, secrets resolved. It is
	// handed to the plugin over RPC, never through its environment.
	ConfigJSON []byte
	// Limits override the plugin's declared default bucket limits, by bucket
	// name (e.g. "ineo.spotify").
	Limits map[string]scheduler.Limit
	// StateDir is created (0700) and handed to the plugin for state it
	// must keep across restarts; empty for none.
	StateDir string
}

// identity is what, when changed, needs a fresh plugin process.
func (s Spec) identity() string {
	return s.Path + "\x00" + s.SHA256 + "\x00" + string(s.ConfigJSON)
}

// Options configure a Host.
type Options struct {
	Scheduler Scheduler
	Logger    *slog.Logger
	// StartTimeout bounds one plugin start (default 10s).
	StartTimeout time.Duration
	// MaxBackoff caps the restart backoff (default 30s).
	MaxBackoff time.Duration
	// ObserveWait, if set, receives every scheduler wait a plugin incurred.
	ObserveWait func(bucket string, d time.Duration)
	// Progress, if set, records where calls stand while they wait for
	// budget or inside a plugin (see core/progress).
	Progress *progress.Tracker
	// SocketParent is where the daemon's private plugin socket directory
	// is made, and where stale ones of crashed daemons are removed
	// (default <tmp>/sluice-<uid>-plugins).
	SocketParent string
	// Guard and Leases, in fleet mode, make plugins' purchase guards and
	// max_in_flight turns fleet-wide; nil on a single host.
	Guard  GuardStore
	Leases LeaseStore
}

// Host owns every plugin supervisor.
type Host struct {
	opts    Options
	log     *slog.Logger
	sockDir *sockDir

	mu   sync.Mutex
	sups map[string]*supervisor
	// handles is a copy of sups as handles, published after every change
	// under mu: Get runs on every request, the fast lane's hits included,
	// and reads it without taking mu (a lock every core took per hit).
	handles atomic.Pointer[map[string]*Handle]
	// retired supervisors still draining in-flight calls.
	draining sync.WaitGroup
}

// New creates a Host; plugins start with Apply.
func New(opts Options) (*Host, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 10 * time.Second
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	dir, err := privateSockDir(cmp.Or(opts.SocketParent, defaultSockParent()), opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("plugin socket dir: %w", err)
	}
	return &Host{opts: opts, log: opts.Logger, sockDir: dir, sups: map[string]*supervisor{}}, nil
}

// Apply makes the running plugins match specs: new ones start, missing ones
// stop, ones whose binary or provider section changed restart (only they),
// and limit changes apply live without any restart.
func (h *Host) Apply(specs []Spec) {
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.publishLocked()
	want := map[string]Spec{}
	for _, s := range specs {
		want[s.Name] = s
	}
	retired := map[string]*supervisor{}
	for name, sup := range h.sups {
		if s, ok := want[name]; !ok || s.identity() != sup.spec.identity() {
			delete(h.sups, name)
			retired[name] = sup
			h.retire(sup)
		}
	}
	for name, s := range want {
		if sup, ok := h.sups[name]; ok {
			sup.setLimits(s.Limits)
			continue
		}
		sup := newSupervisor(h, s)
		// A restarted provider keeps routing with its last description
		// while the new process starts, so calls wait for it instead of
		// failing as "not started".
		if old, ok := retired[name]; ok {
			sup.lastDesc.Store(old.description())
		}
		h.sups[name] = sup
		go sup.run()
	}
}

// Check verifies that the spec's plugin binary exists and matches its
// SHA256 pin. A reload checks every spec before swapping anything: a
// plugin that could not start would otherwise retire a working one while
// the reload reports success.
func (s Spec) Check() error {
	f, err := os.Open(s.Path)
	if err != nil {
		return fmt.Errorf("providers.%s: plugin binary: %w", s.Name, err)
	}
	defer f.Close()
	if s.SHA256 == "" {
		return nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("providers.%s: reading plugin binary: %w", s.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != s.SHA256 {
		return fmt.Errorf("providers.%s.plugin_sha256: %s has sha256 %s, the config pins %s", s.Name, s.Path, got, s.SHA256)
	}
	return nil
}

// RestartFailed starts afresh every provider whose plugin has given up
// (state failed: a checksum mismatch, a plugin that cannot start), and
// returns their names. An operator who has fixed the cause asks for it
// with a forced reload (SIGHUP, sluicectl reload) instead of having to
// edit the config so its spec changes.
func (h *Host) RestartFailed() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.publishLocked()
	var names []string
	for name, sup := range h.sups {
		if sup.status().State != StateFailed {
			continue
		}
		h.retire(sup)
		// The limits in force, not the spec's: a reload that changed
		// only limits applied them live without a new spec.
		spec := sup.spec
		sup.mu.Lock()
		spec.Limits = sup.limits
		sup.mu.Unlock()
		fresh := newSupervisor(h, spec)
		fresh.lastDesc.Store(sup.description())
		h.sups[name] = fresh
		go fresh.run()
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func (h *Host) retire(sup *supervisor) {
	h.draining.Add(1)
	go func() {
		defer h.draining.Done()
		sup.stop(10 * time.Second)
	}()
}

// publishLocked makes the supervisors in sups what Get finds.
func (h *Host) publishLocked() {
	m := make(map[string]*Handle, len(h.sups))
	for name, s := range h.sups {
		m[name] = &Handle{s: s}
	}
	h.handles.Store(&m)
}

// Get returns the named provider's supervisor handle.
func (h *Host) Get(name string) (*Handle, bool) {
	m := h.handles.Load()
	if m == nil {
		return nil, false
	}
	hd, ok := (*m)[name]
	return hd, ok
}

// Names lists configured providers, sorted.
func (h *Host) Names() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n []string
	for k := range h.sups {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Status reports every provider, sorted by name.
func (h *Host) Status() []Status {
	h.mu.Lock()
	sups := make([]*supervisor, 0, len(h.sups))
	for _, s := range h.sups {
		sups = append(sups, s)
	}
	h.mu.Unlock()
	out := make([]Status, 0, len(sups))
	for _, s := range sups {
		out = append(out, s.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Ready reports whether every provider is ready.
func (h *Host) Ready() bool {
	for _, s := range h.Status() {
		if s.State != StateReady {
			return false
		}
	}
	return true
}

// Close stops every plugin and waits until their processes are gone.
func (h *Host) Close() error {
	h.mu.Lock()
	for name, sup := range h.sups {
		delete(h.sups, name)
		h.retire(sup)
	}
	h.publishLocked()
	h.mu.Unlock()
	h.draining.Wait()
	return h.sockDir.Close()
}

// privateSockDir makes the daemon's plugin socket directory under parent.
// Only sluiced may talk to its plugins, whatever the umask: the directory
// is 0700 and go-plugin's per-plugin directories inside it are too. A
// parent that is not this uid's own (another user created it first) costs
// only the cleanup of crashed daemons' directories: the sockets then go to
// a fresh private directory in the temp directory.
func privateSockDir(parent string, log *slog.Logger) (*sockDir, error) {
	d, removed, err := openSockDir(parent)
	if err != nil {
		log.Warn("plugin socket parent unusable; using a one-off private directory, which a crash will leave behind", "parent", parent, "err", err)
		p, err := os.MkdirTemp("", "sluice-plugins-")
		if err != nil {
			return nil, err
		}
		if err := os.Chmod(p, 0o700); err != nil {
			os.Remove(p)
			return nil, err
		}
		d = &sockDir{path: p}
	}
	if removed > 0 {
		log.Info("removed plugin socket directories of daemons that did not exit cleanly", "parent", parent, "count", removed)
	}
	if len(d.path) > maxSockDir {
		d.Close()
		return nil, fmt.Errorf("%s is too long for plugin socket paths (at most %d bytes); set TMPDIR to a shorter directory", d.path, maxSockDir)
	}
	return d, nil
}

// ErrUnavailable means the provider's plugin is not running.
var ErrUnavailable = errors.New("provider plugin unavailable")

// Handle is a caller's view of one provider.
type Handle struct{ s *supervisor }

// Description returns the plugin's self-description, waiting up to wait
// for a provider that has not started yet; nil if it has none by then.
func (h *Handle) Description(ctx context.Context, wait time.Duration) *proto.Description {
	return h.s.waitDescription(ctx, wait)
}

// Call sends a request to the plugin, waiting for it to become ready (for
// example during a restart) while ctx allows, at most readyWait.
func (h *Handle) Call(ctx context.Context, req *proto.CallRequest, readyWait time.Duration) (proto.Provider_CallClient, func(), error) {
	return h.s.call(ctx, req, readyWait)
}

// PreGrant asks the scheduler, on the plugin's behalf, for a grant from
// bucket that is available right now, so the call can carry it and the
// plugin need not make the Host.Acquire round trip. It never waits and
// never jumps the bucket's queue: when the bucket cannot grant at once (or
// is not the provider's, or the plugin is not ready to take the call right
// away), it reports false and consumes nothing. A bucket that bounds its
// requests in flight (Bucket.max_in_flight) gets none either: the call may
// wait in the plugin for its turn, past the grant's use-by, and the unused
// grant would hold budget until the call ends. A granted pre-grant counts
// like any grant; Release it only when the plugin reported it unused.
func (h *Handle) PreGrant(ctx context.Context, bucket string) (scheduler.Grant, bool) {
	g, err := h.preGrant(ctx, bucket, false)
	return g, err == nil
}

// CanPreGrant reports whether bucket may get a pre-grant at all (see
// PreGrant), without asking the scheduler.
func (h *Handle) CanPreGrant(bucket string) bool {
	s := h.s
	return ownsBucket(s.spec.Name, bucket) && s.ready() && !boundsInFlight(s.description(), bucket)
}

// errNoPreGrant: the bucket gets no pre-grant (see PreGrant).
var errNoPreGrant = errors.New("no pre-grant for this bucket now")

// PreGrantSpeculative is PreGrant for a call that may not happen (see
// scheduler.Scheduler.AcquireSpeculative): granted only while half the
// bucket's limit stays free. Release it when the call does not take it.
// The error says why there is none: a *scheduler.BudgetError when the
// bucket refused it.
func (h *Handle) PreGrantSpeculative(ctx context.Context, bucket string) (scheduler.Grant, error) {
	return h.preGrant(ctx, bucket, true)
}

func (h *Handle) preGrant(ctx context.Context, bucket string, speculative bool) (scheduler.Grant, error) {
	if !h.CanPreGrant(bucket) {
		return scheduler.Grant{}, errNoPreGrant
	}
	s := h.s
	start := time.Now()
	var g scheduler.Grant
	var err error
	if speculative {
		g, err = s.host.opts.Scheduler.AcquireSpeculative(ctx, bucket)
	} else {
		g, err = s.host.opts.Scheduler.Acquire(ctx, bucket, -1)
	}
	if err != nil {
		return scheduler.Grant{}, err
	}
	if obs := s.host.opts.ObserveWait; obs != nil {
		obs(bucket, time.Since(start))
	}
	return g, nil
}

// Release returns a pre-grant the plugin reported it never used (and, by
// the plugin's contract, never will).
func (h *Handle) Release(g scheduler.Grant) {
	if !ownsBucket(h.s.spec.Name, g.Bucket) {
		return
	}
	h.s.host.opts.Scheduler.Release(g)
}

// Answered records that the request sent with the grant at in bucket got
// its answer at answeredAt, as the plugin reported. Only the provider's own
// buckets are touched, and only ever later (the scheduler checks).
func (h *Handle) Answered(bucket string, at, answeredAt time.Time) {
	if !ownsBucket(h.s.spec.Name, bucket) {
		return
	}
	h.s.host.opts.Scheduler.Answered(bucket, at, answeredAt)
}

// boundsInFlight reports whether the plugin declares a bound on bucket's
// requests in flight.
func boundsInFlight(desc *proto.Description, bucket string) bool {
	for _, b := range desc.GetBuckets() {
		if b.GetName() == bucket {
			return b.GetMaxInFlight() > 0
		}
	}
	return false
}
