package hellorfsim

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The object store: every URL the simulator hands out (previews, waveforms,
// purchased audio) points here, is signed like an Aliyun OSS URL
// (OSSAccessKeyId, Expires in Unix seconds, Signature), and stops working at
// its Expires. Paths are outside the API prefix, as object storage is another
// host in reality.
const (
	ossAccessKeyID = "LTAI4FvyBjoFRCwBPtqSe4Mc" // the original's example key id
	ossSecret      = "hellorfsim-object-store-secret"
)

// signObject returns an absolute, signed URL for path on host.
func (s *Sim) signObject(host, path, disposition string, now time.Time) string {
	exp := now.Add(s.opts.LinkLife).Unix()
	var b strings.Builder
	b.WriteString("http://" + host + path + "?")
	if disposition != "" {
		b.WriteString("response-content-disposition=" + url.QueryEscape(disposition) + "&")
	}
	b.WriteString("OSSAccessKeyId=" + ossAccessKeyID + "&Expires=" + strconv.FormatInt(exp, 10))
	b.WriteString("&Signature=" + url.QueryEscape(objectSignature(path, exp)))
	return b.String()
}

func objectSignature(path string, exp int64) string {
	m := hmac.New(sha1.New, []byte(ossSecret))
	fmt.Fprintf(m, "GET\n\n\n%d\n%s", exp, path)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// ossError writes an OSS-style XML error.
func ossError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>%s</Code>\n  <Message>%s</Message>\n</Error>\n", code, msg)
}

// serveObject serves a signed object URL, honouring Range and If-Range (the
// download command resumes with them).
func (s *Sim) serveObject(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	s.mu.Lock()
	s.objects = append(s.objects, ObjectArrival{At: time.Now(), Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range")})
	s.mu.Unlock()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		ossError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
		return
	}
	q := r.URL.Query()
	exp, err := strconv.ParseInt(q.Get("Expires"), 10, 64)
	if q.Get("OSSAccessKeyId") != ossAccessKeyID || err != nil ||
		!hmac.Equal([]byte(q.Get("Signature")), []byte(objectSignature(r.URL.Path, exp))) {
		ossError(w, http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
		return
	}
	if now.Unix() >= exp {
		ossError(w, http.StatusForbidden, "AccessDenied", "Request has expired.")
		return
	}
	obj, err := s.object(r.URL.Path)
	if err != nil {
		ossError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	if d := q.Get("response-content-disposition"); d != "" {
		w.Header().Set("Content-Disposition", d)
	}
	w.Header().Set("Content-Type", obj.contentType)
	w.Header().Set("ETag", obj.etag)
	if obj.purchaseID != 0 && r.Method == http.MethodGet {
		s.markDownloaded(obj.purchaseID, now)
	}
	http.ServeContent(w, r, "", obj.modTime, obj.content)
}

// object is a stored file.
type object struct {
	contentType string
	etag        string
	modTime     time.Time
	content     io.ReadSeeker
	purchaseID  int
}

var errNoObject = errors.New("no such object")

// object resolves a path:
//
//	/media/preview/{audio}.mp3   preview (watermarked) audio
//	/media/wave/{audio}.png      waveform image
//	/media/wave/{audio}.json     waveform samples
//	/oss/audios/{purchase}/{audio}.mp3   purchased audio
func (s *Sim) object(path string) (*object, error) {
	modTime := time.Date(2022, 4, 7, 9, 0, 0, 0, time.UTC)
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	audioOf := func(file, ext string) (*track, bool) {
		n, err := strconv.Atoi(strings.TrimSuffix(file, ext))
		if err != nil || !strings.HasSuffix(file, ext) {
			return nil, false
		}
		t, ok := s.byID[n]
		return t, ok
	}
	switch {
	case len(parts) == 3 && parts[0] == "media" && parts[1] == "preview":
		if t, ok := audioOf(parts[2], ".mp3"); ok {
			c := newSynthetic(mp3Header, previewSize, int64(t.ID), s.block)
			return &object{contentType: "audio/mpeg", etag: etagOf("preview", t.ID), modTime: modTime, content: c}, nil
		}
	case len(parts) == 3 && parts[0] == "media" && parts[1] == "wave":
		if t, ok := audioOf(parts[2], ".png"); ok {
			return &object{contentType: "image/png", etag: etagOf("png", t.ID), modTime: modTime, content: bytes.NewReader(waveformPNG(t.ID))}, nil
		}
		if t, ok := audioOf(parts[2], ".json"); ok {
			b, _ := json.Marshal(waveformSamples(t.ID))
			return &object{contentType: "application/json", etag: etagOf("json", t.ID), modTime: modTime, content: bytes.NewReader(b)}, nil
		}
	case len(parts) == 4 && parts[0] == "oss" && parts[1] == "audios":
		pid, err := strconv.Atoi(parts[2])
		t, ok := audioOf(parts[3], ".mp3")
		if err != nil || !ok {
			break
		}
		s.mu.Lock()
		pu, found := s.purchaseByIDLocked(pid)
		s.mu.Unlock()
		if !found || pu.AudioID != t.ID {
			break
		}
		c := newSynthetic(mp3Header, s.opts.AudioSize, int64(t.ID), s.block)
		return &object{contentType: "audio/mpeg", etag: etagOf("audio", t.ID), modTime: pu.CreatedAt, content: c, purchaseID: pid}, nil
	}
	return nil, errNoObject
}

func etagOf(kind string, id int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", kind, id)))
	return `"` + strings.ToUpper(hex.EncodeToString(sum[:16])) + `"`
}

// previewSize is the length of a preview mp3.
const previewSize = 48 << 10

// mp3Header starts every audio file: an ID3v2.3 tag header with an empty
// tag, then an MPEG-1 Layer III frame header, so the files are recognisable
// as MP3 by their magic bytes.
var mp3Header = []byte{'I', 'D', '3', 3, 0, 0, 0, 0, 0, 0, 0xFF, 0xFB, 0x90, 0x64}

// blockSize is the period of the synthetic content: big enough not to look
// repetitive, small enough to keep in memory once per simulator.
const blockSize = 64 << 10

func newBlock() []byte {
	rng := rand.New(rand.NewPCG(442, 512797))
	b := make([]byte, blockSize)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// synthetic is a deterministic file of any size generated on the fly: a
// fixed head, then bytes of a shared random block at an offset chosen by
// seed. It never holds more than the block in memory, so a 100 MB file
// costs nothing to serve.
type synthetic struct {
	head  []byte
	size  int64
	seed  int64
	block []byte
	off   int64
}

func newSynthetic(head []byte, size, seed int64, block []byte) *synthetic {
	return &synthetic{head: head, size: max(size, int64(len(head))), seed: seed, block: block}
}

func (c *synthetic) Read(p []byte) (int, error) {
	if c.off >= c.size {
		return 0, io.EOF
	}
	n := c.readAt(p, c.off)
	c.off += int64(n)
	return n, nil
}

func (c *synthetic) readAt(p []byte, off int64) int {
	p = p[:min(int64(len(p)), c.size-off)]
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos < int64(len(c.head)) {
			n += copy(p[n:], c.head[pos:])
			continue
		}
		i := (pos + c.seed*7919) % int64(len(c.block))
		n += copy(p[n:], c.block[i:])
	}
	return n
}

func (c *synthetic) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += c.off
	case io.SeekEnd:
		offset += c.size
	default:
		return 0, errors.New("synthetic: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("synthetic: negative position")
	}
	c.off = offset
	return offset, nil
}

// waveformSamples are a track's waveform peaks, 0..1.
func waveformSamples(id int) []float64 {
	rng := rand.New(rand.NewPCG(uint64(id), 7))
	out := make([]float64, 200)
	for i := range out {
		out[i] = float64(int(rng.Float64()*1000)) / 1000
	}
	return out
}

// waveformPNG renders the samples as a small image.
func waveformPNG(id int) []byte {
	const w, h = 200, 40
	img := image.NewGray(image.Rect(0, 0, w, h))
	for x, v := range waveformSamples(id) {
		bar := int(v * h / 2)
		for y := h/2 - bar; y < h/2+bar; y++ {
			img.SetGray(x, y, color.Gray{Y: 200})
		}
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img) // encoding to memory cannot fail
	return b.Bytes()
}
