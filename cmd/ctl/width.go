package main

import (
	"unicode"

	"golang.org/x/text/width"
)

// displayWidth is how many terminal columns s takes: East Asian wide and
// fullwidth characters (hellorf's Chinese category names and messages, CJK
// titles on Spotify) take two, combining marks and zero-width characters
// none, everything else one. Counting bytes or runes misaligns every table
// with such text in it. golang.org/x/text is already in the module graph
// (through grpc and x/net), so this adds no dependency; its width package
// carries the Unicode East Asian Width tables.
func displayWidth(s string) int {
	n := 0
	for _, r := range s {
		n += runeWidth(r)
	}
	return n
}

func runeWidth(r rune) int {
	switch {
	case r == 0x200B || r == 0x200C || r == 0x200D || r == 0xFEFF:
		return 0
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Cc, unicode.Cf):
		return 0
	}
	switch width.LookupRune(r).Kind() {
	case width.EastAsianWide, width.EastAsianFullwidth:
		return 2
	}
	return 1
}
