package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
)

// A success from spotify.php is only iNeo's answer when it carries what the
// vendor documents the service returns: a direct download link for the
// track, in the envelope's "result" object ({"ok", "status",
// "status_code": 200, "result": {...}}). A body that says status_code 200
// and nothing more (a broken deployment, a proxy rewriting answers) holds
// no link; cached as it is, every caller would get that empty success for
// the whole link_ttl. The originals do not name the link's field (sluice's
// simulator calls it download_link), so checkTrack asks for an absolute
// http(s) URL anywhere inside result rather than for one field name: a
// guess at the name would turn a real iNeo that spells it otherwise into
// an outage.

// errNoResult and errNoLink are why a spotify.php success is not the
// documented answer.
var (
	errNoResult = errors.New(`no "result" object`)
	errNoLink   = errors.New(`no download link (an absolute http or https URL) in "result"`)
)

// checkShape reports why body, an answer to op whose status_code is a
// success, is not the documented success, or nil if it is. Only the
// cacheable operation has a shape to check: tmanage answers are relayed
// and never cached.
func checkShape(op string, body []byte) error {
	if op != "spotify.track" {
		return fmt.Errorf("no documented shape for operation %q", op)
	}
	var env struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("the body is not a JSON object")
	}
	var result map[string]any
	if json.Unmarshal(env.Result, &result) != nil || result == nil {
		return errNoResult
	}
	if !hasLink(result) {
		return errNoLink
	}
	return nil
}

// hasLink reports whether v holds, at any depth, a string that is an
// absolute http or https URL with a host.
func hasLink(v any) bool {
	switch v := v.(type) {
	case string:
		u, err := url.Parse(v)
		return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
	case map[string]any:
		for _, x := range v {
			if hasLink(x) {
				return true
			}
		}
	case []any:
		for _, x := range v {
			if hasLink(x) {
				return true
			}
		}
	}
	return false
}
