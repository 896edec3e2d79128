package cache

import (
	"strings"
	"testing"
)

func TestBodyFor(t *testing.T) {
	const marker = "http://m.invalid/v1/p"
	tests := []struct {
		name, body, base, want string
	}{
		{"no links", `{"a":1}`, "http://sluice/v1/p", `{"a":1}`},
		{"two links", `{"href":"` + marker + `/x","next":"` + marker + `/y?o=1"}`, "http://localhost:8750/v1/p",
			`{"href":"http://localhost:8750/v1/p/x","next":"http://localhost:8750/v1/p/y?o=1"}`},
		{"at the edges", marker + "|" + marker, "B", "B|B"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := &Entry{Body: []byte(tc.body)}
			e.MarkBase(marker)
			for range 2 { // the second read comes from the memo
				if got := string(e.BodyFor(tc.base)); got != tc.want {
					t.Fatalf("BodyFor(%q) = %s, want %s", tc.base, got, tc.want)
				}
			}
			if other := string(e.BodyFor("http://other")); strings.Contains(tc.body, marker) && strings.Contains(other, tc.base) {
				t.Fatalf("a second base kept the first: %s", other)
			}
			if string(e.Body) != tc.body {
				t.Fatalf("Body changed: %s", e.Body)
			}
		})
	}
}
