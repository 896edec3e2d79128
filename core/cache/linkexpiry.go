package cache

import (
	"bytes"
	"strconv"
	"time"
)

// msThreshold separates Expires values in Unix seconds from ones in Unix
// milliseconds: 1e11 seconds is the year 5138, while 1e11 ms is 1973, so no
// real link uses either reading on the wrong side of it. Reading a
// millisecond value as seconds would put the expiry tens of thousands of
// years out and silently disable the bound, so such values are taken as ms.
const msThreshold = 100_000_000_000

// LinkExpiry returns the earliest absolute expiry of the signed links in a
// response body, so the cache never serves an answer whose download links
// have died. It looks for URL query parameters named Expires (any case)
// holding Unix seconds, as used by CloudFront and similar CDNs, in JSON text
// where URLs may be escaped ("\/", "\u0026") or nested percent-encoded in
// another URL ("%3FExpires%3D..."). Relative parameters such as X-Amz-Expires
// are not absolute instants and are ignored, as are JSON fields that happen
// to be called "expires" and values that are not plain integers. ok is false
// when no such parameter is found.
func LinkExpiry(body []byte) (t time.Time, ok bool) {
	text := normalizeLinks(body)
	const param = "expires="
	var earliest int64
	for i := 0; ; {
		j := bytes.Index(text[i:], []byte(param))
		if j < 0 {
			break
		}
		start := i + j
		i = start + len(param)
		// Only a query parameter counts: "?expires=" or "&expires=", not
		// "x-amz-expires=" or "cache_expires=".
		if start == 0 || !isParamSep(text[start-1]) {
			continue
		}
		end := i
		for end < len(text) && '0' <= text[end] && text[end] <= '9' {
			end++
		}
		if end == i || (end < len(text) && !isValueEnd(text[end])) {
			continue // empty, or a date or other non-integer value
		}
		n, err := strconv.ParseInt(string(text[i:end]), 10, 64)
		if err != nil {
			continue // out of range: not a timestamp
		}
		sec := n
		if n >= msThreshold {
			sec = n / 1000
		}
		if !ok || sec < earliest {
			earliest, ok = sec, true
		}
	}
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(earliest, 0), true
}

func isParamSep(b byte) bool {
	return b == '?' || b == '&' || b == ';'
}

// isValueEnd reports whether b can end a query value inside a URL embedded in
// JSON or text.
func isValueEnd(b byte) bool {
	switch b {
	case '&', ';', '#', '"', '\'', '\\', '<', '>', ')', ']', '}', ',', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

// normalizeLinks returns a lower-cased copy of body with the escapes that can
// hide a URL's structure undone: JSON "\/" and "\uXXXX" for ASCII, the HTML
// entity "&amp;", and percent-encoded '?', '&' and '=' (a signed URL nested
// in another URL's query). Only the separators matter for finding
// parameters, so other bytes are copied as they are.
func normalizeLinks(body []byte) []byte {
	out := make([]byte, 0, len(body))
	for i := 0; i < len(body); i++ {
		b := body[i]
		switch {
		case b == '\\' && i+1 < len(body) && body[i+1] == '/':
			out = append(out, '/')
			i++
			continue
		case b == '\\' && i+5 < len(body) && body[i+1] == 'u':
			if v, ok := hexValue(body[i+2 : i+6]); ok && v < 0x80 {
				out = append(out, lower(byte(v)))
				i += 5
				continue
			}
		case b == '%' && i+2 < len(body):
			if v, ok := hexValue(body[i+1 : i+3]); ok && (v == '?' || v == '&' || v == '=') {
				out = append(out, byte(v))
				i += 2
				continue
			}
		case b == '&' && i+4 < len(body) && bytes.EqualFold(body[i+1:i+5], []byte("amp;")):
			out = append(out, '&')
			i += 4
			continue
		}
		out = append(out, lower(b))
	}
	return out
}

func lower(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + ('a' - 'A')
	}
	return b
}

// hexValue parses a short run of hex digits.
func hexValue(digits []byte) (int, bool) {
	v := 0
	for _, d := range digits {
		switch {
		case '0' <= d && d <= '9':
			v = v<<4 | int(d-'0')
		case 'a' <= d && d <= 'f':
			v = v<<4 | int(d-'a'+10)
		case 'A' <= d && d <= 'F':
			v = v<<4 | int(d-'A'+10)
		default:
			return 0, false
		}
	}
	return v, true
}
