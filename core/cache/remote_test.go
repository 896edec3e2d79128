package cache

import (
	"net/http"
	"reflect"
	"testing"
	"time"
)

// TestEntryEncodingRoundTrip: what the fleet's cache stores is the whole
// answer, host-free: status, headers, body, times, provider and the link
// offsets that get each reader's base.
func TestEntryEncodingRoundTrip(t *testing.T) {
	const marker = "http://sluice-link-base.invalid/v1/spotify"
	now := time.Now()
	e := &Entry{Provider: "spotify", Status: 203, Header: http.Header{"Content-Type": {"application/json"}, "X-Two": {"a", "b"}},
		Body:     []byte(`{"next":"` + marker + `/v1/x?offset=20","href":"` + marker + `/v1/x"}`),
		StoredAt: now, ExpiresAt: now.Add(time.Minute), KeepUntil: now.Add(time.Hour)}
	e.MarkBase(marker)
	b, ok := EncodeEntry(e)
	if !ok {
		t.Fatal("not encoded")
	}
	d, err := DecodeEntry(b)
	if err != nil {
		t.Fatal(err)
	}
	if d.Provider != e.Provider || d.Status != e.Status || !reflect.DeepEqual(d.Header, e.Header) ||
		!d.StoredAt.Equal(e.StoredAt) || !d.ExpiresAt.Equal(e.ExpiresAt) || !d.KeepUntil.Equal(e.KeepUntil) {
		t.Fatalf("decoded %+v, want %+v", d, e)
	}
	for _, base := range []string{"http://sluice/v1/spotify", "http://127.0.0.1:8750/v1/spotify"} {
		if got, want := string(d.BodyFor(base)), string(e.BodyFor(base)); got != want {
			t.Errorf("body for %s: %s, want %s", base, got, want)
		}
	}
	plain := entry("ineo", 10, time.Minute)
	b, _ = EncodeEntry(plain)
	if d, err := DecodeEntry(b); err != nil || d.HasBase() || string(d.Body) != string(plain.Body) || !d.KeepUntil.IsZero() {
		t.Fatalf("plain entry: %+v, %v", d, err)
	}
	for n := range len(b) - len(plain.Body) {
		if _, err := DecodeEntry(b[:n]); err == nil {
			t.Fatalf("a value cut at %d bytes decoded", n)
		}
	}
}

// FuzzDecodeEntry: any value read from Redis decodes without panicking,
// and a decoded entry's link offsets all point at its marker.
func FuzzDecodeEntry(f *testing.F) {
	e := entry("spotify", 0, time.Minute)
	e.Body = []byte(`{"next":"M/x","href":"M/y"}`)
	e.MarkBase("M")
	b, _ := EncodeEntry(e)
	f.Add(b)
	b, _ = EncodeEntry(entry("ineo", 30, time.Minute))
	f.Add(b)
	f.Add([]byte("SE1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeEntry(b)
		if err != nil {
			return
		}
		for _, at := range d.baseAt {
			if string(d.Body[at:at+len(d.marker)]) != d.marker {
				t.Fatalf("offset %d does not point at the marker", at)
			}
		}
		_ = d.BodyFor("http://sluice/v1/p")
	})
}
