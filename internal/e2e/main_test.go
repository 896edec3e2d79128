// Package e2e holds sluice's end-to-end tests: real sluiced, real plugin
// subprocesses, real simulators over loopback, driven through the typed
// client and the sluicectl binary.
package e2e

import (
	"os"
	"testing"

	"github.com/sluice-dev/sluice/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
