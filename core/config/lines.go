package config

import (
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// keyIndex maps keys to the lines that define them. BurntSushi/toml keeps key
// positions to itself, so this is a small, forgiving TOML scanner of our own:
// it understands table headers ([a.b] and [[a.b]]), dotted and quoted keys,
// inline tables, multi-line arrays and all four string forms well enough
// that text inside values is never mistaken for a key. It never fails; on
// input it cannot follow it skips to the next line.
type keyIndex struct {
	lines map[string]int // toml.Key.String() form -> first line defining it
	spans []span         // key/value statements, for "which key owns line N"
}

type span struct {
	start, end int
	key        string
}

// line returns the line defining key, or failing that its nearest defined
// ancestor (a missing key is reported at its table's header), or 0.
func (ix *keyIndex) line(key string) int {
	return ix.lineOf(splitKey(key))
}

func (ix *keyIndex) lineOf(parts []string) int {
	for n := len(parts); n > 0; n-- {
		if l, ok := ix.lines[toml.Key(parts[:n]).String()]; ok {
			return l
		}
	}
	return 0
}

// owner returns the key whose statement covers line, or "".
func (ix *keyIndex) owner(line int) string {
	for _, s := range ix.spans {
		if line >= s.start && line <= s.end {
			return s.key
		}
	}
	return ""
}

// splitKey splits a toml.Key.String() rendering back into its parts.
func splitKey(key string) []string {
	sc := &scanner{src: key, line: 1}
	parts, ok := sc.key()
	if !ok {
		return strings.Split(key, ".")
	}
	return parts
}

func indexKeys(src []byte) *keyIndex {
	// The toml parser skips a UTF-8 byte order mark; so must we, or the
	// first line's key would look like junk.
	text := strings.TrimPrefix(string(src), "\ufeff")
	sc := &scanner{src: text, line: 1, ix: &keyIndex{lines: map[string]int{}}}
	sc.run()
	return sc.ix
}

type scanner struct {
	src   string
	i     int
	line  int
	table []string
	ix    *keyIndex
}

func (s *scanner) eof() bool { return s.i >= len(s.src) }

func (s *scanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.i]
}

func (s *scanner) has(prefix string) bool { return strings.HasPrefix(s.src[s.i:], prefix) }

func (s *scanner) advance() {
	if s.eof() {
		return
	}
	if s.src[s.i] == '\n' {
		s.line++
	}
	s.i++
}

func (s *scanner) skipSpace() {
	for c := s.peek(); c == ' ' || c == '\t'; c = s.peek() {
		s.advance()
	}
}

// skipBlank skips whitespace, newlines and comments (between statements and
// inside arrays).
func (s *scanner) skipBlank() {
	for !s.eof() {
		switch s.peek() {
		case ' ', '\t', '\r', '\n':
			s.advance()
		case '#':
			s.skipLine()
		default:
			return
		}
	}
}

// skipLine moves to the newline ending the current line (not past it).
func (s *scanner) skipLine() {
	for !s.eof() && s.peek() != '\n' {
		s.advance()
	}
}

func (s *scanner) record(parts []string, line int) {
	k := toml.Key(parts).String()
	if _, ok := s.ix.lines[k]; !ok {
		s.ix.lines[k] = line
	}
}

func (s *scanner) run() {
	for {
		s.skipBlank()
		if s.eof() {
			return
		}
		before := s.i
		if s.peek() == '[' {
			s.header()
		} else {
			s.keyValue(s.table)
		}
		// Anything left on the line is a comment or junk we do not follow.
		s.skipLine()
		if s.i == before {
			s.advance()
		}
	}
}

func (s *scanner) header() {
	line := s.line
	s.advance()
	array := s.peek() == '['
	if array {
		s.advance()
	}
	parts, ok := s.key()
	if !ok {
		return
	}
	s.skipSpace()
	if s.peek() != ']' {
		return
	}
	s.table = parts
	for n := 1; n <= len(parts); n++ {
		s.record(parts[:n], line)
	}
}

