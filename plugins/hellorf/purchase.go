package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/core/provider"
	"github.com/sluice-dev/sluice/internal/durable"
)

// ConfirmRepeat is the Sluice-Confirm value with which a caller buys again,
// on purpose, what it bought within purchase_guard.
const ConfirmRepeat = "repeat-purchase"

// guardState is what the guard knows of the last purchase under a key.
type guardState int

const (
	guardInFlight guardState = iota // sent, no answer yet
	guardDone                       // hellorf answered with a purchase id
	guardUnknown                    // the answer was lost or a server error: it may have been made
)

type guardEntry struct {
	state      guardState
	at         time.Time // when the purchase was started
	purchaseID json.Number
	ticket     uint64
}

// purchaseGuard refuses a second identical purchase within the guard window.
// It is saved durably in the plugin's state directory before a purchase is
// sent and after its answer, so a plugin crash, a daemon restart or a config
// change (which restarts the plugin) does not forget a purchase made minutes
// earlier. It fails closed: a purchase whose record cannot be written, or
// made while the file could not be read at start, is refused.
type purchaseGuard struct {
	mu      sync.Mutex
	entries map[string]*guardEntry
	next    uint64
	// path is the file the guard is kept in; empty (no state directory)
	// refuses every purchase, as there is nowhere to record it.
	path string
	// loadErr is why the file could not be read at start. While set, the
	// purchases it may hold are unknown, so every purchase is refused; each
	// attempt reads the file again, so fixing or removing it is enough.
	loadErr error
}

// errNoStateDir refuses purchases in a plugin given no state directory.
var errNoStateDir = errors.New("the plugin was given no state directory to keep it in")

// savedEntry is a guard entry on disk.
type savedEntry struct {
	State      guardState  `json:"state"`
	At         time.Time   `json:"at"`
	PurchaseID json.Number `json:"purchase_id,omitempty"`
}

// open loads the guard from path and keeps it there from now on. A purchase
// that was in flight when the last process died may have been made: it is
// loaded as unknown, which blocks a repeat until confirmed. A file that
// cannot be read or parsed is an error, and refuses purchases until it can.
func (g *purchaseGuard) open(path string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.path = path
	g.loadErr = g.loadLocked()
	return g.loadErr
}

// loadLocked reads the file into the entries. A missing file is an empty
// guard (a first start, or the operator removed it).
func (g *purchaseGuard) loadLocked() error {
	b, err := os.ReadFile(g.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading purchase guard: %w", err)
	}
	var saved map[string]savedEntry
	if err := json.Unmarshal(b, &saved); err != nil {
		return fmt.Errorf("reading purchase guard %s: %w", g.path, err)
	}
	for k, e := range saved {
		if e.State == guardInFlight {
			e.State = guardUnknown
		}
		if _, ok := g.entries[k]; ok {
			continue // this process knows better (it never sends while loadErr is set, so this is not expected)
		}
		g.next++
		g.entries[k] = &guardEntry{state: e.State, at: e.At, purchaseID: e.PurchaseID, ticket: g.next}
	}
	return nil
}

// saveLocked writes the guard durably: a temporary file, fsynced, renamed
// over the old one, and the directory fsynced, so the record survives a
// crash of the process or of the machine. A missing state directory is
// recreated. It returns why the record is not on disk.
func (g *purchaseGuard) saveLocked() error {
	if g.path == "" {
		return errNoStateDir
	}
	saved := make(map[string]savedEntry, len(g.entries))
	for k, e := range g.entries {
		saved[k] = savedEntry{State: e.state, At: e.at, PurchaseID: e.purchaseID}
	}
	b, err := json.Marshal(saved)
	if err != nil {
		return fmt.Errorf("encoding purchase guard: %w", err)
	}
	if err := writeDurable(g.path, b); err != nil {
		return fmt.Errorf("writing purchase guard: %w", err)
	}
	return nil
}

