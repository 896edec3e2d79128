package gateway

import (
	"testing"
	"time"
)

func TestParseMaxWait(t *testing.T) {
	tests := []struct {
		header string
		config time.Duration
		want   time.Duration
		bad    bool
	}{
		{"", 2 * time.Minute, 2 * time.Minute, false},
		{"20s", 2 * time.Minute, 20 * time.Second, false},
		{"20", 2 * time.Minute, 20 * time.Second, false},
		{"1h", 2 * time.Minute, 2 * time.Minute, false}, // never longer than the config
		{"0", 2 * time.Minute, time.Millisecond, false}, // 0 is "do not wait", not "no bound"
		{"", 0, time.Millisecond, false},                // so is max_wait = 0
		{"30s", 0, time.Millisecond, false},
		{"-5s", 2 * time.Minute, 0, true},
		{"soon", 2 * time.Minute, 0, true},
	}
	for _, tt := range tests {
		got, err := parseMaxWait(tt.header, tt.config)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("parseMaxWait(%q, %s) = %s, %v; want %s (error: %v)", tt.header, tt.config, got, err, tt.want, tt.bad)
		}
	}
}
