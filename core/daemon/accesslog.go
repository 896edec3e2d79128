package daemon

import (
	"strconv"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/internal/jsonstr"
)

// jsonAccess writes access lines as the JSON handler writes them (same
// keys, same order, durations in nanoseconds), appending straight into the
// buffered access writer. It is used only when the log is JSON; a terminal
// gets slog's text lines.
type jsonAccess struct {
	w    *bufferedWriter
	pool sync.Pool
}

func newJSONAccess(w *bufferedWriter) *jsonAccess {
	return &jsonAccess{w: w, pool: sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}}
}

func (a *jsonAccess) WriteAccess(r *api.AccessRecord) {
	bp := a.pool.Get().(*[]byte)
	b := appendAccessJSON((*bp)[:0], time.Now(), r)
	a.w.Write(b)
	*bp = b
	a.pool.Put(bp)
}

func appendAccessJSON(b []byte, now time.Time, r *api.AccessRecord) []byte {
	b = append(b, `{"time":"`...)
	b = now.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"request","component":"api","peer_uid":`...)
	b = strconv.AppendUint(b, uint64(r.PeerUID), 10)
	b = append(b, `,"peer_pid":`...)
	b = strconv.AppendInt(b, int64(r.PeerPID), 10)
	b = appendField(b, "method", r.Method)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, `,"took":`...)
	b = strconv.AppendInt(b, int64(r.Took), 10)
	if in := r.Info; in != nil && in.Provider != "" {
		b = appendField(b, "provider", in.Provider)
		b = appendField(b, "operation", in.Operation)
		b = appendField(b, "outcome", in.Outcome)
		b = appendField(b, "cache", in.Cache)
		b = append(b, `,"wait":`...)
		b = strconv.AppendInt(b, int64(in.Wait), 10)
		b = appendField(b, "upstream", in.Upstream)
		b = append(b, `,"upstream_took":`...)
		b = strconv.AppendInt(b, int64(in.Upstreamed), 10)
	} else {
		b = appendField(b, "path", r.Path)
	}
	return append(b, "}\n"...)
}

func appendField(b []byte, key, v string) []byte {
	b = append(b, `,"`...)
	b = append(b, key...)
	b = append(b, `":`...)
	return jsonstr.Append(b, v)
}