// writeDurable replaces path with b atomically and durably.
func writeDurable(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := mkdirDurable(dir); err != nil {
		return err
	}
	return durable.ReplaceFile(path, b)
}

// mkdirDurable creates dir and any missing parents (mode 0700), and fsyncs
// the parent of each one created, so a recreated directory is on disk
// before the file in it is trusted to be.
func mkdirDurable(dir string) error {
	var missing []string
	for d := dir; ; {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return &fs.PathError{Op: "mkdir", Path: d, Err: syscall.ENOTDIR}
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		parent := filepath.Dir(d)
		if parent == d {
			break
		}
		d = parent
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := durable.SyncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

func newPurchaseGuard() *purchaseGuard {
	return &purchaseGuard{entries: map[string]*guardEntry{}}
}

// guardKey identifies "the same purchase": the four parameters hellorf
// takes, already canonicalised by validate.
func guardKey(v url.Values) string {
	b, _ := json.Marshal([]string{v.Get("audio_id"), v.Get("permission_id"), v.Get("warrant_name"), v.Get("third_user_id")})
	return string(b)
}

// reserve claims key for a new purchase, atomically, so that two identical
// purchases racing each other cannot both go out. It returns the ticket to
// settle later, or a copy of the entry that blocks the purchase. confirm
// (Sluice-Confirm: repeat-purchase) overrides a finished or unknown earlier
// purchase, never one still in flight.
//
// The claim counts only once it is on disk: if it cannot be written, or the
// guard file could not be read at start, reserve returns a *guardError and
// leaves the guard as it was, and nothing may be sent.
func (g *purchaseGuard) reserve(key string, now time.Time, window time.Duration, confirm bool) (uint64, *guardEntry, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.loadErr != nil {
		// Read again: the operator may have repaired or removed the file.
		if err := g.loadLocked(); err != nil {
			g.loadErr = err
			return 0, nil, &guardError{unreadable: true, path: g.path, err: err}
		}
		g.loadErr = nil
	}
	for k, e := range g.entries {
		if e.state != guardInFlight && now.Sub(e.at) >= window {
			delete(g.entries, k)
		}
	}
	old, ok := g.entries[key]
	if ok && (old.state == guardInFlight || !confirm) {
		c := *old
		return 0, &c, nil
	}
	g.next++
	g.entries[key] = &guardEntry{state: guardInFlight, at: now, ticket: g.next}
	if err := g.saveLocked(); err != nil {
		if ok {
			g.entries[key] = old
		} else {
			delete(g.entries, key)
		}
		return 0, nil, &guardError{path: g.path, err: err}
	}
	return g.next, nil, nil
}

// settle records how the purchase under ticket ended. release=true means it
// certainly did not happen (hellorf refused it with a 2xx or 4xx answer, or
// nothing was sent), so the key is free again. An error means the outcome
// is only in memory: the file still holds the in-flight record reserve
// wrote, which a restart loads as "outcome unknown", so the purchase stays
// blocked either way.
func (g *purchaseGuard) settle(key string, ticket uint64, state guardState, id json.Number, release bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.entries[key]
	if !ok || e.ticket != ticket {
		return nil
	}
	if release {
		delete(g.entries, key)
	} else {
		e.state, e.purchaseID = state, id
	}
	return g.saveLocked()
}

// adopt replaces the in-flight record of ticket with what the fleet knows
// of another host's identical purchase (state, started at, id): kept here
// as well, so that a fleet store that forgets it (Redis restarted empty)
// while that host is down does not let this host buy it again. An error
// means the record is only in memory.
func (g *purchaseGuard) adopt(key string, ticket uint64, state guardState, at time.Time, id json.Number) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.entries[key]
	if !ok || e.ticket != ticket {
		return nil
	}
	e.state, e.at, e.purchaseID = state, at, id
	return g.saveLocked()
}

// guardError is why the guard cannot protect a purchase, which is then
// refused.
type guardError struct {
	// unreadable: the file could not be read at start (else: a record
	// could not be written).
	unreadable bool
	path       string
	err        error
}

func (e *guardError) Error() string { return e.err.Error() }
func (e *guardError) Unwrap() error { return e.err }

// problem is the 503 for a purchase refused by a guard that cannot protect
// it. It says that nothing was sent, why, and what the operator can do.
func (e *guardError) problem(op *operation, v url.Values) *problem.Problem {
	var detail string
	switch {
	case e.unreadable:
		detail = fmt.Sprintf("audio/purchase refused, nothing was sent: the purchase guard file %s could not be read (%v), so purchases made before this start are not known and an identical one could be bought twice. %s, then repair or remove the file; it is read again at each purchase",
			e.path, e.err, checkPurchasesHint(v))
	case e.path == "":
		detail = fmt.Sprintf("audio/purchase refused, nothing was sent: the purchase guard cannot be recorded: %v", e.err)
	default:
		detail = fmt.Sprintf("audio/purchase refused, nothing was sent: the purchase guard record could not be written durably (%v), and without it an identical purchase could be bought again after a restart. Make the plugin's state directory %s writable (it is recreated if missing) and try again",
			e.err, filepath.Dir(e.path))
	}
	p := problem.New(http.StatusServiceUnavailable, detail)
	p.Title = "Purchase guard unavailable"
	p.Provider, p.Operation = "hellorf", op.name
	return p
}

// confirmed reports whether the caller sent Sluice-Confirm: repeat-purchase
// (the header may list several confirmations).
func confirmed(h http.Header) bool {
	for _, v := range h.Values("Sluice-Confirm") {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), ConfirmRepeat) {
				return true
			}
		}
	}
	return false
}

