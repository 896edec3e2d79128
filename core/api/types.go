package api

import "time"

// Health is the body of GET /v1/health.
type Health struct {
	Status string `json:"status"` // "ok" or "unavailable"
	Detail string `json:"detail,omitempty"`
}

// Status is the body of GET /v1/status.
type Status struct {
	Version       string           `json:"version"`
	StartedAt     time.Time        `json:"started_at"`
	UptimeSeconds float64          `json:"uptime_seconds"`
	Uptime        string           `json:"uptime"`
	Sandbox       bool             `json:"sandbox,omitempty"`
	Socket        string           `json:"socket"`
	Config        ConfigStatus     `json:"config"`
	Providers     []ProviderStatus `json:"providers"`
	Buckets       []BucketStatus   `json:"buckets"`
	Cache         CacheStats       `json:"cache"`
	StateError    string           `json:"state_error,omitempty"`
	// Fleet is set in fleet mode (a [fleet] section): the daemons sharing
	// this one's rate budgets through Redis.
	Fleet *FleetStatus `json:"fleet,omitempty"`
}

// FleetStatus is the fleet as this daemon (one of its members) sees it.
type FleetStatus struct {
	Name string `json:"name"`
	// Member is this daemon's id in the fleet.
	Member string `json:"member"`
	// RedisReachable says whether the fleet's Redis answered; Error why
	// not. Unreachable, no member sends anything for a fleet bucket.
	RedisReachable bool            `json:"redis_reachable"`
	Error          string          `json:"error,omitempty"`
	Members        []FleetMember   `json:"members"`
	Mismatches     []FleetMismatch `json:"mismatches,omitempty"`
}

// FleetMember is one live member (its heartbeat has not expired).
type FleetMember struct {
	ID      string    `json:"id"`
	Host    string    `json:"host"`
	Version string    `json:"version"`
	Schema  string    `json:"schema"`
	Started time.Time `json:"started"`
	Self    bool      `json:"self,omitempty"`
	// Limits are the member's configured limits, bucket → "6 per 7s".
	Limits map[string]string `json:"limits"`
	// LimitsDisagree names the buckets whose limit here differs from the
	// fleet's (that member sends nothing for them); VersionDisagrees says
	// the member runs another version or key schema than this daemon.
	LimitsDisagree   []string `json:"limits_disagree,omitempty"`
	VersionDisagrees bool     `json:"version_disagrees,omitempty"`
}

// FleetMismatch is a bucket this daemon holds because its configured limit
// differs from the one its fleet keeps: calls needing it get 503
// "fleet_limit_mismatch" until the configs agree.
type FleetMismatch struct {
	Bucket     string `json:"bucket"`
	Limit      string `json:"limit"`
	FleetLimit string `json:"fleet_limit"`
}

// ConfigStatus tells which config is in force and how the last reload went.
type ConfigStatus struct {
	Path         string    `json:"path"`
	LoadedAt     time.Time `json:"loaded_at"`
	Hash         string    `json:"hash,omitempty"`
	LastReloadOK bool      `json:"last_reload_ok"`
	LastError    string    `json:"last_error"`
	LastErrorAt  time.Time `json:"last_error_at,omitzero"`
	// Warnings of the config in force, e.g. a limit allowed past a vendor's
	// documented rule (allow_over_vendor_limit).
	Warnings []string `json:"warnings,omitempty"`
}

// RequestStatus is where one provider call stands before its answer
// exists (GET /v1/requests/{id}).
type RequestStatus struct {
	ID        string `json:"id"`
	Provider  string `json:"provider"`
	Operation string `json:"operation"`
	// Stage: "started" (with the plugin), "budget" (waiting for a grant),
	// "turn" (waiting for its turn: one request at a time), "paused"
	// (waiting out the upstream's pause), "upstream" (on its way).
	Stage  string `json:"stage"`
	Bucket string `json:"bucket,omitempty"`
	// Ahead counts the callers queued before this one.
	Ahead int `json:"ahead,omitempty"`
	// Expected is when the wait is expected to end, if known.
	Expected *time.Time `json:"expected,omitempty"`
	Since    time.Time  `json:"since"`
	Started  time.Time  `json:"started"`
	// Budget is the bucket's budget now.
	Budget *RequestBudget `json:"budget,omitempty"`
}

// RequestBudget is a bucket's budget as a waiting caller sees it.
type RequestBudget struct {
	Used  int `json:"used"`
	Limit int `json:"limit"`
	// WindowSeconds is the limit's window.
	WindowSeconds float64 `json:"window_seconds"`
	// NextSlotSeconds is how long until one more request can be granted.
	NextSlotSeconds float64 `json:"next_slot_seconds"`
}

// ProviderStatus describes one provider plugin.
type ProviderStatus struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`
	PID       int       `json:"pid"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"last_error"`
	Since     time.Time `json:"since"`
	Version   string    `json:"version,omitempty"`
	// Calls counts provider calls since the daemon started; Saved those
	// answered without an upstream request of their own (cache, 304,
	// coalesced, stale): what sharing sluice saved.
	Calls uint64 `json:"calls"`
	Saved uint64 `json:"saved"`
}

// BucketStatus describes one rate bucket.
type BucketStatus struct {
	Name          string  `json:"name"`
	Requests      int     `json:"requests"`
	Window        string  `json:"window"`
	WindowSeconds float64 `json:"window_seconds"`
	InWindow      int     `json:"in_window"`
	Queued        int     `json:"queued"`
	// PausedUntil is null unless the bucket is paused.
	PausedUntil *time.Time `json:"paused_until"`
	PauseReason string     `json:"pause_reason,omitempty"`
	Granted     uint64     `json:"granted"`
	// Late counts grants the scheduler decided but handed out too late
	// to be used (a starved daemon): withdrawn, never sent, not in Granted.
	Late uint64 `json:"late"`
	// Released counts grants given back unused (a pre-grant the plugin
	// did not need); not counted in Granted.
	Released  uint64 `json:"released"`
	LastError string `json:"last_error,omitempty"`
	// Held is set while the bucket grants nothing because the scheduler
	// cannot record grants ("state_unwritable: <error>"): callers get 503
	// with reason "state_unwritable" until a write succeeds again.
	Held      string `json:"held,omitempty"`
	HeldErrno string `json:"held_errno,omitempty"`
}

// CacheStats is the body of GET /v1/cache and part of status.
type CacheStats struct {
	Entries   int    `json:"entries"`
	Bytes     int64  `json:"bytes"`
	MaxBytes  int64  `json:"max_bytes"`
	Hits      uint64 `json:"hits"`
	Misses    uint64 `json:"misses"`
	Coalesced uint64 `json:"coalesced"`
	Evictions uint64 `json:"evictions"`
}

// ReloadResult is the body of a successful POST /v1/reload.
type ReloadResult struct {
	Status   string    `json:"status"` // "reloaded" or "unchanged"
	Hash     string    `json:"hash"`
	LoadedAt time.Time `json:"loaded_at"`
}

// PurgeResult is the body of DELETE /v1/cache[/{provider}].
type PurgeResult struct {
	Provider string `json:"provider,omitempty"`
	Purged   int    `json:"purged"`
}
