package config

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Error is the error type of every load failure: a syntax error, an unknown
// key, a value of the wrong type or failing validation, an unresolvable secret
// reference, or an unreadable file. Load and Parse return either an *Error or
// an errors.Join of several, so errors.As always finds one.
type Error struct {
	File string // path of the config file; may be empty for Parse(data, "")
	Line int    // 1-based line number; 0 when unknown
	Key  string // dotted key such as "providers.ineo.timeout"; may be empty
	Msg  string // what is wrong; never contains a secret
	Err  error  // underlying cause, if any (for errors.Is)
}

// Error renders "file:line: key: message", leaving out the parts that are
// unknown.
func (e *Error) Error() string {
	var b strings.Builder
	loc := e.File
	if e.Line > 0 {
		if loc == "" {
			loc = "line " + strconv.Itoa(e.Line)
		} else {
			loc += ":" + strconv.Itoa(e.Line)
		}
	}
	if loc != "" {
		b.WriteString(loc)
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// joinErrors orders errors by line (unknown lines last) so the output reads
// like the file, and avoids the errors.Join wrapper for a single error.
func joinErrors(errs []*Error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	slices.SortStableFunc(errs, func(a, b *Error) int {
		if (a.Line == 0) != (b.Line == 0) {
			if a.Line == 0 {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Key, b.Key))
	})
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}

// secretKeyNames are the leaf names of keys holding secrets; syntax errors on
// such lines have their message withheld because the TOML lexer quotes the
// offending text, which may be (part of) the secret.
func isSecretKeyName(name string) bool {
	switch name {
	case "access_key", "tmanage_auth", "client_id", "client_secret", "http_admin_token",
		"redis_url", "password", "sentinel_password":
		return true
	}
	return false
}

// quoteValue quotes a value the config got wrong, for an error message,
// unless it may carry more than the mistake: a multi-line value (an
// unclosed """ string swallows the lines after it, secrets included) is
// not quoted at all, and a long one only in part. Errors reach the log,
// status (read tier) and the reload's answer, where no secret may go.
func quoteValue(s string) string {
	const whole, show = 16, 7
	if n := strings.Count(s, "\n"); n > 0 {
		return fmt.Sprintf("(a value of %d lines; is a \"\"\" string left open?)", n+1)
	}
	if r := []rune(s); len(r) > whole {
		return fmt.Sprintf("%q… (%d characters)", string(r[:show]), len(r))
	}
	return strconv.Quote(s)
}

// syntaxError converts a toml.ParseError from the parse phase.
func syntaxError(file string, data []byte, ix *keyIndex, err error) *Error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return &Error{File: file, Msg: "invalid TOML: " + err.Error()}
	}
	line := pe.Position.Line
	key := pe.LastKey
	if owner := ix.owner(line); owner != "" {
		key = owner
	}
	msg := pe.Message
	if mentionsSecret(key) || mentionsSecret(pe.LastKey) || lineMentionsSecret(data, line) {
		msg = "invalid TOML syntax (details withheld because the line may hold a secret; check quoting)"
	}
	return &Error{File: file, Line: line, Key: key, Msg: msg}
}

func mentionsSecret(key string) bool {
	if key == "" {
		return false
	}
	parts := strings.Split(key, ".")
	return isSecretKeyName(strings.Trim(parts[len(parts)-1], `"'`))
}

// lineMentionsSecret is deliberately crude: a word that secret keys (or
// misspellings of them) contain anywhere on the line, in a key or an inline
// table, means we withhold. No non-secret key contains these words.
func lineMentionsSecret(data []byte, line int) bool {
	if line <= 0 {
		return false
	}
	lines := strings.Split(string(data), "\n")
	if line > len(lines) {
		return false
	}
	l := strings.ToLower(lines[line-1])
	for _, word := range []string{"key", "secret", "auth", "token", "pass", "client", "cred", "redis"} {
		if strings.Contains(l, word) {
			return true
		}
	}
	return false
}

// decodeMsgRE matches the plain errors the toml decoder builds with
// fmt.Errorf (type mismatches); they carry line and key only in their text.
var decodeMsgRE = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key ("(?:[^"\\]|\\.)*")\): (.*)$`)

// typeMismatchRE rewrites the decoder's type mismatch wording into the
// vocabulary of a TOML user.
var (
	typeMismatchRE  = regexp.MustCompile(`^incompatible types: TOML value has type (.+); destination has type (.+)$`)
	tableMismatchRE = regexp.MustCompile(`^type mismatch for \S+: expected table but found (.+)$`)
)

// decodeError converts an error from decoding into the Config struct.
func decodeError(file string, ix *keyIndex, err error) *Error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		line := pe.Position.Line
		if line == 0 {
			line = ix.line(pe.LastKey)
		}
		return &Error{File: file, Line: line, Key: pe.LastKey, Msg: pe.Message}
	}
	m := decodeMsgRE.FindStringSubmatch(err.Error())
	if m == nil {
		return &Error{File: file, Msg: err.Error(), Err: err}
	}
	key, uerr := strconv.Unquote(m[2])
	if uerr != nil {
		key = strings.Trim(m[2], `"`)
	}
	line, _ := strconv.Atoi(m[1])
	if line == 0 {
		line = ix.line(key)
	}
	msg := m[3]
	if t := typeMismatchRE.FindStringSubmatch(msg); t != nil {
		msg = "must be " + article(goToTOMLType(t[2])) + ", not " + article(goToTOMLType(t[1]))
	} else if t := tableMismatchRE.FindStringSubmatch(msg); t != nil {
		msg = "must be a table, not " + article(goToTOMLType(t[1]))
	}
	return &Error{File: file, Line: line, Key: key, Msg: msg}
}

func goToTOMLType(t string) string {
	switch t {
	case "int64", "integer":
		return "integer"
	case "float64", "float":
		return "float"
	case "bool", "boolean":
		return "boolean"
	case "string":
		return "string"
	case "map", "map[string]any":
		return "table"
	case "slice", "[]any", "[]map[string]any":
		return "array"
	case "time.Time":
		return "datetime"
	}
	return t
}

func article(word string) string {
	if word != "" && strings.ContainsRune("aeiou", rune(word[0])) {
		return "an " + word
	}
	return "a " + word
}
