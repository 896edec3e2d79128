package gateway

import (
	"net/http"
	"testing"
)

// TestSluiceBase: a caller's Sluice-Base replaces scheme://Host in its
// links, and only a plain base is accepted.
func TestSluiceBase(t *testing.T) {
	for _, tc := range []struct {
		vs   []string
		want string // "" = refused
	}{
		{nil, "http://sluice.sock.host/v1/spotify"},
		{[]string{"http://localhost:8750"}, "http://localhost:8750/v1/spotify"},
		{[]string{"https://api.example.com/sluice/"}, "https://api.example.com/sluice/v1/spotify"},
		{[]string{"http://[::1]:8750"}, "http://[::1]:8750/v1/spotify"},
		{[]string{"http+unix://%2Frun%2Fsluice%2Fsluice.sock"}, "http+unix://%2Frun%2Fsluice%2Fsluice.sock/v1/spotify"},
		{[]string{"http://a", "http://b"}, ""},
		{[]string{"ftp://x"}, ""},
		{[]string{"localhost:8750"}, ""},
		{[]string{"http://"}, ""},
		{[]string{"http://user:pw@host"}, ""},
		{[]string{"http://host/?q=1"}, ""},
		{[]string{"http://host/#f"}, ""},
		{[]string{"http://host/a b"}, ""},
		{[]string{`http://host/"><script>`}, ""},
		{[]string{"http://host/%2e%2e"}, ""},
		{[]string{"http://host/../x"}, ""},
		{[]string{"http://ho%2Fst"}, ""},
		{[]string{"http+unix://%2Fs/../x"}, ""},
		{[]string{"HTTP://Host:8750"}, "http://Host:8750/v1/spotify"},
		{[]string{"http://host:99999"}, ""},
		{[]string{"http://host:0"}, ""},
		{[]string{"http://host:080"}, ""},
		{[]string{"http://host:"}, ""},
	} {
		r := &http.Request{Host: "sluice.sock.host", Header: http.Header{}}
		for _, v := range tc.vs {
			r.Header.Add("Sluice-Base", v)
		}
		got, p := publicBase(r, "spotify")
		switch {
		case tc.want == "" && p == nil:
			t.Errorf("%q: accepted as %q", tc.vs, got)
		case tc.want == "" && (p.Status != http.StatusBadRequest || p.Param != "Sluice-Base"):
			t.Errorf("%q: refused with %d %q", tc.vs, p.Status, p.Param)
		case tc.want != "" && (p != nil || got != tc.want):
			t.Errorf("%q: %q %v, want %q", tc.vs, got, p, tc.want)
		}
	}
}
