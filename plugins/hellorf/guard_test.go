package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/internal/testenv"
	"github.com/sluice-dev/sluice/plugins/hellorf/hellorfsim"
)

// These tests break the purchase guard's file or directory in the ways a
// disk and an operator can, and check that the guard fails closed: a
// purchase it cannot record durably, or made while its file cannot be read,
// is refused before anything reaches hellorf. The tests run as root, where
// chmod blocks nothing, so unwritable places are made of other things: a
// regular file where a directory should be, a directory where a file should
// be, and real read-only and full tmpfs mounts (skipped, saying why, where
// mounting is not allowed).

// restart stands in for a SIGKILL of the plugin and the supervisor's
// restart: a new process on the same state directory, its memory empty.
func (h *harness) restart(t *testing.T) {
	t.Helper()
	p := newHellorf(slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	p.now = h.clk.now
	if err := p.configure(h.stateDir, h.raw); err != nil {
		t.Fatal(err)
	}
	h.p = p
}

func (h *harness) guardPath() string { return filepath.Join(h.stateDir, guardFile) }

// guardRefused expects the 503 of a purchase the guard cannot protect: it
// says nothing was sent, and why.
func guardRefused(t *testing.T, what string, rec *recorder, err error, why string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: answered %d %s, want a refusal", what, rec.status, rec.body.Bytes())
	}
	var ge *guardError
	if errors.As(err, &ge) {
		t.Fatalf("%s: the guard's own error, not a problem, reached the host: %v", what, err)
	}
	p := problemOf(err)
	if p == nil || p.Status != http.StatusServiceUnavailable || p.Title != "Purchase guard unavailable" ||
		!strings.Contains(p.Detail, "nothing was sent") || !strings.Contains(p.Detail, why) {
		t.Fatalf("%s: %v, want a 503 saying nothing was sent because %q", what, err, why)
	}
}

// mountTmpfs mounts a small tmpfs on dir, or skips the test.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	testenv.MountTmpfs(t, dir, "64k", "the other cases cover an unwritable guard without it")
}

// fill writes to dir until its file system has no byte left.
func fill(t *testing.T, dir string) { testenv.FillUp(t, dir) }

// TestPurchaseGuardUnwritable: the guard's place becomes unwritable after a
// first purchase. A new purchase is refused with nothing sent; the first
// one stays blocked, also after a restart; at most 1 purchase reaches the
// simulator per licensee.
func TestPurchaseGuardUnwritable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// mount: the state directory is a fresh tmpfs.
		mount  bool
		break_ func(t *testing.T, h *harness)
		why    string
		// repair undoes break_ for the restart (nil: the restart reads
		// the broken place as it is).
		repair func(t *testing.T, h *harness)
	}{
		{name: "state dir is a file", break_: func(t *testing.T, h *harness) {
			must(t, os.RemoveAll(h.stateDir))
			must(t, os.WriteFile(h.stateDir, []byte("x"), 0o600))
		}, why: "not a directory", repair: func(t *testing.T, h *harness) {
			// The restart cannot read the guard either (refused with
			// "could not be read", checked in TestPurchaseGuardUnreadable),
			// so put the directory back with the file as it was.
			must(t, os.Remove(h.stateDir))
			must(t, os.Mkdir(h.stateDir, 0o700))
		}},
		{name: "temp file is a directory", break_: func(t *testing.T, h *harness) {
			must(t, os.Mkdir(h.guardPath()+".tmp", 0o700))
		}, why: "is a directory"},
		{name: "read-only", mount: true, break_: func(t *testing.T, h *harness) {
			mustRun(t, "mount", "-o", "remount,ro", h.stateDir)
		}, why: "read-only file system"},
		{name: "full", mount: true, break_: func(t *testing.T, h *harness) { fill(t, h.stateDir) }, why: "no space left on device"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, hellorfsim.Options{}, nil)
			if tc.mount {
				mountTmpfs(t, h.stateDir)
			}
			first := url.Values{"audio_id": {strconv.Itoa(hellorfsim.SampleAudioID)}, "permission_id": {"35"}, "warrant_name": {"First"}}
			second := url.Values{"audio_id": first["audio_id"], "permission_id": {"35"}, "warrant_name": {"Second"}}
			h.mustCall(t, "audio.purchase", first, nil)
			saved, err := os.ReadFile(h.guardPath())
			must(t, err)
			tc.break_(t, h)

			rec, err := h.call(t, "audio.purchase", second, nil)
			guardRefused(t, "new purchase", rec, err, tc.why)
			// A confirmed repeat is refused too, and does not erase the
			// record it would have replaced.
			rec, err = h.call(t, "audio.purchase", first, http.Header{"Sluice-Confirm": {ConfirmRepeat}})
			guardRefused(t, "confirmed repeat", rec, err, tc.why)
			if rec := h.mustCall(t, "audio.purchase", first, nil); rec.status != http.StatusConflict {
				t.Fatalf("identical purchase: %d %s, want 409", rec.status, rec.body.Bytes())
			}
			if !strings.Contains(h.logs.String(), "purchase refused before sending") {
				t.Error("the refusal is not logged")
			}
			if tc.repair != nil {
				tc.repair(t, h)
				must(t, os.WriteFile(h.guardPath(), saved, 0o600))
			}
			h.restart(t)
			if rec := h.mustCall(t, "audio.purchase", first, nil); rec.status != http.StatusConflict {
				t.Fatalf("identical purchase after a restart: %d %s, want 409", rec.status, rec.body.Bytes())
			}
			if tc.repair == nil {
				rec, err = h.call(t, "audio.purchase", second, nil)
				guardRefused(t, "new purchase after a restart", rec, err, tc.why)
			}
			counts := map[string]int{}
			for _, p := range h.sim.Purchases() {
				counts[p.WarrantName]++
			}
			if counts["First"] != 1 || counts["Second"] != 0 {
				t.Fatalf("purchases reaching the simulator: %v, want First 1, Second 0", counts)
			}
		})
	}
}

