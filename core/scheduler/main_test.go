package scheduler

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a timer callback or waiter
// goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
