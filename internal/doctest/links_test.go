package doctest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocsStandAlone: the documentation stands on its own. Every relative
// link names a file of the repository, and no page sends the reader to the
// upstream notes that live outside it (../shared, originals/), which a user
// of sluice never has.
func TestDocsStandAlone(t *testing.T) {
	for _, path := range documents(t) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, outside := range []string{"shared/upstream", "originals/", "../shared"} {
			if strings.Contains(text, outside) {
				t.Errorf("%s refers to %s, which is not in the repository", filepath.Base(path), outside)
			}
		}
		for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
			target, _, _ := strings.Cut(m[1], "#")
			if target == "" || strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(path), target)); err != nil {
				t.Errorf("%s links to %s: %v", filepath.Base(path), m[1], err)
			}
		}
	}
}

// TestSourcesStandAlone: no source file, comment or test sends its reader
// to the upstream notes outside the repository either; docs/upstreams.md
// says what each vendor documents.
func TestSourcesStandAlone(t *testing.T) {
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name == "node_modules" || name == ".git" || name == "testdata" || name == "bin" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "links_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, outside := range []string{"shared/upstream", "originals/", "../shared"} {
			if strings.Contains(string(b), outside) {
				t.Errorf("%s refers to %s, which is not in the repository", path, outside)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