// TestPurchaseGuardStateDirRemoved: a state directory removed under a
// running plugin is recreated by the next purchase, with everything the
// guard holds, and the guard holds across a restart.
func TestPurchaseGuardStateDirRemoved(t *testing.T) {
	t.Parallel()
	h := newHarness(t, hellorfsim.Options{}, nil)
	before := url.Values{"audio_id": {strconv.Itoa(hellorfsim.SampleAudioID)}, "permission_id": {"35"}, "warrant_name": {"Before"}}
	after := url.Values{"audio_id": before["audio_id"], "permission_id": {"35"}, "warrant_name": {"After"}}
	h.mustCall(t, "audio.purchase", before, nil)
	// Its parent too: every missing level is recreated.
	h.stateDir = filepath.Join(h.stateDir, "plugins", "hellorf")
	h.restart(t)
	h.mustCall(t, "audio.purchase", before, nil)
	must(t, os.RemoveAll(filepath.Dir(h.stateDir)))

	if rec := h.mustCall(t, "audio.purchase", after, nil); rec.status != http.StatusOK {
		t.Fatalf("purchase after the removal: %d %s", rec.status, rec.body.Bytes())
	}
	if fi, err := os.Stat(h.stateDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory not recreated 0700: %v %v", fi, err)
	}
	h.restart(t)
	for _, v := range []url.Values{before, after} {
		if rec := h.mustCall(t, "audio.purchase", v, nil); rec.status != http.StatusConflict {
			t.Fatalf("identical purchase (%s) after a restart: %d %s, want 409", v.Get("warrant_name"), rec.status, rec.body.Bytes())
		}
	}
	counts := map[string]int{}
	for _, p := range h.sim.Purchases() {
		counts[p.WarrantName]++
	}
	if counts["Before"] != 2 || counts["After"] != 1 {
		t.Fatalf("purchases reaching the simulator: %v, want Before 2 (two state directories), After 1", counts)
	}
}

