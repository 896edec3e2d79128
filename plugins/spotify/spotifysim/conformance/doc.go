// Package conformance holds only a test: it checks the Spotify simulator's
// answers against the OpenAPI description of the Web API
// (../testdata/spotify-web-api.openapi.yml) with kin-openapi. It is a
// package of its own so that the simulator itself does not depend on the
// validator.
package conformance
