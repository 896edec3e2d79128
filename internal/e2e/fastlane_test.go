package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/jsonstr"
	"github.com/sluice-dev/sluice/internal/testenv"
)

// laneAnswer is one answer read off a raw connection.
type laneAnswer struct {
	status int
	header http.Header
	body   string
}

func readAnswers(t *testing.T, br *bufio.Reader, n int) []laneAnswer {
	t.Helper()
	var out []laneAnswer
	for range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading answer %d: %v", len(out)+1, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("reading body %d: %v", len(out)+1, err)
		}
		out = append(out, laneAnswer{resp.StatusCode, resp.Header, string(b)})
	}
	return out
}

func dialRaw(t *testing.T, socket string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, bufio.NewReader(c)
}

func trackReq(id, extra string) string {
	return "GET /v1/ineo/spotify.php?trackId=" + id + " HTTP/1.1\r\nHost: sluice\r\n" + extra + "\r\n"
}

// TestFastLane: cache hits answered by the socket's fast lane are the same
// answers the full net/http path gives (headers, body, access log), a
// connection the lane hands over mid-way (a miss, a request with a body,
// pipelined requests) keeps working, and an idle lane connection does not
// hold up the daemon's shutdown.
func TestFastLane(t *testing.T) {
	t.Parallel()
	// Hits get access lines only with access_log = "all".
	env := testenv.Start(t, testenv.Options{Top: `access_log = "all"`})
	ctx := testenv.Ctx(t, time.Minute)
	id, other := trackID(700), trackID(701)
	// Primed with another spelling of the same track: the full path
	// remembers routes by their raw target, so the lane below must match
	// the plain id itself and find the same cache key.
	if r, err := track(ctx, env.Client, "spotify:track:"+id, nil); err != nil || r.Status != 200 {
		t.Fatalf("priming miss: %v %v", r, err)
	}

	// The same hit, once through the lane and once through the full path
	// (a Cache-Control the lane does not handle sends it there; max-stale
	// does not change the answer). The lane's counter tells which answered.
	laneAnswers := func() float64 { return metricValue(t, env, "sluice_fast_lane_answers_total") }
	before := laneAnswers()
	c, br := dialRaw(t, env.Socket)
	io.WriteString(c, trackReq(id, ""))
	lane := readAnswers(t, br, 1)[0]
	if n := laneAnswers() - before; n != 1 {
		t.Fatalf("the plain GET hit was answered by the lane %v times, want 1", n)
	}
	c2, br2 := dialRaw(t, env.Socket)
	io.WriteString(c2, trackReq(id, "Cache-Control: max-stale=5\r\n"))
	full := readAnswers(t, br2, 1)[0]
	if n := laneAnswers() - before; n != 1 {
		t.Fatalf("a hit with Cache-Control was answered by the lane")
	}
	if lane.status != 200 || full.status != 200 || lane.body != full.body {
		t.Fatalf("lane %d %q, full %d %q", lane.status, lane.body, full.status, full.body)
	}
	keys := func(h http.Header) []string {
		var ks []string
		for k := range h {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}
	if !slices.Equal(keys(lane.header), keys(full.header)) {
		t.Errorf("header names differ:\nlane %v\nfull %v", keys(lane.header), keys(full.header))
	}
	for k, v := range full.header {
		switch k {
		case "Date", "Age", "Sluice-Request-Id", "Cache-Status":
			if len(lane.header[k]) != 1 || lane.header.Get(k) == "" {
				t.Errorf("lane %s = %q", k, lane.header[k])
			}
		case "Ratelimit":
			// What is left of the budget moves between the two answers
			// (a grant leaves the window); which bucket it names must not.
			name := func(v string) string { n, _, _ := strings.Cut(v, ";"); return n }
			if len(lane.header[k]) != 1 || name(lane.header.Get(k)) != name(full.header.Get(k)) || name(full.header.Get(k)) == "" {
				t.Errorf("RateLimit: lane %q, full %q", lane.header[k], v)
			}
		default:
			if !slices.Equal(lane.header[k], v) {
				t.Errorf("%s: lane %q, full %q", k, lane.header[k], v)
			}
		}
	}
	if cs := lane.header.Get("Cache-Status"); !strings.HasPrefix(cs, "sluice; hit; ttl=") {
		t.Errorf("lane Cache-Status %q", cs)
	}
	if lane.header.Get("Sluice-Request-Id") == full.header.Get("Sluice-Request-Id") {
		t.Error("request ids repeat")
	}

	// Pipelined on one connection: hit, miss (handed over), hit again, a
	// request with a body, and a hit after it, all in one write.
	before = laneAnswers()
	c3, br3 := dialRaw(t, env.Socket)
	body := "trackId=" + id
	io.WriteString(c3, trackReq(id, "")+trackReq(other, "")+trackReq(id, "")+
		"POST /v1/ineo/spotify.php HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "+
		strconv.Itoa(len(body))+"\r\n\r\n"+body+trackReq(other, ""))
	got := readAnswers(t, br3, 5)
	// Only the first hit precedes the hand-over; the rest are net/http's.
	if n := laneAnswers() - before; n != 1 {
		t.Errorf("lane answers on the pipelined connection: %v, want 1", n)
	}
	want := []string{"sluice; hit", "sluice; fwd=miss", "sluice; hit", "sluice; hit", "sluice; hit"}
	for i, a := range got {
		if a.status != 200 || !strings.HasPrefix(a.header.Get("Cache-Status"), want[i]) {
			t.Errorf("pipelined answer %d: %d %q, want 200 %q…", i+1, a.status, a.header.Get("Cache-Status"), want[i])
		}
	}
	if got[0].body != lane.body || got[2].body != lane.body || got[3].body != lane.body || got[4].body != got[1].body {
		t.Error("pipelined answers carry the wrong bodies")
	}

	// Access log: the lane's hits are logged like the full path's: the
	// same keys in the same order, the same caller, provider, operation
	// and kind of Cache-Status.
	testenv.Eventually(t, 5*time.Second, "lane hits in the access log", func() bool {
		return strings.Count(env.Log(), `"outcome":"hit"`) >= 6
	})
	var firstKeys []string
	for _, line := range strings.Split(env.Log(), "\n") {
		if !strings.Contains(line, `"outcome":"hit"`) {
			continue
		}
		keys, vals := jsonKeysAndValues(t, line)
		if firstKeys == nil {
			firstKeys = keys
		}
		if !slices.Equal(keys, firstKeys) {
			t.Errorf("hit lines differ in their keys:\n%v\n%v", firstKeys, keys)
		}
		if vals["provider"] != "ineo" || vals["operation"] != "spotify.track" || vals["peer_uid"] != float64(os.Getuid()) ||
			!strings.HasPrefix(fmt.Sprint(vals["cache"]), "sluice; hit") {
			t.Errorf("hit line %s", line)
		}
	}

	// An idle lane connection must not delay shutdown: waited for, it
	// would hold it for the whole 5 s grace.
	c4, br4 := dialRaw(t, env.Socket)
	io.WriteString(c4, trackReq(id, ""))
	readAnswers(t, br4, 1)
	start := time.Now()
	env.StopDaemon()
	if d := time.Since(start); d >= 5*time.Second {
		t.Errorf("stopping with an idle keep-alive connection took %s", d)
	}
	if _, err := br4.ReadByte(); err == nil {
		t.Error("idle lane connection still open after the daemon stopped")
	}
}

// jsonKeysAndValues decodes one JSON log line into its keys, in order, and
// its values.
func jsonKeysAndValues(t *testing.T, line string) ([]string, map[string]any) {
	t.Helper()
	var m map[string]any
	keys, err := jsonstr.Keys([]byte(line))
	if err == nil {
		err = json.Unmarshal([]byte(line), &m)
	}
	if err != nil {
		t.Fatalf("not JSON: %v: %s", err, line)
	}
	return keys, m
}
