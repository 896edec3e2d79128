package daemon

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/internal/jsonstr"
)

// keysAndValues decodes one JSON line into its keys in order and its values.
func keysAndValues(t *testing.T, line []byte) ([]string, map[string]any) {
	t.Helper()
	var m map[string]any
	keys, err := jsonstr.Keys(line)
	if err == nil {
		err = json.Unmarshal(line, &m)
	}
	if err != nil {
		t.Fatalf("not JSON: %v: %s", err, line)
	}
	return keys, m
}

// TestAccessJSONMatchesSlog: the fast access-log encoder writes what slog's
// JSON handler would for the same record, key order included.
func TestAccessJSONMatchesSlog(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  api.AccessRecord
	}{
		{"provider hit", api.AccessRecord{PeerUID: 1000, PeerPID: 42, Method: "GET", Status: 200, Took: 123456 * time.Nanosecond,
			Info: &api.Info{Provider: "ineo", Operation: "track", Outcome: "hit", Cache: "sluice; hit; ttl=30"}}},
		{"provider miss", api.AccessRecord{Method: "POST", Status: 502, Took: time.Second,
			Info: &api.Info{Provider: "hellorf", Operation: "search", Outcome: "failed", Wait: time.Millisecond, Upstream: "hellorf:500", Upstreamed: 2 * time.Millisecond}}},
		{"route", api.AccessRecord{Method: "GET", Status: 404, Path: "/v1/x\"\\\n\t\x01<>&\xff\u00e9", Info: &api.Info{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			fast := appendAccessJSON(nil, now, &tc.rec)

			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, nil)).With("component", "api")
			// The logger's own line for the record (what the full path
			// writes when no AccessWriter is set).
			log.LogAttrs(t.Context(), slog.LevelInfo, "request", tc.rec.Attrs()...)

			fk, fm := keysAndValues(t, fast)
			sk, sm := keysAndValues(t, buf.Bytes())
			if !slices.Equal(fk, sk) {
				t.Errorf("keys:\nfast %v\nslog %v", fk, sk)
			}
			delete(fm, "time")
			delete(sm, "time")
			for k, v := range sm {
				if fm[k] != v {
					t.Errorf("%s: fast %#v, slog %#v", k, fm[k], v)
				}
			}
			if !bytes.HasSuffix(fast, []byte("}\n")) {
				t.Errorf("line does not end in a newline: %q", fast)
			}
		})
	}
}
