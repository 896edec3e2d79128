package pluginhost

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// newHCLogger gives go-plugin an hclog logger whose JSON lines are re-emitted
// through the daemon's slog logger, so plugin logs land in one stream with
// their levels and fields.
func newHCLogger(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: &slogWriter{l: l}, JSONFormat: true, Level: hclog.Info})
}

type slogWriter struct{ l *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimSpace(p), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) != nil {
			w.l.Info(string(line))
			continue
		}
		msg, _ := m["@message"].(string)
		lvl, _ := m["@level"].(string)
		delete(m, "@message")
		delete(m, "@level")
		delete(m, "@timestamp")
		delete(m, "@module")
		delete(m, "@caller")
		attrs := make([]slog.Attr, 0, len(m))
		for k, v := range m {
			attrs = append(attrs, slog.Any(k, v))
		}
		w.l.LogAttrs(context.Background(), level(lvl), msg, attrs...)
	}
	return len(p), nil
}

// plainStderr receives a copy of everything a plugin writes to stderr and
// logs the lines that are not JSON records at warn. go-plugin logs those at
// debug only, and they are what matters when a plugin dies: a Go panic and
// its stack, a message from the runtime or a wrapper script. JSON records
// arrive through newHCLogger already.
type plainStderr struct{ l *slog.Logger }

func (w *plainStderr) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimSpace(p), []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 || json.Valid(line) {
			continue
		}
		w.l.Warn("plugin stderr", "line", string(line))
	}
	return len(p), nil
}

func level(s string) slog.Level {
	switch strings.ToLower(s) {
	case "trace", "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
