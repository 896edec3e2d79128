package main

import (
	"encoding/json"
	"fmt"
	"net/url"
)

// A success ({"result": true}) is only hellorf's answer when its "data" is
// what the document shows for the operation. Something between sluice and
// hellorf (a broken deployment, a proxy rewriting answers) can send
// {"result": true} with no data or data null; relayed as it is, that empty
// success would be cached for the whole ttl and every caller would get it.
// checkShape looks at data's top level only (the keys the document shows,
// of the right kind), not at every field: a new field or an empty list is
// no reason for an outage.

// shape is what one cacheable operation's data must hold: keys that are
// arrays, keys that are objects, and keys that are absolute http(s) URLs.
type shape struct {
	arrays, objects, links []string
}

// shapes covers every cacheable operation (TestEveryCacheableOpHasAShape);
// the keys are the document's (README §2 and hellorf-audio.zh.txt).
var shapes = map[string]shape{
	// data.genres, moods, instruments, bpms: each [{id, name}]. The
	// original prints data as an array holding these members, which is not
	// JSON; the English reference reads it as an object, as sluice does.
	"audio.categories": {arrays: []string{"genres", "moods", "instruments", "bpms"}},
	// data.{current_page, per_page, total, list[]}: the counts' types vary
	// in the document (per_page is "10" in one answer, 100 in another), so
	// only the list is checked.
	"audio.search": {arrays: []string{"list"}},
	// data.audio and data.permissions[].
	"audio.detail": {objects: []string{"audio"}, arrays: []string{"permissions"}},
	// data.audio and data.purchase.
	"audio.purchase-detail": {objects: []string{"audio", "purchase"}},
	// data.url: the signed download URL, the answer's whole point.
	"audio.purchase-download": {links: []string{"url"}},
}

// checkShape reports why body, a result:true answer to op, is not the
// answer hellorf documents for it, or nil if it is. The reason names keys,
// never values: it reaches the caller in a 502's detail.
func checkShape(op string, body []byte) error {
	sh, ok := shapes[op]
	if !ok {
		// A cacheable operation added without a shape here must not be
		// cached unchecked.
		return fmt.Errorf("no documented shape for operation %q", op)
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if json.Unmarshal(body, &env) != nil {
		return fmt.Errorf("the body is not a JSON object")
	}
	var data map[string]json.RawMessage
	if json.Unmarshal(env.Data, &data) != nil || data == nil {
		return fmt.Errorf(`no "data" object`)
	}
	for _, k := range sh.arrays {
		var a []json.RawMessage
		if json.Unmarshal(data[k], &a) != nil || a == nil {
			return fmt.Errorf("no data.%s array", k)
		}
	}
	for _, k := range sh.objects {
		var o map[string]json.RawMessage
		if json.Unmarshal(data[k], &o) != nil || o == nil {
			return fmt.Errorf("no data.%s object", k)
		}
	}
	for _, k := range sh.links {
		var s string
		if json.Unmarshal(data[k], &s) != nil {
			return fmt.Errorf("no data.%s string", k)
		}
		if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("data.%s is not an absolute http or https URL", k)
		}
	}
	return nil
}