// keyValue scans "key = value" and records the key under prefix.
func (s *scanner) keyValue(prefix []string) {
	start := s.line
	parts, ok := s.key()
	if !ok {
		return
	}
	s.skipSpace()
	if s.peek() != '=' {
		return
	}
	s.advance()
	full := append(append([]string(nil), prefix...), parts...)
	// A dotted key defines its intermediate tables on the same line.
	for n := len(prefix) + 1; n <= len(full); n++ {
		s.record(full[:n], start)
	}
	s.value(full)
	s.ix.spans = append(s.ix.spans, span{start: start, end: s.line, key: toml.Key(full).String()})
}

// key scans a possibly dotted key made of bare and quoted parts.
func (s *scanner) key() ([]string, bool) {
	var parts []string
	for {
		s.skipSpace()
		var part string
		switch c := s.peek(); {
		case c == '"':
			raw := s.basicString()
			if u, err := strconv.Unquote(raw); err == nil {
				part = u
			} else {
				part = strings.Trim(raw, `"`)
			}
		case c == '\'':
			part = strings.Trim(s.literalString(), "'")
		case isBareKeyChar(c):
			st := s.i
			for isBareKeyChar(s.peek()) {
				s.advance()
			}
			part = s.src[st:s.i]
		default:
			return nil, false
		}
		parts = append(parts, part)
		s.skipSpace()
		if s.peek() != '.' {
			return parts, true
		}
		s.advance()
	}
}

func isBareKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// value scans one value; keys inside inline tables are recorded under path.
func (s *scanner) value(path []string) {
	s.skipSpace()
	switch {
	case s.has(`"""`):
		s.multiline(`"""`, true)
	case s.has(`'''`):
		s.multiline(`'''`, false)
	case s.peek() == '"':
		s.basicString()
	case s.peek() == '\'':
		s.literalString()
	case s.peek() == '[':
		s.advance()
		for {
			s.skipBlank()
			if s.eof() {
				return
			}
			if s.peek() == ']' {
				s.advance()
				return
			}
			before := s.i
			s.value(path)
			s.skipBlank()
			if s.peek() == ',' {
				s.advance()
			}
			if s.i == before {
				s.advance()
			}
		}
	case s.peek() == '{':
		s.advance()
		for {
			s.skipBlank()
			if s.eof() {
				return
			}
			if s.peek() == '}' {
				s.advance()
				return
			}
			before := s.i
			s.keyValue(path)
			s.skipBlank()
			if s.peek() == ',' {
				s.advance()
			}
			if s.i == before {
				s.advance()
			}
		}
	default:
		for !s.eof() && !strings.ContainsRune(" \t\r\n,]}#", rune(s.peek())) {
			s.advance()
		}
	}
}

// basicString scans "..." (with escapes, ending at the line's end if
// unterminated) and returns its raw text including quotes.
func (s *scanner) basicString() string {
	st := s.i
	s.advance()
	for !s.eof() {
		switch s.peek() {
		case '\\':
			s.advance()
			if s.peek() != '\n' {
				s.advance()
			}
		case '"':
			s.advance()
			return s.src[st:s.i]
		case '\n':
			return s.src[st:s.i]
		default:
			s.advance()
		}
	}
	return s.src[st:s.i]
}

func (s *scanner) literalString() string {
	st := s.i
	s.advance()
	for !s.eof() {
		switch s.peek() {
		case '\'':
			s.advance()
			return s.src[st:s.i]
		case '\n':
			return s.src[st:s.i]
		default:
			s.advance()
		}
	}
	return s.src[st:s.i]
}

// multiline scans a triple-quoted string, basic or literal. TOML lets up to two quote characters
// sit right before the closing delimiter, hence the extra loop.
func (s *scanner) multiline(delim string, escapes bool) {
	for range len(delim) {
		s.advance()
	}
	for !s.eof() {
		if escapes && s.peek() == '\\' {
			s.advance()
			s.advance()
			continue
		}
		if s.has(delim) {
			for range len(delim) {
				s.advance()
			}
			for n := 0; n < 2 && s.peek() == delim[0]; n++ {
				s.advance()
			}
			return
		}
		s.advance()
	}
}
