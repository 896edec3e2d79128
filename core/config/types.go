package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in the file as a Go duration string
// ("7s", "250ms", "1h30m"). Negative durations are rejected: nothing in sluice
// has a meaningful negative interval, so a minus sign is always a typo.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(text)))
	if err != nil {
		return fmt.Errorf("invalid duration %s (want e.g. \"250ms\", \"30s\", \"1h30m\")", quoteValue(string(text)))
	}
	if v < 0 {
		return fmt.Errorf("invalid duration %s: must not be negative", quoteValue(string(text)))
	}
	d.Duration = v
	return nil
}

// UnmarshalTOML rejects bare TOML numbers: "timeout = 30" could mean seconds
// or nanoseconds, so we insist on a unit.
func (d *Duration) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("must be a duration string such as \"30s\", not a TOML %s", tomlTypeName(v))
	}
	return d.UnmarshalText([]byte(s))
}

// MarshalText renders the duration the way UnmarshalText accepts it.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Size is a byte count written as "64MiB", "512KiB", "1GiB", "10MB", "100kB",
// or a plain number of bytes ("1024" or the TOML integer 1024).
type Size int64

// sizeUnit returns the multiplier of a size suffix. Units are
// case-sensitive on purpose: "mb" would be millibits, and guessing would hide
// mistakes.
func sizeUnit(unit string) (int64, bool) {
	switch unit {
	case "", "B":
		return 1, true
	case "kB", "KB":
		return 1000, true
	case "MB":
		return 1000 * 1000, true
	case "GB":
		return 1000 * 1000 * 1000, true
	case "TB":
		return 1000 * 1000 * 1000 * 1000, true
	case "KiB":
		return 1 << 10, true
	case "MiB":
		return 1 << 20, true
	case "GiB":
		return 1 << 30, true
	case "TiB":
		return 1 << 40, true
	}
	return 0, false
}

// UnmarshalText parses a size with an optional unit; fractions such as
// "1.5GiB" are allowed and rounded down to whole bytes.
func (s *Size) UnmarshalText(text []byte) error {
	str := strings.TrimSpace(string(text))
	i := 0
	for i < len(str) && (str[i] >= '0' && str[i] <= '9' || str[i] == '.') {
		i++
	}
	num, unit := str[:i], strings.TrimSpace(str[i:])
	mult, ok := sizeUnit(unit)
	if num == "" || !ok {
		return fmt.Errorf("invalid size %s (want e.g. \"64MiB\", \"512KiB\", \"10MB\" or a number of bytes)", quoteValue(string(text)))
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return fmt.Errorf("invalid size %s", quoteValue(string(text)))
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if !n.IsInt64() {
		return fmt.Errorf("invalid size %s: too large", quoteValue(string(text)))
	}
	*s = Size(n.Int64())
	return nil
}

// UnmarshalTOML accepts a string with a unit or a non-negative TOML integer
// (bytes).
func (s *Size) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		return s.UnmarshalText([]byte(v))
	case int64:
		if v < 0 {
			return fmt.Errorf("invalid size %d: must not be negative", v)
		}
		*s = Size(v)
		return nil
	default:
		return fmt.Errorf("must be a size such as \"64MiB\" or a number of bytes, not a TOML %s", tomlTypeName(v))
	}
}

// String renders the size in the largest binary unit that divides it exactly.
func (s Size) String() string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && int64(s)%u.mult == 0 {
			return strconv.FormatInt(int64(s)/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// MarshalText renders the size as String does; the result parses back.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// FileMode holds Unix permission bits written as an octal string ("0660").
// TOML integers are refused: 660 and 0o660 are different numbers and it is
// too easy to write the wrong one.
type FileMode os.FileMode

// UnmarshalText parses "0660", "660" or "0o660".
func (m *FileMode) UnmarshalText(text []byte) error {
	str := strings.TrimSpace(string(text))
	digits := strings.TrimPrefix(strings.TrimPrefix(str, "0o"), "0O")
	v, err := strconv.ParseUint(digits, 8, 32)
	if err != nil || digits == "" {
		return fmt.Errorf("invalid file mode %s (want an octal string such as \"0660\")", quoteValue(string(text)))
	}
	if v > 0o777 {
		return fmt.Errorf("invalid file mode %s: only permission bits (at most 0777) are allowed", quoteValue(string(text)))
	}
	*m = FileMode(v)
	return nil
}

// UnmarshalTOML insists on a string; see FileMode.
func (m *FileMode) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("must be an octal string such as \"0660\", not a TOML %s", tomlTypeName(v))
	}
	return m.UnmarshalText([]byte(s))
}

// Perm returns the mode as an os.FileMode.
func (m FileMode) Perm() os.FileMode { return os.FileMode(m).Perm() }

// String renders the mode as four octal digits.
func (m FileMode) String() string { return fmt.Sprintf("%04o", uint32(m)) }

