package main

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/core/problem"
)

// FuzzSign checks Sign against an independent spelling of the written
// steps: every parameter but sign/client_secret, sorted by name, each
// key=value form-encoded, joined with &, the secret appended, MD5 in
// lower-case hex. It also must not depend on the order parameters came in.
func FuzzSign(f *testing.F) {
	f.Add("keyword", "云南", "client_id", "4fiodcz8xjl6p8nbzfex2", "9b530aa85723c06a90879bee8f5096d7")
	f.Add("q", "a b+c&d=e", "empty", "", "s")
	f.Add("sign", "x", "client_secret", "y", "z")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, secret string) {
		if k1 == k2 {
			return
		}
		in := url.Values{k1: {v1}, k2: {v2}}
		var pairs []string
		keys := make([]string, 0, 2)
		for k := range in {
			if k != "sign" && k != "client_secret" {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			pairs = append(pairs, url.QueryEscape(k)+"="+url.QueryEscape(in.Get(k)))
		}
		sum := md5.Sum([]byte(strings.Join(pairs, "&") + "&client_secret=" + secret))
		if got, want := Sign(in, secret), hex.EncodeToString(sum[:]); got != want {
			t.Fatalf("Sign(%v) = %s, the written steps give %s", in, got, want)
		}
		if Sign(url.Values{k2: {v2}, k1: {v1}}, secret) != Sign(in, secret) {
			t.Fatal("parameter order changed the signature")
		}
	})
}

// FuzzValidate: any input to any operation is either accepted or refused
// with a 400 naming a parameter; never a panic, never another status.
func FuzzValidate(f *testing.F) {
	f.Add(0, "audio_id", "505947", "per_page", "30")
	f.Add(1, "level_type", "99", "begin_at", "2017-01-01 23:23:23")
	f.Add(2, "is_download", "3", "x", "")
	f.Fuzz(func(t *testing.T, opIndex int, k1, v1, k2, v2 string) {
		if len(operations) == 0 {
			t.Skip()
		}
		op := operations[((opIndex%len(operations))+len(operations))%len(operations)]
		_, err := validate(op, url.Values{k1: {v1}, k2: {v2}})
		var p *problem.Problem
		if err != nil && (!errors.As(err, &p) || p.Status != 400 || p.Param == "") {
			t.Fatalf("%s %v: %v", op.name, url.Values{k1: {v1}, k2: {v2}}, err)
		}
	})
}