// TestPurchaseGuardUnreadable: a guard file that cannot be read or parsed at
// start refuses every purchase, says so, and is read again at each purchase,
// so repairing or removing it is enough.
func TestPurchaseGuardUnreadable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		break_ func(t *testing.T, h *harness)
		fix    func(t *testing.T, h *harness)
		why    string
	}{
		{"corrupt", func(t *testing.T, h *harness) {
			b, err := os.ReadFile(h.guardPath())
			must(t, err)
			must(t, os.WriteFile(h.guardPath(), b[:len(b)/2], 0o600))
		}, func(t *testing.T, h *harness) { must(t, os.Remove(h.guardPath())) }, "unexpected end of JSON input"},
		{"a directory", func(t *testing.T, h *harness) {
			must(t, os.Remove(h.guardPath()))
			must(t, os.Mkdir(h.guardPath(), 0o700))
		}, func(t *testing.T, h *harness) { must(t, os.Remove(h.guardPath())) }, "is a directory"},
		{"state dir is a file", func(t *testing.T, h *harness) {
			must(t, os.RemoveAll(h.stateDir))
			must(t, os.WriteFile(h.stateDir, []byte("x"), 0o600))
		}, func(t *testing.T, h *harness) { must(t, os.Remove(h.stateDir)) }, "not a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, hellorfsim.Options{}, nil)
			buy := url.Values{"audio_id": {strconv.Itoa(hellorfsim.SampleAudioID)}, "permission_id": {"35"}, "warrant_name": {"Unreadable"}}
			h.mustCall(t, "audio.purchase", buy, nil)
			tc.break_(t, h)
			h.restart(t)
			if !strings.Contains(h.logs.String(), "purchase guard could not be read") {
				t.Error("the unreadable guard is not logged at start")
			}
			for _, hdr := range []http.Header{nil, {"Sluice-Confirm": {ConfirmRepeat}}} {
				rec, err := h.call(t, "audio.purchase", buy, hdr)
				guardRefused(t, "purchase", rec, err, tc.why)
				if p := problemOf(err); !strings.Contains(p.Detail, "could not be read") || !strings.Contains(p.Detail, "my-purchases?audio_id=") {
					t.Fatalf("refusal does not say what to do: %s", p.Detail)
				}
			}
			if n := len(h.sim.Purchases()); n != 1 {
				t.Fatalf("%d purchases reached the simulator, want 1", n)
			}
			tc.fix(t, h)
			if rec := h.mustCall(t, "audio.purchase", buy, nil); rec.status != http.StatusOK || len(h.sim.Purchases()) != 2 {
				t.Fatalf("purchase once the operator removed the file: %d %s", rec.status, rec.body.Bytes())
			}
			if _, err := os.Stat(h.guardPath()); err != nil {
				t.Fatalf("guard not written after recovery: %v", err)
			}
		})
	}
}

// TestPurchaseGuardNoStateDir: a plugin given no state directory refuses
// purchases rather than guard them in memory alone.
func TestPurchaseGuardNoStateDir(t *testing.T) {
	t.Parallel()
	h := newHarness(t, hellorfsim.Options{}, nil)
	h.stateDir = ""
	h.restart(t)
	rec, err := h.call(t, "audio.purchase", url.Values{"audio_id": {"1"}, "permission_id": {"2"}, "warrant_name": {"x"}}, nil)
	guardRefused(t, "purchase", rec, err, "no state directory")
	if n := len(h.sim.Purchases()); n != 0 {
		t.Fatalf("%d purchases reached the simulator", n)
	}
}

// TestPurchaseGuardOutcomeUnsaved: the purchase was sent, then its outcome
// cannot be saved. The caller still gets hellorf's answer (the purchase
// happened), the failure is logged, and after a restart the in-flight
// record written before sending blocks an identical purchase as "outcome
// unknown".
func TestPurchaseGuardOutcomeUnsaved(t *testing.T) {
	t.Parallel()
	h := newHarness(t, hellorfsim.Options{}, nil)
	buy := url.Values{"audio_id": {strconv.Itoa(hellorfsim.SampleAudioID)}, "permission_id": {"35"}, "warrant_name": {"Unsaved"}}
	h.up.wait = func() { must(t, os.Mkdir(h.guardPath()+".tmp", 0o700)) }
	if rec := h.mustCall(t, "audio.purchase", buy, nil); rec.status != http.StatusOK {
		t.Fatalf("purchase: %d %s", rec.status, rec.body.Bytes())
	}
	h.up.wait = nil
	if !strings.Contains(h.logs.String(), "could not record a purchase's outcome") {
		t.Error("the unsaved outcome is not logged")
	}
	must(t, os.Remove(h.guardPath()+".tmp"))
	h.restart(t)
	rec := h.mustCall(t, "audio.purchase", buy, nil)
	var dup struct {
		Extra string `json:"outcome"`
	}
	if rec.status != http.StatusConflict || json.Unmarshal(rec.body.Bytes(), &dup) != nil || dup.Extra != "unknown" {
		t.Fatalf("identical purchase after a restart: %d %s, want 409 outcome unknown", rec.status, rec.body.Bytes())
	}
	if n := len(h.sim.Purchases()); n != 1 {
		t.Fatalf("%d purchases reached the simulator, want 1", n)
	}
}

// problemOf is the problem err carries, or nil.
func problemOf(err error) *problem.Problem {
	var p *problem.Problem
	if errors.As(err, &p) {
		return p
	}
	return nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}
