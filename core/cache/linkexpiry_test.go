package cache

import (
	"testing"
	"time"
)

func TestLinkExpiry(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		want   int64 // Unix seconds
		wantOK bool
	}{
		{"no links", `{"id":1,"name":"x"}`, 0, false},
		{"empty", ``, 0, false},
		{"plain first param", `{"url":"https://cdn.example.com/f.mp4?Expires=1700000000&Signature=abc"}`, 1700000000, true},
		{"plain later param", `{"url":"https://cdn.example.com/f.mp4?Key-Pair-Id=K&Expires=1700000123&Signature=abc"}`, 1700000123, true},
		{"lower case name", `see https://x/y?expires=1700000001`, 1700000001, true},
		{"upper case name", `see https://x/y?EXPIRES=1700000002 now`, 1700000002, true},
		{"json escaped slashes and ampersand", `{"u":"https:\/\/cdn.example.com\/a.jpg?sig=1\u0026Expires=1700000444\u0026k=2"}`, 1700000444, true},
		{"json escaped upper-case hex", `{"u":"https:\/\/cdn\/a?sig=1\u0026Expires\u003D1700000445"}`, 1700000445, true},
		{"html entity ampersand", `<a href="https://cdn/a?x=1&amp;Expires=1700000446">`, 1700000446, true},
		{"nested percent-encoded url", `{"u":"https://r.example/go?to=https%3A%2F%2Fcdn%2Fa%3FExpires%3D1700000447%26Sig%3Dz"}`, 1700000447, true},
		{"multiple links earliest wins", `{"a":"https://c/1?Expires=1700000900","b":"https://c/2?Expires=1700000100","c":"https://c/3?x=1\u0026Expires=1700000500"}`, 1700000100, true},
		{"x-amz-expires is relative and ignored", `{"u":"https://s3/b?X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-Signature=s"}`, 0, false},
		{"x-amz-expires ignored but absolute kept", `{"a":"https://s3/b?X-Amz-Expires=60","b":"https://c/2?Expires=1700000200"}`, 1700000200, true},
		{"json field named expires ignored", `{"expires": 1600000000, "expires=": "1600000000"}`, 0, false},
		{"other names ending in expires ignored", `https://c/x?cache_expires=1600000000`, 0, false},
		{"non-numeric value ignored", `https://c/x?Expires=2024-01-01T00:00:00Z`, 0, false},
		{"date value ignored", `https://c/x?Expires=Wed,%2021%20Oct`, 0, false},
		{"empty value ignored", `https://c/x?Expires=&a=1`, 0, false},
		{"overflowing value ignored", `https://c/x?Expires=99999999999999999999999`, 0, false},
		{"milliseconds are converted", `https://c/x?Expires=1700000000123`, 1700000000, true},
		{"value at end of body", `https://c/x?Expires=1700000003`, 1700000003, true},
		{"value followed by fragment", `https://c/x?Expires=1700000004#t=1`, 1700000004, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := LinkExpiry([]byte(tt.body))
			if ok != tt.wantOK {
				t.Fatalf("ok = %v (t=%v), want %v", ok, got, tt.wantOK)
			}
			if !ok {
				if !got.IsZero() {
					t.Errorf("t = %v, want zero when not ok", got)
				}
				return
			}
			if want := time.Unix(tt.want, 0); !got.Equal(want) {
				t.Errorf("t = %v (%d), want %v (%d)", got, got.Unix(), want, tt.want)
			}
		})
	}
}