// purchase buys a licence. It spends money, so: refused unless
// allow_purchase; exactly one upstream attempt (never retried, and marked
// destructive so the host never coalesces or caches it); refused as a
// probable duplicate when an identical purchase was made within
// purchase_guard, unless confirmed.
func (p *hellorf) purchase(ctx context.Context, req *provider.Request, w answerWriter, up upstream, s *settings, op *operation, params url.Values) error {
	if !s.AllowPurchase {
		return problem.Forbidden("audio/purchase spends money; it is disabled unless allow_purchase = true in [providers.hellorf]")
	}
	key := guardKey(params)
	ticket, prev, err := p.guard.reserve(key, p.now(), s.purchaseGuard, confirmed(req.Header))
	if err != nil {
		var ge *guardError
		if !errors.As(err, &ge) {
			return err
		}
		p.log.Error("purchase refused before sending: the purchase guard cannot record it", "err", err,
			"audio_id", params.Get("audio_id"), "permission_id", params.Get("permission_id"))
		return ge.problem(op, params)
	}
	if prev != nil {
		return writeProblem(w, duplicateProblem(op, params, prev, s.purchaseGuard, p.now()))
	}
	// In a fleet, the fleet's record too: another host may have made the
	// same purchase. Both guards must pass.
	claim, err := up.ClaimGuard(ctx, key, s.purchaseGuard, req.MaxWait+s.timeout+time.Minute, confirmed(req.Header))
	if err != nil {
		p.settle(key, ticket, 0, "", true) // nothing was sent
		p.log.Error("purchase refused before sending: the fleet's purchase guard cannot record it", "err", err,
			"audio_id", params.Get("audio_id"), "permission_id", params.Get("permission_id"))
		return fleetGuardProblem(op, err)
	}
	if !claim.Claimed {
		prev := &guardEntry{state: fleetState(claim.Prev.State), at: claim.Prev.StartedAt, purchaseID: json.Number(claim.Prev.ID)}
		if prev.state == guardInFlight {
			// Its host settles it in the fleet's record.
			p.settle(key, ticket, 0, "", true)
		} else if err := p.guard.adopt(key, ticket, prev.state, prev.at, prev.purchaseID); err != nil {
			p.log.Error("purchase guard could not keep another host's purchase; the fleet's record still refuses a repeat", "err", err)
		}
		return writeProblem(w, duplicateProblem(op, params, prev, s.purchaseGuard, p.now()))
	}
	settle := func(state guardState, id json.Number, release bool) {
		p.settle(key, ticket, state, id, release)
		fs := provider.GuardUnknown
		if state == guardDone {
			fs = provider.GuardDone
		}
		// The caller may have gone: the record must still be written.
		if err := up.SettleGuard(context.WithoutCancel(ctx), claim, fs, id.String(), release); err != nil {
			p.log.Error("the fleet's purchase guard could not record a purchase's outcome; identical purchases on every host are refused as in progress until the guard window ends", "err", err)
		}
	}
	var ex exchange
	resp, err := up.Do(ctx, bucketAPI, ex.builder(s, op, params, p.now))
	if err != nil {
		if !ex.mayHaveArrived.Load() {
			// Refused for budget, or no connection could be made: nothing
			// reached hellorf.
			settle(0, "", true)
			return err
		}
		settle(guardUnknown, "", false)
		return lostPurchase(err, params, s.purchaseGuard)
	}
	body, err := provider.ReadBody(ctx, resp, maxJSON)
	if err != nil {
		settle(guardUnknown, "", false)
		return lostPurchase(err, params, s.purchaseGuard)
	}
	env, ok := parseEnvelope(body)
	switch {
	case ok && env.ok() && resp.StatusCode/100 == 2:
		var d struct {
			ID json.Number `json:"id"`
		}
		_ = json.Unmarshal(env.Data, &d) // an id-less success still blocks duplicates
		settle(guardDone, d.ID, false)
		p.log.Info("purchase made", "purchase_id", d.ID.String(), "audio_id", params.Get("audio_id"), "permission_id", params.Get("permission_id"))
	case ok && !env.ok() && (resp.StatusCode/100 == 2 || resp.StatusCode/100 == 4):
		// hellorf refused it: no purchase exists, the key is free again.
		settle(0, "", true)
	case ok && !env.ok() && resp.StatusCode/100 == 5:
		// A server error is not a refusal: it may have struck after the
		// charge (a failure writing the answer, a timeout behind a proxy),
		// so an immediate identical purchase could buy twice.
		settle(guardUnknown, "", false)
		p.log.Warn("purchase answered with a server error: it may have been made; an identical purchase is refused until confirmed",
			"http_status", resp.StatusCode, "code", env.code(), "audio_id", params.Get("audio_id"), "permission_id", params.Get("permission_id"))
	default:
		// A success status without a readable answer, or the reverse,
		// or an envelope under any other status: what happened is not
		// known.
		settle(guardUnknown, "", false)
	}
	return p.relayJSON(ctx, w, up, s, op, &ex, resp, body)
}

