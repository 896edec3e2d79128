package spotifysim

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"strings"
	"time"
)

// oauthError is the accounts service's error body (RFC 6749 §5.2), which
// differs from the Web API's {"error":{...}} object.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// tokenAnswer is the Client Credentials answer of the tutorial.
type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// serveAccounts is the token endpoint.
func (s *Sim) serveAccounts(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.counts.TokenRequests++
	if time.Now().Before(s.retryUntil) {
		s.counts.TokensDuringRetryAfter++
	}
	s.mu.Unlock()
	if r.URL.Path != s.accPfx+"/api/token" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, oauthError{"invalid_request", "the token endpoint accepts POST only"})
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		writeJSON(w, http.StatusBadRequest, oauthError{"invalid_request", "Content-Type must be application/x-www-form-urlencoded"})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<16)
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, oauthError{"invalid_request", "malformed form body"})
		return
	}
	form := r.PostForm
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	switch {
	case id == "":
		writeJSON(w, http.StatusBadRequest, oauthError{"invalid_client", "Invalid client"})
		return
	case !equal(id, s.opts.ClientID):
		writeJSON(w, http.StatusBadRequest, oauthError{"invalid_client", "Invalid client"})
		return
	case !equal(secret, s.opts.ClientSecret):
		writeJSON(w, http.StatusBadRequest, oauthError{"invalid_client", "Invalid client secret"})
		return
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		writeJSON(w, http.StatusBadRequest, oauthError{"unsupported_grant_type", "grant_type parameter is missing"})
		return
	default:
		writeJSON(w, http.StatusBadRequest, oauthError{"unsupported_grant_type", "grant_type must be client_credentials, authorization_code or refresh_token"})
		return
	}
	s.mu.Lock()
	if len(s.accountsFaults) > 0 {
		status := s.accountsFaults[0]
		s.accountsFaults = s.accountsFaults[1:]
		s.mu.Unlock()
		writeJSON(w, status, oauthError{"server_error", http.StatusText(status)})
		return
	}
	s.mu.Unlock()
	tok := newToken()
	s.mu.Lock()
	life := s.lifetime
	s.tokens[tok] = time.Now().Add(life)
	s.tokenSerial++
	s.mu.Unlock()
	// expires_in is whole seconds; rounding down means a client that trusts
	// it never holds a token the simulator considers expired.
	secs := max(1, int(life/time.Second))
	s.wait(r.Context(), true)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, tokenAnswer{AccessToken: tok, TokenType: "bearer", ExpiresIn: secs})
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func newToken() string {
	var b [48]byte
	_, _ = rand.Read(b[:])
	return "BQ" + base64.RawURLEncoding.EncodeToString(b[:])
}

// tokenStatus classifies the Authorization header of an API request: 0 when
// valid, else the status and Spotify's message.
func (s *Sim) tokenStatusLocked(h string, now time.Time) (int, string) {
	if h == "" {
		return http.StatusUnauthorized, "No token provided"
	}
	const bearer = "Bearer "
	if len(h) < len(bearer) || !strings.EqualFold(h[:len(bearer)], bearer) {
		return http.StatusBadRequest, "Only valid bearer authentication supported"
	}
	exp, ok := s.tokens[h[len(bearer):]]
	switch {
	case !ok:
		return http.StatusUnauthorized, "Invalid access token"
	case !now.Before(exp):
		return http.StatusUnauthorized, "The access token expired"
	}
	return 0, ""
}
