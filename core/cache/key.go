package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"net/url"
	"slices"
)

// Key returns the canonical cache key of a request. Two requests get the
// same key exactly when they have the same provider, operation, method,
// parameters and body, where parameter names may come in any order but the
// order of repeated values of one name is kept (upstreams may treat
// a=1&a=2 and a=2&a=1 differently). Names with no values are ignored, as
// url.Values.Encode does. Callers pass "" as method when the upstream treats
// methods alike.
//
// The key is provider + ":" + a hex SHA-256 of the canonical form, so it
// never contains raw parameter values: callers strip secrets before keying,
// but a key that ends up in a log must not leak one if they forget.
func Key(provider, operation, method string, params url.Values, body []byte) string {
	h := sha256.New()
	// Every field is length-prefixed so that no choice of values can make
	// two different requests encode the same (e.g. name "a=b", value "c"
	// against name "a", value "b=c").
	writeField(h, provider)
	writeField(h, operation)
	writeField(h, method)

	names := make([]string, 0, len(params))
	for name, values := range params {
		if len(values) > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	writeLen(h, len(names))
	for _, name := range names {
		writeField(h, name)
		values := params[name]
		writeLen(h, len(values))
		for _, v := range values {
			writeField(h, v)
		}
	}

	if len(body) == 0 {
		writeLen(h, 0)
	} else {
		sum := sha256.Sum256(body)
		writeLen(h, len(sum))
		h.Write(sum[:])
	}
	return provider + ":" + hex.EncodeToString(h.Sum(nil))
}

func writeField(h hash.Hash, s string) {
	writeLen(h, len(s))
	h.Write([]byte(s))
}

func writeLen(h hash.Hash, n int) {
	var buf [binary.MaxVarintLen64]byte
	h.Write(buf[:binary.PutUvarint(buf[:], uint64(n))])
}