// settle records a purchase's outcome in the guard and logs a failure to
// save it: the caller is answered anyway (the purchase has happened or
// not, whatever the disk says), and the in-flight record already on disk
// keeps an identical purchase blocked after a restart.
func (p *hellorf) settle(key string, ticket uint64, state guardState, id json.Number, release bool) {
	if err := p.guard.settle(key, ticket, state, id, release); err != nil {
		p.log.Error("purchase guard could not record a purchase's outcome; after a restart it blocks an identical purchase as outcome unknown", "err", err)
	}
}

// fleetState maps a fleet record's state onto the local guard's.
func fleetState(s string) guardState {
	switch s {
	case provider.GuardInFlight:
		return guardInFlight
	case provider.GuardDone:
		return guardDone
	}
	return guardUnknown
}

// fleetGuardProblem is the 503 for a purchase the fleet's guard cannot
// record: without it another host could buy the same thing, so nothing
// was sent.
func fleetGuardProblem(op *operation, err error) *problem.Problem {
	p := problem.New(http.StatusServiceUnavailable, "audio/purchase refused, nothing was sent: the fleet's purchase guard could not be written, so an identical purchase on another host cannot be ruled out ("+err.Error()+"). Try again once the fleet's Redis answers")
	p.Title = "Purchase guard unavailable"
	p.Provider, p.Operation = "hellorf", op.name
	p.Reason = problem.ReasonFleetUnreachable
	return p
}

