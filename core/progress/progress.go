// Package progress tracks where each provider call stands before its
// answer exists: waiting for the plugin, for rate budget (its bucket, its
// place, when it is expected to go), for its turn or a pause inside the
// plugin, or on its way upstream. A caller sees it through
// GET /v1/requests/{id} or, if it asks, as 1xx interim responses; so a
// long wait shows itself instead of looking like a hang.
package progress

import (
	"sync"
	"time"
)

// Stages a call goes through.
const (
	StageStarted  = "started"  // matched; the plugin has it
	StageBudget   = "budget"   // waiting for a grant from Bucket
	StageTurn     = "turn"     // waiting for its turn in Bucket (one at a time)
	StagePaused   = "paused"   // waiting out the upstream's pause of Bucket
	StageUpstream = "upstream" // granted; the request is on its way
)

// State is one call's position.
type State struct {
	ID        string `json:"id"`
	Provider  string `json:"provider"`
	Operation string `json:"operation"`
	Stage     string `json:"stage"`
	Bucket    string `json:"bucket,omitempty"`
	// Ahead is how many callers are queued before this one (budget stage).
	Ahead int `json:"ahead,omitempty"`
	// Expected is when the wait is expected to end (the predicted grant,
	// the end of a pause); zero when unknown.
	Expected time.Time `json:"expected,omitzero"`
	Since    time.Time `json:"since"` // when this stage began
	Started  time.Time `json:"started"`
}

// Tracker holds the calls in flight. The zero value is not usable: call New.
type Tracker struct {
	mu sync.Mutex
	m  map[string]*State
}

// New returns an empty tracker.
func New() *Tracker { return &Tracker{m: make(map[string]*State)} }

// maxTracked bounds the map: ids are chosen by callers, and a flood of
// calls must not grow it without end. Past it, new calls go untracked.
const maxTracked = 1 << 14

// Start records a call and returns the function that forgets it. An id
// already in flight (a caller reusing one) is left to its first call.
func (t *Tracker) Start(id, provider, operation string) (done func()) {
	if t == nil || id == "" {
		return func() {}
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.m[id]; dup || len(t.m) >= maxTracked {
		return func() {}
	}
	st := &State{ID: id, Provider: provider, Operation: operation, Stage: StageStarted, Since: now, Started: now}
	t.m[id] = st
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.m[id] == st {
			delete(t.m, id)
		}
	}
}

// Set moves the call id of provider to stage. Calls of another provider are
// not touched: a plugin may only speak of its own calls.
func (t *Tracker) Set(id, provider, stage, bucket string, ahead int, expected time.Time) {
	if t == nil || id == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.m[id]
	if !ok || st.Provider != provider {
		return
	}
	if st.Stage != stage || st.Bucket != bucket {
		st.Since = time.Now()
	}
	st.Stage, st.Bucket, st.Ahead, st.Expected = stage, bucket, ahead, expected
}

// Get returns a copy of the call's state.
func (t *Tracker) Get(id string) (State, bool) {
	if t == nil {
		return State{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.m[id]
	if !ok {
		return State{}, false
	}
	return *st, true
}
