package main

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/core/problem"
	"github.com/sluice-dev/sluice/plugins/hellorf/hellorfsim"
)

// shapeCalls is one call of every cacheable operation, with its path.
var shapeCalls = []struct {
	op, path string
	q        url.Values
}{
	{"audio.categories", hellorfsim.PathCategories, nil},
	{"audio.search", hellorfsim.PathSearch, url.Values{"keyword": {"piano"}}},
	{"audio.detail", hellorfsim.PathDetail, url.Values{"audio_id": {strconv.Itoa(hellorfsim.SampleAudioID)}}},
	{"audio.purchase-detail", hellorfsim.PathPurchaseDetail, url.Values{"purchase_id": {strconv.Itoa(hellorfsim.SeededPurchaseID)}}},
	{"audio.purchase-download", hellorfsim.PathPurchaseDownload, url.Values{"purchase_id": {strconv.Itoa(hellorfsim.SeededPurchaseID)}}},
}

func TestEveryCacheableOpHasAShape(t *testing.T) {
	n := 0
	for _, op := range operations {
		if !op.cacheable {
			continue
		}
		n++
		if _, ok := shapes[op.name]; !ok {
			t.Errorf("cacheable %s has no shape", op.name)
		}
	}
	if n != len(shapeCalls) {
		t.Errorf("%d calls for %d cacheable operations: every one needs a call", len(shapeCalls), n)
	}
}

// TestSuccessWithoutDataIs502: a result:true answer whose data is not what
// the document shows for the operation gets a 502 problem naming the
// operation and quoting none of the body, nothing written (so nothing for
// the gateway to cache), not retried; the next call reaches hellorf again
// and is relayed and cacheable. Every cacheable operation.
func TestSuccessWithoutDataIs502(t *testing.T) {
	// Each body carries the marker, so a detail that quotes it shows.
	const marker = "QUOTED"
	bad := []struct{ name, body string }{
		{"no data", `{"result":true,"x":"` + marker + `"}`},
		{"null data", `{"result":true,"data":null,"x":"` + marker + `"}`},
		{"data an array", `{"result":true,"data":["` + marker + `"]}`},
		{"data a string", `{"result":true,"data":"https://` + marker + `.example/a.mp3?Expires=9999999999"}`},
		{"empty data", `{"result":true,"data":{},"x":"` + marker + `"}`},
		{"data of another operation", `{"result":true,"data":{"id":1,"name":"` + marker + `"}}`},
	}
	h := newHarness(t, hellorfsim.Options{}, nil)
	for _, c := range shapeCalls {
		for _, b := range bad {
			t.Run(c.op+"/"+b.name, func(t *testing.T) {
				before := h.sim.Requests(c.path)
				h.sim.BodyNext(c.path, b.body)
				rec, err := h.call(t, c.op, c.q, nil)
				var pr *problem.Problem
				if !errors.As(err, &pr) || pr.Status != http.StatusBadGateway || !strings.Contains(pr.Detail, c.op) {
					t.Fatalf("err %v, want a 502 problem naming %s", err, c.op)
				}
				if strings.Contains(pr.Detail, marker) || strings.Contains(pr.Title, marker) {
					t.Fatalf("problem quotes the body: %+v", pr)
				}
				if rec.status != 0 || rec.body.Len() != 0 || rec.hint.Cacheable {
					t.Fatalf("answer written: %d %+v %q", rec.status, rec.hint, rec.body.String())
				}
				if got := h.sim.Requests(c.path) - before; got != 1 {
					t.Fatalf("%d requests, want 1 (a broken success is not retried)", got)
				}
				if !strings.Contains(h.logs.String(), "not the documented answer") {
					t.Fatalf("no warning logged:\n%s", h.logs.String())
				}
				rec, err = h.call(t, c.op, c.q, nil)
				if err != nil || rec.status != http.StatusOK || !rec.hint.Cacheable {
					t.Fatalf("next call: status %d hint %+v err %v", rec.status, rec.hint, err)
				}
				if got := h.sim.Requests(c.path) - before; got != 2 {
					t.Fatalf("%d requests, want 2", got)
				}
			})
		}
	}
}

func TestCheckShape(t *testing.T) {
	cases := []struct {
		op, body string
		ok       bool
	}{
		{"audio.categories", `{"result":true,"data":{"genres":[],"moods":[{"id":1,"name":"x"}],"instruments":[],"bpms":[]}}`, true},
		{"audio.categories", `{"result":true,"data":{"genres":[],"moods":[],"instruments":[]}}`, false},
		{"audio.categories", `{"result":true,"data":{"genres":{},"moods":[],"instruments":[],"bpms":[]}}`, false},
		{"audio.search", `{"result":true,"data":{"current_page":1,"per_page":"30","total":0,"list":[]}}`, true},
		{"audio.search", `{"result":true,"data":{"current_page":1,"total":0,"list":null}}`, false},
		{"audio.detail", `{"result":true,"data":{"audio":{"id":1},"permissions":[]}}`, true},
		{"audio.detail", `{"result":true,"data":{"audio":null,"permissions":[]}}`, false},
		{"audio.detail", `{"result":true,"data":{"audio":{"id":1}}}`, false},
		{"audio.purchase-detail", `{"result":true,"data":{"audio":{},"purchase":{"id":1}}}`, true},
		{"audio.purchase-detail", `{"result":true,"data":{"audio":{}}}`, false},
		{"audio.purchase-download", `{"result":true,"data":{"url":"https://oss.example/a.mp3?Expires=1"}}`, true},
		{"audio.purchase-download", `{"result":true,"data":{"url":""}}`, false},
		{"audio.purchase-download", `{"result":true,"data":{"url":"/a.mp3"}}`, false},
		{"audio.purchase-download", `{"result":true,"data":{"url":["https://oss.example/a.mp3"]}}`, false},
		{"audio.purchase-download", `{"result":true,"data":{"url":"https://oss.example/a.mp3"}} x`, false},
		{"audio.my-purchases", `{"result":true,"data":{"list":[]}}`, false},
	}
	for _, tc := range cases {
		err := checkShape(tc.op, []byte(tc.body))
		if (err == nil) != tc.ok {
			t.Errorf("%s %s: err %v, want ok=%v", tc.op, tc.body, err, tc.ok)
		}
	}
}
