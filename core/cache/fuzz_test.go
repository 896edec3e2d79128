package cache

import (
	"net/url"
	"testing"
	"time"
)

// FuzzLinkExpiry: any body is scanned without panicking, and an expiry it
// reports was written in the body as digits.
func FuzzLinkExpiry(f *testing.F) {
	for _, seed := range []string{
		`{"url":"https://x.example/a.mp3?Expires=1700000000&Signature=abc"}`,
		`{"url":"https:\/\/x.example\/a?X-Amz-Expires=600\u0026Expires=1700000001"}`,
		`?expires=99999999999999999999999`, `&Expires=`, `Expires=1`, "", `%3FExpires%3D1700000002`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		at, ok := LinkExpiry([]byte(body))
		if ok && at.Before(time.Unix(0, 0)) {
			t.Fatalf("expiry before 1970: %v", at)
		}
	})
}

// FuzzKey: parameter order never changes a key; a different value does.
func FuzzKey(f *testing.F) {
	f.Add("a", "1", "b", "2")
	f.Add("trackId", "6fx5VOjqYNBHcDf5GIF5g5", "x", "")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		if k1 == k2 {
			return
		}
		a := Key("p", "op", "", url.Values{k1: {v1}, k2: {v2}}, nil)
		b := Key("p", "op", "", url.Values{k2: {v2}, k1: {v1}}, nil)
		if a != b {
			t.Fatal("parameter order changed the key")
		}
		if v1 != v2+"x" && Key("p", "op", "", url.Values{k1: {v1 + "x"}, k2: {v2}}, nil) == a {
			t.Fatal("a different value gave the same key")
		}
	})
}
