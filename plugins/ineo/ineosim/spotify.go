package ineosim

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"hash/fnv"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ReservedDownloadErrorID is a valid-looking track id for which spotify.php
// answers 602 download_error, so tests can reach that code without FailNext.
const ReservedDownloadErrorID = "0000000000000000000602"

// Track is the spotify.php success result.
type Track struct {
	TrackID      string   `json:"track_id"`
	Title        string   `json:"title"`
	Artists      []string `json:"artists"`
	Album        string   `json:"album"`
	DurationMS   int      `json:"duration_ms"`
	DownloadLink string   `json:"download_link"`
}

type envelope struct {
	OK         bool   `json:"ok"`
	Status     string `json:"status"`
	StatusCode int    `json:"status_code"`
	Result     any    `json:"result,omitempty"`
}

func writeEnvelope(w http.ResponseWriter, rep reply) {
	writeEnvelopeStatus(w, http.StatusOK, rep)
}

// writeEnvelopeStatus writes the envelope under HTTP status httpStatus;
// only an injected HTTPFault uses anything but 200.
func writeEnvelopeStatus(w http.ResponseWriter, httpStatus int, rep reply) {
	status := rep.status
	if status == "" {
		status = statusName(rep.code)
	}
	body, err := json.Marshal(envelope{OK: rep.code == codeOK, Status: status, StatusCode: rep.code, Result: rep.result})
	if err != nil {
		// Results are plain structs of strings and ints; this cannot happen.
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(httpStatus)
	_, _ = w.Write(append(body, '\n'))
}

// isTrackID reports whether id looks like a Spotify track id: 22 base62
// characters. The real service only knows Spotify tracks, so anything else
// finds nothing.
func isTrackID(id string) bool {
	if len(id) != 22 {
		return false
	}
	for _, c := range []byte(id) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

func (s *Sim) spotifyLocked(r *http.Request, id string) reply {
	switch {
	case !isTrackID(id) || s.notFound[id]:
		return reply{code: codeNotFound, status: statusNotFound}
	case id == ReservedDownloadErrorID:
		return reply{code: codeDownloadError}
	}
	tok := randomHex(16)
	s.dlTokens[tok] = id

	// The link points back at whatever host the client reached, so it works
	// for Start, httptest servers and custom listeners alike.
	link := url.URL{Scheme: "http", Host: r.Host, Path: s.prefix + "/dl/" + id + ".mp3", RawQuery: url.Values{"token": {tok}}.Encode()}
	if r.TLS != nil {
		link.Scheme = "https"
	}

	// Metadata is derived from the id so repeated lookups agree.
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	sum := h.Sum64()
	artists := []string{"Artist " + id[6:10]}
	if sum&1 == 1 {
		artists = append(artists, "Artist "+id[10:14])
	}
	return reply{code: codeOK, result: Track{
		TrackID:      id,
		Title:        "Track " + id[:6],
		Artists:      artists,
		Album:        "Album " + id[14:18],
		DurationMS:   120000 + int(sum%240000),
		DownloadLink: link.String(),
	}}
}

// serveDownload serves <prefix>/dl/<id>.mp3?token=… for tokens spotify.php
// issued. The download host is a file server, not the API, so it speaks
// plain HTTP status codes and is not rate-limited.
func (s *Sim) serveDownload(w http.ResponseWriter, r *http.Request, file string) {
	s.wait(r.Context())
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	id, ok := strings.CutSuffix(file, ".mp3")
	if !ok || !isTrackID(id) {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	issued := s.dlTokens[r.URL.Query().Get("token")]
	s.mu.Unlock()
	if issued != id {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	w.Header().Set("Content-Type", "audio/mpeg")
	http.ServeContent(w, r, file, time.Time{}, bytes.NewReader(fakeMP3(id)))
}

// fakeMP3 is an empty ID3v2.3 tag followed by one MPEG-1 Layer III frame
// header (128 kbit/s, 44.1 kHz) and the id as filler: enough for a sniffer to
// call it audio/mpeg, distinct per track.
func fakeMP3(id string) []byte {
	b := []byte{'I', 'D', '3', 3, 0, 0, 0, 0, 0, 0, 0xFF, 0xFB, 0x90, 0x64}
	return append(b, id...)
}

// randomHex returns n random bytes as hex. crypto/rand.Read never fails on
// supported platforms (it panics internally if it could).
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
