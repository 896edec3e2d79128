package jsonstr

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// TestAppendMatchesSlog: every string comes out as slog's JSON handler
// writes it, and reads back as JSON.
func TestAppendMatchesSlog(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "tab\tnew\nline\rcr", "\x00\x01\x1f\x7f",
		"<script>&amp;", "é ü 日本", "bad \xff utf-8 \xc3", "\u2028 and \u2029", "/v1/ineo/spotify.php?trackId=a b",
	} {
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey {
					return slog.Attr{}
				}
				return a
			},
		})).Info("", "v", s)
		want := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(buf.String()), `{"v":`), "}")
		got := string(Append(nil, s))
		if got != want {
			t.Errorf("Append(%q) = %s, slog writes %s", s, got, want)
		}
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Errorf("Append(%q) = %s: not JSON: %v", s, got, err)
		}
	}
}
