package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/core/provider"
)

// Sign computes hellorf's request signature by the written steps of README
// §2 and the original (hellorf-audio.zh.txt, 安全签名规则):
//
//  1. all request parameters except sign and client_secret, sorted by name
//     in ASCII order;
//  2. form-encoded into k=v&k=v (url.Values.Encode: byte-wise key order,
//     QueryEscape, so a space is "+", "+" is "%2B", non-ASCII is its UTF-8
//     bytes in upper-case %XX);
//  3. "&client_secret=<secret>" appended, the secret as it is;
//  4. the lower-case hex MD5 of that string.
//
// The document's own worked example (sign 00ba2da0…) does not reproduce
// under any encoding (see docs/hellorf.md); the written steps are what this
// implements.
func Sign(params url.Values, secret string) string {
	v := url.Values{}
	for k, vs := range params {
		if k == "sign" || k == "client_secret" {
			continue
		}
		v[k] = vs
	}
	sum := md5.Sum([]byte(v.Encode() + "&client_secret=" + secret))
	return hex.EncodeToString(sum[:])
}

// signed returns params plus client_id, nonce_str (now, in Unix seconds) and
// sign.
func signed(params url.Values, clientID, secret string, now time.Time) url.Values {
	q := url.Values{}
	for k, vs := range params {
		q[k] = append([]string(nil), vs...)
	}
	q.Set("client_id", clientID)
	q.Set("nonce_str", strconv.FormatInt(now.Unix(), 10))
	q.Set("sign", Sign(q, secret))
	return q
}

// exchange records what happened to one upstream request, for the decisions
// made after it: when it left (the 10-minute link rule and the clock
// offset), and whether any of it may have reached hellorf (a purchase whose
// answer was lost may still have been made).
type exchange struct {
	sentAt atomic.Int64 // Unix nanoseconds; 0 = the builder never ran
	// mayHaveArrived is set once a connection to the upstream is in hand:
	// from then on a failure cannot prove that nothing was sent.
	mayHaveArrived atomic.Bool
}

func (ex *exchange) sent() time.Time {
	if n := ex.sentAt.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// errBadURL replaces net/http's error, which would quote the signed URL.
var errBadURL = errors.New("cannot build the upstream URL from base_url")

// builder makes the signed request. It runs after the scheduler's grant, so
// nonce_str is the time the request leaves, not the time it was queued.
func (ex *exchange) builder(s *settings, op *operation, params url.Values, clock func() time.Time) provider.Builder {
	return func(ctx context.Context) (*http.Request, error) {
		now := clock()
		ex.sentAt.Store(now.UnixNano())
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { ex.mayHaveArrived.Store(true) },
		})
		q := signed(params, s.ClientID, s.ClientSecret, now)
		u := s.endpoint(op.path)
		if op.method == http.MethodPost {
			// The body is signed over the same parameter set as a query.
			r, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(q.Encode()))
			if err != nil {
				return nil, errBadURL
			}
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("Accept", "application/json")
			return r, nil
		}
		u.RawQuery = q.Encode()
		r, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, errBadURL
		}
		if op.kind != kindFile {
			r.Header.Set("Accept", "application/json")
		}
		return r, nil
	}
}
