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
	t.Setenv("GOMEMLIMIT", "")
	if _, ok := memoryLimit(cfg, 0); ok {
		t.Error("a GOMEMLIMIT from the user must be left alone, even empty")
	}
	os.Unsetenv("GOMEMLIMIT") // restored by t.Setenv's cleanup
	size := int64(cfg.Cache.MaxSize)
	for _, tt := range []struct {
		size int64
		open int
		want int64
	}{
		// The cache's charge already holds room to collect in
		// (cache chargeOf): max_size and the daemon's base.
		{size, 0, memBase + size},
		{64 << 20, 0, memBase + 64<<20},
		// Open connections raise it while they are open.
		{64 << 20, 1000, memBase + 64<<20 + 1000*memPerConn},
	} {
		cfg.Cache.MaxSize = config.Size(tt.size)
		if got, ok := memoryLimit(cfg, tt.open); !ok || got != tt.want {
			t.Errorf("max_size %d, %d connections: limit %d (%v), want %d", tt.size, tt.open, got, ok, tt.want)
		}
	}
}
