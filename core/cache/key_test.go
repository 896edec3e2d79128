package cache

import (
	"net/url"
	"strings"
	"testing"
)

func mustQuery(t *testing.T, q string) url.Values {
	t.Helper()
	v, err := url.ParseQuery(q)
	if err != nil {
		t.Fatalf("parse %q: %v", q, err)
	}
	return v
}

func TestKeyEquivalence(t *testing.T) {
	type req struct {
		provider, operation, method, query string
		body                               string
	}
	base := req{"imgs", "search", "GET", "q=cats&page=2&lang=en", ""}
	tests := []struct {
		name string
		a, b req
		same bool
	}{
		{"identical", base, base, true},
		{"param order irrelevant", base, req{"imgs", "search", "GET", "lang=en&page=2&q=cats", ""}, true},
		{"repeated values keep their order", req{"p", "o", "", "a=1&a=2", ""}, req{"p", "o", "", "a=2&a=1", ""}, false},
		{"repeated values interleaved with others", req{"p", "o", "", "a=1&b=x&a=2", ""}, req{"p", "o", "", "b=x&a=1&a=2", ""}, true},
		{"different value", base, req{"imgs", "search", "GET", "q=dogs&page=2&lang=en", ""}, false},
		{"missing param", base, req{"imgs", "search", "GET", "q=cats&page=2", ""}, false},
		{"empty value differs from absent", req{"p", "o", "", "a=", ""}, req{"p", "o", "", "", ""}, false},
		{"different provider", base, req{"vids", "search", "GET", base.query, ""}, false},
		{"different operation", base, req{"imgs", "get", "GET", base.query, ""}, false},
		{"different method", base, req{"imgs", "search", "POST", base.query, ""}, false},
		{"no method vs method", base, req{"imgs", "search", "", base.query, ""}, false},
		{"body matters", req{"p", "o", "POST", "", `{"a":1}`}, req{"p", "o", "POST", "", `{"a":2}`}, false},
		{"same body", req{"p", "o", "POST", "", `{"a":1}`}, req{"p", "o", "POST", "", `{"a":1}`}, true},
		{"no field-boundary ambiguity in params", req{"p", "o", "", "a%3Db=c", ""}, req{"p", "o", "", "a=b%3Dc", ""}, false},
		{"no field-boundary ambiguity in names", req{"ab", "c", "", "", ""}, req{"a", "bc", "", "", ""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ka := Key(tt.a.provider, tt.a.operation, tt.a.method, mustQuery(t, tt.a.query), []byte(tt.a.body))
			kb := Key(tt.b.provider, tt.b.operation, tt.b.method, mustQuery(t, tt.b.query), []byte(tt.b.body))
			if (ka == kb) != tt.same {
				t.Errorf("Key equal = %v, want %v\n a=%s\n b=%s", ka == kb, tt.same, ka, kb)
			}
		})
	}
}

func TestKeyIgnoresNamesWithoutValues(t *testing.T) {
	with := Key("p", "o", "", url.Values{"a": {"1"}, "b": {}}, nil)
	without := Key("p", "o", "", url.Values{"a": {"1"}}, nil)
	if with != without {
		t.Errorf("a name with no values changed the key: %s vs %s", with, without)
	}
	if Key("p", "o", "", nil, nil) != Key("p", "o", "", url.Values{}, []byte{}) {
		t.Error("nil and empty params/body should key the same")
	}
}

func TestKeyShape(t *testing.T) {
	const secret = "sk-live-0123456789"
	k := Key("imgs", "search", "", url.Values{"token": {secret}, "q": {"cats"}}, []byte(secret))
	if !strings.HasPrefix(k, "imgs:") {
		t.Errorf("key %q lacks provider prefix", k)
	}
	if strings.Contains(k, secret) || strings.Contains(k, "cats") {
		t.Errorf("key %q contains a raw parameter value", k)
	}
	if got, want := len(k), len("imgs:")+64; got != want {
		t.Errorf("key length = %d, want %d", got, want)
	}
}
