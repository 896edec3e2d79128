package hellorfsim

import (
	"errors"
	"strings"
	"unicode"
)

// matcher reports whether a track's tags satisfy a keyword expression.
type matcher func(tags map[string]bool) bool

// parseKeyword compiles a search keyword as the FAQ describes it: separate
// words (phrases are not supported) matched against tags, combined with
// and, or, not and parentheses. Adjacent words without an operator must all
// match. Precedence: not, then and, then or.
//
//	expr   = term { "or" term }
//	term   = factor { ["and"] factor }
//	factor = "not" factor | "(" expr ")" | word
func parseKeyword(s string) (matcher, error) {
	p := &kwParser{toks: tokenize(s)}
	if len(p.toks) == 0 {
		return func(map[string]bool) bool { return true }, nil
	}
	m, err := p.expr()
	if err != nil {
		return nil, err
	}
	if p.i != len(p.toks) {
		return nil, errors.New("unexpected " + p.toks[p.i])
	}
	return m, nil
}

func tokenize(s string) []string {
	var toks []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			toks = append(toks, strings.ToLower(cur.String()))
			cur.Reset()
		}
	}
	for _, r := range s {
		switch {
		case r == '(' || r == ')':
			flush()
			toks = append(toks, string(r))
		case unicode.IsSpace(r):
			flush()
		default:
			cur.WriteRune(r)
		}
	}
	flush()
	return toks
}

type kwParser struct {
	toks []string
	i    int
}

func (p *kwParser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return ""
}

func (p *kwParser) expr() (matcher, error) {
	left, err := p.term()
	if err != nil {
		return nil, err
	}
	for p.peek() == "or" {
		p.i++
		right, err := p.term()
		if err != nil {
			return nil, err
		}
		l := left
		left = func(t map[string]bool) bool { return l(t) || right(t) }
	}
	return left, nil
}

func (p *kwParser) term() (matcher, error) {
	left, err := p.factor()
	if err != nil {
		return nil, err
	}
	for {
		switch p.peek() {
		case "", ")", "or":
			return left, nil
		case "and":
			p.i++
		}
		right, err := p.factor()
		if err != nil {
			return nil, err
		}
		l := left
		left = func(t map[string]bool) bool { return l(t) && right(t) }
	}
}

func (p *kwParser) factor() (matcher, error) {
	switch tok := p.peek(); tok {
	case "":
		return nil, errors.New("keyword expression ends early")
	case "not":
		p.i++
		inner, err := p.factor()
		if err != nil {
			return nil, err
		}
		return func(t map[string]bool) bool { return !inner(t) }, nil
	case "(":
		p.i++
		inner, err := p.expr()
		if err != nil {
			return nil, err
		}
		if p.peek() != ")" {
			return nil, errors.New("missing )")
		}
		p.i++
		return inner, nil
	case ")", "and", "or":
		return nil, errors.New("unexpected " + tok)
	default:
		p.i++
		return func(t map[string]bool) bool { return t[tok] }, nil
	}
}