func describePurchase(v url.Values) string {
	s := fmt.Sprintf("audio_id=%s permission_id=%s warrant_name=%q", v.Get("audio_id"), v.Get("permission_id"), v.Get("warrant_name"))
	if t := v.Get("third_user_id"); t != "" {
		s += fmt.Sprintf(" third_user_id=%q", t)
	}
	return s
}

func checkPurchasesHint(v url.Values) string {
	return "check GET /v1/hellorf/audio/my-purchases?audio_id=" + v.Get("audio_id") + " (sluicectl hellorf purchases --audio " + v.Get("audio_id") + ")"
}

// duplicateProblem is the 409 for a purchase the guard blocks. Its extension
// members name the earlier purchase so a program need not parse the detail.
func duplicateProblem(op *operation, v url.Values, prev *guardEntry, window time.Duration, now time.Time) *problem.Problem {
	ago := now.Sub(prev.at).Round(time.Second)
	until := prev.at.Add(window)
	var detail string
	extra := map[string]any{"guard_until": until.UTC().Format(time.RFC3339), "first_purchase_at": prev.at.UTC().Format(time.RFC3339)}
	switch prev.state {
	case guardInFlight:
		detail = fmt.Sprintf("an identical purchase (%s) is in progress right now; wait for its answer", describePurchase(v))
	case guardDone:
		id := prev.purchaseID.String()
		if id == "" {
			id = "(hellorf gave no id)"
		} else {
			extra["purchase_id"] = prev.purchaseID
		}
		detail = fmt.Sprintf("an identical purchase (%s) was made %s ago as purchase %s; a duplicate within purchase_guard (%s) is refused. To buy it again on purpose, repeat the request with the header Sluice-Confirm: %s",
			describePurchase(v), ago, id, window, ConfirmRepeat)
	case guardUnknown:
		extra["outcome"] = "unknown"
		detail = fmt.Sprintf("an identical purchase (%s) %s ago got no clear answer from hellorf (none, or a server error), so it may have been made: %s before buying again. To buy it again anyway, repeat the request with the header Sluice-Confirm: %s",
			describePurchase(v), ago, checkPurchasesHint(v), ConfirmRepeat)
	}
	p := problem.New(http.StatusConflict, detail)
	p.Title = "Probable duplicate purchase"
	p.Provider, p.Operation = "hellorf", op.name
	p.Extra = extra
	return p
}

// lostPurchase turns a failure after the purchase may have reached hellorf
// into a problem that says so: a timeout is not a refusal.
func lostPurchase(err error, v url.Values, window time.Duration) error {
	p := problem.From(err)
	if p.Status == http.StatusInternalServerError {
		p = problem.New(http.StatusBadGateway, err.Error())
	}
	q := *p
	q.Detail = fmt.Sprintf("%s. The purchase request was sent, so it may have been made and charged: %s before trying again; an identical purchase is refused for %s unless confirmed with Sluice-Confirm: %s",
		strings.TrimSuffix(p.Detail, "."), checkPurchasesHint(v), window, ConfirmRepeat)
	return &q
}

// writeProblem renders a problem as the answer itself rather than returning
// it, because the plugin RPC carries only a problem's standard members and
// the 409's purchase_id must reach the caller.
func writeProblem(w answerWriter, p *problem.Problem) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("rendering problem: %w", err)
	}
	h := http.Header{"Content-Type": {problem.ContentType}, "Cache-Control": {"no-store"}}
	if err := w.WriteHead(p.Status, h, provider.CacheHint{Outcome: "sluice:duplicate-purchase"}); err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
