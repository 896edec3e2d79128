package main

import (
	"bytes"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// canonicalAPI is the Web API's own base, the OpenAPI description's server
// URL. Spotify writes its links under it, and so does a fake that copies
// Spotify's answers even when it runs at api_url on another host.
const canonicalAPI = "https://api.spotify.com/v1"

// linkBase maps a URL prefix links arrive under to the one they leave under.
type linkBase struct{ from, to string }

// linkBases are the prefixes rewritten for a caller that reached sluice at
// public: the configured api_url (path prefix included; Spotify's /v1
// follows it) and the canonical base, whatever api_url is.
func linkBases(apiBase, public string) []linkBase {
	return []linkBase{{apiBase, public}, {canonicalAPI, public + "/v1"}}
}

// rewriteLinks replaces every JSON string in body that is a URL under one
// of bases' from by the same path under its to (below the caller's
// PublicBase). href, next and previous are such strings; so is any other
// Web API link, and all of them must lead back through sluice. Everything
// else is copied byte for byte: keys keep their order and numbers their
// spelling, so the answer is Spotify's except for the links.
//
// The scan only needs to find string literals: outside strings JSON has no
// quote characters, and inside them a quote is always escaped.
func rewriteLinks(body []byte, bases []linkBase) []byte {
	// Most answers name no upstream host at all; a \u escape could spell
	// one in disguise, so only bodies without either skip the scan.
	if !bytes.Contains(body, []byte(`\u`)) && !slices.ContainsFunc(bases, func(b linkBase) bool {
		return b.from != "" && bytes.Contains(body, []byte(hostOf(b.from)))
	}) {
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
		out.Write(rewriteLiteral(lit, bases))
		i = end + 1
	}
}

// rewriteLiteral returns the JSON string literal lit, rewritten if it is a
// link under one of bases.
func rewriteLiteral(lit []byte, bases []linkBase) []byte {
	var s string
	if json.Unmarshal(lit, &s) != nil {
		return lit
	}
	for _, b := range bases {
		if b.from != "" && under(s, b.from) {
			if pastSearchEnd(s[len(b.from):]) {
				return []byte("null")
			}
			return quote(b.to + s[len(b.from):])
		}
	}
	return lit
}

// pastSearchEnd reports whether rest (a link's path and query below the API
// base) is a search page starting past the last offset search accepts
// (1000). Spotify still writes such a next link near the end of a long
// result; sluice would refuse it (and Spotify too), and a client follows
// next until it is null, so the page before is the last one it is given.
func pastSearchEnd(rest string) bool {
	path, query, _ := strings.Cut(rest, "?")
	if !strings.HasSuffix(strings.TrimSuffix(path, "/"), "/search") && strings.TrimSuffix(path, "/") != "search" {
		return false
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(q.Get("offset"))
	return err == nil && n > rules["search"].maxOffset
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
