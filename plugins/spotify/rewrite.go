package main

import (
	"bytes"
	"encoding/json"
	"strings"
)

// rewriteLinks replaces every JSON string in body that is a URL under from
// (the configured api_url, path prefix included) by the same path under to
// (the caller's PublicBase). href, next and previous are such strings; so
// is any other api.spotify.com link, and all of them must lead back through
// sluice. Everything else is copied byte for byte: keys keep their order
// and numbers their spelling, so the answer is Spotify's except for the
// links.
//
// The scan only needs to find string literals: outside strings JSON has no
// quote characters, and inside them a quote is always escaped.
func rewriteLinks(body []byte, from, to string) []byte {
	if from == "" || !bytes.Contains(body, []byte(hostOf(from))) {
		return body
	}
	var out bytes.Buffer
	out.Grow(len(body) + len(body)/8)
	i := 0
	for {
		start := bytes.IndexByte(body[i:], '"')
		if start < 0 {
			out.Write(body[i:])
			return out.Bytes()
		}
		start += i
		end := stringEnd(body, start)
		if end < 0 {
			// Not valid JSON; leave it as it is.
			return body
		}
		out.Write(body[i:start])
		lit := body[start : end+1]
		var s string
		if json.Unmarshal(lit, &s) == nil && under(s, from) {
			out.Write(quote(to + s[len(from):]))
		} else {
			out.Write(lit)
		}
		i = end + 1
	}
}

// stringEnd returns the index of the quote closing the string literal that
// opens at start, or -1.
func stringEnd(b []byte, start int) int {
	for j := start + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j
		}
	}
	return -1
}

// under reports whether s is base itself or a URL below it: the next
// character must end the base's path, so "http://h/p" does not claim
// "http://h/pq".
func under(s, base string) bool {
	if len(s) < len(base) || !strings.EqualFold(s[:len(base)], base) {
		return false
	}
	return len(s) == len(base) || strings.ContainsRune("/?#", rune(s[len(base)]))
}

func hostOf(u string) string {
	if _, rest, ok := strings.Cut(u, "://"); ok {
		host, _, _ := strings.Cut(rest, "/")
		return host
	}
	return u
}

// quote encodes s as a JSON string without HTML escaping (links carry & in
// their queries, which Spotify does not escape either).
func quote(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimRight(b.Bytes(), "\n")
}
