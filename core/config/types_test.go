package config

import (
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"7s", 7 * time.Second, false},
		{"250ms", 250 * time.Millisecond, false},
		{"1h30m", 90 * time.Minute, false},
		{"0s", 0, false},
		{" 2m ", 2 * time.Minute, false},
		{"-1s", 0, true},
		{"30", 0, true},
		{"", 0, true},
		{"soon", 0, true},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.wantErr || (!tt.wantErr && d.Duration != tt.want) {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v, err=%v", tt.in, d.Duration, err, tt.want, tt.wantErr)
			continue
		}
		if tt.wantErr {
			continue
		}
		b, _ := d.MarshalText()
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back != d {
			t.Errorf("round trip of %q via %q failed: %v", tt.in, b, err)
		}
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in      string
		want    Size
		wantStr string
		wantErr bool
	}{
		{"64MiB", 64 << 20, "64MiB", false},
		{"512KiB", 512 << 10, "512KiB", false},
		{"1GiB", 1 << 30, "1GiB", false},
		{"2TiB", 2 << 40, "2TiB", false},
		{"10MB", 10_000_000, "10000000", false},
		{"100kB", 100_000, "100000", false},
		{"100KB", 100_000, "100000", false},
		{"1024", 1024, "1KiB", false},
		{"1000", 1000, "1000", false},
		{"5B", 5, "5", false},
		{"64 MiB", 64 << 20, "64MiB", false},
		{"1.5GiB", 3 << 29, "1536MiB", false},
		{"0", 0, "0", false},
		{"64mib", 0, "", true},
		{"64M", 0, "", true},
		{"MiB", 0, "", true},
		{"-1MiB", 0, "", true},
		{"1.2.3KiB", 0, "", true},
		{"99999999999TiB", 0, "", true},
		{"", 0, "", true},
	}
	for _, tt := range tests {
		var s Size
		err := s.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.wantErr {
			t.Errorf("UnmarshalText(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if tt.wantErr {
			continue
		}
		if s != tt.want || s.String() != tt.wantStr {
			t.Errorf("UnmarshalText(%q) = %d (%s), want %d (%s)", tt.in, s, s, tt.want, tt.wantStr)
		}
		b, _ := s.MarshalText()
		var back Size
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("round trip of %q via %q failed: %v", tt.in, b, err)
		}
	}
	for _, v := range []any{int64(-1), 1.5, true} {
		var s Size
		if err := s.UnmarshalTOML(v); err == nil {
			t.Errorf("UnmarshalTOML(%v) accepted", v)
		}
	}
}

func TestFileMode(t *testing.T) {
	tests := []struct {
		in      string
		want    FileMode
		wantErr bool
	}{
		{"0660", 0o660, false},
		{"660", 0o660, false},
		{"0o600", 0o600, false},
		{"0777", 0o777, false},
		{"0", 0, false},
		{"01777", 0, true},
		{"0880", 0, true},
		{"rw-rw----", 0, true},
		{"", 0, true},
		{"0o", 0, true},
	}
	for _, tt := range tests {
		var m FileMode
		err := m.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.wantErr || (!tt.wantErr && m != tt.want) {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v, err=%v", tt.in, m, err, tt.want, tt.wantErr)
			continue
		}
		if tt.wantErr {
			continue
		}
		b, _ := m.MarshalText()
		var back FileMode
		if err := back.UnmarshalText(b); err != nil || back != m {
			t.Errorf("round trip of %q via %q failed: %v", tt.in, b, err)
		}
	}
	if FileMode(0o660).String() != "0660" {
		t.Errorf("String() = %s", FileMode(0o660))
	}
}
