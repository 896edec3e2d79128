package api

import (
	"context"
	"time"
)

// Info is what one request's handlers learn and the access log and metrics
// report: which provider and operation it was, how the cache answered, how
// long it queued and how long the upstream took.
type Info struct {
	Provider  string
	Operation string
	// Outcome is hit, miss, coalesced, bypass, rejected or failed.
	Outcome    string
	Cache      string // Cache-Status value
	Upstream   string // upstream outcome, e.g. "ineo:200"
	Wait       time.Duration
	Upstreamed time.Duration
	Attempts   int
}

type infoKey struct{}

// InfoFrom returns the request's Info for handlers to fill; a dummy when the
// request did not come through the Server.
func InfoFrom(ctx context.Context) *Info {
	if in, ok := ctx.Value(infoKey{}).(*Info); ok {
		return in
	}
	return &Info{}
}

func withInfo(ctx context.Context) (context.Context, *Info) {
	in := &Info{}
	return context.WithValue(ctx, infoKey{}, in), in
}
