//go:build !linux

package pluginhost

import (
	"fmt"
	"os"
)

// pinnedImage: this system has no memfds to start a plugin from the
// bytes that were checked (see Start).
func pinnedImage(string, []byte) (*os.File, error) {
	return nil, fmt.Errorf("%w on this system", errNoImage)
}

// imagePath is never called here: pinnedImage makes no image.
func imagePath(img *os.File) string { return img.Name() }
