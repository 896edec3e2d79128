package doctest

import (
	"strings"
	"testing"
)

// TestMatchRule pins the comparison rule the package documents: literal
// lines, … within and across lines, normalised volatile fields, and a
// changed message or count failing.
func TestMatchRule(t *testing.T) {
	for _, tc := range []struct {
		name     string
		expected string
		actual   string
		ok       bool
	}{
		{"literal", "reloaded", "reloaded\n", true},
		{"changed message", "trackId must be a 22-character base62 id", `invalid value for "trackId": expected a 22-character base62 id` + "\n", false},
		{"elision within a line", "sluicectl: Invalid parameter: … (parameter trackId)", "sluicectl: Invalid parameter: anything at all (parameter trackId)\n", true},
		{"ascii elision", "download  http://x/dl/a.mp3?token=e888...", "download  http://x/dl/a.mp3?token=e888abc\n", true},
		{"elided lines", "title  T\n…\ncache  hit", "title  T\nartists  A\nalbum  B\ncache  hit\n", true},
		{"elided zero lines", "title  T\n...\ncache  hit", "title  T\ncache  hit\n", true},
		{"missing line", "PROVIDER\nineo", "PROVIDER\nhellorf\nineo\nspotify\n", false},
		{"extra line", "PROVIDER\nhellorf\nineo\nspotify", "PROVIDER\nineo\n", false},
		{"count differs", "ALBUMS: 95", "ALBUMS: 94\n", false},
		{"table widths", "ineo  ready  31643  0  -", "ineo    ready  8  0         -\n", true},
		{"times and uptime", "uptime       2s (since 2026-11-27 22:40:56)", "uptime 1m3s (since 2026-12-04 16:37:39)\n", true},
		{"ports and tokens", "http://127.0.0.1:40025/dl/x.mp3?token=e8881f", "http://127.0.0.1:33267/dl/x.mp3?token=7ddc5e\n", true},
		{"ttl", "cache     hit (sluice; hit; ttl=569)", "cache hit (sluice; hit; ttl=566)\n", true},
		{"ttl does not hide the outcome", "cache     hit (sluice; hit; ttl=569)", "cache miss (sluice; fwd=miss; stored)\n", false},
		{"status paths", "socket       /run/user/1000/sluice/sluice.sock", "socket /tmp/sl-doc-1/s.sock\n", true},
		{"pid only in the provider table", "ineo      ready  31643  0         -", "ineo ready 31643 1 -\n", false},
		{"no output expected, some printed", "", "surprise\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var exp []string
			if tc.expected != "" {
				exp = strings.Split(tc.expected, "\n")
			}
			err := Match(exp, tc.actual)
			if (err == nil) != tc.ok {
				t.Fatalf("Match = %v, want ok=%t", err, tc.ok)
			}
		})
	}
}

func TestParse(t *testing.T) {
	doc := "text\n\n<!-- doctest: input 12345 -->\n```console\n$ sluicectl ineo tg login 1\nCode sent. Enter it: 12345\nLogged in 1.\n$ echo $?\n0\n```\n\n" +
		"```sh\nmake run\n```\n\n```sh\n# comment\nS=x\ncurl --unix-socket \"$S\" \\\n  http://sluice/v1/health\n```\n\n<!-- doctest: skip mutates the real config -->\n```console\n$ sluicectl reload\nreloaded\n```\n"
	blocks, err := Parse("doc.md", doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 3 {
		t.Fatalf("%d blocks, want 3 (the make block is not an example): %+v", len(blocks), blocks)
	}
	login := blocks[0].Commands
	if len(login) != 2 || login[0].Input != "12345" || len(login[0].Output) != 2 || login[1].Line != "echo $?" {
		t.Fatalf("console block: %+v", login)
	}
	sh := blocks[1].Commands
	if len(sh) != 2 || sh[1].Line != "curl --unix-socket \"$S\" \\\n  http://sluice/v1/health" || sh[1].Output != nil {
		t.Fatalf("sh block: %+v", sh)
	}
	if blocks[2].Skip != "mutates the real config" {
		t.Fatalf("skip: %+v", blocks[2])
	}
	if _, err := Parse("doc.md", "<!-- doctest: skip -->\n```console\n$ x\n```\n"); err == nil {
		t.Fatal("a skip without a reason was accepted")
	}
	got := EchoInput(login[0].Output, "12345", "Code sent. Enter it: Logged in 1.\n")
	if err := Match(login[0].Output, got); err != nil {
		t.Fatal(err)
	}
}
