package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// A 2xx is only Spotify's answer when its body is the JSON the Web API
// documents for the operation (testdata/spotify-web-api.openapi.yml).
// Something between sluice and Spotify can answer 200 with anything else: a
// captive portal's HTML page, a proxy's error page, a body cut short. Such
// an answer, relayed as it is, would be cached for the whole ttl, and every
// caller would get the same junk for an hour. checkShape looks at the top
// level only (the document must parse whole, and carry the keys each
// operation's schema has at its top); it does not validate every field,
// which would turn a harmless new field or a nullable one into an outage.

// objectTypes are the operations that answer one object, and the value of
// its "type" field (ArtistObject, AlbumObject, TrackObject).
var objectTypes = map[string]string{"artist": "artist", "album": "album", "track": "track"}

// manyKeys are the several-ids operations and their one top-level key
// (ManyArtists, ManyAlbums, ManyTracks): an array of objects, null where
// an id names nothing.
var manyKeys = map[string]string{"artists": "artists", "albums": "albums", "tracks": "tracks"}

// checkShape reports why body is not the documented answer to op with the
// parameters sent (params), or nil if it is.
func checkShape(op string, params url.Values, body []byte) error {
	var top map[string]json.RawMessage
	// Unmarshal checks the whole document before it decodes anything, so a
	// body cut short anywhere fails here, not only at the top.
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return fmt.Errorf("the body is not a JSON object")
	}
	if kind, ok := objectTypes[op]; ok {
		return checkObject(top, kind)
	}
	if key, ok := manyKeys[op]; ok {
		return checkMany(top, key)
	}
	switch op {
	case "artist.albums", "album.tracks":
		return checkPage(top, "")
	case "search":
		// SearchItems has one paging object per requested type, under the
		// type's plural: type=artist,track answers artists and tracks.
		for _, t := range strings.Split(params.Get("type"), ",") {
			key := t + "s"
			raw, ok := top[key]
			if !ok {
				return fmt.Errorf("no %q paging object for type %s", key, t)
			}
			var page map[string]json.RawMessage
			if json.Unmarshal(raw, &page) != nil || page == nil {
				return fmt.Errorf("%q is not a paging object", key)
			}
			if err := checkPage(page, key+"."); err != nil {
				return err
			}
		}
		return nil
	}
	// Every operation Describe lists is above; one added without a shape
	// here must not be cached unchecked.
	return fmt.Errorf("no documented shape for operation %q", op)
}

// checkObject checks an object's "id" (a string) and "type" (kind).
func checkObject(top map[string]json.RawMessage, kind string) error {
	var id, typ string
	if json.Unmarshal(top["id"], &id) != nil || id == "" {
		return fmt.Errorf("no \"id\" in the %s object", kind)
	}
	if json.Unmarshal(top["type"], &typ) != nil || typ != kind {
		return fmt.Errorf("\"type\" is not %q", kind)
	}
	return nil
}

// checkMany checks a several-ids answer: key holds an array whose elements
// are objects or null.
func checkMany(top map[string]json.RawMessage, key string) error {
	var items []json.RawMessage
	if json.Unmarshal(top[key], &items) != nil || items == nil {
		return fmt.Errorf("no %q array", key)
	}
	for i, it := range items {
		if it[0] != '{' && !bytes.Equal(it, []byte("null")) {
			return fmt.Errorf("%s element %d is neither an object nor null", key, i+1)
		}
	}
	return nil
}

// checkPage checks a PagingObject's "href" (a string) and "items" (an
// array); where names it inside the answer for the error.
func checkPage(page map[string]json.RawMessage, where string) error {
	var href string
	if json.Unmarshal(page["href"], &href) != nil || href == "" {
		return fmt.Errorf("no %shref in the paging object", where)
	}
	var items []json.RawMessage
	if json.Unmarshal(page["items"], &items) != nil || items == nil {
		return fmt.Errorf("no %sitems array in the paging object", where)
	}
	return nil
}
