package gateway

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// TestJSONBodyParams: a JSON object's members become parameters, and a
// member given twice is two values (refused later like a repeated query
// parameter), not whichever copy a decoder keeps.
func TestJSONBodyParams(t *testing.T) {
	tests := []struct {
		body string
		want url.Values // nil: refused
	}{
		{`{"audio_id": 5, "x": true, "n": null, "s": "a"}`, url.Values{"audio_id": {"5"}, "x": {"true"}, "s": {"a"}}},
		{`{"trackId": "A", "trackId": "B"}`, url.Values{"trackId": {"A", "B"}}},
		{`{"f": 1e3, "g": 0.5}` + " \n", url.Values{"f": {"1000"}, "g": {"0.5"}}},
		{`{"o": {"a": [1, 2]}, "k": "v"}`, url.Values{"k": {"v"}}},
		{`{}`, url.Values{}},
		{`null`, url.Values{}},
		{`{"id": 12345678901234567890, "n": -7}`, url.Values{"id": {"12345678901234567890"}, "n": {"-7"}}},
		{`null x`, nil},
		{`{"a": 1} x`, nil},
		{`{"a": 1}{}`, nil},
		{`["a"]`, nil},
		{`{"a": }`, nil},
		{`{"a": 1`, nil},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodPost, "/v1/p/x", strings.NewReader(tt.body))
		r.Header.Set("Content-Type", "application/json")
		params, _, _, _, err := readParams(r)
		if tt.want == nil {
			if err == nil {
				t.Errorf("%s: accepted as %v, want a 400", tt.body, params)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(params, tt.want) {
			t.Errorf("%s: %v %v, want %v", tt.body, params, err, tt.want)
		}
	}
}
