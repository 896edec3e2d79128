package hellorfsim

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"time"
)

func (s *Sim) resetLocked() {
	s.arrivals = nil
	s.purchases = nil
	s.nextPurchase = FirstPurchaseID
	s.objects = nil
	s.failNext = map[string][]Failure{}
	s.bodyNext = map[string][]string{}
	s.stallNext = map[string][]time.Duration{}
	first := s.tracks[0]
	s.seeded = []*Purchase{{
		ID: SeededPurchaseID, AudioID: first.ID, PermissionID: 33, PermissionName: "HD", PermissionType: "hd", AssetType: "hd",
		Price: "9.90", WarrantName: "广州汽车集团股份有限公司",
		CreatedAt:    time.Date(2016, 8, 29, 16, 41, 47, 0, cst),
		DownloadedAt: time.Date(2016, 8, 29, 17, 9, 2, 0, cst),
	}}
}

// Reset returns the simulator to its state after New: request log,
// purchases, object-store count and fault hooks are cleared.
func (s *Sim) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
}

// mustPath panics on a path that is not an API endpoint: it is a bug in the
// calling test, and answering 0 would let "no requests" pass vacuously.
func mustPath(path string) {
	if _, ok := endpoints[path]; !ok {
		panic(fmt.Sprintf("hellorfsim: unknown path %q (want e.g. %q)", path, PathSearch))
	}
}

// Requests returns how many requests arrived at an API path, however they
// were answered.
func (s *Sim) Requests(path string) int {
	mustPath(path)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.arrivals {
		if a.Path == path {
			n++
		}
	}
	return n
}

// TotalRequests returns how many API requests arrived, at any path.
func (s *Sim) TotalRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.arrivals)
}

// RequestLog returns a copy of the API arrivals, oldest first.
func (s *Sim) RequestLog() []Arrival {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Arrival, len(s.arrivals))
	for i, a := range s.arrivals {
		a.Params = cloneValues(a.Params)
		out[i] = a
	}
	return out
}

// Purchases returns every purchase made through the API, in order,
// duplicates included (the seeded history is not among them).
func (s *Sim) Purchases() []Purchase {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Purchase, len(s.purchases))
	for i, p := range s.purchases {
		out[i] = *p
	}
	return out
}

// ObjectRequests returns how many requests reached the object store
// (previews, waveforms, purchased audio), expired ones included.
func (s *Sim) ObjectRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.objects)
}

// ObjectLog returns a copy of the object-store requests, oldest first.
func (s *Sim) ObjectLog() []ObjectArrival {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ObjectArrival(nil), s.objects...)
}

// FailNext makes the next request to path that passes the client_id, nonce
// and sign checks answer f instead. Calls queue.
func (s *Sim) FailNext(path string, f Failure) {
	mustPath(path)
	if f.Status == 0 {
		f.Status = 500
	}
	if f.Code == 0 {
		f.Code = CodeInternal
	}
	if f.Message == "" {
		f.Message = "服务器内部错误"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext[path] = append(s.failNext[path], f)
}

// BodyNext makes the next request to path that passes the client_id, nonce
// and sign checks answer HTTP 200, Content-Type application/json, with body
// verbatim: an answer hellorf's documents never show (a success without
// its data, say), as a broken deployment or a proxy rewriting answers
// could send. Calls queue, after FailNext's for the same path. Off unless
// a test calls it.
func (s *Sim) BodyNext(path, body string) {
	mustPath(path)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bodyNext[path] = append(s.bodyNext[path], body)
}

// StallNext holds the answer to the next request to path for d after it was
// processed (a purchase is recorded first): the request arrived, the
// answer is late. Calls queue. Close releases stalled answers.
func (s *Sim) StallNext(path string, d time.Duration) {
	mustPath(path)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stallNext[path] = append(s.stallNext[path], d)
}

// WarrantSHA256 returns the hex SHA-256 and size of the licence certificate
// download-warrant serves for a purchase.
func (s *Sim) WarrantSHA256(purchaseID int) (string, int64, error) {
	s.mu.Lock()
	p, found := s.purchaseByIDLocked(purchaseID)
	var pu Purchase
	if found {
		pu = *p
	}
	s.mu.Unlock()
	if !found {
		return "", 0, fmt.Errorf("hellorfsim: no purchase %d", purchaseID)
	}
	body, size := warrantPDF(&pu, s.byID[pu.AudioID], s.opts.WarrantSize, s.block)
	return digest(body, size)
}

// AudioSHA256 returns the hex SHA-256 and size of the audio file a
// purchase's download URL serves.
func (s *Sim) AudioSHA256(purchaseID int) (string, int64, error) {
	s.mu.Lock()
	p, found := s.purchaseByIDLocked(purchaseID)
	var audio int
	if found {
		audio = p.AudioID
	}
	s.mu.Unlock()
	if !found {
		return "", 0, fmt.Errorf("hellorfsim: no purchase %d", purchaseID)
	}
	return digest(newSynthetic(mp3Header, s.opts.AudioSize, int64(audio), s.block), s.opts.AudioSize)
}

func digest(r io.Reader, size int64) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return "", 0, err
	}
	if n != size {
		return "", 0, fmt.Errorf("hellorfsim: generated %d bytes, announced %d", n, size)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
