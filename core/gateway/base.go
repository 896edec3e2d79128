package gateway

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/sluice-dev/sluice/core/problem"
)

// publicBase is the absolute URL under which the caller reached provider:
// links in answers are written under it, so a client that follows them
// literally stays on sluice. A caller may name that base itself with
// Sluice-Base (a Unix-socket client whose library turns links into socket
// URLs, or a proxy in front); otherwise it is the scheme and Host the
// request came with. The base only shapes the links written for this
// caller: cached answers hold a marker in their place (linkMarker), so
// it never enters a cache key.
func publicBase(r *http.Request, provider string) (string, *problem.Problem) {
	if vs := r.Header.Values("Sluice-Base"); len(vs) > 0 {
		b, p := callerBase(vs)
		if p != nil {
			return "", p
		}
		return b + "/v1/" + provider, nil
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return baseURL(scheme, r.Host, provider), nil
}

// maxBase bounds Sluice-Base: it is copied into every link of an answer.
const maxBase = 512

// callerBase validates Sluice-Base strictly: one absolute URL of scheme
// http or https (a host, optionally a port), or http+unix (requests-
// unixsocket's spelling: the socket path percent-encoded as the host),
// with at most a plain path prefix: no user info, query, fragment, quote,
// space or escape outside an http+unix host. It is returned without a
// trailing slash. Anything looser would let a header write arbitrary text
// into the links of an answer.
func callerBase(vs []string) (string, *problem.Problem) {
	bad := func(detail string) (string, *problem.Problem) {
		return "", problem.BadParam("Sluice-Base", "Sluice-Base "+detail+
			`; it must be one URL naming where this caller reaches sluice: http://HOST[:PORT], https://HOST[:PORT] or `+
			`http+unix://PERCENT-ENCODED-SOCKET-PATH (as requests-unixsocket writes it), optionally with a path prefix`)
	}
	if len(vs) != 1 {
		return bad("is sent more than once")
	}
	v := vs[0]
	if len(v) > maxBase {
		return bad("is longer than 512 bytes")
	}
	scheme, rest, ok := strings.Cut(v, "://")
	if !ok {
		return bad("is not an absolute URL")
	}
	// Schemes are case-insensitive (RFC 3986 3.1); links get the
	// canonical lower case.
	scheme = strings.ToLower(scheme)
	host, path, _ := strings.Cut(rest, "/")
	if path != "" {
		path = "/" + path
	}
	hostChars := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_~"
	switch scheme {
	case "http", "https":
		hostChars += ":[]"
	case "http+unix":
		hostChars += "%"
	default:
		return bad("is not an http, https or http+unix URL")
	}
	if host == "" || strings.Trim(host, hostChars) != "" {
		return bad("names no host, or a host with characters a host cannot have")
	}
	if scheme != "http+unix" {
		u, err := url.Parse(scheme + "://" + host)
		if err != nil || u.Hostname() == "" {
			return bad("names no valid host")
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
				return bad("names a port outside 1-65535 (or with a leading zero)")
			}
		} else if strings.HasSuffix(host, ":") {
			return bad("has an empty port")
		}
	}
	if strings.Trim(path, hostChars+"/") != "" {
		return bad("has a path with characters other than letters, digits and . - _ ~ /")
	}
	if strings.Contains(path, "/.") || strings.Contains(path, "//") {
		return bad("has a dot segment or an empty segment in its path")
	}
	return scheme + "://" + host + strings.TrimSuffix(path, "/"), nil
}