// MarshalText renders the mode as String does; the result parses back.
func (m FileMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// Limit is a rate limit: at most Requests requests in any Window.
type Limit struct {
	Requests int      `toml:"requests" json:"requests"`
	Window   Duration `toml:"window" json:"window"`
	// AllowOverVendorLimit accepts a limit that can exceed the vendor's
	// documented rule (iNeo's), which is otherwise refused; the config
	// then carries a warning (Warnings) for every load and for status.
	AllowOverVendorLimit bool `toml:"allow_over_vendor_limit" json:"allow_over_vendor_limit,omitempty"`
}

type secretKind uint8

const (
	secretUnset secretKind = iota
	secretInline
	secretEnv
	secretFile
)

const redacted = "[redacted]"

// maxSecretFile bounds how much of a secret file is read, so pointing a
// secret at /dev/zero or a large file fails instead of eating memory.
const maxSecretFile = 64 << 10

// Secret is a credential. The file holds the value inline, "env:NAME" (read
// from an environment variable) or "file:PATH" (read from a file, trailing
// newlines removed; a relative PATH is resolved against
// $CREDENTIALS_DIRECTORY when set, as systemd's LoadCredential provides, else
// against the config file's directory). References are resolved when the
// config is loaded so that a missing variable or unreadable file is a load
// error rather than a runtime surprise.
//
// Every rendering (String, GoString, fmt verbs, JSON, text, slog) prints
// "[redacted]"; only Value returns the secret.
type Secret struct {
	value string
	kind  secretKind
	ref   string // variable name or file path; never the secret itself
}

// NewSecret returns an inline secret holding value; handy for tests and for
// callers that build a Config by hand.
func NewSecret(value string) Secret {
	if value == "" {
		return Secret{}
	}
	return Secret{value: value, kind: secretInline}
}

// Value returns the secret. It is empty when the key was absent or when the
// reference was not resolved (references of disabled providers are not).
func (s Secret) Value() string { return s.value }

// IsSet reports whether a non-empty value is available.
func (s Secret) IsSet() bool { return s.value != "" }

// Source says where the value came from, safe to show: "inline",
// "env:NAME", "file:PATH", or "" when the key was absent.
func (s Secret) Source() string {
	switch s.kind {
	case secretInline:
		return "inline"
	case secretEnv:
		return "env:" + s.ref
	case secretFile:
		return "file:" + s.ref
	}
	return ""
}

// String never shows the value.
func (s Secret) String() string { return redacted }

// GoString keeps %#v from showing the value.
func (s Secret) GoString() string { return redacted }

// Format covers every fmt verb (%s, %v, %+v, %#v, %q, %x, ...); without it
// %x or %d on a Secret would print its fields.
func (s Secret) Format(f fmt.State, verb rune) { _, _ = io.WriteString(f, redacted) }

// LogValue keeps slog from showing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText never shows the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// MarshalJSON never shows the value.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(redacted) }

// UnmarshalTOML records the inline value or the reference; resolution
// happens later, once the config file's directory is known. Error messages
// here must never contain the value.
func (s *Secret) UnmarshalTOML(v any) error {
	str, ok := v.(string)
	if !ok {
		return fmt.Errorf("must be a string (the value, \"env:NAME\" or \"file:PATH\"), not a TOML %s", tomlTypeName(v))
	}
	switch {
	case strings.HasPrefix(str, "env:"):
		name := strings.TrimSpace(strings.TrimPrefix(str, "env:"))
		if !validEnvName(name) {
			return errors.New(`"env:" must be followed by an environment variable name (letters, digits, underscore)`)
		}
		*s = Secret{kind: secretEnv, ref: name}
	case strings.HasPrefix(str, "file:"):
		p := strings.TrimSpace(strings.TrimPrefix(str, "file:"))
		if p == "" {
			return errors.New(`"file:" must be followed by a path`)
		}
		*s = Secret{kind: secretFile, ref: p}
	default:
		*s = NewSecret(str)
	}
	return nil
}

// resolve reads an env: or file: reference. baseDir is where relative file
// paths point when $CREDENTIALS_DIRECTORY is unset.
func (s *Secret) resolve(baseDir string) error {
	switch s.kind {
	case secretEnv:
		v, ok := os.LookupEnv(s.ref)
		if !ok {
			return fmt.Errorf("environment variable %s is not set", s.ref)
		}
		if v == "" {
			return fmt.Errorf("environment variable %s is empty", s.ref)
		}
		s.value = v
	case secretFile:
		if !filepath.IsAbs(s.ref) {
			if cd := os.Getenv("CREDENTIALS_DIRECTORY"); cd != "" {
				baseDir = cd
			}
			s.ref = filepath.Join(baseDir, s.ref)
		}
		v, err := readSecretFile(s.ref)
		if err != nil {
			return err
		}
		s.value = v
	}
	return nil
}

func readSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot read secret file %s: %w", path, unwrapPath(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("cannot read secret file %s: %w", path, unwrapPath(err))
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("secret file %s is larger than %d bytes", path, maxSecretFile)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("secret file %s is empty", path)
	}
	return v, nil
}

// unwrapPath drops the *fs.PathError wrapper, whose text repeats the path we
// already print.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// tomlTypeName names the TOML type of a decoded value for error messages.
func tomlTypeName(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case map[string]any:
		return "table"
	case []any, []map[string]any:
		return "array"
	case time.Time:
		return "datetime"
	}
	return fmt.Sprintf("%T", v)
}
