package daemon

import (
	"os"
	"testing"

	"github.com/sluice-dev/sluice/core/config"
)

func TestConnsForLimit(t *testing.T) {
	for _, tt := range []struct {
		limit uint64
		want  int
	}{
		{256, 112},      // 256 - 128 - 16
		{1024, 832},     // 1024 - 128 - 64
		{8192, 1024},    // 8192 - 128 - 512 = 7552, past the ceiling
		{524288, 1024},  // Go's raised soft limit on many systems
		{100, 16},       // too small for the reserve: a floor, not zero
		{1 << 62, 1024}, // no overflow
	} {
		if got := connsForLimit(tt.limit); got != tt.want {
			t.Errorf("connsForLimit(%d) = %d, want %d", tt.limit, got, tt.want)
		}
	}
}

func TestMemoryLimit(t *testing.T) {
	cfg := config.Default()
	cfg.MaxConnections = 1000
	t.Setenv("GOMEMLIMIT", "")
	if _, ok := memoryLimit(cfg); ok {
		t.Error("a GOMEMLIMIT from the user must be left alone, even empty")
	}
	os.Unsetenv("GOMEMLIMIT") // restored by t.Setenv's cleanup
	got, ok := memoryLimit(cfg)
	if want := 2*int64(cfg.Cache.MaxSize) + memBase + 1000*memPerConn; !ok || got != want {
		t.Errorf("limit %d (%v), want %d", got, ok, want)
	}
	cfg.Cache.MaxSize *= 2
	if more, _ := memoryLimit(cfg); more != got+2*int64(cfg.Cache.MaxSize/2) {
		t.Errorf("doubling max_size moved the limit from %d to %d", got, more)
	}
}
