package provider

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/sluice-dev/sluice/core/proto"
)

// Guarder is a plugin's way to the fleet's duplicate guard for paying
// operations (through the host; plugins never reach the fleet's store).
// On a single host it claims nothing and answers Fleet = false: the
// plugin's own guard is then the only one.
type Guarder interface {
	// ClaimGuard claims the fleet's record of an operation, named by its
	// canonical parameters (hashed here: the store sees no parameter),
	// for window. inFlight bounds how long it can be in flight. confirm
	// overrides a finished or unknown earlier record, never one in flight.
	// An error means the record could not be written: send nothing.
	ClaimGuard(ctx context.Context, canonical string, window, inFlight time.Duration, confirm bool) (GuardClaim, error)
	// SettleGuard records how a claimed operation ended: state
	// GuardDone (with its id) or GuardUnknown, or release when it
	// certainly did not happen. A claim made on a single host is a no-op.
	SettleGuard(ctx context.Context, c GuardClaim, state, id string, release bool) error
}

// Guard states, as the fleet's records hold them.
const (
	GuardInFlight = "in_flight"
	GuardDone     = "done"
	GuardUnknown  = "unknown"
)

// GuardClaim is the fleet's answer to a claim.
type GuardClaim struct {
	// Fleet is false on a single host: there is no fleet guard.
	Fleet bool
	// Claimed: the operation may go (as far as the fleet knows). Else
	// Prev is the record that blocks it.
	Claimed bool
	Prev    GuardRecord

	key, token string
}

// GuardRecord is what the fleet knows of an earlier identical operation.
type GuardRecord struct {
	State     string
	StartedAt time.Time // on this host's clock
	ID        string
}

// ErrGuardUnavailable is matched by the error of a claim the fleet's
// store could not record.
var ErrGuardUnavailable = errors.New("the fleet's purchase guard cannot be written")

// GuardUnavailableError says why a claim could not be recorded.
type GuardUnavailableError struct{ Reason string }

func (e *GuardUnavailableError) Error() string { return e.Reason }

// Is makes errors.Is(err, ErrGuardUnavailable) true.
func (e *GuardUnavailableError) Is(target error) bool { return target == ErrGuardUnavailable }

// ClaimGuard implements Guarder.
func (u *Upstream) ClaimGuard(ctx context.Context, canonical string, window, inFlight time.Duration, confirm bool) (GuardClaim, error) {
	sum := sha256.Sum256([]byte(canonical))
	key := hex.EncodeToString(sum[:])
	r, err := u.host.GuardClaim(ctx, &proto.GuardClaimRequest{Key: key, WindowMs: window.Milliseconds(), InFlightMs: inFlight.Milliseconds(), Confirm: confirm})
	if err != nil {
		return GuardClaim{}, &GuardUnavailableError{Reason: fmt.Sprintf("the daemon's purchase guard did not answer: %v", err)}
	}
	if r.GetUnavailable() {
		return GuardClaim{}, &GuardUnavailableError{Reason: r.GetReason()}
	}
	c := GuardClaim{Fleet: r.GetFleet(), Claimed: r.GetClaimed() || !r.GetFleet(), key: key, token: r.GetToken()}
	if p := r.GetPrev(); p != nil && !c.Claimed {
		c.Prev = GuardRecord{State: p.GetState(), StartedAt: time.UnixMilli(p.GetStartedAtUnixMs()), ID: p.GetPurchaseId()}
	}
	return c, nil
}

// SettleGuard implements Guarder.
func (u *Upstream) SettleGuard(ctx context.Context, c GuardClaim, state, id string, release bool) error {
	if !c.Fleet || !c.Claimed {
		return nil
	}
	_, err := u.host.GuardSettle(ctx, &proto.GuardSettleRequest{Key: c.key, Token: c.token, State: state, PurchaseId: id, Release: release})
	return err
}
